"""The manifest takes the digests rsync verified for a file (and the origin's digests of the same bytes) without a read."""

from __future__ import annotations

import hashlib
import os

import xxhash

from library_syncer.vcsp.manifest import update_manifest
from library_syncer.vcsp.origin import dumps, next_origin, parse_origin, refresh_origin, vouched_digests

from .helpers import assert_one_etag_per_item, load, put, template


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _xxh128(path) -> str:
    return xxhash.xxh3_128_hexdigest(path.read_bytes())


def test_known_md5_spares_the_read_and_a_sha256_file_is_read_once(tmp_path):
    root = tmp_path / "lib"
    iso = put(root / "Tools" / "tools.iso", os.urandom(300_000))
    template(root / "Web", disk=os.urandom(500_000))
    disk, desc, mf = (root / "Web" / n for n in ("vm-disk1.vmdk", "vm.ovf", "vm.mf"))
    known = {f"{p.parent.name}/{p.name}": (p.stat().st_size, {"md5": _md5(p)}) for p in (iso, disk, desc, mf)}
    report = update_manifest(root, "Lib", known=known)
    # The .mf checks the disk and the descriptor with SHA-256: each read once, in one pass.
    assert (report.files_hashed, report.bytes_hashed) == (2, disk.stat().st_size + desc.stat().st_size)
    assert_one_etag_per_item(root)

    put(iso, os.urandom(300_000))  # new bytes, known from rsync
    report = update_manifest(root, "Lib", known={"Tools/tools.iso": (iso.stat().st_size, {"md5": _md5(iso)})})
    assert (report.files_hashed, report.bytes_hashed) == (0, 0) and report.changed
    assert_one_etag_per_item(root)


def test_known_md5_of_another_size_is_not_taken(tmp_path):
    root = tmp_path / "lib"
    iso = put(root / "Tools" / "tools.iso", b"x" * 1000)
    report = update_manifest(root, "Lib", known={"Tools/tools.iso": (999, {"md5": "0" * 32})})
    assert (report.files_hashed, report.bytes_hashed) == (1, 1000)
    files = load(root / "Tools" / "item.json")["files"]
    assert [f["size"] for f in files] == [1000]
    assert load(tmp_path / "lib" / ".library-syncer" / "state.json")["md5"]["Tools"] == {"tools.iso": _md5(iso)}


def test_known_md5_of_a_fresh_file_is_kept_for_the_next_run(tmp_path):
    root = tmp_path / "lib"
    iso = root / "Tools" / "tools.iso"
    iso.parent.mkdir(parents=True)
    iso.write_bytes(b"y" * 2000)  # mtime now: read digests of it would be racy, rsync's is not
    report = update_manifest(root, "Lib", known={"Tools/tools.iso": (2000, {"md5": _md5(iso)})})
    assert report.bytes_hashed == 0
    assert update_manifest(root, "Lib").bytes_hashed == 0  # the cache kept it

    other = root / "Tools" / "other.iso"
    other.write_bytes(b"z" * 10)  # a fresh file hashed by reading: racy, read again next run
    assert update_manifest(root, "Lib").bytes_hashed == 10
    assert update_manifest(root, "Lib").bytes_hashed == 10


def test_digests_from_the_origin_still_go_through_the_mf_check(tmp_path):
    root = tmp_path / "lib"
    template(root / "Web", disk=os.urandom(10_000))
    disk = root / "Web" / "vm-disk1.vmdk"
    wrong = {"md5": _md5(disk), "sha256": "0" * 64}  # a digest the .mf does not have
    known = {"Web/vm-disk1.vmdk": (disk.stat().st_size, wrong)}
    report = update_manifest(root, "Lib", known=known)
    others = (root / "Web" / "vm.ovf").stat().st_size + (root / "Web" / "vm.mf").stat().st_size
    assert report.bytes_hashed == others  # the disk itself was not read
    assert [p for p in report.problems if "vm-disk1.vmdk" in p and "SHA256" in p.upper()], report.problems


