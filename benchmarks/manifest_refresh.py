"""Benchmark: manifest refresh with the content-hash cache vs reading every byte on every run.

Builds a library of ``--files`` files totalling ``--size`` bytes in a temporary
folder (items of ``--per-item`` files), then measures with the library's own
pages evicted from the page cache before each run (posix_fadvise DONTNEED):

* cold run (no state: every file is read once),
* re-run with nothing changed,
* re-run after one file changed,
* reading and md5-hashing every byte once, as the original did on every run.

Usage: python benchmarks/manifest_refresh.py [--size 2G] [--files 2000] [--per-item 20] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from library_syncer.vcsp import STATE_DIRNAME, update_manifest

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int:
    """Bytes of a size such as 2G, 500M or 1048576."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)i?B?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 2G, 500M)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build(root: Path, total: int, files: int, per_item: int) -> list[Path]:
    """Write the library: ``files`` files of about total/files bytes, fsynced, old mtimes."""
    size = max(1, total // files)
    block = os.urandom(1024 * 1024)
    old = time.time() - 86400
    paths = []
    for n in range(files):
        path = root / f"item {n // per_item:04d}" / f"file-{n:05d}.vmdk"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(n.to_bytes(8, "big"))
            left = size - 8
            while left > 0:
                left -= fh.write(block[: min(left, len(block))])
            fh.flush()
            os.fsync(fh.fileno())
        os.utime(path, (old, old))
        paths.append(path)
    return paths


def evict(paths: list[Path]) -> None:
    """Drop these files' clean pages from the page cache (only ours, not the machine's)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


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
    parser.add_argument("--size", type=parse_size, default=parse_size("2G"), help="total bytes (default 2G)")
    parser.add_argument("--files", type=int, default=2000, help="number of files (default 2000)")
    parser.add_argument("--per-item", type=int, default=20, help="files per item folder (default 20)")
    parser.add_argument("--dir", type=Path, default=None, help="parent folder of the temporary library")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="manifest-bench-", dir=args.dir))
    try:
        root = tmp / "library"
        t0 = time.perf_counter()
        paths = build(root, args.size, args.files, args.per_item)
        built = time.perf_counter() - t0
        rows = []

        def measure(label: str, action) -> None:
            evict(paths)
            start = time.perf_counter()
            read = action()
            rows.append((label, time.perf_counter() - start, read))

        def refresh() -> int:
            report = update_manifest(root, "Bench")
            return report.bytes_hashed

        measure("cold run (no state)", refresh)
        measure("re-run, nothing changed", refresh)
        changed = paths[len(paths) // 2]
        with open(changed, "r+b") as fh:
            fh.write(b"CHANGED!")
        measure("re-run, one file changed", refresh)
        measure("read + md5 every byte (original)", lambda: read_everything(paths))

        total = sum(p.stat().st_size for p in paths)
        state = (root / STATE_DIRNAME / "state.json").stat().st_size
        print(f"date:     {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}")
        print(f"machine:  {platform.platform()}; {cpu_model()}; {os.cpu_count()} cores; Python {platform.python_version()}")
        print(f"library:  {len(paths)} files in {-(-len(paths) // args.per_item)} items, {total:,} bytes"
              f" (written in {built:.1f} s); state file {state:,} bytes")
        print("page cache: this library's pages evicted before each run")
        print()
        print(f"{'run':<36} {'seconds':>9} {'bytes read':>16}")
        for label, seconds, read in rows:
            print(f"{label:<36} {seconds:>9.3f} {read:>16,}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
