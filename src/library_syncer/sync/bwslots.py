"""A transfer that follows the bandwidth timetable: one rsync per slot, restarted when the rate changes.

rsync's ``--bwlimit`` is fixed for a process's life, so at a slot boundary the running
rsync is stopped the way a stop request stops it (SIGTERM: the file it was writing goes
into the partial folder) and started again with the new limit; the new one resumes from
the partial files, so nothing that had arrived is sent again.  In a ``pause`` slot no
rsync runs until the next slot; the run's stop event ends that wait at once.  The rules
(which slot, when it changes) are :mod:`.timetable`'s.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Callable

from ..util.proc import Proc
from .timetable import Timetable, entry_text, limit_text

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class SlotStarted:
    """Event: a part of the transfer runs in the timetable slot ``entry`` at ``limit`` (or waits: ``pause``)."""

    entry: str
    limit: str
    until: datetime | None  # the next rate change; None when the rate never changes


class StopAt(threading.Event):
    """A stop event for one rsync: set when ``outer`` is, or when the wall clock reaches ``deadline``.

    Only :meth:`is_set` knows this (the child-process runner polls it); the deadline is wall-clock
    time, like the timetable.
    """

    def __init__(self, outer: threading.Event | None, deadline: datetime | None,
                 clock: Callable[[], datetime] | None = None) -> None:
        super().__init__()
        self.outer, self.deadline, self.clock = outer, deadline, clock or _now

    def is_set(self) -> bool:
        return (super().is_set() or (self.outer is not None and self.outer.is_set())
                or (self.deadline is not None and self.clock() >= self.deadline))


def wait_until(when: datetime, stop: threading.Event | None) -> bool:
    """Wait until the wall clock reaches ``when``; False as soon as ``stop`` is set."""
    while (left := when.timestamp() - time.time()) > 0:
        if stop is not None:
            if stop.wait(min(left, 60)):
                return False
        else:
            time.sleep(min(left, 60))
    return not (stop is not None and stop.is_set())


def wait_out_pause(table: Timetable, tz: tzinfo, stop: threading.Event | None, emit: Callable[[object], None],
                   clock: Callable[[], datetime] = _now) -> bool:
    """Before any WAN traffic (connecting, listing): wait while a ``pause`` slot is in force.
    False when ``stop`` ended the wait."""
    while True:
        now = clock()
        slot = table.slot_at(now, tz)
        if not slot.paused:
            return True
        change = table.next_change(now, tz)
        assert change is not None  # a table that pauses always is refused when read
        emit(SlotStarted(entry_text(slot), limit_text(slot), change))
        log.info("bandwidth slot %r: no WAN traffic until %s", entry_text(slot),
                 change.astimezone(tz).isoformat(timespec="minutes"))
        if not wait_until(change, stop):
            return False


def transfer_in_slots(table: Timetable, tz: tzinfo, stop: threading.Event | None,
                      run_one: Callable[[str, threading.Event], Proc], emit: Callable[[object], None],
                      clock: Callable[[], datetime] = _now) -> Proc:
    """Run ``run_one(bwlimit, stop_event)`` slot by slot until it ends by itself or ``stop`` is set.

    Returns the last rsync's :class:`Proc`; ``stopped`` is True only when ``stop`` ended the
    transfer (a slot boundary is no stop).  A constant rate runs one rsync with no deadline.
    """
    while True:
        now = clock()
        slot, change = table.slot_at(now, tz), table.next_change(now, tz)
        if not table.constant:
            emit(SlotStarted(entry_text(slot), limit_text(slot), change))
            log.info("bandwidth slot %r: %s until %s", entry_text(slot), limit_text(slot),
                     change.astimezone(tz).isoformat(timespec="minutes") if change else "further notice")
        if slot.paused:
            assert change is not None  # a table that pauses always is refused when read
            if not wait_until(change, stop):
                return Proc(0, "", "", True)
            continue
        proc = run_one(slot.bwlimit, StopAt(stop, change, clock))
        if proc.stopped and not (stop is not None and stop.is_set()) and change is not None:
            log.info("bandwidth slot ends: rsync restarts with the next slot's limit (resuming its partial files)")
            continue
        return proc
