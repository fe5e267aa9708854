"""One sync of a site, run inside the site's namespace by the bench.

Usage: ``python site_sync.py SETTINGS_JSON``.  The JSON holds setting names and
values (see ``library_syncer.config``) plus ``retry_base`` (seconds, the first
retry's upper bound; the product's default is 10 s).  Prints one JSON line per
event (``attempt``, ``phase``, ``retry``, ``progress`` at most 5 a second,
``stats``, ``slot`` of the bandwidth timetable) and finally ``result`` (``SyncResult.to_dict()``); each line has the
wall-clock time ``t``.
"""

from __future__ import annotations

import json
import sys
import time

from library_syncer.config import load_settings
from library_syncer.sync.bwslots import SlotStarted
from library_syncer.sync.result import AttemptStarted, Phase, RetryScheduled
from library_syncer.sync.run import run_sync
from library_syncer.transport.rsync import Progress, RsyncStats


def emit(event: str, **data) -> None:
    print(json.dumps({"event": event, "t": time.time(), **data}), flush=True)


def main() -> None:
    values = json.loads(sys.argv[1])
    retry_base = float(values.pop("retry_base", 10))
    if values.pop("barrier", False):  # start together with other sites: wait for a line on stdin
        emit("ready")
        sys.stdin.readline()
    settings = load_settings(**values)
    last_progress = 0.0

    def on_event(event) -> None:
        nonlocal last_progress
        if isinstance(event, Progress):
            now = time.monotonic()
            if now - last_progress >= 0.2:
                last_progress = now
                emit("progress", bytes=event.bytes, percent=event.percent, rate=event.rate)
        elif isinstance(event, AttemptStarted):
            emit("attempt", number=event.number)
        elif isinstance(event, Phase):
            emit("phase", name=event.name)
        elif isinstance(event, RetryScheduled):
            emit("retry", attempt=event.attempt, delay=event.delay, reason=event.reason)
        elif isinstance(event, RsyncStats):
            emit("stats", **event.to_dict())
        elif isinstance(event, SlotStarted):
            emit("slot", entry=event.entry, limit=event.limit, until=event.until.timestamp() if event.until else None)

    result = run_sync(settings, on_event=on_event, retry_base=retry_base)
    emit("result", **result.to_dict())


if __name__ == "__main__":
    main()
