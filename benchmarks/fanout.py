"""Benchmark: N = 1, 5, 20 sites syncing at once from one server on loopback.

One real ``library-syncer server`` (sshd + rrsync -ro) on 127.0.0.1 exports a library of
random files (default 256 MiB in 8 files, 4 items).  For each N, N site
processes (each its own site folder and state, running the product's ``run_sync``, what
``library-syncer sync`` runs) start at the same moment; measured are the
wall time until the last one has finished, the server's CPU seconds (sshd and every session
it served, utime+stime from /proc/PID/stat before/after) divided by N, and the clients' CPU
seconds and peak RSS (getrusage of the finished children, as /usr/bin/time -v reports them).
Each N is measured twice: a first sync of new sites (everything copied) and a re-sync with
nothing changed.  Medians of ``--repeat`` rounds.

Usage: python benchmarks/fanout.py [--quick] [--size 256M] [--clients 1,5,20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import benchlib as b

FILES = 8


def round_of(server: b.SyncServer, sites: list[Path]) -> tuple[float, float, float, int]:
    """Start one sync per site at once; (wall seconds, server CPU s, clients' CPU s, max client RSS KiB)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = server.cpu_seconds()
    start = time.perf_counter()
    procs = []
    for site in sites:
        log = open(site.parent / f"{site.name}.log", "ab")
        cmd = [sys.executable, __file__, "--site", str(server.port), str(server.key), str(server.known_hosts),
               str(site), str(site.parent / f"{site.name}-state")]
        procs.append(subprocess.Popen(cmd, env=b.clean_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log))
    try:
        for proc, site in zip(procs, sites):
            if proc.wait(timeout=1800):
                tail = (site.parent / f"{site.name}.log").read_text(errors="replace")[-1500:]
                raise SystemExit(f"benchmark: sync of {site.name} failed (exit {proc.returncode}):\n{tail}")
    except BaseException:
        for proc in procs:
            b.stop(proc)
        raise
    wall = time.perf_counter() - start
    time.sleep(0.5)  # let sshd reap its finished sessions so their CPU time is counted
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    clients = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
    return wall, server.cpu_seconds() - cpu, clients, after.ru_maxrss


def site_main(port: str, key: str, known_hosts: str, library: str, state: str) -> None:
    """One site's sync (a child process of this benchmark); exit 1 with the reason on failure."""
    from library_syncer.sync.run import run_sync

    server = b.SyncServer(None, int(port), Path(key), Path(known_hosts), Path(), Path())  # type: ignore[arg-type]
    result = run_sync(server.settings(Path(library), Path(state)))
    if not result.ok:
        raise SystemExit(f"sync failed: {result.reason}")


def main() -> None:
    if sys.argv[1:2] == ["--site"]:
        return site_main(*sys.argv[2:7])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    b.common_args(parser)
    parser.add_argument("--size", type=b.parse_size, default=None, help="library size (default 256M; --quick 32M)")
    parser.add_argument("--clients", default="1,5,20", help="comma-separated numbers of sites (default 1,5,20)")
    args = b.parse_args(parser)
    size = args.size or (b.parse_size("32M") if args.quick else b.parse_size("256M"))
    counts = [int(n) for n in args.clients.split(",")]

    rows = []
    started = time.monotonic()
    with b.workdir(args.dir, "fanout-bench-") as work:
        source = work / "source"
        for n in range(FILES):
            b.write_random(source / f"template-{n // 2}" / f"disk-{n}.vmdk", size // FILES)
        b.warm(list(source.rglob("*.vmdk")))
        with b.sync_server(work, source) as server:
            for n in counts:
                first, again = [], []
                for _ in range(args.repeat):
                    sites_dir = work / "sites"
                    shutil.rmtree(sites_dir, ignore_errors=True)
                    sites_dir.mkdir()
                    sites = [sites_dir / f"site-{i:02d}" for i in range(n)]
                    first.append(round_of(server, sites))
                    again.append(round_of(server, sites))
                    shutil.rmtree(sites_dir, ignore_errors=True)
                for label, runs in (("first sync", first), ("re-sync, nothing changed", again)):
                    def med(i: int) -> float:
                        return b.median([r[i] for r in runs])

                    rows.append((f"{n} × {label}", f"{med(0):.2f}", f"{med(1) / n:.2f}", f"{med(2) / n:.2f}",
                                 f"{max(r[3] for r in runs) / 1024:.0f} MiB"))

    b.header("Fan-out: N sites syncing at once from one server (loopback)",
             f"library: {b.human(size)} of random data in {FILES} files, {FILES // 2} items; real server "
             "(sshd + rrsync -ro); each site is its own process running the product's sync (run_sync), all started together",
             f"median of {args.repeat} rounds; measured in {time.monotonic() - started:.0f} s")
    b.table("Time to all-complete and CPU per site",
            ["sites × sync", "all complete s", "server CPU s per site", "client CPU s per site", "client peak RSS"],
            rows, note="server CPU: sshd with its sessions (ssh, rrsync, rsync sender); client CPU: the sync "
                       "process with its ssh and rsync (rsync, manifest md5, publish).")


if __name__ == "__main__":
    main()
