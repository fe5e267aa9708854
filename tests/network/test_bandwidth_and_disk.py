"""SYNC_MAX_BW holds on a fast link; a disk that fills up mid-sync fails cleanly and recovers."""

from __future__ import annotations

import threading
import time

from library_syncer.publish import generations as gen

from .netbench import wire, write_random

MB = 1_000_000
MiB = 1 << 20


def test_max_bw_is_respected(bench, figures):
    """A 2 MiB/s cap (SYNC_MAX_BW=2m) on a 100 Mbit/s link: the file data and the wire stay near the cap."""
    site = bench.add_site(mbit=100)
    lib = bench.work / "primary"
    size = 24 * MB
    write_random(lib / "Big" / "disk.iso", size)
    bench.start_server(lib)
    cap = 2 * MiB  # rsync's "m" is MiB
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:  # the site's interface counter, 4 times a second
        while not done.wait(0.25):
            samples.append((time.monotonic(), site.link.site_counters()[0]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run = bench.sync(site, sync_max_bw="2m")
        result = run.result(60)
    finally:
        done.set()
        sampler.join(5)
    assert result["ok"], result["reason"]
    start = run.wait_event("phase", 1, lambda e: e["name"] == "transfer")["t"]
    end = run.wait_event("phase", 1, lambda e: e["name"] == "cleanup")["t"]
    # Rates over the steady part of the transfer (10% to 90% of the bytes): rsync's own
    # progress for the file data, the site's interface counter for the wire.
    progress = [(e["t"], e["bytes"]) for e in run.events("progress") if 0.1 * size <= e["bytes"] <= 0.9 * size]
    payload_rate = (progress[-1][1] - progress[0][1]) / (progress[-1][0] - progress[0][0])
    first, last = samples[0][1], samples[-1][1]
    steady = [s for s in samples if first + 0.1 * (last - first) <= s[1] <= first + 0.9 * (last - first)]
    wire_rate = (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0])
    figures("24 MB with SYNC_MAX_BW=2m on a 100 Mbit/s link",
            cap=f"{cap:,} B/s", file_data_rate=f"{payload_rate:,.0f} B/s ({payload_rate / cap:.1%} of the cap)",
            wire_rate_steady=f"{wire_rate:,.0f} B/s ({wire_rate / cap:.1%})", transfer_time=f"{end - start:.1f}s",
            whole_transfer_rate=f"{result['literal_bytes'] / (end - start):,.0f} B/s (with ssh setup and file list)")
    assert abs(payload_rate / cap - 1) <= 0.10, payload_rate
    assert abs(wire_rate / cap - 1) <= 0.10, wire_rate


def test_disk_full_mid_sync_then_space_freed(bench, figures):
    """The site's library on a 100 MB tmpfs that other data fills: a clear error, gen 1 intact, then success."""
    site = bench.add_site()
    disk = bench.tmpfs(bench.work / "site-disk", 100)
    site.library = disk / "library"
    lib, probe, first_got = bench.publish_first_generation(site, 4 * MB)

    write_random(disk / "other-data.bin", 60 * MB)  # something else on the site's disk
    write_random(lib / "Big" / "disk.iso", 48 * MB)  # needs more than the 36 MB left
    before = site.link.site_counters()
    failed = bench.sync(site, retry_base=1).result(60)
    assert not failed["ok"] and failed["kind"] == "fatal", failed
    assert "disk of the library is full" in failed["reason"], failed["reason"]
    assert "No space left on device" in failed["reason"], failed["reason"]  # rsync's own line, not a side effect
    assert failed["attempts"] == 2  # one more try after removing old generations; then it needs an administrator
    assert gen.current_generation(site.library) == 1
    polls = probe.snapshot()
    assert all(p["got"] == first_got for p in polls), "the published generation changed or failed while the disk filled"

    (disk / "other-data.bin").unlink()  # the administrator frees space
    second = bench.sync(site).result(60)
    moved = wire(before, site.link.site_counters())
    figures("48 MB file onto a 100 MB disk holding 64 MB",
            error=f"'{failed['reason']}'", served_polls_unchanged=len(polls),
            after_freeing_space="ok" if second["ok"] else second["reason"],
            generation=second["generation"], resumed_bytes=f"{second['matched_bytes']:,}",
            bytes_on_the_wire_both_runs=f"{moved:,}")
    assert second["ok"] and second["generation"] == 2, second["reason"]
    assert probe.wait_for(lambda p: p["got"][0] != first_got[0], 15, "the new generation served")
