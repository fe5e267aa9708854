"""Benchmark: time of a sync where nothing changed, for libraries of 100, 1,000 and 10,000 files.

For each size a source library of small random files (4 KiB, 20 per item folder) is
exported by a real ``library-syncer server`` (sshd + rrsync -ro) on 127.0.0.1; a site
makes its first sync with the product's own ``run_sync``, then syncs again ``--repeat``
times with nothing changed.  Reported (medians of the no-op syncs): wall seconds, the
seconds of each step (listing + delete guard, rsync transfer, manifest, the rest:
cleanup/publish check/prune), bytes on the wire and the server's CPU seconds (sshd and its
sessions, from /proc/PID/stat).

Usage: python benchmarks/noop_sync.py [--quick] [--counts 100,1000,10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import benchlib as b

FILE_SIZE = 4096
PER_ITEM = 20


def build(root: Path, count: int) -> None:
    for n in range(count):
        path = root / f"item-{n // PER_ITEM:04d}" / f"file-{n:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(FILE_SIZE))


def timed_sync(settings) -> tuple[float, dict[str, float], int]:
    """One run_sync: (seconds, seconds per step, bytes on the wire)."""
    from library_syncer.sync.result import Phase
    from library_syncer.sync.run import run_sync

    marks: list[tuple[str, float]] = []

    def on_event(event) -> None:
        if isinstance(event, Phase):
            marks.append((event.name, time.perf_counter()))

    start = time.perf_counter()
    r = run_sync(settings, on_event=on_event)
    end = time.perf_counter()
    if not r.ok:
        raise SystemExit(f"benchmark: sync failed: {r.reason}")
    steps: dict[str, float] = {}
    for (name, t), nxt in zip(marks, [t for _, t in marks[1:]] + [end]):
        steps[name] = steps.get(name, 0.0) + nxt - t
    return end - start, steps, r.wire_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    b.common_args(parser)
    parser.add_argument("--counts", default=None, help="comma-separated file counts (default 100,1000,10000)")
    args = b.parse_args(parser)
    counts = [int(c) for c in (args.counts or ("100,1000" if args.quick else "100,1000,10000")).split(",")]

    rows = []
    started = time.monotonic()
    for count in counts:
        with b.workdir(args.dir, "noop-bench-") as work:
            source = work / "source"
            build(source, count)
            with b.sync_server(work, source) as server:
                settings = server.settings(work / "site", work / "site-state")
                first, _, first_wire = timed_sync(settings)
                runs = []
                for _ in range(args.repeat):
                    cpu = server.cpu_seconds()
                    seconds, steps, wire = timed_sync(settings)
                    runs.append((seconds, steps, wire, server.cpu_seconds() - cpu))

        def med(f) -> float:
            return b.median([f(r) for r in runs])

        rest = lambda r: (r[0] - r[1].get("connect", 0) - r[1].get("listing", 0) - r[1].get("transfer", 0)  # noqa: E731
                          - r[1].get("manifest", 0))
        rows.append((f"{count:,} files, {-(-count // PER_ITEM):,} items", f"{first:.2f}", f"{med(lambda r: r[0]):.2f}",
                     f"{med(lambda r: r[1].get('connect', 0)):.2f}",
                     f"{med(lambda r: r[1].get('listing', 0)):.2f}", f"{med(lambda r: r[1].get('transfer', 0)):.2f}",
                     f"{med(lambda r: r[1].get('manifest', 0)):.2f}", f"{med(rest):.2f}",
                     f"{med(lambda r: r[2]):,.0f}", f"{med(lambda r: r[3]):.2f}"))

    b.header("No-op sync: nothing changed at the source",
             f"library: files of {FILE_SIZE} random bytes, {PER_ITEM} per item folder; real server (sshd + rrsync -ro) "
             "and the product's sync over SSH on 127.0.0.1",
             f"median of {args.repeat} no-op syncs after the first sync; measured in {time.monotonic() - started:.0f} s")
    b.table("No-op sync time", ["library", "first sync s", "no-op sync s", "connect s", "listing s", "rsync s",
                                "manifest s",
                                "other steps s", "bytes on the wire", "server CPU s"], rows,
            note="One SSH connection (login) per sync: connect = the login and the origin query; listing = the "
                 "top-level listing for the delete guard; rsync = the transfer and the second origin query; other = "
                 "cleanup, publish check, prune. The sessions after the login share its connection.")


if __name__ == "__main__":
    main()
