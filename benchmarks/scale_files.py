"""Benchmark: a library of many files (100,000 by default): sync time, manifest refresh and client memory.

A source library of small random files (1 KiB, 100 per item folder) is exported by a real
``library-syncer server`` on 127.0.0.1.  A site (its own process, the product's ``run_sync``)
makes its first sync and then a sync where nothing changed; each reports its wall time, the
manifest step's time and its peak RSS.  Then the manifest alone is refreshed on the synced tree
with nothing changed (``update_manifest``, the hash cache warm).

Usage: python benchmarks/scale_files.py [--quick] [--files 100000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import benchlib as b

FILE_SIZE = 1024
PER_ITEM = 100

_MANIFEST = """
import json, resource, sys, time
from library_syncer.vcsp.manifest import update_manifest
t0 = time.perf_counter()
update_manifest(__import__("pathlib").Path(sys.argv[1]), "Library")
print(json.dumps({"seconds": time.perf_counter() - t0, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def build(root: Path, count: int) -> None:
    for n in range(count):
        path = root / f"item-{n // PER_ITEM:05d}" / f"file-{n:06d}.bin"
        if n % PER_ITEM == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(FILE_SIZE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    b.common_args(parser)
    parser.add_argument("--files", type=int, default=None, help="number of files (default 100000; --quick 10000)")
    args = b.parse_args(parser)
    count = args.files or (10_000 if args.quick else 100_000)
    started = time.monotonic()
    rows = []
    with b.workdir(args.dir, "scale-files-") as work:
        source = work / "source"
        build(source, count)
        with b.sync_server(work, source) as server:
            values = server.settings_values(work / "site", work / "state")
            cpu = server.cpu_seconds()
            first = b.run_json(b.SYNC_PROCESS, json.dumps(values))
            first_cpu = server.cpu_seconds() - cpu
            noops = []
            for _ in range(args.repeat):
                cpu = server.cpu_seconds()
                noops.append((b.run_json(b.SYNC_PROCESS, json.dumps(values)), server.cpu_seconds() - cpu))
        staging = work / "site" / ".library-syncer" / "staging"
        refresh = [b.run_json(_MANIFEST, str(staging)) for _ in range(args.repeat)]
    rows.append(("first sync", f"{first['seconds']:.1f}", f"{first['manifest_seconds']:.1f}",
                 f"{first['rss_kib'] / 1024:.0f} MiB", f"{first['child_rss_kib'] / 1024:.0f} MiB", f"{first_cpu:.1f}",
                 f"{first['wire']:,}"))
    med = lambda f: b.median([f(r) for r in noops])  # noqa: E731
    rows.append(("sync, nothing changed", f"{med(lambda r: r[0]['seconds']):.1f}",
                 f"{med(lambda r: r[0]['manifest_seconds']):.1f}", f"{max(r[0]['rss_kib'] for r in noops) / 1024:.0f} MiB",
                 f"{max(r[0]['child_rss_kib'] for r in noops) / 1024:.0f} MiB", f"{med(lambda r: r[1]):.1f}",
                 f"{med(lambda r: r[0]['wire']):,.0f}"))
    rows.append(("manifest refresh alone, nothing changed", f"{b.median([r['seconds'] for r in refresh]):.1f}", "",
                 f"{max(r['rss_kib'] for r in refresh) / 1024:.0f} MiB", "", "", ""))
    b.header(f"Scale: a library of {count:,} files",
             f"{count:,} random files of {FILE_SIZE} B, {PER_ITEM} per item ({-(-count // PER_ITEM):,} items); real server "
             "(sshd + rrsync -ro) on 127.0.0.1; each sync is its own process (the product's run_sync)",
             f"median of {args.repeat}; measured in {time.monotonic() - started:.0f} s")
    b.table("Many files: time, manifest and memory", ["step", "wall s", "manifest step s", "peak RSS",
                                                      "rsync/ssh peak RSS", "server CPU s", "bytes on the wire"], rows,
            note="peak RSS: the site's sync process (or the manifest process), and the largest of its children "
                 "(rsync, ssh), from getrusage.")


if __name__ == "__main__":
    main()
