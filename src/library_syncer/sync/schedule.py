"""Schedule maths, pure: next cron tick in a time zone, random start delay, retry backoff.

Clocks and random generators are passed in, so tests use fixed values.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone, tzinfo
from typing import Iterator
from zoneinfo import ZoneInfo

from cronsim import CronSim


def zone(tz: str | None) -> tzinfo:
    """The time zone named by TZ (a leading ':' is allowed); UTC when unset."""
    return ZoneInfo(tz.lstrip(":")) if tz else timezone.utc


def next_run(expr: str, after: datetime, tz: str | None = None) -> datetime:
    """The first time strictly after ``after`` that matches the cron ``expr`` in zone ``tz``.

    The result is timezone-aware (in ``tz``).  Daylight-saving changes follow cron's
    usual rules: a time skipped by the spring change runs at the first valid time after it,
    a time repeated in autumn runs once.  A naive ``after`` is taken as UTC.
    """
    if after.tzinfo is None:
        after = after.replace(tzinfo=timezone.utc)
    local = after.astimezone(zone(tz))
    return next(CronSim(expr, local))


def random_delay(enabled: bool, max_seconds: int, rng: random.Random) -> float:
    """Seconds to wait before a scheduled sync: uniform in [0, max_seconds] when enabled, else 0."""
    if not enabled or max_seconds <= 0:
        return 0.0
    return rng.uniform(0, max_seconds)


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (1 = first retry): exponential with full jitter."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return rng.uniform(0, ceiling)


def next_retry_delay(
    attempt: int, elapsed: float, deadline: float, base: float, cap: float, rng: random.Random
) -> float | None:
    """Delay before retry ``attempt``, or None when waiting would pass the total ``deadline``."""
    delay = backoff(attempt, base, cap, rng)
    if elapsed + delay >= deadline:
        return None
    return delay


def backoff_delays(deadline: float, base: float, cap: float, rng: random.Random) -> Iterator[float]:
    """The retry delays of a run whose attempts take no time, within ``deadline`` seconds in total."""
    elapsed, attempt = 0.0, 1
    while (delay := next_retry_delay(attempt, elapsed, deadline, base, cap, rng)) is not None:
        yield delay
        elapsed += delay
        attempt += 1
