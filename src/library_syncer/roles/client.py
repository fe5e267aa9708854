"""The remote-site daemon: serve the published generation, sync now, then on schedule.

The web server and the scheduler share one asyncio loop; each sync runs in a
worker thread (``run_sync`` is blocking) and at most one runs at a time, whether
started by the schedule or on demand (``POST /_syncer/api/sync``).  Every log
line of a sync carries its run id.  The sync history survives restarts (state
folder), feeds the status page, the JSON API and the metrics, and a webhook is
called when syncs start failing and when they recover.
SIGTERM/SIGINT stop the scheduler, end a running rsync (its staging tree is
kept so the next start resumes) and let running downloads finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import random
import signal
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import aiohttp

from ..config import Settings
from ..errors import ConfigError, OperationFailed
from ..logs import run_context
from ..publish.generations import Layout
from ..publish.pins import GenerationPins
from . import site_status as st
from ..sync.progress import EventLines
from .site_metrics import ClientMetrics
from ..sync.schedule import next_run, random_delay
from ..sync.result import SyncResult
from ..sync.plan import prepare
from ..sync.run import run_sync

log = logging.getLogger(__name__)

HISTORY_SIZE = 50
ACME_START_TIMEOUT = 3600.0  # Caddy keeps retrying the CA meanwhile; then the daemon exits non-zero
WEBHOOK_TRIES = 3


@dataclass
class ClientState:
    """What the daemon knows about its syncs (read by the status page, API and metrics)."""

    history: deque[SyncResult] = field(default_factory=lambda: deque(maxlen=HISTORY_SIZE))
    running: str | None = None  # run id of the sync in progress
    next_run: datetime | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def last(self) -> SyncResult | None:
        return self.history[-1] if self.history else None

    def new_run_id(self) -> str:
        return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{next(self._ids)}"


def served_root(settings: Settings) -> GenerationPins:
    """Root provider for the web app: the generation each subscriber reads, an empty folder before the first."""
    empty = Layout(settings.library).meta / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    return GenerationPins(settings.library, settings.generation_grace_seconds, fallback=empty)


def check_start(settings: Settings) -> None:
    """The start-up checks, before anything starts: ConfigError (one line naming the setting) for a library
    folder that cannot be used, an unusable host-key file or a web port that cannot be bound."""
    prepare(settings, startup=True)  # no network; the site key may be installed later
    acme = bool(settings.tls_name) and not settings.tls_files()
    check_ports(settings.http_host, listen_ports(settings, acme=acme))


def listen_ports(settings: Settings, *, acme: bool) -> list[tuple[str, int]]:
    """(setting, port) of every TCP port the site's web servers (or Caddy in front) listen on."""
    s = settings
    if acme:
        ports = [("https_port" if s.https_port else "http_port", s.https_port or s.http_port),
                 ("acme_http_port", s.acme_http_port)]
    elif s.tls_files() and s.https_port:
        ports = [("https_port", s.https_port)] + ([("http_port", s.http_port)] if s.http_port != s.https_port else [])
    else:
        ports = [("http_port", s.http_port)]
    return ports + ([("status_port", s.status_port)] if s.status_port else [])


def check_ports(host: str, ports: list[tuple[str, int]]) -> None:
    """ConfigError (one line naming the setting) unless every port can be bound on ``host`` now."""
    seen: dict[int, str] = {}
    for setting, port in ports:
        if port and port in seen:
            raise ConfigError(f"settings {seen[port]} and {setting} are both port {port}")
        seen[port] = setting
        try:
            addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise ConfigError(f"setting http_host: cannot resolve {host!r} ({exc.strerror})") from None
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as exc:
                    if exc.errno == errno.EADDRNOTAVAIL:
                        raise ConfigError(f"setting http_host: cannot listen on {address[0]}, not an address "
                                          f"of this host ({exc.strerror})") from None
                    raise ConfigError(f"setting {setting}: cannot listen on {address[0]} port {port} "
                                      f"({exc.strerror})") from None


