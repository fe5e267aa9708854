"""The syntax of SYNC_MAX_BW, pure: a plain rsync ``--bwlimit`` value or a bandwidth timetable.

The timetable uses rclone's ``--bwlimit`` form, which administrators know: space-separated
entries ``HH:MM,RATE`` (every day) or ``Day-HH:MM,RATE`` (``Mon``..``Sun``, or the full
name), each in force from its time until the next entry, wrapping around the day or the
week.  RATE is an rsync ``--bwlimit`` value (KiB/s by default; ``512k``, ``1.5m``,
``10M``), ``off`` (unlimited) or ``pause`` (no transfer in that slot).  When and how the
slots apply is :mod:`library_syncer.sync.timetable`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# rsync --bwlimit syntax: a number with an optional unit suffix (K=1024 bytes by default).
BWLIMIT_RE = re.compile(r"^\d+(\.\d+)?([KMGkmg]([iI]?[bB])?)?$")
_ENTRY_RE = re.compile(r"^(?:([A-Za-z]+)-)?(\d{1,2}):(\d\d),(.*)$")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
OFF, PAUSE = "off", "pause"


@dataclass(frozen=True)
class Entry:
    """One timetable entry: from ``minute`` of ``day`` (0 = Monday; None = every day) the ``rate``."""

    day: int | None
    minute: int  # minute of the day, 0..1439
    rate: str  # an rsync --bwlimit value, "off" or "pause"
    text: str  # the entry as written ("" for a plain value)

    @property
    def paused(self) -> bool:
        return self.rate == PAUSE

    @property
    def bytes_per_second(self) -> float | None:
        """The cap in bytes per second: None when unlimited, 0 in a pause slot."""
        return None if self.rate == OFF else 0.0 if self.paused else rate_bytes(self.rate)

    @property
    def bwlimit(self) -> str:
        """The value for rsync's ``--bwlimit`` ("0" = unlimited; meaningless in a pause slot)."""
        return "0" if self.rate == OFF else self.rate


def rate_bytes(value: str) -> float | None:
    """Bytes per second of an rsync ``--bwlimit`` value (no suffix = KiB; ``KB`` = 1000); None for 0."""
    m = re.match(r"^(\d+(?:\.\d+)?)([KMGkmg]?)([iI]?[bB])?$", value)
    if not m:
        raise ValueError(f"{value!r} is not an rsync --bwlimit value")
    number, unit, tail = float(m.group(1)), (m.group(2) or "k").lower(), (m.group(3) or "").lower()
    base = 1000 if tail == "b" else 1024
    total = number * base ** (1 + "kmg".index(unit))
    return total or None


def _rate(text: str) -> str:
    value = text.strip()
    if value.lower() in (OFF, PAUSE):
        return value.lower()
    if ":" in value:
        raise ValueError("upload:download pairs do not apply (a site only downloads): give one rate")
    if not BWLIMIT_RE.match(value):
        raise ValueError("the rate must be 'off', 'pause' or an rsync --bwlimit value such as 512k, 1.5m or 10M")
    return OFF if rate_bytes(value) is None else value


def _day(name: str) -> int:
    low = name.lower()
    for i, (short, full) in enumerate(zip(DAYS, _FULL_DAYS)):
        if low in (short.lower(), full):
            return i
    raise ValueError(f"unknown day {name!r} (Mon, Tue, Wed, Thu, Fri, Sat, Sun)")


def parse_entry(text: str) -> Entry:
    """One ``[Day-]HH:MM,RATE`` entry; ValueError saying what is wrong."""
    m = _ENTRY_RE.match(text)
    if not m:
        raise ValueError("expected HH:MM,RATE or Day-HH:MM,RATE (e.g. 08:00,512k or Sat-00:00,off)")
    day, hour, minute, rate = m.groups()
    if int(hour) > 23 or int(minute) > 59:
        raise ValueError(f"no such time {hour}:{minute}")
    return Entry(_day(day) if day else None, int(hour) * 60 + int(minute), _rate(rate), text)


def parse(value: str) -> tuple[Entry, ...]:
    """The entries of a SYNC_MAX_BW value; a plain rate is one every-day entry at 00:00 with no text.

    ValueError (one line, naming the entry) for a malformed value, two entries for the same
    time, or a table that would never transfer anything.
    """
    text = " ".join(str(value).split())
    if not text:
        raise ValueError("empty: give 0 (unlimited), an rsync --bwlimit value or a timetable")
    if "," not in text and " " not in text:
        rate = _rate(text)
        if rate == PAUSE:
            raise ValueError("'pause' alone would never transfer anything; give it a slot (e.g. 08:00,pause)")
        return (Entry(None, 0, rate, ""),)
    entries: list[Entry] = []
    seen: dict[tuple[int, int], str] = {}
    for token in text.split(" "):
        try:
            entry = parse_entry(token)
        except ValueError as exc:
            raise ValueError(f"timetable entry {token!r}: {exc}") from None
        for day in range(7) if entry.day is None else (entry.day,):
            if (day, entry.minute) in seen:
                raise ValueError(f"timetable entry {token!r}: {DAYS[day]} {entry.minute // 60:02d}:"
                                 f"{entry.minute % 60:02d} is already set by {seen[day, entry.minute]!r}")
            seen[day, entry.minute] = token
        entries.append(entry)
    if all(e.paused for e in entries):
        raise ValueError("every timetable entry is 'pause': nothing would ever be transferred")
    return tuple(entries)


def canonical(value: object) -> str:
    """The setting's text form: a TOML list of entries joined by spaces, extra blanks removed."""
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) for v in value):
            raise ValueError("a list must hold timetable entries as text, e.g. [\"08:00,512k\", \"18:00,off\"]")
        value = " ".join(value)
    return " ".join(str(value).split())
