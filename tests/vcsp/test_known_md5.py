"""The manifest takes the md5 rsync verified for a file instead of reading it (``known_md5``)."""

from __future__ import annotations

import hashlib
import os

from library_syncer.vcsp.manifest import update_manifest

from .helpers import assert_one_etag_per_item, load, put, template


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_known_md5_spares_the_read_and_a_sha256_file_is_read_once(tmp_path):
    root = tmp_path / "lib"
    iso = put(root / "Tools" / "tools.iso", os.urandom(300_000))
    template(root / "Web", disk=os.urandom(500_000))
    disk, desc, mf = (root / "Web" / n for n in ("vm-disk1.vmdk", "vm.ovf", "vm.mf"))
    known = {f"{p.parent.name}/{p.name}": (p.stat().st_size, _md5(p)) for p in (iso, disk, desc, mf)}
    report = update_manifest(root, "Lib", known_md5=known)
    # The .mf checks the disk and the descriptor with SHA-256: each read once, in one pass.
    assert (report.files_hashed, report.bytes_hashed) == (2, disk.stat().st_size + desc.stat().st_size)
    assert_one_etag_per_item(root)

    put(iso, os.urandom(300_000))  # new bytes, known from rsync
    report = update_manifest(root, "Lib", known_md5={"Tools/tools.iso": (iso.stat().st_size, _md5(iso))})
    assert (report.files_hashed, report.bytes_hashed) == (0, 0) and report.changed
    assert_one_etag_per_item(root)


def test_known_md5_of_another_size_is_not_taken(tmp_path):
    root = tmp_path / "lib"
    iso = put(root / "Tools" / "tools.iso", b"x" * 1000)
    report = update_manifest(root, "Lib", known_md5={"Tools/tools.iso": (999, "0" * 32)})
    assert (report.files_hashed, report.bytes_hashed) == (1, 1000)
    files = load(root / "Tools" / "item.json")["files"]
    assert [f["size"] for f in files] == [1000]
    assert load(tmp_path / "lib" / ".library-syncer" / "state.json")["md5"]["Tools"] == {"tools.iso": _md5(iso)}


def test_known_md5_of_a_fresh_file_is_kept_for_the_next_run(tmp_path):
    root = tmp_path / "lib"
    iso = root / "Tools" / "tools.iso"
    iso.parent.mkdir(parents=True)
    iso.write_bytes(b"y" * 2000)  # mtime now: read digests of it would be racy, rsync's is not
    report = update_manifest(root, "Lib", known_md5={"Tools/tools.iso": (2000, _md5(iso))})
    assert report.bytes_hashed == 0
    assert update_manifest(root, "Lib").bytes_hashed == 0  # the cache kept it

    other = root / "Tools" / "other.iso"
    other.write_bytes(b"z" * 10)  # a fresh file hashed by reading: racy, read again next run
    assert update_manifest(root, "Lib").bytes_hashed == 10
    assert update_manifest(root, "Lib").bytes_hashed == 10
