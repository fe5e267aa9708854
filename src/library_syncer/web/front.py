"""HTTPS with certificate files through Caddy: the app on a private unix socket, Caddy in front.

:func:`serve_behind_caddy` is :func:`~.runner.serve_app` for HTTPS when Caddy terminates TLS
(``SYNCER_TLS_FRONT=caddy``, the default): the app (created with ``front_sends_files``) listens
on a unix socket in a private folder, Caddy (:class:`~.caddy.CaddyFront`) serves the given
certificate on host:port, answers each request through the app and sends the library files
itself. SIGTERM/SIGINT stop Caddy gracefully (running downloads get the grace), a second one
kills it (cuts them); then the app stops. If Caddy exits on its own, the app stops and
OperationFailed says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import tempfile
from pathlib import Path
from typing import Callable

from aiohttp import web

from ..config import Settings
from ..errors import OperationFailed
from ..util.signals import capture_signals
from .caddy import CaddyFront
from .limits import HttpLimits
from .rules import subscription_urls
from .runner import serve_app

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # Caddy loads a certificate file at once: a slow start is a failure


def free_port(host: str) -> int:
    """A port the kernel has free on ``host`` now (for ``--port 0``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


async def serve_behind_caddy(
    app: web.Application, settings: Settings, certificate: tuple[Path, Path], *, host: str, port: int,
    shutdown_grace: float, on_started: Callable[[list[str]], None] | None = None,
    limits: HttpLimits | None = None,
) -> None:
    """Serve ``app`` over HTTPS on host:port with Caddy terminating TLS, until SIGTERM/SIGINT."""
    stop, cut, app_stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    port = port or free_port(host or "0.0.0.0")
    with tempfile.TemporaryDirectory(prefix="library-syncer-front-") as private:
        sock = Path(private) / "web.sock"
        listening = asyncio.Event()
        server = asyncio.create_task(serve_app(
            app, "", 0, unix_path=str(sock), stop_event=app_stop, cut_event=cut, handle_signals=False,
            shutdown_grace=shutdown_grace, limits=limits, on_started=lambda _: listening.set()))
        front = CaddyFront(settings.model_copy(update={"http_host": host}), f"unix/{sock}", Path(private) / "caddy",
                           https_port=port, http_port=port, certificate=certificate)

        def on_signal(sig: signal.Signals) -> None:
            log.info("%s received", sig.name)
            stop.set()

        def on_second_signal(sig: signal.Signals) -> None:
            log.warning("%s received again: cutting running downloads", sig.name)
            cut.set()
            front.kill()

        try:
            with capture_signals(on_signal, on_second_signal, stopping=stop.is_set):
                if await _first(server, listening.wait(), stop.wait()) != 0:
                    return
                started = asyncio.ensure_future(front.start(timeout=START_TIMEOUT))
                if await _first(server, started, stop.wait()) != 0:
                    started.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await started
                    return
                urls = subscription_urls(host, port, tls=True, hostname=settings.tls_name or socket.gethostname())
                log.info("serving on %s (TLS by caddy); subscription URL: %s", front.config["apps"]["http"][
                    "servers"]["library"]["listen"][0], " ".join(urls))
                if on_started is not None:
                    on_started(urls)
                if await _first(server, front.wait(), stop.wait()) == 0:
                    raise OperationFailed(f"caddy (the HTTPS front) exited with code {front.returncode}"
                                          + (f": {front.last_error}" if front.last_error else ""))
                log.info("web server stopping: no new connections; running downloads get up to %gs",
                         shutdown_grace)
                await front.stop(shutdown_grace + 5)
        finally:
            if front.child is not None and front.returncode is None:
                await front.stop(shutdown_grace + 5)
            app_stop.set()
            await server  # its own error (the socket could not be bound) is raised here


async def _first(server: asyncio.Task, *waits) -> int:
    """Wait for the first of ``waits`` (futures or coroutines) or the end of ``server``: the index of
    the one that ended (-1: ``server``). The other waits are cancelled (``server`` never, a future given
    is left running); a wait that raised raises here."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    await asyncio.wait({server, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    winner = -1
    for index, task in enumerate(tasks):
        if task.done() and winner == -1:
            winner = index
            task.result()
        elif not isinstance(waits[index], asyncio.Future):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if winner == -1 and server.done():
        server.result()
    return winner
