"""Benchmark: bytes on the wire for real disks (VMDKs of an ext4 file system holding real files)
after a template update, stream-optimized (as OVF exports write them) and flat, with and without
rsync's compression.

An ext4 image (``--disk``, default 1 GiB) is made from about half its size of files copied from
/usr/share and /usr/lib, converted by ``qemu-img`` to a ``streamOptimized`` VMDK and to a
``monolithicFlat`` one (descriptor + ``-flat.vmdk``), each one item of a library exported by a real
``library-syncer server`` (sshd + rrsync) on 127.0.0.1.  Then ``--patch`` files (default 200) are
patched and ``--add`` (default 8 MiB) of other real files added, in two ways: in place through
``debugfs`` (what a guest does when it is updated: everything else keeps its blocks) and by building
the file system again from the changed folder (``mkfs.ext4 -d``: files after the first one that grew
move).  Each version is converted again and synced by the product's own sync (``run_sync``), one
site per disk format and ``SYNC_COMPRESS`` value, and the bytes on the wire (rsync ``--stats``, both
directions) are set against the file size (what vCenter's own sync would send).

Usage: python benchmarks/real_disks.py [--quick] [--disk 1G] [--patch 200] [--add 8M] [--modes none,zstd]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib as b
import diskimage as d

FORMATS = {"stream": "streamOptimized", "flat": "monolithicFlat"}
VERSIONS = ("v1", "in place", "rebuilt")


def build(work: Path, disk: int, content_bytes: int, patch: int, add: int, seed: int):
    """The three raw images (v1, v2 patched in place, v2 rebuilt) as VMDKs; facts for the table."""
    rng = random.Random(seed)
    raw = work / "raw"
    raw.mkdir()
    started = time.perf_counter()
    content = d.real_files(content_bytes, work / "tree", rng)
    d.make_ext4(content.tree, raw / "v1.img", disk)
    d.copy_image(raw / "v1.img", raw / "in place.img")
    change = d.change_files(content, patch, add, rng)
    d.patch_in_place(raw / "in place.img", content.tree, change)
    d.make_ext4(content.tree, raw / "rebuilt.img", disk)
    jobs = [(v, fmt, sub) for v in VERSIONS for fmt, sub in FORMATS.items()]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # qemu-img is one thread each
        done = pool.map(lambda j: d.to_vmdk(raw / f"{j[0]}.img", work / "vmdk" / j[0] / j[1] / "disk.vmdk", j[2]),
                        jobs)
        disks = {(v, fmt): files for (v, fmt, _), files in zip(jobs, done)}
    blocks = {v: d.changed_blocks(raw / "v1.img", raw / f"{v}.img") for v in VERSIONS[1:]}
    seconds = time.perf_counter() - started
    for image in raw.iterdir():
        image.unlink()
    return content, change, disks, blocks, seconds


def publish(source: Path, files: dict[str, list[Path]]) -> None:
    """Make the library's items hold these files (hard links, switched by rename)."""
    for fmt, paths in files.items():
        item = source / f"template-{fmt}"
        item.mkdir(parents=True, exist_ok=True)
        for path in paths:
            tmp = item / f".{path.name}.new"
            tmp.unlink(missing_ok=True)
            os.link(path, tmp)
            os.replace(tmp, item / path.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 256 MiB disk instead of 1 GiB")
    parser.add_argument("--disk", type=b.parse_size, default=None, help="virtual disk size (default 1G)")
    parser.add_argument("--content", type=b.parse_size, default=None, help="real files in it (default half)")
    parser.add_argument("--patch", type=int, default=200, help="files patched by the update")
    parser.add_argument("--add", type=b.parse_size, default=b.parse_size("8M"), help="real files added")
    parser.add_argument("--modes", default="none,zstd",
                        help="SYNC_COMPRESS values to compare, the first also for the rebuilt layout (zlib: "
                        "about 3 more minutes)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the file choice and patches")
    parser.add_argument("--dir", type=Path, default=None, help="parent folder of the temporary work folder")
    args = parser.parse_args()
    disk = args.disk or (256 * b.MiB if args.quick else b.GiB)
    disk -= disk % (1024 * 1024)
    content_bytes = args.content or disk // 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    b.require("qemu-img", "mkfs.ext4", "debugfs", "e2fsck")
    from library_syncer.sync.run import run_sync

    with b.workdir(args.dir, "real-disks-") as work:
        content, change, disks, blocks, build_s = build(work, disk, content_bytes, args.patch, args.add, args.seed)
        sizes = [(v, f"{blocks.get(v, 0):,}" if v != "v1" else "-",
                  *(f"{sum(p.stat().st_size for p in disks[v, f]):,}" for f in FORMATS)) for v in VERSIONS]
        source = work / "source"
        publish(source, {fmt: disks["v1", fmt] for fmt in FORMATS})
        with b.sync_server(work, source) as server:
            sites = {(fmt, mode): server.settings(work / f"site-{fmt}-{mode}", work / f"state-{fmt}-{mode}",
                                                  sync_include=(f"template-{fmt}",), sync_compress=mode)
                     for fmt in FORMATS for mode in modes}
            rows = []

            def sync(fmt: str, mode: str, label: str, record: bool = True) -> None:
                size = sum(p.stat().st_size for p in disks["v1" if label == "first sync" else label, fmt])
                cpu0, srv0 = resource.getrusage(resource.RUSAGE_CHILDREN), server.sshd_cpu_seconds()
                start = time.perf_counter()
                r = run_sync(sites[fmt, mode])
                seconds = time.perf_counter() - start
                cpu1, srv1 = resource.getrusage(resource.RUSAGE_CHILDREN), server.sshd_cpu_seconds()
                if not r.ok:
                    raise SystemExit(f"benchmark: sync failed: {r.reason}")
                if record:
                    site_cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
                    rows.append((fmt, label, mode, f"{size:,}", f"{r.literal_bytes:,}", f"{r.wire_bytes:,}",
                                 f"{r.wire_bytes / size:.2%}", f"{size / r.wire_bytes:,.1f}x", f"{seconds:.1f}",
                                 f"{site_cpu:.1f}", f"{srv1 - srv0:.1f}"))

            for fmt in FORMATS:
                for mode in modes:
                    sync(fmt, mode, "first sync")
            publish(source, {fmt: disks["in place", fmt] for fmt in FORMATS})
            for fmt in FORMATS:
                for mode in modes:
                    sync(fmt, mode, "in place")
            # The rebuilt layout from v1 again, uncompressed only (its point is the layout, not compression).
            publish(source, {fmt: disks["v1", fmt] for fmt in FORMATS})
            for fmt in FORMATS:
                sync(fmt, modes[0], "v1", record=False)
            publish(source, {fmt: disks["rebuilt", fmt] for fmt in FORMATS})
            for fmt in FORMATS:
                sync(fmt, modes[0], "rebuilt")

    b.header("Real disks: bytes on the wire after a template update, stream-optimized and flat VMDKs",
             f"virtual disk {b.human(disk)}, ext4 holding {len(content.files):,} real files "
             f"({b.human(content.bytes)}) copied from /usr/share and /usr/lib (seed {args.seed})",
             f"update: {len(change.patched)} files patched (512 bytes rewritten, 1 KiB appended each) and "
             f"{len(change.added)} real files added ({b.human(change.bytes_added)}); about "
             f"{b.human(change.bytes_patched + change.bytes_added)} of file data changed",
             "'in place': the update written into the v1 image by debugfs (rm + write each patched file), "
             "as a guest does; 'rebuilt': mkfs.ext4 -d of the changed folder (every file after the first "
             "that grew moves)",
             "real server (sshd + rrsync -ro) and the product's sync over SSH on 127.0.0.1, one site per "
             "format and SYNC_COMPRESS value; 'file size' is what vCenter's own sync sends",
             "site CPU: rsync and ssh of the sync; server CPU: the server's sshd and its sessions (rrsync, the "
             "rsync sender), not the server's own origin manifest rescans of the new disks",
             f"images made and converted in {build_s:.0f} s (qemu-img {qemu_version()})",
             "timings are one run each on a shared machine: see the load average")
    b.table("Disk images", ["version", "4 KiB blocks changed vs v1", "streamOptimized VMDK bytes",
                            "monolithicFlat bytes (descriptor + extent)"], sizes)
    b.table("Bytes on the wire", ["disk", "sync", "SYNC_COMPRESS", "file size", "rsync literal bytes",
                                  "bytes on the wire", "wire / file size", "vs whole file", "sync s",
                                  "site CPU s", "server CPU s"], rows)


def qemu_version() -> str:
    out = d.run("qemu-img", "--version").split()
    return out[2] if len(out) > 2 else "?"


if __name__ == "__main__":
    main()
