"""Run a web app on one address until told to stop, then shut down gracefully.

:func:`serve_app` cooperates with other tasks of the same asyncio loop: it never
blocks, installs SIGTERM/SIGINT handlers only when asked, and stops when the
given event is set. On stop it closes the listening socket at once, lets
running requests (downloads) finish for ``shutdown_grace`` seconds, then returns.
Connections are held to the caps and timeouts of :class:`~.limits.HttpLimits`
(web/guard.py), and the open-file limit is raised to what the cap needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import ssl
from typing import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..errors import ConfigError
from .app import client_address
from .connections import AcceptErrorFilter, ConnectionGuard, GuardedHandler, release_files, reserve_files
from .limits import HttpLimits
from ..util.net import host_port
from ..util.signals import capture_signals
from .rules import subscription_urls

log = logging.getLogger(__name__)
access_log = logging.getLogger("library_syncer.web.access")

LISTEN_BACKLOG = 512  # a burst of subscribers waits in the kernel queue instead of SYN retries


REQUEST_OBSERVER = web.AppKey[Callable[[str, int, int], None]]("request_observer")
"""Optional app value called with (method, status, body bytes) after each request (metrics)."""


class AccessLogger(AbstractAccessLogger):
    """One line per request: client, method, path, status, bytes sent, duration (no headers)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        sent = _body_bytes(request, response)
        app = getattr(request, "app", None)
        observer = app.get(REQUEST_OBSERVER) if app is not None else None
        if observer is not None:
            observer(request.method, response.status, sent if isinstance(sent, int) else 0)
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info("%s %s %s %s %s %.3fs", client_address(request), request.method,
                             request.rel_url.raw_path_qs, response.status, sent, time)

    @property
    def enabled(self) -> bool:
        return True  # metrics count every request even when access lines are not logged


def _body_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int | str:
    """Body bytes sent ('-' when a file download did not complete)."""
    if hasattr(response, "bytes_sent"):  # a library file: sendfile bypasses aiohttp's counters
        return "-" if response.bytes_sent is None else response.bytes_sent
    if request.method == "HEAD" or response.status in (204, 304):
        return 0
    return response.content_length if response.content_length is not None else response.body_length


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_grace: float = 30,
    on_started: Callable[[list[str]], None] | None = None,
    stop_event: asyncio.Event | None = None,
    handle_signals: bool = True,
    unix_path: str | None = None,
    cut_event: asyncio.Event | None = None,
    limits: HttpLimits | None = None,
    public_name: str | None = None,
    announce: bool = True,
) -> None:
    """Serve ``app`` on host:port (or the unix socket ``unix_path``) until SIGTERM/SIGINT (if
    ``handle_signals``) or ``stop_event``.

    Raises ConfigError (one line naming the address) when it cannot be bound.
    ``on_started`` receives the subscription URL(s) once the socket listens (port 0
    picks a free port, shown in the URLs; a unix socket gives no URL).  Setting ``cut_event``
    during the graceful stop cuts the running downloads (a second SIGTERM does the same when
    ``handle_signals``).  ``limits``: timeouts and connection caps (default: HttpLimits()).
    ``public_name`` (TLS_NAME) is shown in the subscription URL instead of the host name;
    ``announce=False`` logs no subscription URL (a port that only redirects).
    """
    limits = limits or HttpLimits()
    stop = stop_event if stop_event is not None else asyncio.Event()
    where = unix_path if unix_path is not None else host_port(host, port)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=shutdown_grace)
    await runner.setup()
    loop = asyncio.get_running_loop()
    allowed = reserve_files(limits, where)
    accept_filter = AcceptErrorFilter.install(loop)
    guard = ConnectionGuard(dataclasses.replace(limits, max_connections=allowed), where, loop)
    server: asyncio.AbstractServer | None = None
    cleanup: asyncio.Future | None = None

    def connection() -> GuardedHandler:
        assert runner.server is not None
        return GuardedHandler(runner.server, guard, loop=loop, access_log_class=AccessLogger, access_log=access_log)

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s received", sig.name)
        stop.set()

    def on_second_signal(sig: signal.Signals) -> None:  # a signal while stopping cuts the running downloads
        if cleanup is not None:
            log.warning("%s received again: cutting running downloads", sig.name)
            cleanup.cancel()

    with contextlib.ExitStack() as signals:
        try:
            try:
                if unix_path is not None:
                    server = await loop.create_unix_server(connection, unix_path, backlog=LISTEN_BACKLOG)
                else:
                    server = await loop.create_server(
                        connection, host, port, ssl=ssl_context, backlog=LISTEN_BACKLOG,
                        ssl_handshake_timeout=limits.header_timeout if ssl_context is not None else None,
                    )
            except OSError as exc:
                raise ConfigError(f"web server cannot listen on {where}: {exc.strerror or exc}") from None
            if unix_path is not None:
                urls: list[str] = []
                log.info("serving on unix socket %s", unix_path)
            else:
                bound_port = server.sockets[0].getsockname()[1] if server.sockets else port
                guard.where = host_port(host, bound_port)
                urls = subscription_urls(host, bound_port, tls=ssl_context is not None,
                                         hostname=public_name or socket.gethostname())
                if announce:
                    log.info("serving on %s; subscription URL: %s", guard.where, " ".join(urls))
                else:
                    log.info("serving on %s", guard.where)
            if on_started is not None:
                on_started(urls)
            if handle_signals:
                signals.enter_context(capture_signals(on_signal, on_second_signal, stopping=stop.is_set))
            await stop.wait()
            log.info("web server stopping: no new connections; running downloads get up to %gs", shutdown_grace)
        finally:
            if server is not None:
                server.close()  # stop listening; the connections are the runner's to drain
            cleanup = drain = asyncio.ensure_future(runner.cleanup())
            cutter = asyncio.ensure_future(cut_event.wait()) if cut_event is not None else None
            if cutter is not None:
                cutter.add_done_callback(lambda _: drain.cancel())
            try:
                await drain
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not drain.cancelled() or (task is not None and task.cancelling()):
                    raise
            finally:
                if cutter is not None:
                    cutter.cancel()
                guard.refusals.close()
                if accept_filter is not None:
                    accept_filter.uninstall(loop)
                release_files(allowed)
    log.info("web server stopped")
