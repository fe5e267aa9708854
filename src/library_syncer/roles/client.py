"""The remote-site daemon: serve the published generation, sync now, then on schedule.

The web server and the scheduler share one asyncio loop; each sync runs in a
worker thread (``run_sync`` is blocking) and at most one runs at a time, whether
started by the schedule or on demand (``POST /_syncer/api/sync``).  The sync at
start is skipped when ``sync_skip_initial`` is set and a generation is already
published; before the first publication ``lib.json`` answers the VCSP "not ready"
document (:meth:`ClientDaemon.not_ready`).  Every log
line of a sync carries its run id.  The sync history survives restarts (state
folder), feeds the status page, the JSON API and the metrics, and a webhook is
called when syncs start failing and when they recover.  After a publication that
changed something the site's vCenter is asked to sync (:mod:`.vcenter_notify`, optional).
SIGTERM/SIGINT stop the scheduler, end a running rsync (its staging tree is
kept so the next start resumes) and let running downloads finish; a second one
cuts them (:func:`~library_syncer.util.signals.capture_signals`).  The web servers
are :mod:`.client_web`'s, the start-up checks :mod:`.client_setup`'s.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import signal
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Coroutine

import aiohttp

from ..config import Settings
from ..errors import OperationFailed
from ..logs import run_context
from . import site_status as st
from ..sync.progress import EventLines
from .site_metrics import ClientMetrics
from ..sync.schedule import next_run, random_delay
from ..sync.result import SyncResult
from ..sync.origin_state import read_site_origin
from .site_report import report
from ..sync.run import run_sync
from ..publish.generations import current_generation
from ..transport.rsync import Progress
from ..web.app import not_ready_document
from ..util.signals import capture_signals
from .client_setup import check_ports, check_start, listen_ports  # noqa: F401 (re-exported)
from .client_web import ACME_START_TIMEOUT, SiteWeb, served_root  # noqa: F401 (re-exported)
from .vcenter_notify import VcenterNotifier

log = logging.getLogger(__name__)

HISTORY_SIZE = 50
WEBHOOK_TRIES = 3


@dataclass
class ClientState:
    """What the daemon knows about its syncs (read by the status page, API and metrics)."""

    history: deque[SyncResult] = field(default_factory=lambda: deque(maxlen=HISTORY_SIZE))
    running: str | None = None  # run id of the sync in progress
    progress: int | None = None  # percent of the running sync's transfer, from its progress events
    next_run: datetime | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def last(self) -> SyncResult | None:
        return self.history[-1] if self.history else None

    def new_run_id(self) -> str:
        return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{next(self._ids)}"


class ClientDaemon(SiteWeb):
    """Scheduler + web server of one site. ``run()`` returns when stopped."""

    def __init__(self, settings: Settings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.state = ClientState()
        self.state.history.extend(st.load_history(settings.resolved_state_dir()))
        self.metrics_ = ClientMetrics()
        self.rng = rng or random.Random()
        self.stop = asyncio.Event()
        self._cut = asyncio.Event()  # a second SIGTERM: running downloads are cut
        self.thumbprint: str | None = None
        self.front = None  # the Caddy front in automatic-HTTPS mode (web/caddy.py)
        self._thread_stop = threading.Event()
        self._tasks: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._reports: set[asyncio.Task] = set()
        self.vcenter = (VcenterNotifier(settings, self.metrics_, self.stop, self._post_webhook)
                        if settings.vcenter_enabled() else None)

    # -- what the status endpoints ask (web/status.py StatusSource) ------------------------
    def status(self) -> dict[str, Any]:
        """The status document (reads the published manifest: call from a worker thread)."""
        s = self.settings
        published = st.published_library(s.library)
        return st.client_status(
            site=s.library_name, history=list(self.state.history), running=self.state.running,
            next_run=self.state.next_run, published=published, now=datetime.now(timezone.utc),
            stale_after=s.stale_after_seconds, schedule=s.sync_schedule, tz=s.tz, peer=s.sync_peer,
            thumbprint=(self.front.last_thumbprint if self.front is not None else None) or self.thumbprint,
        ) | self.policy() | {"vcenter": self.vcenter.document() if self.vcenter else None,
                             "upstream": self.upstream()}

    def _start_report(self, result: SyncResult | None) -> None:
        """Send the site report to the upstream (at start, and after each sync); best effort, cut at stop."""
        task = asyncio.create_task(report(self.settings, result, list(self.state.history), self.state.next_run,
                                          self.stop))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    def upstream(self) -> dict[str, Any]:
        """The status document's ``upstream`` part (reads the published origin manifest)."""
        origin = read_site_origin(self.settings.library)
        return st.upstream_status(list(self.state.history), origin.doc if origin else None)

    def policy(self) -> dict[str, Any]:
        """The site's policy settings with the bandwidth slot in force now (the status document's part)."""
        s = self.settings
        return st.site_policy(skip_initial=s.sync_skip_initial, include=s.sync_include, exclude=s.sync_exclude,
                              max_bw=s.sync_max_bw, tz=s.tz, now=datetime.now(timezone.utc))

    def not_ready(self) -> dict[str, Any] | None:
        """What ``lib.json`` answers (503) before the first publication; None once one is published.

        While a sync runs (or none has ended yet) the message is empty, so a subscriber keeps polling;
        when the last sync failed and none runs, the message says so (a subscriber then stops polling).
        """
        if current_generation(self.settings.library) is not None:
            return None
        last, state = self.state.last, self.state
        if state.running or last is None or last.ok:
            return not_ready_document(min(state.progress or 0, 99))
        when = f"; next try at {state.next_run.isoformat(timespec='seconds')}" if state.next_run else ""
        return not_ready_document(0, f"nothing published yet: the last sync failed ({last.reason}){when}")

    def metrics(self) -> bytes:
        """The Prometheus text, library gauges refreshed (reads files: call from a worker thread)."""
        self.metrics_.observe_published(st.published_library(self.settings.library),
                                        len(st.held_back_now(self.state.history)))
        self.metrics_.observe_upstream(self.upstream())
        self.metrics_.observe_bandwidth(self.policy()["bandwidth"])
        return self.metrics_.render()

    def start_sync(self, trigger: str) -> tuple[bool, str]:
        """Start a sync in the background unless one runs: (started, run id of the new or running sync)."""
        if self.state.running:
            log.info("sync (%s) not started: sync %s is running", trigger, self.state.running)
            return False, self.state.running
        run_id = self.state.new_run_id()
        self.state.running = run_id
        self.metrics_.running.set(1)
        self._tasks[run_id] = asyncio.create_task(self._sync(run_id, trigger))
        return True, run_id

    # -- syncs -----------------------------------------------------------------------------
    async def sync_once(self, trigger: str) -> SyncResult | None:
        """Run one sync now and wait for it; None if one was already running."""
        started, run_id = self.start_sync(trigger)
        return await self._tasks[run_id] if started else None

    async def _sync(self, run_id: str, trigger: str) -> SyncResult:
        with run_context(run_id):
            log.info("sync %s started (%s)", run_id, trigger)
            lines = EventLines(log.info, interval=60)

            def on_event(event: object) -> None:
                if isinstance(event, Progress):
                    self.state.progress = event.percent
                lines(event)

            self.state.progress = None
            try:
                result = await asyncio.to_thread(run_sync, self.settings, stop_event=self._thread_stop,
                                                 on_event=on_event)
            except Exception as exc:  # a bug must not kill the daemon: record and go on
                log.exception("sync %s crashed", run_id)
                now = datetime.now(timezone.utc)
                result = SyncResult(ok=False, reason=f"internal error: {exc}", started=now, ended=now, kind="error")
            result.run_id = run_id
            previous = self.state.last
            self.state.history.append(result)
            self.state.running = None
            self.state.progress = None
            self._tasks.pop(run_id, None)
            self.metrics_.running.set(0)
            self.metrics_.observe_sync(result)
            if result.kind == "degraded":
                log.warning("sync %s degraded: %s", run_id, result.summary())
            elif result.ok:
                log.info("sync %s succeeded: %s", run_id, result.summary())
            else:
                log.error("sync %s failed: %s", run_id, result.reason)
            try:
                await asyncio.to_thread(st.save_history, self.settings.resolved_state_dir(), self.state.history)
            except OperationFailed as exc:
                log.warning("sync history not saved: %s", exc)
            self._start_report(result)
            event = st.webhook_event(previous, result)
            if event and self.settings.webhook_url:
                self._spawn(self._call_webhook(event, result))
            if self.vcenter and result.ok and result.generation is not None:  # something changed
                if (notify := self.vcenter.published(result.generation)) is not None:
                    self._spawn(notify)
        return result

    async def _call_webhook(self, event: str, result: SyncResult) -> None:
        """POST a sync event to the webhook (see :meth:`_post_webhook`)."""
        s = self.settings
        payload = st.webhook_payload(
            event, result, site=s.library_name, host=socket.gethostname(),
            last_success=st.last_success_time(self.state.history, None))
        await self._post_webhook(event, payload)

    async def _post_webhook(self, event: str, payload: dict[str, Any]) -> None:
        """POST the event to the webhook when one is set: a few tries, bounded; failures are logged, never raised."""
        s = self.settings
        if not s.webhook_url:
            return
        payload = {"event": event, "site": s.library_name, "host": socket.gethostname()} | payload
        timeout = aiohttp.ClientTimeout(total=10)
        for attempt in range(1, WEBHOOK_TRIES + 1):
            try:
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    async with session.post(s.webhook_url, json=payload) as resp:
                        if resp.status < 300:
                            log.info("webhook: %s sent (HTTP %d)", event, resp.status)
                            return
                        problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                problem = str(exc) or type(exc).__name__
            log.warning("webhook: %s not delivered (try %d of %d): %s", event, attempt, WEBHOOK_TRIES, problem)
            if attempt < WEBHOOK_TRIES:
                try:
                    await asyncio.wait_for(self.stop.wait(), timeout=2 ** attempt)
                    return
                except asyncio.TimeoutError:
                    pass

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
        """Sync at start (unless skipped), then one sync per schedule tick (plus the random delay if enabled)."""
        s = self.settings
        self._start_report(None)  # the upstream learns the site is up
        published = await asyncio.to_thread(current_generation, s.library)
        if s.sync_skip_initial and published is not None:
            log.info("sync at start skipped (sync_skip_initial): generation %d is published", published)
        else:
            if s.sync_skip_initial:
                log.info("sync_skip_initial is set, but nothing is published yet: syncing at start")
            await self.sync_once("start")
        while not self.stop.is_set():
            tick = next_run(s.sync_schedule, datetime.now(timezone.utc), s.tz)
            delay = random_delay(s.sync_delay, s.sync_delay_max_seconds, self.rng)
            when = tick + timedelta(seconds=delay)
            self.state.next_run = when
            self.metrics_.next_run.set(when.timestamp())
            log.info("next sync at %s (schedule %r%s)", when.isoformat(timespec="seconds"), s.sync_schedule,
                     f", random delay {delay:.0f}s" if s.sync_delay else "")
            if not await self._sleep_until(when):
                break
            await self.sync_once("schedule")  # skipped (logged) when an on-demand sync runs

    # -- lifecycle -------------------------------------------------------------------------
    def _on_stop_signal(self, sig: signal.Signals) -> None:
        log.info("%s received: stopping (running downloads get %gs; send it again to cut them)",
                 sig.name, self.settings.shutdown_grace_seconds)
        self.stop.set()
        self._thread_stop.set()

    def _on_second_signal(self, sig: signal.Signals) -> None:
        log.warning("%s received again: cutting running downloads", sig.name)
        self._cut.set()

    def more_signals(self) -> dict[signal.Signals, Callable[[signal.Signals], None]]:
        """Signals beyond the stop signals this daemon handles (a relay: SIGHUP reloads its site keys)."""
        return {}

    def more_services(self) -> list[Coroutine[Any, Any, Any]]:
        """Long-running parts beyond the web servers and the scheduler (a relay: its sshd)."""
        return []

    async def run(self, *, on_started: Callable[[list[str]], None] | None = None) -> None:
        """Listen, then sync and schedule until SIGTERM/SIGINT (call :func:`check_start` first).

        No sync starts before every web server listens, so a port in use is the one error shown.
        """
        with capture_signals(self._on_stop_signal, self._on_second_signal, stopping=self.stop.is_set,
                             also=self.more_signals()):
            servers, front, listening = self._start_web(on_started)
            try:
                started = await self._all_listening(servers, listening)
            finally:
                if self.stop.is_set():
                    await asyncio.gather(*front, return_exceptions=True)
            if not started:
                return
            servers += front + [asyncio.create_task(c) for c in self.more_services()]
            sched = asyncio.create_task(self.scheduler())
            done, _ = await asyncio.wait({*servers, sched}, return_when=asyncio.FIRST_COMPLETED)
            self.stop.set()
            self._thread_stop.set()
            _ = [task.cancel() for task in self._reports]  # a report never delays the stop
            await asyncio.gather(*servers, sched, *self._tasks.values(), *self._background, *self._reports,
                                 return_exceptions=True)
            for task in done:
                if (exc := task.exception()) is not None:
                    raise exc
