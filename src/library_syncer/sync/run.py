"""One sync run of a site: guard, rsync into staging (with retries), manifest, publish, prune.

:func:`run_sync` blocks; the daemon runs it in a worker thread.  What is served
(``L/current``) only changes in the final atomic switch, so a failed, refused or
interrupted run leaves it untouched, and the staging tree (with rsync's partial
files) is kept so the next run resumes.  One run at a time per library folder
(``flock`` on ``L/.library-syncer/sync.lock``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from ..config import Settings
from ..errors import UserError
from ..publish import generations
from ..transport import rsync as rs
from ..transport.exitcodes import Outcome, classify
from ..util.proc import Proc, RunLock, run as run_child
from ..vcsp.manifest import update_manifest
from ..vcsp.published import read_published
from .bwslots import transfer_in_slots
from .cleanup import remove_empty_items, remove_unselected
from .guard import delete_guard, publish_guard
from .plan import SyncPlan, prepare, source_items
from .result import AttemptStarted, Event, Phase, RetryScheduled, SyncResult, held_back_text
from .schedule import next_retry_delay, zone
from .selection import is_selected, rsync_filters
from .timetable import Timetable

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 10.0
RETRY_CAP_SECONDS = 600.0


def _run(cmd: list[str], *, on_line: Callable[[str], None] | None, stop_event: threading.Event | None) -> Proc:
    """rsync (or ssh) through the child-process runner: rsync's environment and line cutting, no progress kept."""
    return run_child(cmd, on_line=on_line, stop_event=stop_event, env=rs.child_env(), splitter=rs.LineSplitter,
                     keep=lambda line: rs.parse_progress(line) is None)


