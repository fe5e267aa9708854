"""Schedule maths with fixed clocks and seeded random generators."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from library_syncer.sync.schedule import backoff, backoff_delays, next_retry_delay, next_run, random_delay

UTC = timezone.utc


def test_next_run_default_schedule_in_zone():
    # Friday 21:00 in Berlin (CET, UTC+1 in winter).
    after = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)  # a Monday
    nxt = next_run("0 21 * * 5", after, "Europe/Berlin")
    assert nxt == datetime(2024, 1, 5, 21, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert nxt.astimezone(UTC) == datetime(2024, 1, 5, 20, 0, tzinfo=UTC)


def test_next_run_is_strictly_after_and_utc_default():
    at = datetime(2024, 1, 5, 21, 0, tzinfo=UTC)
    assert next_run("0 21 * * 5", at, None) == datetime(2024, 1, 12, 21, 0, tzinfo=UTC)
    assert next_run("*/15 * * * *", datetime(2024, 1, 1, 0, 7), None) == datetime(2024, 1, 1, 0, 15, tzinfo=UTC)
    assert next_run("0 3 * * *", at, ":UTC").hour == 3


def test_next_run_dst_spring_forward_and_fall_back():
    berlin = ZoneInfo("Europe/Berlin")
    # 02:30 does not exist on 2024-03-31 in Berlin: runs at the first valid time after it.
    spring = next_run("30 2 * * *", datetime(2024, 3, 30, 12, 0, tzinfo=berlin), "Europe/Berlin")
    assert spring.astimezone(UTC) == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
    # 02:30 happens twice on 2024-10-27: one run only.
    first = next_run("30 2 * * *", datetime(2024, 10, 26, 12, 0, tzinfo=berlin), "Europe/Berlin")
    second = next_run("30 2 * * *", first, "Europe/Berlin")
    assert (second.astimezone(UTC) - first.astimezone(UTC)).total_seconds() > 23 * 3600


def test_random_delay():
    rng = random.Random(1)
    assert random_delay(False, 21600, rng) == 0.0
    assert random_delay(True, 0, rng) == 0.0
    values = [random_delay(True, 100, rng) for _ in range(200)]
    assert all(0 <= v <= 100 for v in values) and max(values) > 50 > min(values)


def test_backoff_full_jitter_and_cap():
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(300, 10 * 2 ** (attempt - 1))
        samples = [backoff(attempt, 10, 300, rng) for _ in range(50)]
        assert all(0 <= s <= ceiling for s in samples)
    assert max(backoff(20, 10, 300, rng) for _ in range(200)) > 200


class MaxRng(random.Random):
    def uniform(self, a, b):
        return b


def test_retries_stop_at_the_deadline():
    delays = list(backoff_delays(100, 10, 1000, MaxRng()))
    assert delays == [10, 20, 40]  # 10+20+40 = 70; the next (80) would pass 100
    assert next_retry_delay(1, 0, 0, 10, 100, MaxRng()) is None
    assert next_retry_delay(1, 95, 100, 10, 100, MaxRng()) is None
    assert next_retry_delay(2, 10, 100, 10, 100, MaxRng()) == 20
