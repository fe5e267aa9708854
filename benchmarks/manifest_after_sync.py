"""Benchmark: bytes the manifest step reads after a sync, now that rsync reports each file's md5.

A real ``library-syncer server`` (sshd + rrsync -ro) on 127.0.0.1 exports two items: an ISO
and an OVF template (descriptor, one VMDK, a ``.mf`` with SHA-256 of both), each file of
``--size`` random bytes (default 512 MiB; ``--quick`` 64 MiB).  A site syncs with the product's
``run_sync``: first sync, then after 1 % of the ISO changed, then after 1 % of the VMDK changed
(with its new ``.mf``), then once more with nothing changed.  Reported per sync: files rsync
transferred, their bytes (what a manifest that hashes each changed file once must read), the
bytes and files the manifest step read (``SyncResult.manifest_bytes_read``, counted by the hash
cache), the manifest step's seconds and the load average (timings are only indicative on a
shared machine; the byte counts are exact and do not depend on load).

Usage: python benchmarks/manifest_after_sync.py [--quick] [--size 512M]
"""

from __future__ import annotations

import argparse
import hashlib
import os
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


def patch_one_percent(path: Path) -> int:
    """Overwrite 1 % of the file in place, in the middle (size unchanged); returns the bytes changed."""
    size = path.stat().st_size
    length = max(1, size // 100)
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(os.urandom(length))
    return length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    b.common_args(parser)
    parser.add_argument("--size", type=b.parse_size, default=None, help="bytes of the ISO and of the VMDK "
                        "(default 512M; --quick 64M)")
    args = b.parse_args(parser)
    size = args.size or b.parse_size("64M" if args.quick else "512M")

    from library_syncer.sync.result import Phase
    from library_syncer.sync.run import run_sync

    rows = []
    with b.workdir(args.dir, "manifest-after-sync-") as work:
        source = work / "source"
        iso = source / "Tools" / "tools.iso"
        web = source / "Web"
        disk = web / "web-disk1.vmdk"
        b.write_random(iso, size)
        b.write_random(disk, size)
        (web / "web.ovf").write_text(OVF)
        write_mf(web)
        with b.sync_server(work, source) as server:
            settings = server.settings(work / "site", work / "site-state")

            def sync(label: str, changed: list[str]) -> None:
                marks: dict[str, float] = {}

                def on_event(event) -> None:
                    if isinstance(event, Phase):
                        marks[event.name] = time.perf_counter()

                load = b.load1()
                r = run_sync(settings, on_event=on_event)
                if not r.ok or r.kind != "ok":
                    raise SystemExit(f"benchmark: sync failed: {r.kind}: {r.reason}")
                changed_bytes = sum((source / p).stat().st_size for p in changed)
                manifest_s = marks.get("publish", marks.get("prune", 0.0)) - marks.get("manifest", 0.0)
                rows.append((label, f"{r.files_changed}", f"{changed_bytes:,}", f"{r.manifest_files_read}",
                             f"{r.manifest_bytes_read:,}", f"{manifest_s:.2f}", f"{load:.1f}"))

            sync("first sync (4 files, every one new)",
                 ["Tools/tools.iso", "Web/web.ovf", "Web/web-disk1.vmdk", "Web/web.mf"])
            patch_one_percent(iso)
            sync("1 % of the ISO changed", ["Tools/tools.iso"])
            patch_one_percent(disk)
            write_mf(web)
            sync("1 % of the VMDK changed, its .mf (SHA-256) rewritten", ["Web/web-disk1.vmdk", "Web/web.mf"])
            sync("nothing changed", [])

    b.header("Manifest after a sync: bytes read by the manifest step",
             f"library: an ISO ({size:,} bytes) and an OVF template (descriptor, VMDK of {size:,} bytes, .mf with "
             "SHA-256); real server (sshd + rrsync -ro) and the product's sync over SSH on 127.0.0.1",
             "rsync --checksum-choice=md5 reports each transferred file's verified md5 (%C); the manifest takes it")
    b.table("Bytes the manifest step reads after a sync",
            ["sync", "files transferred", "bytes of those files", "files read", "bytes read", "manifest s",
             "load"], rows,
            note="bytes of those files = what a manifest hashing each changed file once reads; a file the .mf checks "
                 "with SHA-256 (a digest rsync cannot give) is read once, all digests in one pass.")


if __name__ == "__main__":
    main()