class _Run:
    """State of one run (kept small: the steps are methods of this object)."""

    def __init__(self, settings: Settings, plan: SyncPlan, on_event: Callable[[Event], None] | None,
                 stop_event: threading.Event | None, rng: random.Random, retry_base: float) -> None:
        self.s, self.plan, self.stop = settings, plan, stop_event
        self.emit = on_event or (lambda e: None)
        self.rng, self.retry_base = rng, retry_base
        self.result = SyncResult(ok=False, reason="", started=datetime.now(timezone.utc),
                                 ended=datetime.now(timezone.utc))
        self.changed: set[str] = set()
        self.deleted: set[str] = set()

    def finish(self, ok: bool, kind: str, reason: str) -> SyncResult:
        r = self.result
        r.ok, r.kind, r.reason = ok, kind, reason
        r.files_changed, r.files_deleted = len(self.changed), len(self.deleted)
        r.ended = datetime.now(timezone.utc)
        return r

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def explain(self, outcome: Outcome) -> str:
        if outcome.kind == "host-key" and self.plan.pin is not None:
            return f"{outcome.message} for {self.s.sync_peer}:{self.s.sync_port}; refusing to sync: {self.plan.pin.remedy()}"
        return outcome.message

    def on_line(self, line: str) -> None:
        change = rs.parse_change(line)
        if change is not None:
            if change.action == "delete":
                self.deleted.add(change.path)
            elif change.type == "f" and change.action == "transfer":
                self.changed.add(change.path)
            if change.action == "delete" or (change.type != "d" and change.action != "attrs"):
                self.any_change = True  # folder times and attributes changed in place need no new generation
            self.emit(change)
            return
        progress = rs.parse_progress(line)
        if progress is not None:
            self.emit(progress)

    def list_source(self) -> tuple[Outcome | None, set[str] | None, bool]:
        cmd = rs.list_command(self.plan.source, rsh=self.plan.rsh, timeout=self.plan.timeout)
        proc = _run(cmd, on_line=None, stop_event=self.stop)
        if proc.stopped:
            return None, None, True
        outcome = classify(proc.code, proc.stderr)
        if not outcome.ok:
            return outcome, None, False
        return outcome, source_items(rs.parse_listing(proc.stdout)), False

    def transfer(self) -> tuple[Outcome | None, bool]:
        """rsync into staging, restarted at each rate change of the bandwidth timetable (:mod:`.bwslots`)."""
        proc = transfer_in_slots(Timetable.parse(self.plan.max_bw), zone(self.s.tz), self.stop, self.rsync, self.emit)
        if proc.stopped:
            return None, True
        return classify(proc.code, proc.stderr), False

    def rsync(self, max_bw: str, stop: threading.Event) -> Proc:
        """One rsync into staging at ``max_bw``; its statistics are added to the result."""
        cmd = rs.sync_command(self.plan.source, self.plan.layout.staging, rsh=self.plan.rsh,
                              timeout=self.plan.timeout, max_bw=max_bw,
                              extra=rsync_filters(self.s.sync_include, self.s.sync_exclude))
        proc = _run(cmd, on_line=self.on_line, stop_event=stop)
        stats = rs.parse_stats(proc.stdout)
        r = self.result
        r.bytes_sent += stats.bytes_sent
        r.bytes_received += stats.bytes_received
        r.literal_bytes += stats.literal_bytes
        r.matched_bytes += stats.matched_bytes
        if stats.bytes_received or stats.bytes_sent:
            self.emit(stats)
        return proc

    def run(self) -> SyncResult:
        s, lay = self.s, self.plan.layout
        self.any_change = False
        self.published = published = generations.published_items(lay.library)
        generations.seed_staging(lay.library)
        lay.staging.mkdir(parents=True, exist_ok=True)
        clock = time.monotonic()
        listed = False
        self.cleaned_up = False
        while True:
            if self.stopped():
                return self.finish(False, "stopped", "sync stopped before it finished; the next run resumes")
            self.result.attempts += 1
            self.emit(AttemptStarted(self.result.attempts))
            if not listed:
                self.emit(Phase("listing", self.plan.source))
                outcome, items, stopped = self.list_source()
                if stopped:
                    continue
                if items is not None:
                    refusal = delete_guard(published, items, s.sync_delete_guard, s.sync_allow_mass_delete)
                    if refusal:
                        return self.finish(False, "guard", refusal)
                    listed = True
            if listed:
                self.emit(Phase("transfer", self.plan.source))
                outcome, stopped = self.transfer()
                if stopped:
                    continue
                assert outcome is not None  # only a stopped command has none
                if outcome.ok:
                    break
            assert outcome is not None  # only a stopped command has none
            if outcome.kind == "disk-full" and not self.cleaned_up:
                # Free what can go (old generations no reader holds), then try once more at once.
                self.cleaned_up = True
                freed = self.free_space()
                log.warning("attempt %d: %s; removed old generations %s, retrying once",
                            self.result.attempts, outcome.message, freed or "(none to remove)")
                self.emit(RetryScheduled(self.result.attempts, 0.0, outcome.message))
                continue
            if not outcome.retryable:
                return self.finish(False, "fatal", self.explain(outcome))
            delay = next_retry_delay(self.result.attempts, time.monotonic() - clock, s.sync_retry_deadline,
                                     self.retry_base, RETRY_CAP_SECONDS, self.rng)
            if delay is None:
                return self.finish(False, "gave-up", f"gave up after {self.result.attempts} attempt(s) "
                                   f"(setting sync_retry_deadline {s.sync_retry_deadline}s): {outcome.message}")
            log.warning("attempt %d failed (%s); retrying in %.0fs", self.result.attempts, outcome.message, delay)
            self.emit(RetryScheduled(self.result.attempts, delay, outcome.message))
            if self.stop is not None:
                self.stop.wait(delay)
            else:
                time.sleep(delay)
        return self.complete()

    def free_space(self) -> list[int]:
        """Disk full: remove retired generations now (never the current or previous one, nor one a
        subscriber still reads); returns their numbers."""
        try:
            return generations.prune(self.plan.layout.library, 0.0, lease_grace=self.s.generation_grace_seconds)
        except OSError as exc:
            log.warning("%s", _os_reason("removing old generations failed", exc))
            return []

    def complete(self) -> SyncResult:
        lay, r, s = self.plan.layout, self.result, self.s
        self.emit(Phase("cleanup"))
        emptied = remove_empty_items(lay.staging)
        if emptied:
            log.info("removed item folders left empty: %s", ", ".join(emptied))
            self.any_change = True
        # Second brake, on what would be published: counts items removed at the source (also
        # while the transfer ran), left out by validation and filtered.
        served = read_published(generations.current_root(lay.library))
        listed = set(served.listed)
        # Items the site filter leaves out are removed on purpose: once, logged, not counted by the guard.
        unselected = {f for f in listed if not is_selected(f, s.sync_include, s.sync_exclude)}
        if remove_unselected(lay.staging, s.sync_include, s.sync_exclude):
            self.any_change = True
        r.filtered_out = sorted(unselected)
        if unselected:
            log.warning("items removed by the site filter (sync_include/sync_exclude): %s",
                        ", ".join(r.filtered_out))

        def approve(draft):
            refusal = publish_guard(listed, draft, s.sync_delete_guard, s.sync_allow_mass_delete,
                                    filtered=unselected)
            return refusal and refusal.replace("delete guard:", "delete guard (after the transfer):", 1)

        self.emit(Phase("manifest"))
        try:
            report = update_manifest(lay.staging, s.library_name, published=served, approve=approve)
        except UserError as exc:
            return self.finish(False, "fatal", f"manifest: {exc}")
        r.problems = list(report.problems)
        r.held_back = dict(report.held_back)
        if report.refused:
            return self.finish(False, "guard", report.refused)
        r.items = len(report.items)
        r.library_bytes = sum(i.size for i in report.items)
        r.library_version = report.library_version
        for problem in report.problems:
            log.warning("item left out of the manifest: %s", problem)
        if self.needs_publish(report.changed or report.files_written > 0):
            self.emit(Phase("publish"))
            try:
                r.generation = generations.publish(lay.library, keep=set(report.held_back))
            except OSError as exc:
                return self.finish(False, "fatal", _os_reason("publishing failed", exc))
            except UserError as exc:
                return self.finish(False, "fatal", str(exc))
        self.emit(Phase("prune"))
        try:
            generations.prune(lay.library, s.generation_grace_seconds)
        except OSError as exc:
            log.warning("%s", _os_reason("removing old generations failed", exc))
        if r.held_back:
            return self.finish(True, "degraded", f"{len(r.held_back)} item(s) held back at their last good "
                               f"version: {held_back_text(r.held_back)}")
        return self.finish(True, "ok", "")

    def needs_publish(self, manifest_changed: bool) -> bool:
        current = generations.current_root(self.plan.layout.library)
        if current is None or manifest_changed or self.any_change:
            return True
        try:
            return (current / "lib.json").read_bytes() != (self.plan.layout.staging / "lib.json").read_bytes()
        except OSError:
            return True


