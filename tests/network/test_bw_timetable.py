"""The bandwidth timetable on a real link: the rate changes at a slot boundary a few seconds ahead, and a pause
slot moves no bytes; the transfer resumes from its partial file and completes."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from library_syncer.publish import generations as gen

from .netbench import Site, wire, write_random

MB = 1_000_000
MiB = 1 << 20


def hhmm(when: datetime) -> str:
    return when.strftime("%H:%M")


def next_boundary(lead: float) -> datetime:
    """The first whole UTC minute at least ``lead`` seconds ahead; returns once ``lead`` seconds are left."""
    now = datetime.now(timezone.utc)
    boundary = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if (boundary - now).total_seconds() < lead:
        boundary += timedelta(minutes=1)
    while (left := (boundary - datetime.now(timezone.utc)).total_seconds() - lead) > 0:
        time.sleep(min(left, 1.0))  # the wall clock is the condition: the boundary must be lead seconds ahead
    return boundary


class Sampler:
    """The site interface's received-bytes counter, 4 times a second, with the wall-clock time (the timetable's)."""

    def __init__(self, site: Site) -> None:
        self.site, self.samples, self.done = site, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.25):
            self.samples.append((time.time(), self.site.link.site_counters()[0]))

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)

    def rate(self, start: float, end: float) -> float:
        window = [s for s in self.samples if start <= s[0] <= end]
        assert len(window) >= 8, f"too few samples between {start} and {end}: {len(window)}"
        return slope(window)

    def moved(self, start: float, end: float) -> int:
        window = [s for s in self.samples if start <= s[0] <= end]
        assert len(window) >= 8, f"too few samples between {start} and {end}: {len(window)}"
        return window[-1][1] - window[0][1]


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares rate of (time, bytes) points: steadier than the end points when updates come in bursts."""
    n = len(points)
    mt, mb = sum(t for t, _ in points) / n, sum(b for _, b in points) / n
    return sum((t - mt) * (b - mb) for t, b in points) / sum((t - mt) ** 2 for t, _ in points)


def payload_rate(progress: list[dict]) -> float:
    """rsync's own file-data rate over progress events."""
    assert len(progress) >= 5, progress
    return slope([(e["t"], e["bytes"]) for e in progress])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rate_changes_at_a_timetable_boundary(bench, figures):
    """SYNC_MAX_BW='<now>,1m <boundary>,3m' on a 100 Mbit/s link: 1 MiB/s before the boundary, 3 MiB/s after it,
    the second rsync resumes from the partial file."""
    site = bench.add_site(mbit=100)
    lib = bench.work / "primary"
    size = 40 * MB
    write_random(lib / "Big" / "disk.iso", size)
    bench.start_server(lib)
    before_cap, after_cap = 1 * MiB, 3 * MiB
    boundary = next_boundary(lead=16)
    table = f"{hhmm(boundary - timedelta(minutes=1))},1m {hhmm(boundary)},3m"
    counters = site.link.site_counters()
    sampler = Sampler(site)
    try:
        run = bench.sync(site, sync_max_bw=table)
        result = run.result(120)
    finally:
        sampler.stop()
    assert result["ok"], result["reason"]
    at = boundary.timestamp()
    slots = run.events("slot")
    assert [(s["entry"], s["limit"]) for s in slots] == [(table.split()[0], "1m"), (table.split()[1], "3m")], slots
    assert abs(slots[1]["t"] - at) < 2, f"the rsync restarted {slots[1]['t'] - at:+.1f}s from the boundary"
    progress = run.events("progress")
    first = [e for e in progress if e["t"] < at]
    second = [e for e in progress if e["t"] > slots[1]["t"]]
    arrived = first[-1]["bytes"]
    # Steady windows: from 1.5 s after the first data to the boundary; from the resumed literal data to the end.
    first_window = [e for e in first if e["t"] >= first[0]["t"] + 1.5]
    second_window = [e for e in second if arrived + 0.1 * (size - arrived) <= e["bytes"] <= arrived + 0.95 * (size - arrived)]
    before_rate, after_rate = payload_rate(first_window), payload_rate(second_window)
    wire_before = sampler.rate(first_window[0]["t"], at - 0.3)
    wire_after = sampler.rate(second_window[0]["t"], second_window[-1]["t"])
    stats = run.events("stats")
    resumed = stats[-1]["matched_bytes"]
    total = wire(counters, site.link.site_counters())
    figures("40 MB, SYNC_MAX_BW '<minute>,1m <boundary>,3m' on a 100 Mbit/s link",
            boundary_after_start=f"{at - run.events('phase')[0]['t']:.1f}s",
            restart_after_boundary=f"{slots[1]['t'] - at:+.2f}s",
            before=f"file data {before_rate:,.0f} B/s ({before_rate / before_cap:.1%} of 1m), "
                   f"wire {wire_before:,.0f} B/s ({wire_before / before_cap:.1%})",
            after=f"file data {after_rate:,.0f} B/s ({after_rate / after_cap:.1%} of 3m), "
                  f"wire {wire_after:,.0f} B/s ({wire_after / after_cap:.1%})",
            arrived_before_boundary=f"{arrived:,} B", resumed_from_partial=f"{resumed:,} B",
            bytes_on_the_wire=f"{total:,} ({total / size:.3f}x the file)", attempts=result["attempts"])
    assert abs(before_rate / before_cap - 1) <= 0.10, before_rate
    assert abs(after_rate / after_cap - 1) <= 0.10, after_rate
    assert abs(wire_before / before_cap - 1) <= 0.10, wire_before
    assert abs(wire_after / after_cap - 1) <= 0.10, wire_after
    assert resumed >= arrived - 2 * MiB, (resumed, arrived)  # what had arrived is not sent again
    assert total < 1.06 * size, total
    assert result["attempts"] == 1  # a boundary is no failed attempt
    assert digest(gen.current_root(site.library) / "Big" / "disk.iso") == digest(lib / "Big" / "disk.iso")


