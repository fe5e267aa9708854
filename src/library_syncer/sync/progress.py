"""Plain-text lines for sync events (the ``sync`` command without a terminal, the client daemon's log)."""

from __future__ import annotations

import time
from typing import Callable

from ..transport.rsync import FileChange, Progress, RsyncStats
from .result import AttemptStarted, Phase, RetryScheduled
from ..util.fmt import human_bytes


class EventLines:
    """Turns sync events into plain lines for ``say``: one per change and step, progress every ``interval`` s."""

    def __init__(self, say: Callable[[str], None], interval: float = 10.0) -> None:
        self.say = say
        self.interval = interval
        self.last = 0.0

    def __call__(self, event: object) -> None:
        if isinstance(event, Progress):
            now = time.monotonic()
            if now - self.last >= self.interval:
                self.last = now
                eta = f", ETA {event.eta_seconds}s" if event.eta_seconds is not None else ""
                self.say(f"progress: {event.percent}% {human_bytes(event.bytes)} at {human_bytes(event.rate)}/s{eta}")
        elif isinstance(event, FileChange):
            if event.action in ("transfer", "delete"):
                self.say(f"{event.flags} {event.path}")
        elif isinstance(event, Phase):
            self.say(f"{event.name}{': ' + event.detail if event.detail else ''}")
        elif isinstance(event, AttemptStarted) and event.number > 1:
            self.say(f"attempt {event.number}")
        elif isinstance(event, RetryScheduled):
            self.say(f"attempt {event.attempt} failed ({event.reason}); retrying in {event.delay:.0f}s")
        elif isinstance(event, RsyncStats):
            self.say(f"transferred: {human_bytes(event.bytes_received + event.bytes_sent)} on the wire, "
                 f"literal {human_bytes(event.literal_bytes)}, matched {human_bytes(event.matched_bytes)}")
