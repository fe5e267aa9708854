"""Benchmark: manifest refresh with the content-hash cache vs reading every byte on every run.

Builds a library of ``--files`` random files totalling ``--size`` bytes (default 2,000 files,
2 GiB; items of ``--per-item`` files) in a temporary folder, then measures ``update_manifest``
with the library's own pages evicted from the page cache before each run
(posix_fadvise DONTNEED):

* cold run (no state and no manifest: every file is read once),
* re-run with nothing changed,
* re-run after one file changed (its mtime set 10 minutes back, as rsync -a leaves it),
* reading and md5-hashing every byte once, as the original did on every run.

Each of the four runs ``--repeat`` times (state and manifest removed before each cold run);
the table shows the median seconds and the bytes the run read to hash.

Usage: python benchmarks/manifest_refresh.py [--quick] [--size 2G] [--files 2000] [--per-item 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import time
from pathlib import Path

import benchlib as b
from library_syncer.vcsp import STATE_DIRNAME, update_manifest


def build(root: Path, total: int, files: int, per_item: int) -> list[Path]:
    """Write the library: ``files`` random files of about total/files bytes, fsynced, old mtimes."""
    size = max(1, total // files)
    old = time.time() - 86400
    paths = []
    for n in range(files):
        path = root / f"item {n // per_item:04d}" / f"file-{n:05d}.vmdk"
        b.write_random(path, size)
        os.utime(path, (old, old))
        paths.append(path)
    return paths


def forget(root: Path) -> None:
    """Remove the manifest and its state, so the next run is a first run."""
    shutil.rmtree(root / STATE_DIRNAME, ignore_errors=True)
    for name in ("lib.json", "items.json"):
        (root / name).unlink(missing_ok=True)
    for item in root.iterdir():
        if item.is_dir():
            (item / "item.json").unlink(missing_ok=True)


def read_everything(paths: list[Path]) -> int:
    """md5 of every byte of every file (the original's behaviour); returns bytes read."""
    total = 0
    for path in paths:
        h = hashlib.md5()
        with open(path, "rb") as fh:
            while chunk := fh.read(8 * 1024 * 1024):
                h.update(chunk)
                total += len(chunk)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    b.common_args(parser)
    parser.add_argument("--size", type=b.parse_size, default=None, help="total bytes (default 2G; --quick 200M)")
    parser.add_argument("--files", type=int, default=None, help="number of files (default 2000; --quick 500)")
    parser.add_argument("--per-item", type=int, default=20, help="files per item folder (default 20)")
    args = b.parse_args(parser)
    size = args.size or b.parse_size("200M" if args.quick else "2G")
    files = args.files or (500 if args.quick else 2000)

    with b.workdir(args.dir, "manifest-bench-") as tmp:
        root = tmp / "library"
        t0 = time.perf_counter()
        paths = build(root, size, files, args.per_item)
        built = time.perf_counter() - t0
        results: dict[str, list[tuple[float, int]]] = {}

        def measure(label: str, action) -> None:
            b.evict(paths)
            start = time.perf_counter()
            read = action()
            results.setdefault(label, []).append((time.perf_counter() - start, read))

        def refresh() -> int:
            return update_manifest(root, "Bench").bytes_hashed

        for n in range(args.repeat):
            forget(root)
            measure("cold run (no state)", refresh)
            measure("re-run, nothing changed", refresh)
            changed = paths[(len(paths) // 2 + n) % len(paths)]
            with open(changed, "r+b") as fh:
                fh.write(f"CHANGED{n}".encode())
            # rsync -a gives a changed file the primary's mtime, minutes old here: older than the
            # cache's 2-second racy window (files modified within it are hashed again on the next run)
            stamp = time.time() - 600 + n
            os.utime(changed, (stamp, stamp))
            measure("re-run, one file changed", refresh)
            measure("read + md5 every byte (what the original does every run)", lambda: read_everything(paths))

        total = sum(p.stat().st_size for p in paths)
        state = (root / STATE_DIRNAME / "state.json").stat().st_size

    b.header("Manifest refresh: content-hash cache vs reading every byte",
             f"library: {len(paths):,} files in {-(-len(paths) // args.per_item):,} items, {total:,} bytes of random "
             f"data (written in {built:.1f} s); state file {state:,} bytes",
             f"page cache: this library's pages evicted before each run; median of {args.repeat} runs")
    b.table("Manifest refresh", ["run", "seconds", "bytes read"],
            [(label, f"{b.median([s for s, _ in runs]):.3f}", f"{b.median([r for _, r in runs]):,.0f}")
             for label, runs in results.items()])


if __name__ == "__main__":
    main()
