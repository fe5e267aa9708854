"""Benchmark: the original's steps and ours, side by side, from the same real server in one run.

A library of N template items (an .ovf, a .mf and a random VMDK each) is exported by a real
``library-syncer server`` on 127.0.0.1.  Two sites pull it:

* the original's steps: ``rsync -avh --delete`` over the same SSH account into a folder, then
  the md5 of every byte of every item, as its manifest script computed on every run;
* ours: ``library-syncer sync`` (staging, guard, manifest through the hash cache, publish).

Before each measured step the page cache's dirty pages are written out (``sync``), so neither
side pays for the other's writes.  Scenarios: first sync, a sync where nothing changed, and a sync after 1 % of one template's VMDK
changed in place.  Every export finished before the sites sync (files dated back, the primary's
origin manifest has rescanned them), as when sites sync on their schedule after an export.  Reported per scenario: wall seconds, CPU seconds (the site's processes plus the
server's sshd and sessions), bytes on the wire, and ours / original.

Usage: python benchmarks/side_by_side.py [--quick] [--items 8] [--size 256M] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import time
from pathlib import Path

import benchlib as b

CHUNK = 8 * 1024 * 1024


def build(root: Path, items: int, size: int) -> list[Path]:
    """N template items; returns their VMDKs."""
    disks = []
    for n in range(items):
        item = root / f"template-{n:02d}"
        item.mkdir(parents=True)
        disk = item / "disk.vmdk"
        b.write_random(disk, size)
        (item / "vm.ovf").write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" '
            'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References><File ovf:href="disk.vmdk" '
            f'ovf:id="f{n}"/></References><VirtualSystem ovf:id="vm-{n}"/></Envelope>\n')
        disks.append(disk)
    return disks


def md5_everything(root: Path) -> int:
    """The original manifest script's work: md5 of every byte of every file; returns bytes read."""
    total = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h = hashlib.md5()
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
                total += len(chunk)
    return total


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def wire_bytes(stats: str) -> int:
    total = 0
    for line in stats.splitlines():
        if line.startswith(("Total bytes sent:", "Total bytes received:")):
            total += int(line.split(":")[1].strip().replace(",", ""))
    return total


def original(server: b.SyncServer, dest: Path) -> tuple[float, float, int, int]:
    """rsync -avh --delete, then md5 of everything: (wall s, site CPU s, wire bytes, bytes read by the md5s)."""
    rsh = (f"ssh -F /dev/null -p {server.port} -i {server.key} -o BatchMode=yes -o IdentitiesOnly=yes "
           f"-o UserKnownHostsFile={server.known_hosts} -o StrictHostKeyChecking=yes")
    cpu0, self0, t0 = _children_cpu(), _self_cpu(), time.perf_counter()
    r = subprocess.run(["rsync", "-avh", "--delete", "--stats", "--no-human-readable", "-e", rsh,
                        f"{b.user()}@127.0.0.1:./", f"{dest}/"],
                       capture_output=True, text=True, env=b.clean_env())
    if r.returncode:
        raise SystemExit(f"benchmark: the original's rsync failed: {r.stderr.strip()}")
    read = md5_everything(dest)
    return time.perf_counter() - t0, _children_cpu() - cpu0 + _self_cpu() - self0, wire_bytes(r.stdout), read


def ours(server: b.SyncServer, library: Path, state: Path) -> tuple[float, float, int, int]:
    """The product's sync (``run_sync``, what ``library-syncer sync`` runs) in a process of its own:
    (wall s, site CPU s, wire bytes, bytes its manifest step read)."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    result = b.run_json(b.SYNC_PROCESS, json.dumps(server.settings_values(library, state)))
    return time.perf_counter() - t0, _children_cpu() - cpu0, int(result["wire"]), int(result["manifest_bytes_read"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    b.common_args(parser)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--size", default=None, help="size of each VMDK (default 256M: 2 GiB in all, --quick 8M)")
    args = b.parse_args(parser)
    size = b.parse_size(args.size or ("8M" if args.quick else "256M"))
    started = time.monotonic()
    rows = []
    with b.workdir(args.dir, "side-by-side-") as work:
        source = work / "source"
        disks = build(source, args.items, size)
        b.date_back([p for p in source.rglob("*") if p.is_file()], 3600)
        with b.sync_server(work, source) as server:
            server.rescan(source, [d.relative_to(source).as_posix() for d in disks])
            runs: dict[str, list[tuple[float, float, int, int, float, float, int, int]]] = {}
            for n in range(args.repeat):
                orig_dir, site, state = work / f"orig-{n}", work / f"site-{n}", work / f"state-{n}"
                for scenario in ("first sync", "nothing changed", "1 % of one template changed"):
                    if scenario.startswith("1 %"):
                        disk = disks[n % len(disks)]
                        b.patch_one_percent(disk)
                        b.date_back([disk], 600)
                        server.rescan(source, [disk.relative_to(source).as_posix()])
                    # Each side starts with no dirty pages of the other's writes to flush (the
                    # original leaves its copy unwritten to disk; ours writes with --fsync).
                    os.sync()
                    c0 = server.cpu_seconds()
                    o_wall, o_cpu, o_wire, o_read = original(server, orig_dir)
                    c1 = server.cpu_seconds()
                    os.sync()
                    u_wall, u_cpu, u_wire, u_read = ours(server, site, state)
                    c2 = server.cpu_seconds()
                    runs.setdefault(scenario, []).append((o_wall, o_cpu + c1 - c0, o_read, o_wire,
                                                          u_wall, u_cpu + c2 - c1, u_wire, u_read))
    for scenario, values in runs.items():
        def med(i: int) -> float:
            return b.median([v[i] for v in values])
        o_wall, o_cpu, o_read, o_wire = med(0), med(1), med(2), med(3)
        u_wall, u_cpu, u_wire, u_read = med(4), med(5), med(6), med(7)
        rows.append((scenario, f"{o_wall:.2f}", f"{u_wall:.2f}", f"{u_wall / o_wall:.2f}", f"{o_cpu:.2f}",
                     f"{u_cpu:.2f}", f"{u_cpu / o_cpu:.2f}", f"{o_wire:,.0f}", f"{u_wire:,.0f}", f"{o_read:,.0f}",
                     f"{u_read:,.0f}"))
    b.header("Side by side: the original's steps and ours, same server, same library",
             f"{args.items} template items, each a {b.human(size)} random VMDK + .ovf; real server (sshd + rrsync "
             "-ro through the dispatcher) on 127.0.0.1; files in the page cache",
             f"median of {args.repeat} rounds (each round: new site folders, first sync, no-op, 1 % change); "
             f"measured in {time.monotonic() - started:.0f} s")
    b.table("Original's steps vs ours", ["scenario", "original wall s", "ours wall s", "ours / original",
                                         "original CPU s", "ours CPU s", "ours / original", "original wire B",
                                         "ours wire B", "original manifest read B", "ours manifest read B"], rows,
            note="CPU = the site's processes + the server's sshd and sessions. The original: rsync -avh --delete, "
                 "then md5 of every byte of every item (its manifest script). Ours: library-syncer sync (its "
                 "manifest takes the digests of what rsync wrote from the primary's origin manifest).")


if __name__ == "__main__":
    main()
