"""Generation pinning: a subscriber keeps reading the generation it started with."""

from __future__ import annotations

import os

from library_syncer.publish import generations as gen
from library_syncer.publish.pins import GenerationPins, Pin, choose_generation


def _exists(n: int) -> bool:
    return n != 3  # generation 3 was pruned


def test_rule_first_request_and_entry_point_take_current():
    assert choose_generation(None, 5, ("items.json",), 100, 60, _exists) == 5
    assert choose_generation(Pin(4, 90), 5, ("lib.json",), 100, 60, _exists) == 5


def test_rule_other_requests_stay_on_the_pin():
    assert choose_generation(Pin(4, 90), 5, ("items.json",), 100, 60, _exists) == 4
    assert choose_generation(Pin(4, 90), 5, ("item", "disk.vmdk"), 100, 60, _exists) == 4


def test_rule_pin_dropped_when_idle_gone_or_ahead():
    assert choose_generation(Pin(4, 10), 5, ("items.json",), 100, 60, _exists) == 5  # idle past the ttl
    assert choose_generation(Pin(3, 90), 5, ("items.json",), 100, 60, _exists) == 5  # pruned
    assert choose_generation(Pin(7, 90), 5, ("items.json",), 100, 60, _exists) == 5  # rolled back


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _publish(lib, text: bytes) -> int:
    staging = gen.Layout(lib).staging
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "lib.json").write_bytes(text)
    return gen.publish(lib)


def test_provider_pins_per_client_and_leases(tmp_path):
    lib, empty = tmp_path / "L", tmp_path / "empty"
    clock = Clock()
    pins = GenerationPins(lib, ttl=600, fallback=empty, clock=clock)
    assert pins("a", ("lib.json",)) == empty  # nothing published yet
    g1 = _publish(lib, b"1")
    assert pins("a", ("lib.json",)) == gen.Layout(lib).generation(g1)
    g2 = _publish(lib, b"2")
    assert pins("a", ("items.json",)).name == f"{g1:06d}"  # mid-read: still the first
    assert pins("b", ("items.json",)).name == f"{g2:06d}"  # a new subscriber: the current one
    assert pins("a", ("lib.json",)).name == f"{g2:06d}"  # a new read moves on
    lease = gen.lease_path(lib, g1)
    assert lease.exists() and abs(lease.stat().st_mtime - clock.now) < 1
    clock.now += 601
    assert pins("b", ("x",)).name == f"{g2:06d}"


def test_provider_forgets_the_oldest_clients(tmp_path):
    lib = tmp_path / "L"
    pins = GenerationPins(lib, ttl=600, fallback=tmp_path, max_clients=3)
    _publish(lib, b"1")
    for c in "abcd":
        pins(c, ("lib.json",))
    assert pins.pinned("a") is None and pins.pinned("d") == 1


def test_prune_keeps_a_leased_generation(tmp_path):
    lib = tmp_path / "L"
    for i in range(4):
        _publish(lib, str(i).encode())
    now = gen.retired_at(lib, 2) + 10_000
    lease = gen.lease_path(lib, 1)
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.touch()
    os.utime(lease, (now - 5, now - 5))  # read 5 s ago
    assert gen.prune(lib, 3600, now=now) == [2]  # 1 is still read by a pinned subscriber
    os.utime(lease, (now - 3601, now - 3601))  # ... no longer
    assert gen.prune(lib, 3600, now=now) == [1]
    assert not lease.exists()
    assert gen.list_generations(lib) == [3, 4]
