"""Bandwidth timetable rules, pure: the slot in force at an instant, and when the rate next changes.

SYNC_MAX_BW (syntax: :mod:`library_syncer.config.bwtable`) is read on the wall clock of
TZ (UTC when unset): an entry ``08:00,512k`` is in force from the moment the local clock
shows 08:00 until the clock shows the next entry's time; before the first entry of the
day (or of the week, for ``Day-`` entries) the last one is still in force.  At
daylight-saving changes the wall clock decides too: an entry in the hour that spring
skips takes effect when the clock jumps past its time, and the hour that autumn repeats
replays its slots.  Instants are aware datetimes (a naive one is taken as UTC), so tests
pass fixed values.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from ..config.bwtable import Entry, parse
from ..util.fmt import iso_utc

_DAY = 1440
_WEEK = 7 * _DAY
_MINUTE = timedelta(minutes=1)


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Timetable:
    """A parsed SYNC_MAX_BW value: its entries, expanded to minute-of-week keys (Monday 00:00 = 0)."""

    value: str
    entries: tuple[Entry, ...]
    keys: tuple[int, ...]
    slots: tuple[Entry, ...]

    @classmethod
    def parse(cls, value: str) -> Timetable:
        """The timetable of a SYNC_MAX_BW value (ValueError naming the entry when malformed)."""
        entries = parse(value)
        weekly = sorted(((d * _DAY + e.minute, e) for e in entries for d in (range(7) if e.day is None else (e.day,))),
                        key=lambda pair: pair[0])
        return cls(" ".join(str(value).split()), entries, tuple(k for k, _ in weekly), tuple(e for _, e in weekly))

    @property
    def constant(self) -> bool:
        """True when the rate never changes (a plain value, or every entry the same rate)."""
        return len({e.bytes_per_second for e in self.entries}) == 1

    def slot_at(self, when: datetime, tz: tzinfo) -> Entry:
        """The entry in force at ``when`` on the wall clock of ``tz``."""
        local = _aware(when).astimezone(tz)
        key = local.weekday() * _DAY + local.hour * 60 + local.minute
        return self.slots[bisect_right(self.keys, key) - 1]  # index -1: the week's last entry, wrapping

    def next_change(self, when: datetime, tz: tzinfo) -> datetime | None:
        """The first instant after ``when`` at which the rate in force differs (None if it never does).

        Entries start on whole minutes of the wall clock, and every zone's offset today is a whole number
        of minutes, so the search walks whole UTC minutes: a week and a day at most, and correct
        across daylight-saving changes without special cases.
        """
        if self.constant:
            return None
        when = _aware(when).astimezone(timezone.utc)
        current = self.slot_at(when, tz).bytes_per_second
        t = when.replace(second=0, microsecond=0) + _MINUTE
        for _ in range(_WEEK + _DAY):
            if self.slot_at(t, tz).bytes_per_second != current:
                return t
            t += _MINUTE
        return None  # not reached: a table with two rates changes within a week


def limit_text(entry: Entry) -> str:
    """The slot's limit for people: ``512k``, ``unlimited`` or ``pause``."""
    return "pause" if entry.paused else "unlimited" if entry.bytes_per_second is None else entry.rate


def entry_text(entry: Entry) -> str:
    """Where the slot comes from: ``Mon-08:00,512k``, or ``always`` for a plain value."""
    return entry.text or "always"


def status(table: Timetable, when: datetime, tz: tzinfo) -> dict[str, Any]:
    """The status document's ``bandwidth`` part: the setting, the slot in force and the next change."""
    slot = table.slot_at(when, tz)
    change = table.next_change(when, tz)
    return {
        "setting": table.value,
        "slot": entry_text(slot),
        "limit": limit_text(slot),
        "bytes_per_second": slot.bytes_per_second,
        "paused": slot.paused,
        "next_change": iso_utc(change),
        "next_limit": limit_text(table.slot_at(change, tz)) if change else None,
    }