def _os_reason(what: str, exc: OSError) -> str:
    if exc.errno == 28:
        return f"{what}: the disk of the library is full ({exc.filename or ''})"
    return f"{what}: {exc.strerror} ({exc.filename or ''})"


def run_sync(
    settings: Settings,
    *,
    on_event: Callable[[Event], None] | None = None,
    stop_event: threading.Event | None = None,
    source: str | None = None,
    rng: random.Random | None = None,
    retry_base: float = RETRY_BASE_SECONDS,
) -> SyncResult:
    """Run one sync (blocking) and return its result; never raises for expected failures.

    ``on_event`` receives :class:`Phase`, :class:`AttemptStarted`, :class:`RetryScheduled`
    and rsync's :class:`FileChange`, :class:`Progress` and :class:`RsyncStats`.
    Setting ``stop_event`` ends rsync promptly (partial files kept) and returns a
    not-ok result.  ``source`` pulls from a local folder instead of SYNC_PEER.
    """
    started = datetime.now(timezone.utc)
    try:
        plan = prepare(settings, source=source)
    except UserError as exc:
        return SyncResult(ok=False, reason=str(exc), started=started, ended=datetime.now(timezone.utc), kind="config")
    lock = RunLock(plan.layout.lock)  # children inherit it: held while any of them runs
    try:
        if not lock.acquire():
            return SyncResult(ok=False, reason=f"another sync of {plan.layout.library} is already running "
                              f"(lock {plan.layout.lock})", started=started,
                              ended=datetime.now(timezone.utc), kind="busy")
    except OSError as exc:
        return SyncResult(ok=False, reason=_os_reason("cannot lock the library", exc), started=started,
                          ended=datetime.now(timezone.utc), kind="config")
    try:
        run = _Run(settings, plan, on_event, stop_event, rng or random.Random(), retry_base)
        run.result.started = started
        try:
            return run.run()
        except OSError as exc:
            return run.finish(False, "fatal", _os_reason("sync failed", exc))
    finally:
        lock.release()