class ClientDaemon:
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
        )

    def metrics(self) -> bytes:
        """The Prometheus text, library gauges refreshed (reads files: call from a worker thread)."""
        self.metrics_.observe_published(st.published_library(self.settings.library),
                                        len(st.held_back_now(self.state.history)))
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
            try:
                result = await asyncio.to_thread(run_sync, self.settings, stop_event=self._thread_stop,
                                                 on_event=EventLines(log.info, interval=60))
            except Exception as exc:  # a bug must not kill the daemon: record and go on
                log.exception("sync %s crashed", run_id)
                now = datetime.now(timezone.utc)
                result = SyncResult(ok=False, reason=f"internal error: {exc}", started=now, ended=now, kind="error")
            result.run_id = run_id
            previous = self.state.last
            self.state.history.append(result)
            self.state.running = None
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
            event = st.webhook_event(previous, result)
            if event and self.settings.webhook_url:
                self._spawn(self._call_webhook(event, result))
        return result

    async def _call_webhook(self, event: str, result: SyncResult) -> None:
        """POST the event to the webhook: a few tries, bounded; failures are logged, never raised."""
        s = self.settings
        payload = st.webhook_payload(
            event, result, site=s.library_name, host=socket.gethostname(),
            last_success=st.last_success_time(self.state.history, None))
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
        """Initial sync, then one sync per schedule tick (plus the random delay if enabled)."""
        s = self.settings
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
    def _on_signal(self, signame: str) -> None:
        if self.stop.is_set():
            log.warning("%s received again: cutting running downloads", signame)
            self._cut.set()
            return
        log.info("%s received: stopping (running downloads get %gs; send it again to cut them)",
                 signame, self.settings.shutdown_grace_seconds)
        self.stop.set()
        self._thread_stop.set()

    def _apps(self):
        """The library app, and the status app when the status endpoints have a port of their own."""
        from ..web.app import create_app
        from ..web.runner import REQUEST_OBSERVER
        from ..web.ops import add_status_routes
        from aiohttp import web

        s = self.settings
        password = s.library_password_value()
        library = create_app(served_root(s), browse=s.library_browse, password=password,
                             behind_proxy=self.acme)
        library[REQUEST_OBSERVER] = self.metrics_.observe_request
        status_app = web.Application() if s.status_port else library
        add_status_routes(status_app, self, token=s.admin_token_value(), password=password)
        return library, (status_app if s.status_port else None)

    @property
    def acme(self) -> bool:
        """Automatic HTTPS: TLS_NAME without certificate files, Caddy in front."""
        return bool(self.settings.tls_name) and self.settings.tls_files() is None

    async def _front(self, socket_path: Path, web_started: asyncio.Event,
                     on_started: Callable[[list[str]], None] | None) -> None:
        """Run Caddy in front of the library (unix socket) until stopped; raise if it dies."""
        from ..web.caddy import CaddyFront

        s = self.settings
        https_port = s.https_port or s.http_port
        front = self.front = CaddyFront(s, f"unix/{socket_path}", s.certs_dir / "acme",
                                        https_port=https_port, http_port=s.acme_http_port)
        try:
            if not await self._until_stopped(web_started.wait()):
                return
            if not await self._until_stopped(front.start(timeout=ACME_START_TIMEOUT)):
                return
            self.thumbprint = front.last_thumbprint
            url = f"https://{s.tls_name}{'' if https_port == 443 else f':{https_port}'}/lib.json"
            log.info("subscription URL: %s (certificate SHA-1 thumbprint %s)", url, self.thumbprint)
            if on_started is not None:
                on_started([url])
            if await self._until_stopped(front.wait()):
                raise OperationFailed(f"caddy (HTTPS for TLS_NAME={s.tls_name}) exited with code "
                                      f"{front.returncode}" + (f": {front.last_error}" if front.last_error else ""))
        finally:
            await front.stop()

    async def _until_stopped(self, coro) -> bool:
        """Run ``coro`` until it ends (True; its exception is raised) or the daemon stops (False, cancelled)."""
        task = asyncio.ensure_future(coro)
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    async def _serve(self, settings_named: str, app, host: str, port: int, listening: asyncio.Event,
                     on_started: Callable[[list[str]], None] | None = None, **kw) -> None:
        """``serve_app`` whose bind error names the settings behind the address."""
        from ..web.limits import HttpLimits
        from ..web.runner import serve_app

        kw.setdefault("limits", HttpLimits.from_settings(self.settings))

        def started(urls: list[str]) -> None:
            listening.set()
            if on_started is not None:
                on_started(urls)

        try:
            await serve_app(app, host, port, on_started=started, stop_event=self.stop, handle_signals=False, **kw)
        except ConfigError as exc:
            raise ConfigError(f"{settings_named}: {exc}") from None

    async def _all_listening(self, servers: list[asyncio.Task], listening: list[asyncio.Event]) -> bool:
        """Wait until every web server listens (True); raise the error of one that could not start.

        False when the daemon was stopped meanwhile."""
        async def all_set() -> None:
            for event in listening:
                await event.wait()

        ready = asyncio.ensure_future(all_set())
        try:
            await asyncio.wait({ready, *servers}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if all(e.is_set() for e in listening) and not any(t.done() for t in servers):
            return True
        self.stop.set()
        await asyncio.gather(*servers, return_exceptions=True)
        for task in servers:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()
        return False

    async def run(self, *, on_started: Callable[[list[str]], None] | None = None) -> None:
        """Listen, then sync and schedule until SIGTERM/SIGINT (call :func:`check_start` first).

        No sync starts before every web server listens, so a port in use is the one error shown.
        """
        s = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig.name)
        library, status_app = self._apps()
        ssl_context = None
        tls = s.tls_files()
        if tls:
            from ..web.tls import load_tls_context, sha1_thumbprint

            ssl_context = load_tls_context(*tls)
            self.thumbprint = sha1_thumbprint(tls[0])
            log.info("TLS certificate %s, SHA-1 thumbprint %s", tls[0], self.thumbprint)
        listening = [asyncio.Event()]
        front: list[asyncio.Task] = []
        if self.acme:  # the app listens on a private unix socket; Caddy serves HTTPS in front of it
            state = s.resolved_state_dir()
            state.mkdir(parents=True, exist_ok=True)
            socket_path = state / "web.sock"
            servers = [asyncio.create_task(self._serve(
                "setting state_dir", library, "", 0, listening[0], unix_path=str(socket_path),
                shutdown_grace=s.shutdown_grace_seconds, cut_event=self._cut,
            ))]
            front = [asyncio.create_task(self._front(socket_path, listening[0], on_started))]
        else:
            port_setting = "https_port" if tls and s.https_port else "http_port"
            servers = [asyncio.create_task(self._serve(
                f"settings http_host/{port_setting}", library, s.http_host,
                s.https_port if tls and s.https_port else s.http_port, listening[0], on_started,
                ssl_context=ssl_context, shutdown_grace=s.shutdown_grace_seconds, cut_event=self._cut,
                public_name=s.tls_name if tls else None,
            ))]
            if tls and s.https_port and s.https_port != s.http_port:  # plain HTTP redirects, as Caddy did
                from ..web.redirect import redirect_app

                listening.append(asyncio.Event())
                servers.append(asyncio.create_task(self._serve(
                    "settings http_host/http_port", redirect_app(s.tls_name, s.https_port), s.http_host,
                    s.http_port, listening[-1], shutdown_grace=1, announce=False,
                )))
        if status_app is not None:
            listening.append(asyncio.Event())
            servers.append(asyncio.create_task(self._serve(
                "settings http_host/status_port", status_app, s.http_host, s.status_port, listening[-1],
                ssl_context=ssl_context, shutdown_grace=1,
            )))
        try:
            started = await self._all_listening(servers, listening)
        finally:
            if self.stop.is_set():
                await asyncio.gather(*front, return_exceptions=True)
        if not started:
            return
        servers += front
        sched = asyncio.create_task(self.scheduler())
        done, _ = await asyncio.wait({*servers, sched}, return_when=asyncio.FIRST_COMPLETED)
        self.stop.set()
        self._thread_stop.set()
        await asyncio.gather(*servers, sched, *self._tasks.values(), *self._background, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