def test_vouched_digests_only_for_the_origin_size_and_md5():
    doc = next_origin(None, {"Web": {"d.vmdk": (10, "a" * 32), "x.ovf": (5, "b" * 32)}}, "t",
                      extra={"Web": {"d.vmdk": {"sha256": "c" * 64}, "x.ovf": {"sha256": "not hex"}}})
    origin = parse_origin(dumps(doc))
    got = vouched_digests(origin, {"Web/d.vmdk": (10, "a" * 32), "Web/x.ovf": (5, "b" * 32),
                                   "Other/y.iso": (1, "e" * 32)})
    assert got == {"Web/d.vmdk": (10, {"md5": "a" * 32, "sha256": "c" * 64}),
                   "Web/x.ovf": (5, {"md5": "b" * 32}),  # a malformed digest is not taken
                   "Other/y.iso": (1, {"md5": "e" * 32})}
    assert vouched_digests(origin, {"Web/d.vmdk": (10, "f" * 32)}) == {"Web/d.vmdk": (10, {"md5": "f" * 32})}
    assert vouched_digests(origin, {"Web/d.vmdk": (11, "a" * 32)})["Web/d.vmdk"][1] == {"md5": "a" * 32}
    assert vouched_digests(None, {"Web/d.vmdk": (10, "a" * 32)})["Web/d.vmdk"][1] == {"md5": "a" * 32}
    plain = next_origin(None, {"Web": {"d.vmdk": (10, "a" * 32), "x.ovf": (5, "b" * 32)}}, "t")
    assert doc["items"]["Web"]["digest"] == plain["items"]["Web"]["digest"]  # the md5s say what the content is


def test_with_xxh128_only_the_files_the_origin_knows_are_vouched_for():
    doc = next_origin(None, {"Web": {"d.vmdk": (10, "a" * 32), "x.ovf": (5, "b" * 32)}}, "t",
                      extra={"Web": {"d.vmdk": {"xxh128": "1" * 32, "sha256": "c" * 64}, "x.ovf": {"xxh128": "2" * 32}}})
    origin = parse_origin(dumps(doc))
    got = vouched_digests(origin, {"Web/d.vmdk": (10, "1" * 32), "Web/x.ovf": (5, "9" * 32),
                                   "Other/y.iso": (1, "e" * 32)}, "xxh128")
    assert got == {"Web/d.vmdk": (10, {"md5": "a" * 32, "sha256": "c" * 64})}  # the others are read
    assert vouched_digests(origin, {"Web/d.vmdk": (11, "1" * 32)}, "xxh128") == {}  # another size
    assert vouched_digests(None, {"Web/d.vmdk": (10, "1" * 32)}, "xxh128") == {}
    # The origin's md5 must be well-formed to stand for the file's.
    bad = parse_origin(dumps({**doc, "items": {"Web": {**doc["items"]["Web"], "files": {
        "d.vmdk": {"size": 10, "md5": "nothex", "xxh128": "1" * 32}}}}}))
    assert vouched_digests(bad, {"Web/d.vmdk": (10, "1" * 32)}, "xxh128") == {}


def test_the_primary_records_what_the_mf_asks_in_the_same_read(tmp_path):
    lib, state = tmp_path / "lib", tmp_path / "state"
    state.mkdir()
    template(lib / "Web", disk=os.urandom(20_000), age=100)
    put(lib / "Tools" / "t.iso", b"iso", age=100)
    doc, changed = refresh_origin(lib, state, settle=10, now_text="t1")
    files = doc["items"]["Web"]["files"]
    disk = lib / "Web" / "vm-disk1.vmdk"
    assert files["vm-disk1.vmdk"] == {"size": 20_000, "md5": _md5(disk), "xxh128": _xxh128(disk),
                                      "sha256": hashlib.sha256(disk.read_bytes()).hexdigest()}
    assert set(files["vm.mf"]) == {"size", "md5", "xxh128"}
    assert doc["items"]["Tools"]["files"]["t.iso"] == {"size": 3, "md5": hashlib.md5(b"iso").hexdigest(),
                                                       "xxh128": xxhash.xxh3_128_hexdigest(b"iso")}