def test_pause_slot_moves_no_bytes_then_the_transfer_completes(bench, figures):
    """SYNC_MAX_BW='<now>,2m <boundary>,pause <boundary+1>,2m': the transfer stops at the pause, nothing crosses the
    link for its minute, then it resumes from the partial file and completes."""
    site = bench.add_site(mbit=100)
    lib = bench.work / "primary"
    size = 32 * MB
    write_random(lib / "Big" / "disk.iso", size)
    bench.start_server(lib)
    boundary = next_boundary(lead=8)
    resume = boundary + timedelta(minutes=1)
    table = f"{hhmm(boundary - timedelta(minutes=1))},2m {hhmm(boundary)},pause {hhmm(resume)},2m"
    counters = site.link.site_counters()
    sampler = Sampler(site)
    try:
        run = bench.sync(site, sync_max_bw=table)
        result = run.result(180)
    finally:
        sampler.stop()
    assert result["ok"], result["reason"]
    slots = run.events("slot")
    assert [s["limit"] for s in slots] == ["2m", "pause", "2m"], slots
    # The stopped rsync needs a moment to end (SIGTERM, partial file saved): measure from 2 s into the pause.
    quiet = sampler.moved(boundary.timestamp() + 2, resume.timestamp() - 0.3)
    progress_in_pause = [e for e in run.events("progress") if boundary.timestamp() + 2 < e["t"] < resume.timestamp()]
    arrived = max(e["bytes"] for e in run.events("progress") if e["t"] < boundary.timestamp() + 2)
    resumed = run.events("stats")[-1]["matched_bytes"]
    finished = run.wait_event("phase", 1, lambda e: e["name"] == "cleanup")["t"]
    total = wire(counters, site.link.site_counters())
    figures("32 MB, SYNC_MAX_BW '<minute>,2m <boundary>,pause <boundary+1min>,2m' on a 100 Mbit/s link",
            arrived_before_pause=f"{arrived:,} B", bytes_received_during_the_pause=f"{quiet:,} B",
            resumed_after_pause=f"{run.events('slot')[2]['t'] - resume.timestamp():+.2f}s",
            resumed_from_partial=f"{resumed:,} B", finished_after_pause=f"{finished - resume.timestamp():.1f}s",
            bytes_on_the_wire=f"{total:,} ({total / size:.3f}x the file)")
    assert progress_in_pause == [], "rsync ran in the pause slot"
    assert quiet < 2_000, f"{quiet} bytes arrived during the pause"
    assert abs(slots[2]["t"] - resume.timestamp()) < 2, "the transfer did not resume at the next slot"
    assert resumed >= arrived - 2 * MiB, (resumed, arrived)
    assert total < 1.06 * size, total
    assert digest(gen.current_root(site.library) / "Big" / "disk.iso") == digest(lib / "Big" / "disk.iso")
