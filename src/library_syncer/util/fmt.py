"""Sizes and times for people and for JSON."""

from __future__ import annotations

from datetime import datetime, timezone


def human_bytes(n: float) -> str:
    """Bytes in binary units, e.g. ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def iso_utc(when: float | datetime | None) -> str | None:
    """A Unix time or an aware datetime as ISO 8601 UTC to the second (``2026-05-01T21:00:03Z``),
    the one time format of the JSON documents; None stays None."""
    if when is None:
        return None
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
