"""Connection guard of the web server: caps at accept, a header-read timeout, the open-file
limit and rate-limited warnings (the rules are in web/limits.py).

- A connection over a cap (in total, or per client address) is reset at accept, before any
  byte is read: refusing costs one accept and no buffer, and a flood cannot hold file
  descriptors. (A 503 would need the request read first, which is what the cap bounds.)
- A connection must deliver its request headers within the header timeout, counted from
  accept (over TLS: the handshake gets that time too) or from the first byte of a further
  request on a kept-alive connection; an idle kept-alive connection is closed after the idle
  timeout (aiohttp's keep-alive timeout).
- Refusals and failed accepts (out of file descriptors) log one warning, then at most one
  summary line a minute with the count.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import threading
from typing import Any, cast

from aiohttp import web

from .limits import ConnectionCounts, HttpLimits, Throttle, plan_nofile

log = logging.getLogger("library_syncer.web.runner")

_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_files_lock = threading.Lock()
_planned_connections = 0  # connection caps of the servers running in this process


class RateLimitedWarning:
    """A warning logged at once, then at most once per ``interval`` as a count of the held-back ones."""

    def __init__(self, loop: asyncio.AbstractEventLoop, summary: str, interval: float = 60.0) -> None:
        self.loop, self.summary = loop, summary  # summary: '%d' (count) and '%g' (seconds)
        self.throttle = Throttle(interval)
        self._timer: asyncio.TimerHandle | None = None

    def warn(self, message: str, *args: Any) -> None:
        if self.throttle.hit(self.loop.time()):
            log.warning(message + "; more are counted and reported at most every %gs", *args, self.throttle.interval)
        elif self._timer is None:
            self._timer = self.loop.call_at(self.throttle.deadline, self.flush)

    def flush(self) -> None:
        """Log the count held back so far, if any."""
        self._timer = None
        held = self.throttle.flush(self.loop.time())
        if held:
            log.warning(self.summary, held, self.throttle.interval)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()


class ConnectionGuard:
    """The caps and timeouts shared by the connections of one server."""

    def __init__(self, limits: HttpLimits, where: str, loop: asyncio.AbstractEventLoop) -> None:
        self.limits, self.where = limits, where
        self.counts = ConnectionCounts(limits.max_connections, limits.max_per_client)
        self.refusals = RateLimitedWarning(
            loop, f"web server on {where}: %d more connections refused at the caps since the previous warning (at most one per %gs)")

    def admit(self, address: str) -> bool:
        cap = self.counts.admit(address)
        if cap is not None:
            value = self.limits.max_connections if cap.endswith("CONNECTIONS") else self.limits.max_per_client
            self.refusals.warn("web server on %s: connection from %s refused: %s=%d reached",
                               self.where, address or "the front", cap, value)
        return cap is None


class GuardedHandler(web.RequestHandler):
    """aiohttp's connection handler, admitted by a :class:`ConnectionGuard` and held to its
    header timeout (reads aiohttp 3.x's handler state: ``_request_count``, ``_messages``,
    ``_request_in_progress``; tests/web guards them)."""

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, keepalive_timeout=guard.limits.idle_timeout, **kwargs)
        self._guard = guard
        self._address = ""
        self._admitted = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._armed_at = 0  # requests parsed when the header timer was armed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._guard.admit(self._address):
            cast(asyncio.Transport, transport).abort()  # reset, nothing read (a stream transport)
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._disarm()
        self._guard.counts.release(self._address)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self._request_count != self._armed_at:
            self._disarm()  # a request's headers are complete
        if data and self._header_timer is None and self._awaiting_headers():
            self._arm()  # first bytes of a further request on a kept-alive connection

    def _awaiting_headers(self) -> bool:
        return (self.transport is not None and not self._request_in_progress and not self._messages
                and not self._force_close and not self._close)

    def _arm(self) -> None:
        self._armed_at = self._request_count
        self._header_timer = self._loop.call_later(self._guard.limits.header_timeout, self._header_deadline)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self._request_count == self._armed_at and self._awaiting_headers():
            log.debug("web server on %s: closing a connection from %s: no request headers within %gs",
                      self._guard.where, self._address or "the front", self._guard.limits.header_timeout)
            self.force_close()


def reserve_files(limits: HttpLimits, where: str) -> int:
    """Raise the soft open-file limit for ``limits.max_connections`` more connections (up to the
    hard limit) and return the cap it allows, with one warning when that is lower."""
    global _planned_connections
    with _files_lock:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        new_soft, allowed = plan_nofile(soft, hard, _planned_connections, limits.max_connections)
        if new_soft != soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            except (OSError, ValueError) as exc:
                log.warning("web server on %s: cannot raise the open-file limit to %d: %s", where, new_soft, exc)
                new_soft, allowed = plan_nofile(soft, soft, _planned_connections, limits.max_connections)
            else:
                log.info("open-file limit raised from %d to %d for the web server on %s", soft, new_soft, where)
        _planned_connections += allowed
    if allowed < limits.max_connections:
        log.warning("web server on %s: SYNCER_HTTP_MAX_CONNECTIONS lowered from %d to %d: the open-file limit"
                    " (hard %d) allows no more; raise it (ulimit -n, LimitNOFILE=, --ulimit nofile=)",
                    where, limits.max_connections, allowed, hard)
    return allowed


def release_files(connections: int) -> None:
    """Give back what :func:`reserve_files` planned (the soft limit stays raised)."""
    global _planned_connections
    with _files_lock:
        _planned_connections -= connections


class AcceptErrorFilter:
    """Loop exception handler: a failed accept for lack of file descriptors (asyncio logs an
    error with a traceback, every second while it lasts) becomes one rate-limited warning;
    everything else goes to the previous handler."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.previous = loop.get_exception_handler()
        self.warning = RateLimitedWarning(
            loop, "web server: %d more connection accepts failed for lack of file descriptors since the previous warning (at most one per %gs)")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if "socket" in context and isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            self.warning.warn("web server cannot accept connections: %s (open-file limit %d); retrying each second",
                              exc.strerror or exc, soft)
        elif self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)

    @classmethod
    def install(cls, loop: asyncio.AbstractEventLoop) -> "AcceptErrorFilter | None":
        """Install on ``loop`` unless one is already there; the installed one, or None."""
        if isinstance(loop.get_exception_handler(), cls):
            return None
        handler = cls(loop)
        loop.set_exception_handler(handler)
        return handler

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        self.warning.close()
        if loop.get_exception_handler() is self:
            loop.set_exception_handler(self.previous)
