"""A 10 Mbit/s link losing 1 % of the packets each way: a full sync, then a delta sync.

200 MB is "a few hundred MB" sized to the suite's time budget: at 10 Mbit/s it
alone takes about three minutes, the longest single scenario CI can afford.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from library_syncer.publish import generations as gen

from .netbench import wire, write_random

MB = 1_000_000
SIZE = 200 * MB
CHANGE = 64 * 1024


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.timeout(600)
def test_lossy_10mbit_link_full_sync_then_small_change(bench, figures):
    site = bench.add_site(mbit=10, loss_percent=1)
    lib = bench.work / "primary"
    disk = lib / "Template" / "disk.iso"
    write_random(disk, SIZE)
    (lib / "Notes").mkdir()
    (lib / "Notes" / "readme.txt").write_text("release notes\n")
    bench.start_server(lib)

    before = site.link.site_counters()
    first = bench.sync(site, sync_timeout=60).result(420)
    moved = wire(before, site.link.site_counters())
    dropped = site.link.dropped_packets()
    assert first["ok"] and first["generation"] == 1, first["reason"]
    figures("200 MB over 10 Mbit/s with 1% loss each way, first sync",
            time=f"{first['duration_seconds']:.1f}s",
            goodput=f"{SIZE * 8 / first['duration_seconds'] / 1e6:.2f} Mbit/s",
            bytes_on_the_wire=f"{moved:,}", packets_dropped_by_the_loss_rules=dropped,
            attempts=first["attempts"])
    assert sha256(gen.current_root(site.library) / "Template" / "disk.iso") == sha256(disk)
    assert moved < 1.1 * SIZE

    with disk.open("r+b") as fh:  # a small change inside the large file
        fh.seek(SIZE // 2 + 12345)
        fh.write(os.urandom(CHANGE))
    before = site.link.site_counters()
    second = bench.sync(site, sync_timeout=60).result(180)
    moved = wire(before, site.link.site_counters())
    assert second["ok"] and second["generation"] == 2, second["reason"]
    figures("64 KiB changed in the middle of the 200 MB file, second sync",
            time=f"{second['duration_seconds']:.1f}s", bytes_on_the_wire=f"{moved:,} ({moved / SIZE:.3%} of the file)",
            literal_data=f"{second['literal_bytes']:,}", matched_data=f"{second['matched_bytes']:,}",
            attempts=second["attempts"])
    assert sha256(gen.current_root(site.library) / "Template" / "disk.iso") == sha256(disk)
    assert second["literal_bytes"] < 4 * CHANGE
    assert moved < 0.01 * SIZE
