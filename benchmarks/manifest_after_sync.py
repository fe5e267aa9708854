"""Benchmark: bytes the manifest step reads after a sync, with each of rsync's checksum choices.

A real ``library-syncer server`` (sshd + rrsync -ro) on 127.0.0.1 exports two items: an ISO
and an OVF template (descriptor, one VMDK, a ``.mf`` with SHA-256 of both), each file of
``--size`` random bytes (default 512 MiB; ``--quick`` 64 MiB).  For each ``SYNC_CHECKSUM``
(xxh128, the default, then md5; a new library, server and site each) a site syncs with the
product's ``run_sync``: first sync, then after 1 % of the ISO changed, then after 1 % of the
VMDK changed (with its new ``.mf``), then once more with nothing changed -- all while the
primary's origin manifest has not read these files yet (written within its settle time; the
server runs with ``--origin-refresh-seconds 3600`` and rescans on SIGHUP only).  Then the files
are dated an hour back (an export finished a while ago), the server rescans, and 1 % of the
ISO, then of the VMDK, changes again, dated back and rescanned: the origin manifest has each
file's md5, xxh128 and SHA-256.  Reported per sync: files rsync transferred, their bytes (what
a manifest that hashes each changed file once must read), whether the origin had the disk,
the bytes and files the manifest step read (``SyncResult.manifest_bytes_read``, counted by the
hash cache), the manifest step's and the whole sync's seconds and the load average (timings are
only indicative on a shared machine; the byte counts are exact and do not depend on load).
Last, what md5 costs rsync: 1 % of the VMDK changed, the product's rsync command with
``--checksum-choice=xxh128`` and with ``md5``, into a folder of its own; server CPU (sshd and its
sessions) and rsync's CPU at the site, plus, for xxh128, the CPU of the md5 read a manifest
without the origin's digests needs (median of ``--repeat``).

Usage: python benchmarks/manifest_after_sync.py [--quick] [--size 512M]
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import subprocess
import time
from pathlib import Path

import benchlib as b

OVF = ('<?xml version="1.0" encoding="UTF-8"?>\n<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" '
       'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References><File ovf:href="web-disk1.vmdk" '
       'ovf:id="file1"/></References><VirtualSystem ovf:id="web"/></Envelope>\n')


def write_mf(item: Path) -> None:
    """The template's .mf: SHA-256 of its descriptor and disk, as an OVF export writes it."""
    lines = []
    for name in ("web.ovf", "web-disk1.vmdk"):
        h = hashlib.sha256()
        with open(item / name, "rb") as fh:
            while chunk := fh.read(8 << 20):
                h.update(chunk)
        lines.append(f"SHA256({name})= {h.hexdigest()}")
    (item / "web.mf").write_text("\n".join(lines) + "\n")


