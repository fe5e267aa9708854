"""``library-syncer sync``: one sync now (guard, rsync, manifest, publish), then exit.

On a terminal it shows a progress bar (bytes, rate, ETA); otherwise (a log) it
prints plain lines.  Exit 0 on success, 1 when the sync failed, 2 for a bad setting.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import click

from . import setting_options, settings_from
from ..config import SYNC_GROUPS
from ..sync.progress import EventLines
from ..sync.result import Phase, RetryScheduled, SyncResult
from ..sync.plan import prepare
from ..sync.run import run_sync
from ..util.fmt import human_bytes
from ..errors import ConfigError, OperationFailed
from ..transport.rsync import FileChange, Progress


EXIT_DEGRADED = 3


def _say(line: str) -> None:
    click.echo(line, err=True)


class _RichReporter:
    """Progress bar on a terminal (rich): bytes, rate and ETA of the transfer."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress as Bar, TextColumn

        self.console = Console(stderr=True)
        self.bar = Bar(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[done]}"), TextColumn("{task.fields[rate]}"), TextColumn("ETA {task.fields[eta]}"),
            console=self.console, transient=False,
        )
        self.task = self.bar.add_task("sync", total=100, done="", rate="", eta="-")

    def __enter__(self) -> "_RichReporter":
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def __call__(self, event: object) -> None:
        if isinstance(event, Progress):
            eta = "-" if event.eta_seconds is None else time.strftime("%H:%M:%S", time.gmtime(event.eta_seconds))
            self.bar.update(self.task, completed=event.percent, done=human_bytes(event.bytes),
                            rate=f"{human_bytes(event.rate)}/s", eta=eta)
        elif isinstance(event, Phase):
            if event.name in ("listing", "transfer"):
                self.bar.update(self.task, description=event.name)
            else:
                self.bar.update(self.task, description=event.name, completed=100, eta="done")
        elif isinstance(event, FileChange) and event.action in ("transfer", "delete"):
            self.console.print(f"{event.flags} {event.path}", markup=False, highlight=False)
        elif isinstance(event, RetryScheduled):
            self.console.print(f"attempt {event.attempt} failed ({event.reason}); retrying in {event.delay:.0f}s",
                               markup=False, highlight=False)


def _run_in_thread(func, stop: threading.Event) -> SyncResult:
    """Run the blocking sync in a thread; Ctrl-C stops rsync cleanly (partial files kept)."""
    box: list[SyncResult] = []
    worker = threading.Thread(target=lambda: box.append(func()), daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        _say("interrupted: stopping rsync (the next sync resumes)")
        stop.set()
        worker.join()
    if not box:
        raise OperationFailed("sync ended unexpectedly")
    return box[0]


@click.command("sync")
@setting_options(*SYNC_GROUPS)
@click.option("--from-folder", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Pull from this local folder instead of SYNC_PEER (e.g. to seed a site from a shipped disk).")
def command(from_folder: Path | None, **values) -> None:
    """Sync the library once from SYNC_PEER, regenerate the manifest and publish it.

    What is served only changes when everything succeeded; an interrupted sync
    resumes on the next run.  Exit 0 on success, 1 when the sync failed, 2 for a bad setting,
    3 when it published but held items back at their last good version (degraded).
    """
    settings = settings_from(click.get_current_context(), values)
    source = None
    if from_folder is not None:
        if not from_folder.is_dir():
            raise ConfigError(f"--from-folder {from_folder}: is not a folder")
        source = str(from_folder.resolve())
    else:
        settings.require_peer()
    prepare(settings, source=source)  # bad settings and key files: exit 2 before anything runs
    stop = threading.Event()
    if sys.stderr.isatty():
        with _RichReporter() as reporter:
            result = _run_in_thread(lambda: run_sync(settings, on_event=reporter, stop_event=stop, source=source), stop)
    else:
        lines = EventLines(_say)
        result = _run_in_thread(lambda: run_sync(settings, on_event=lines, stop_event=stop, source=source), stop)
    if not result.ok:
        raise OperationFailed(result.reason, exit_code=2 if result.kind == "config" else 1)
    if result.kind == "degraded":
        click.echo(f"sync degraded: {result.summary()}")
        raise SystemExit(EXIT_DEGRADED)
    click.echo(f"sync ok: {result.summary()}")
