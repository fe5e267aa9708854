"""The remote-site daemon: serve the published generation, sync now, then on schedule.

The web server and the scheduler share one asyncio loop; each sync runs in a
worker thread (``run_sync`` is blocking) and at most one runs at a time.
SIGTERM/SIGINT stop the scheduler, end a running rsync (its staging tree is
kept so the next start resumes) and let running downloads finish.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import signal
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from ..config import Settings
from ..publish.generations import Layout
from ..publish.pins import GenerationPins
from .schedule import next_run, random_delay
from .sync import SyncResult, run_sync

log = logging.getLogger(__name__)


@dataclass
class ClientState:
    """What the daemon knows about its syncs (read by status pages and the API)."""

    history: deque[SyncResult] = field(default_factory=lambda: deque(maxlen=50))
    running: str | None = None  # run id of the sync in progress
    next_run: datetime | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def last(self) -> SyncResult | None:
        return self.history[-1] if self.history else None

    @property
    def last_success(self) -> SyncResult | None:
        return next((r for r in reversed(self.history) if r.ok), None)

    def new_run_id(self) -> str:
        return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{next(self._ids)}"


def served_root(settings: Settings) -> GenerationPins:
    """Root provider for the web app: the generation each subscriber reads, an empty folder before the first."""
    empty = Layout(settings.library).meta / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    return GenerationPins(settings.library, settings.generation_grace_seconds, fallback=empty)


class ClientDaemon:
    """Scheduler + web server of one site. ``run()`` returns when stopped."""

    def __init__(self, settings: Settings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.state = ClientState()
        self.rng = rng or random.Random()
        self.stop = asyncio.Event()
        self._thread_stop = threading.Event()
        self._lock = asyncio.Lock()

    # -- syncs ---------------------------------------------------------------------------
    async def sync_once(self, trigger: str) -> SyncResult | None:
        """Run one sync in a worker thread unless one is already running."""
        if self._lock.locked():
            log.info("sync (%s) skipped: a sync is already running (%s)", trigger, self.state.running)
            return None
        async with self._lock:
            run_id = self.state.new_run_id()
            self.state.running = run_id
            log.info("sync %s started (%s)", run_id, trigger)
            try:
                result = await asyncio.to_thread(run_sync, self.settings, stop_event=self._thread_stop)
            except Exception as exc:  # a bug must not kill the daemon: record and go on
                log.exception("sync %s crashed", run_id)
                now = datetime.now(timezone.utc)
                result = SyncResult(ok=False, reason=f"internal error: {exc}", started=now, ended=now)
            finally:
                self.state.running = None
            result.run_id = run_id
            self.state.history.append(result)
            if result.ok:
                log.info("sync %s succeeded: %s", run_id, result.summary())
            else:
                log.error("sync %s failed: %s", run_id, result.reason)
            return result

    async def _sleep_until(self, when: datetime) -> bool:
        """Sleep until ``when`` (wall clock, re-checked each minute); False if stopped."""
        while not self.stop.is_set():
            remaining = (when - datetime.now(timezone.utc)).total_seconds()
            if remaining <= 0:
                return True
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=min(remaining, 60))
            except asyncio.TimeoutError:
                pass
        return False

    async def scheduler(self) -> None:
        """Initial sync, then one sync per schedule tick (plus the random delay if enabled)."""
        s = self.settings
        await self.sync_once("start")
        while not self.stop.is_set():
            tick = next_run(s.sync_schedule, datetime.now(timezone.utc), s.tz)
            delay = random_delay(s.sync_delay, s.sync_delay_max_seconds, self.rng)
            when = tick + timedelta(seconds=delay)
            self.state.next_run = when
            log.info("next sync at %s (schedule %r%s)", when.isoformat(timespec="seconds"), s.sync_schedule,
                     f", random delay {delay:.0f}s" if s.sync_delay else "")
            if not await self._sleep_until(when):
                break
            await self.sync_once("schedule")

    # -- lifecycle -----------------------------------------------------------------------
    def _on_signal(self, signame: str) -> None:
        log.info("%s received: stopping", signame)
        self.stop.set()
        self._thread_stop.set()

    async def run(self, *, extra_routes: Callable[[Any], None] | None = None,
                  on_started: Callable[[list[str]], None] | None = None) -> None:
        """Serve and schedule until SIGTERM/SIGINT."""
        from ..web.app import create_app
        from ..web.runner import serve_app

        s = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig.name)
        app = create_app(served_root(s), browse=s.library_browse, password=s.library_password_value())
        if extra_routes is not None:
            extra_routes(app)
        ssl_context = None
        tls = s.tls_files()
        if tls:
            from ..web.tls import load_tls_context, sha1_thumbprint

            ssl_context = load_tls_context(*tls)
            log.info("TLS certificate %s, SHA-1 thumbprint %s", tls[0], sha1_thumbprint(tls[0]))
        web = asyncio.create_task(serve_app(
            app, s.http_host, s.http_port, ssl_context=ssl_context, shutdown_grace=s.shutdown_grace_seconds,
            on_started=on_started, stop_event=self.stop, handle_signals=False,
        ))
        sched = asyncio.create_task(self.scheduler())
        done, _ = await asyncio.wait({web, sched}, return_when=asyncio.FIRST_COMPLETED)
        self.stop.set()
        self._thread_stop.set()
        await asyncio.gather(web, sched, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