def rsync_cost(server, dest: Path, disk: Path, repeat: int) -> list[tuple[str, ...]]:
    """Server CPU and site CPU of the product's rsync after 1 % of ``disk`` changed, xxh128 vs md5."""
    from library_syncer.transport import rsync as rs

    rsh = (f"ssh -F /dev/null -p {server.port} -i {server.key} -o BatchMode=yes -o IdentitiesOnly=yes "
           f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={server.known_hosts}")
    dest.mkdir()

    def run(choice: str) -> tuple[float, float]:
        cmd = [a for a in rs.sync_command(rs.remote_source(b.user(), "127.0.0.1"), dest, rsh=rsh)
               if not a.startswith("--checksum-choice")]
        cmd.insert(1, f"--checksum-choice={choice}")
        cpu0, own0 = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run(cmd, capture_output=True, text=True, env=rs.child_env())
        if p.returncode:
            raise SystemExit(f"benchmark: rsync failed: {p.stderr.strip()}")
        own1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return server.cpu_seconds() - cpu0, own1.ru_utime - own0.ru_utime + own1.ru_stime - own0.ru_stime

    run("xxh128")
    runs: dict[str, list[tuple[float, float, float]]] = {"xxh128": [], "md5": []}
    for _ in range(repeat):
        for choice in runs:
            b.patch_one_percent(disk)
            server_cpu, site_cpu = run(choice)
            start = time.process_time()
            if choice == "xxh128":
                b.md5_file(dest / "Web" / "web-disk1.vmdk")  # what the manifest reads then
            runs[choice].append((server_cpu, site_cpu, time.process_time() - start))
    return [(f"--checksum-choice={c}", *(f"{b.median([r[i] for r in rs_]):.2f}" for i in range(3)),
             f"{b.median([r[0] + r[1] + r[2] for r in rs_]):.2f}") for c, rs_ in runs.items()]


def scenario(work: Path, size: int, checksum: str, repeat: int, rows: list[tuple[str, ...]]
             ) -> list[tuple[str, ...]]:
    """The syncs of the docstring with ``SYNC_CHECKSUM=checksum``, each a row of ``rows``; then rsync's cost."""
    from library_syncer.sync.result import Phase
    from library_syncer.sync.run import run_sync

    source = work / "source"
    iso = source / "Tools" / "tools.iso"
    web = source / "Web"
    disk = web / "web-disk1.vmdk"
    b.write_random(iso, size)
    b.write_random(disk, size)
    (web / "web.ovf").write_text(OVF)
    write_mf(web)
    with b.sync_server(work, source, extra=("--origin-refresh-seconds", 3600)) as server:
        settings = server.settings(work / "site", work / "site-state", sync_checksum=checksum)

        def sync(label: str, changed: list[str]) -> None:
            marks: dict[str, float] = {}

            def on_event(event) -> None:
                if isinstance(event, Phase):
                    marks[event.name] = time.perf_counter()

            load = b.load1()
            vouched = "yes" if server.origin_md5("Web/web-disk1.vmdk") == b.md5_file(disk) else "no"  # has the disk now
            r = run_sync(settings, on_event=on_event)
            if not r.ok or r.kind != "ok":
                raise SystemExit(f"benchmark: sync failed: {r.kind}: {r.reason}")
            changed_bytes = sum((source / p).stat().st_size for p in changed)
            manifest_s = marks.get("publish", marks.get("prune", 0.0)) - marks.get("manifest", 0.0)
            rows.append((checksum, label, f"{r.files_changed}", f"{changed_bytes:,}", vouched,
                         f"{r.manifest_files_read}", f"{r.manifest_bytes_read:,}", f"{manifest_s:.2f}",
                         f"{r.duration:.2f}", f"{load:.1f}"))

        sync("first sync (4 files, every one new)",
             ["Tools/tools.iso", "Web/web.ovf", "Web/web-disk1.vmdk", "Web/web.mf"])
        b.patch_one_percent(iso)
        sync("1 % of the ISO changed", ["Tools/tools.iso"])
        b.patch_one_percent(disk)
        write_mf(web)
        sync("1 % of the VMDK changed, its .mf (SHA-256) rewritten", ["Web/web-disk1.vmdk", "Web/web.mf"])
        sync("nothing changed", [])

        files = [iso, disk, web / "web.ovf", web / "web.mf"]
        b.date_back(files, 3600)
        server.rescan(source, ["Web/web-disk1.vmdk"])
        sync("all files dated back (rsync re-sends them, all blocks matched)",
             ["Tools/tools.iso", "Web/web.ovf", "Web/web-disk1.vmdk", "Web/web.mf"])
        for label, target in (("the ISO", iso), ("the VMDK", disk)):
            b.patch_one_percent(target)
            changed = [target.relative_to(source).as_posix()]
            if target == disk:
                write_mf(web)
                changed.append("Web/web.mf")
            b.date_back([source / p for p in changed], 1800)
            server.rescan(source, changed[:1])
            sync(f"1 % of {label} changed, the origin manifest has it", changed)
        return rsync_cost(server, work / "cost", disk, repeat) if checksum == "md5" else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    b.common_args(parser)
    parser.add_argument("--size", type=b.parse_size, default=None, help="bytes of the ISO and of the VMDK "
                        "(default 512M; --quick 64M)")
    args = b.parse_args(parser)
    size = args.size or b.parse_size("64M" if args.quick else "512M")

    rows: list[tuple[str, ...]] = []
    cost: list[tuple[str, ...]] = []
    with b.workdir(args.dir, "manifest-after-sync-") as work:
        for checksum in ("xxh128", "md5"):
            cost = scenario(work / checksum, size, checksum, args.repeat, rows)

    b.header("Manifest after a sync: bytes read by the manifest step",
             f"library: an ISO ({size:,} bytes) and an OVF template (descriptor, VMDK of {size:,} bytes, .mf with "
             "SHA-256); real server (sshd + rrsync -ro) and the product's sync over SSH on 127.0.0.1",
             "rsync reports each transferred file's verified digest (%C): with md5 the manifest takes it; with "
             "xxh128 (the default) it takes the origin's md5 and SHA-256 of a file whose size and xxh128 the origin has")
    b.table("Bytes the manifest step reads after a sync",
            ["SYNC_CHECKSUM", "sync", "files transferred", "bytes of those files", "origin has the disk", "files read",
             "bytes read", "manifest s", "sync s", "load"], rows,
            note="bytes of those files = what a manifest hashing each changed file once reads; a file the .mf checks "
                 "with SHA-256 (a digest rsync cannot give) is read once, all digests in one pass.")

    b.table("What md5 costs rsync: 1 % of the VMDK changed", ["rsync checksums", "server CPU s", "site rsync CPU s",
            "site manifest md5 CPU s", "total CPU s"], cost,
            note="md5 is also rsync's block checksum (one --checksum-choice covers both): the sender (server) hashes "
                 "the matched blocks and the whole file with it, the site its old copy's blocks and the new file.")


if __name__ == "__main__":
    main()
