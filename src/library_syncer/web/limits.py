"""Pure rules of the web server's connection limits: who may connect, how many files that needs,
and how often a refusal is worth a log line.

Nothing here touches sockets or the clock: web/runner.py applies these rules.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

FDS_PER_CONNECTION = 2  # the socket and the library file being sent
FDS_RESERVED = 64  # listening sockets, logs, the loop, pipes of rsync/ssh/Caddy, the status server


@dataclass(frozen=True)
class HttpLimits:
    """Timeouts and connection caps of one web server (see the ``http_*`` settings)."""

    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    max_connections: int = 512
    max_per_client: int = 64

    @classmethod
    def from_settings(cls, settings) -> "HttpLimits":
        """The limits given by a :class:`~library_syncer.config.Settings`."""
        return cls(
            header_timeout=settings.http_header_timeout_seconds,
            idle_timeout=settings.http_idle_timeout_seconds,
            max_connections=settings.http_max_connections,
            max_per_client=settings.http_max_per_client,
        )


class ConnectionCounts:
    """Open connections in total and per client address, checked against the caps at accept.

    An empty address (a unix socket: our own TLS front) counts in the total only;
    the front applies its own limits per client.
    """

    def __init__(self, max_connections: int, max_per_client: int) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.total = 0
        self.per_client: Counter[str] = Counter()

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; or, over a cap, the name of that cap."""
        if self.total >= self.max_connections:
            return "SYNCER_HTTP_MAX_CONNECTIONS"
        if address and self.per_client[address] >= self.max_per_client:
            return "SYNCER_HTTP_MAX_PER_CLIENT"
        self.total += 1
        if address:
            self.per_client[address] += 1
        return None

    def release(self, address: str) -> None:
        """Forget a connection that :meth:`admit` counted."""
        self.total -= 1
        if address:
            self.per_client[address] -= 1
            if self.per_client[address] <= 0:
                del self.per_client[address]


class Throttle:
    """At most one report per ``interval`` seconds, counting the events held back in between.

    ``hit(now)`` is True when the event should be reported now; otherwise it is held
    back until ``flush(now)`` at :attr:`deadline` hands over the count.
    """

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self.deadline = -math.inf  # end of the current quiet window
        self.held = 0

    def hit(self, now: float) -> bool:
        """Record one event; True when it should be reported at once."""
        if now >= self.deadline and not self.held:
            self.deadline = now + self.interval
            return True
        self.held += 1
        return False

    def flush(self, now: float) -> int:
        """The events held back so far (0 if none), and a new quiet window when there were some."""
        held, self.held = self.held, 0
        self.deadline = now + self.interval if held else self.deadline
        return held


def plan_nofile(soft: int, hard: int, reserved: int, connections: int) -> tuple[int, int]:
    """(new soft RLIMIT_NOFILE, connections it allows) for ``connections`` more on top of
    ``reserved`` connections already planned; a negative ``hard`` means unlimited."""
    need = FDS_RESERVED + FDS_PER_CONNECTION * (reserved + connections)
    if need <= soft:
        return soft, connections
    if hard < 0 or need <= hard:
        return need, connections
    room = (hard - FDS_RESERVED) // FDS_PER_CONNECTION - reserved
    return hard, max(1, room)
