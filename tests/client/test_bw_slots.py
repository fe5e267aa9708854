"""The transfer follows the bandwidth timetable: rsync restarted with the next slot's limit at a boundary (fake
clock), no rsync in a pause slot and a stop ends that wait (a real sync from a local folder)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from library_syncer.config import load_settings
from library_syncer.sync.bwslots import SlotStarted, StopAt, transfer_in_slots
from library_syncer.sync.run import run_sync
from library_syncer.sync.timetable import Timetable
from library_syncer.util.proc import Proc
from library_syncer.sync.result import Phase
from support import free_port, wait_until

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBIkcQS98lcMwjbePH21l+xR802oq0eQNnRim5+kOeK6"

UTC = timezone.utc


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_a_boundary_restarts_the_transfer_with_the_next_limit():
    clock = FakeClock(datetime(2026, 3, 2, 8, 4, 50, tzinfo=UTC))
    calls: list[str] = []
    events: list[object] = []

    def run_one(bwlimit: str, stop: threading.Event) -> Proc:
        calls.append(bwlimit)
        if len(calls) == 1:
            assert not stop.is_set()
            clock.now += timedelta(seconds=10)  # the rsync runs into the 08:05 boundary
            assert stop.is_set()
            return Proc(20, "", "rsync error: received SIGINT, SIGTERM, or SIGHUP (code 20)", True)
        clock.now += timedelta(minutes=3)
        assert not stop.is_set()  # the next change (08:10) is not reached: the rsync finishes
        return Proc(0, "done", "", False)

    table = Timetable.parse("08:00,1m 08:05,3m 08:10,off")
    proc = transfer_in_slots(table, UTC, threading.Event(), run_one, events.append, clock)
    assert (proc.code, proc.stopped) == (0, False)
    assert calls == ["1m", "3m"]
    assert events == [SlotStarted("08:00,1m", "1m", datetime(2026, 3, 2, 8, 5, tzinfo=UTC)),
                      SlotStarted("08:05,3m", "3m", datetime(2026, 3, 2, 8, 10, tzinfo=UTC))]


def test_a_stop_is_no_boundary_and_a_constant_rate_has_no_deadline():
    clock = FakeClock(datetime(2026, 3, 2, 8, 4, 50, tzinfo=UTC))
    stop = threading.Event()
    calls: list[str] = []

    def stopped_run(bwlimit: str, stop_event: threading.Event) -> Proc:
        calls.append(bwlimit)
        stop.set()
        assert stop_event.is_set()
        return Proc(20, "", "", True)

    proc = transfer_in_slots(Timetable.parse("08:00,1m 08:05,3m"), UTC, stop, stopped_run, lambda e: None, clock)
    assert proc.stopped and calls == ["1m"]  # not restarted: the run was asked to stop

    seen: list[StopAt] = []

    def constant_run(bwlimit: str, stop_event: threading.Event) -> Proc:
        assert isinstance(stop_event, StopAt) and stop_event.deadline is None
        seen.append(stop_event)
        return Proc(0, "", "", False)

    events: list[object] = []
    transfer_in_slots(Timetable.parse("1.5m"), UTC, None, constant_run, events.append, clock)
    assert len(seen) == 1 and events == []  # a plain value: one rsync, no slot events


def test_no_rsync_runs_in_a_pause_slot_and_a_stop_ends_the_wait(tmp_path):
    src = tmp_path / "src"
    (src / "Item").mkdir(parents=True)
    (src / "Item" / "disk.vmdk").write_bytes(b"x" * 100_000)
    now = datetime.now(UTC)
    pause, later = now.strftime("%H:%M"), (now + timedelta(minutes=3)).strftime("%H:%M")
    settings = load_settings(library=tmp_path / "L", state_dir=tmp_path / "state",
                             sync_max_bw=f"{pause},pause {later},off")
    events: list[object] = []
    stop = threading.Event()
    done: list = []
    worker = threading.Thread(target=lambda: done.append(run_sync(settings, source=str(src), on_event=events.append,
                                                                  stop_event=stop)))
    worker.start()
    try:
        assert wait_until(lambda: any(isinstance(e, SlotStarted) for e in events), 30), events
        slot = next(e for e in events if isinstance(e, SlotStarted))
        assert (slot.entry, slot.limit) == (f"{pause},pause", "pause")
        staging = tmp_path / "L" / ".library-syncer" / "staging"
        assert not (staging / "Item").exists()  # nothing transferred in the pause slot
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive(), "the pause did not end when the run was stopped"
    assert done[0].kind == "stopped", done[0]
    assert not (staging / "Item").exists()


def test_a_pause_slot_opens_no_connection_before_it_ends(tmp_path):
    now = datetime.now(UTC)
    pause, later = now.strftime("%H:%M"), (now + timedelta(minutes=3)).strftime("%H:%M")
    key = tmp_path / "key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o600)
    settings = load_settings(library=tmp_path / "L", state_dir=tmp_path / "state", sync_peer="127.0.0.1",
                             sync_port=free_port(), sync_key=key, sync_host_key=HOST_KEY,
                             sync_max_bw=f"{pause},pause {later},off")
    events: list[object] = []
    stop = threading.Event()
    done: list = []
    worker = threading.Thread(target=lambda: done.append(run_sync(settings, on_event=events.append, stop_event=stop)))
    worker.start()
    try:
        assert wait_until(lambda: any(isinstance(e, SlotStarted) for e in events), 30), events
        assert not [e for e in events if isinstance(e, Phase)], events  # no connect, no listing in the pause
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive() and done[0].kind == "stopped", done
