"""Benchmark: bytes on the wire when part of a large file changed, vs sending the whole file.

A source library holds one file of ``--size`` random bytes (default 1 GiB), exported by a
real ``library-syncer server`` (sshd + rrsync) on 127.0.0.1; a site syncs it with the
product's own sync (``run_sync``: rsync over SSH into staging, manifest, publish).  After the
first full copy, 0.1 %, 1 % and 10 % of the file are overwritten with new random bytes,
either scattered (random 4 KiB pages, like guest writes in a disk image) or contiguous (one
region), each followed by a sync whose bytes on the wire (rsync ``--stats``, both
directions) are recorded.  Each case starts from the state the previous sync left at both ends.
vCenter's own subscribed-library sync sends the whole file again, so its figure is the file size.

Usage: python benchmarks/delta.py [--quick] [--size 1G] [--seed 7]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import benchlib as b

PAGE = 4096
SHARES = (0.001, 0.01, 0.10)


def overwrite(path: Path, share: float, scattered: bool, rng: random.Random) -> int:
    """Overwrite ``share`` of the file with new random bytes; returns the bytes changed."""
    size = path.stat().st_size
    pages = size // PAGE
    count = max(1, round(pages * share))
    if scattered:
        spans = [(p * PAGE, PAGE) for p in sorted(rng.sample(range(pages), count))]
    else:
        start = (pages - count) // 3 * PAGE
        spans = [(start, count * PAGE)]
    with open(path, "r+b") as fh:
        for offset, length in spans:
            fh.seek(offset)
            fh.write(os.urandom(length))
        fh.flush()
        os.fsync(fh.fileno())
    return sum(length for _, length in spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 64 MiB file instead of 1 GiB")
    parser.add_argument("--size", type=b.parse_size, default=None, help="size of the file (default 1G)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the scattered page choice")
    parser.add_argument("--dir", type=Path, default=None, help="parent folder of the temporary work folder")
    args = parser.parse_args()
    size = args.size or (b.parse_size("64M") if args.quick else b.GiB)
    size -= size % PAGE
    rng = random.Random(args.seed)
    from library_syncer.sync.run import run_sync

    with b.workdir(args.dir, "delta-bench-") as work:
        source = work / "source"
        disk = source / "template" / "disk.vmdk"
        b.write_random(disk, size)
        with b.sync_server(work, source) as server:
            settings = server.settings(work / "site", work / "site-state")
            rows = []

            def sync(label: str, changed: int) -> None:
                start = time.perf_counter()
                r = run_sync(settings)
                seconds = time.perf_counter() - start
                if not r.ok:
                    raise SystemExit(f"benchmark: sync failed: {r.reason}")
                rows.append((label, f"{changed:,}", f"{r.wire_bytes:,}", f"{r.literal_bytes:,}",
                             f"{r.wire_bytes / changed:.1f}" if changed else "-",
                             f"{r.wire_bytes / size:.2%}", f"{size / r.wire_bytes:,.0f}x", f"{seconds:.1f}"))

            sync("first sync (full copy)", size)
            for share in SHARES:
                for scattered in (True, False):
                    changed = overwrite(disk, share, scattered, rng)
                    kind = f"scattered {PAGE // 1024} KiB" if scattered else "contiguous"
                    sync(f"{share:.1%} changed, {kind}", changed)

    b.header("Delta efficiency: bytes on the wire for a partly changed file",
             f"file: {b.human(size)} ({size:,} bytes) of random data; real server (sshd + rrsync -ro) and "
             f"the product's sync over SSH on 127.0.0.1, SYNC_COMPRESS={settings.sync_compress} (the default; "
             "random data does not compress)",
             "vCenter's own sync sends the whole file: the 'vs whole file' column is file size / bytes on the wire")
    b.table("Bytes on the wire", ["change", "bytes changed", "bytes on the wire", "rsync literal bytes",
                                  "wire / changed", "wire / file size", "vs whole file", "sync seconds"], rows)


if __name__ == "__main__":
    main()
