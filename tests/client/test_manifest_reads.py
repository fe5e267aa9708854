"""After a sync over sshd + rrsync, the manifest step reads only what rsync's check cannot stand for.

rsync verifies each file it writes with a whole-file digest and reports it (``%C``).  By
default (xxh128) a changed file whose size and xxh128 are the ones in the primary's origin
manifest takes the origin's md5 and SHA-256: nothing is read; a file the origin does not (yet)
know is read once.  With ``SYNC_CHECKSUM=md5`` rsync's digest is the md5 itself: only a file a
``.mf`` checks with SHA-256 is read, once, unless the origin has that file's SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from library_syncer.config import load_settings
from library_syncer.publish import generations as gen
from library_syncer.sync.run import run_sync
from library_syncer.vcsp.origin import read_doc
from server_fixture import running_server
from support import wait_until

from vcsp.helpers import assert_one_etag_per_item, ovf

MiB = 1 << 20


def _write_mf(item: Path) -> None:
    names = ("web.ovf", "web-disk1.vmdk")
    lines = [f"SHA256({n})= {hashlib.sha256((item / n).read_bytes()).hexdigest()}" for n in names]
    (item / "web.mf").write_text("\n".join(lines) + "\n")


def _patch(path: Path, offset: int, length: int, age: float = 0.0) -> None:
    """Overwrite ``length`` bytes at ``offset`` in place (size unchanged), as a changed template does;
    with ``age``, its mtime that many seconds back (an export finished a while ago)."""
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(os.urandom(length))
    if age:
        os.utime(path, (time.time() - age, time.time() - age))


def _template(lib: Path, age: float = 0.0) -> tuple[Path, Path]:
    """An ISO item and an OVF template with a SHA-256 .mf, each file of 4 MiB; (iso, disk)."""
    iso = lib / "Tools" / "tools.iso"
    iso.parent.mkdir(parents=True)
    iso.write_bytes(os.urandom(4 * MiB))
    web = lib / "Web"
    web.mkdir()
    (web / "web.ovf").write_text(ovf("web-disk1.vmdk"))
    disk = web / "web-disk1.vmdk"
    disk.write_bytes(os.urandom(4 * MiB))
    _write_mf(web)
    if age:
        for path in (iso, disk, web / "web.ovf", web / "web.mf"):
            os.utime(path, (time.time() - age, time.time() - age))
    return iso, disk


def _settings(tmp_path: Path, server, checksum: str = "xxh128"):
    return load_settings(library=tmp_path / "L", state_dir=tmp_path / "state", sync_peer=server.host,
                         sync_port=server.port, sync_user=server.user, sync_key=server.key,
                         sync_host_key=server.host_key_line, sync_checksum=checksum)


def _origin_md5(server, path: str) -> str | None:
    """The md5 the primary's origin manifest holds for ``item/path`` (None: not in it yet)."""
    doc = read_doc(server.state_dir / "origin.json")
    if doc is None:
        return None
    item, _, rest = path.partition("/")
    return doc["items"].get(item, {}).get("files", {}).get(rest, {}).get("md5")


def test_with_md5_checksums_the_manifest_reads_only_sha256_files_once(tmp_path):
    lib = tmp_path / "primary"
    iso, disk = _template(lib)  # files just written: the primary's origin manifest does not read them yet
    web = disk.parent
    with running_server(tmp_path, lib) as server:
        s = _settings(tmp_path, server, "md5")
        first = run_sync(s)
        assert _origin_md5(server, "Web/web-disk1.vmdk") is None  # no SHA-256 from the primary
        assert first.ok and first.kind == "ok", first.reason
        # Everything arrived with rsync's md5; only what the .mf checks with SHA-256 is read, once each.
        assert first.manifest_files_read == 2
        assert first.manifest_bytes_read == disk.stat().st_size + (web / "web.ovf").stat().st_size

        _patch(iso, 2 * MiB, 40 * 1024)  # 1 % of the ISO
        second = run_sync(s)
        assert second.ok and second.kind == "ok", second.reason
        assert second.files_changed == 1 and second.matched_bytes > 0  # a delta transfer
        assert (second.manifest_files_read, second.manifest_bytes_read) == (0, 0)

        _patch(disk, 1 * MiB, 40 * 1024)  # 1 % of the disk, and its new SHA-256 in the .mf
        _write_mf(web)
        third = run_sync(s)
        assert third.ok and third.kind == "ok", third.reason  # the .mf check passed: not held back
        assert third.files_changed == 2
        assert (third.manifest_files_read, third.manifest_bytes_read) == (1, disk.stat().st_size)

        fourth = run_sync(s)  # nothing changed: nothing read, nothing published
        assert fourth.ok and fourth.generation is None
        assert (fourth.manifest_files_read, fourth.manifest_bytes_read) == (0, 0)

    served = gen.current_root(tmp_path / "L")
    assert served is not None
    assert_one_etag_per_item(served)  # the etags follow the bytes: rsync's md5s were the files' own
    for path in (iso, disk, web / "web.mf"):
        assert (served / path.relative_to(lib)).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("checksum", ["xxh128", "md5"])
def test_with_the_origin_manifest_no_changed_file_is_read(tmp_path, checksum):
    lib = tmp_path / "primary"
    iso, disk = _template(lib, age=3600)  # an export finished an hour ago: the primary has read it
    web = disk.parent
    with running_server(tmp_path, lib) as server:
        md5 = hashlib.md5(disk.read_bytes()).hexdigest()
        wait_until(lambda: _origin_md5(server, "Web/web-disk1.vmdk") == md5, 30, "the origin manifest")
        s = _settings(tmp_path, server, checksum)
        first = run_sync(s)
        assert first.ok and first.kind == "ok", first.reason
        assert (first.manifest_files_read, first.manifest_bytes_read) == (0, 0)

        _patch(disk, 1 * MiB, 40 * 1024, age=1800)
        _write_mf(web)
        os.utime(web / "web.mf", (time.time() - 1800, time.time() - 1800))
        server.reload()  # the primary rescans (as it does every origin_refresh_seconds)
        md5 = hashlib.md5(disk.read_bytes()).hexdigest()
        wait_until(lambda: _origin_md5(server, "Web/web-disk1.vmdk") == md5, 30, "the new origin version")
        second = run_sync(s)
        assert second.ok and second.kind == "ok", second.reason  # the .mf check passed, on the primary's SHA-256
        assert second.files_changed == 2
        assert (second.manifest_files_read, second.manifest_bytes_read) == (0, 0)

        _patch(iso, 2 * MiB, 40 * 1024, age=1800)  # 1 % of the ISO, no .mf: only the md5 is needed
        server.reload()
        md5 = hashlib.md5(iso.read_bytes()).hexdigest()
        wait_until(lambda: _origin_md5(server, "Tools/tools.iso") == md5, 30, "the ISO's new origin version")
        third = run_sync(s)
        assert third.ok and third.files_changed == 1 and third.matched_bytes > 0, third.reason
        assert (third.manifest_files_read, third.manifest_bytes_read) == (0, 0)
    served = gen.current_root(tmp_path / "L")
    assert served is not None
    assert_one_etag_per_item(served)
    assert (served / "Web" / "web-disk1.vmdk").read_bytes() == disk.read_bytes()


def test_with_xxh128_a_file_the_origin_does_not_know_is_read_once(tmp_path):
    lib = tmp_path / "primary"
    iso, _ = _template(lib, age=3600)  # old files: none is "racy" (re-read) at the second sync
    with running_server(tmp_path, lib, args=("--origin-refresh-seconds", "86400")) as server:
        old_md5 = hashlib.md5(iso.read_bytes()).hexdigest()
        wait_until(lambda: _origin_md5(server, "Tools/tools.iso") == old_md5, 30, "the origin manifest")
        s = _settings(tmp_path, server)
        assert run_sync(s).ok
        _patch(iso, 2 * MiB, 40 * 1024)  # just written: the primary keeps its old entry until it settles
        second = run_sync(s)
        assert second.ok and second.files_changed == 1 and second.matched_bytes > 0, second.reason
        assert _origin_md5(server, "Tools/tools.iso") == old_md5
        assert (second.manifest_files_read, second.manifest_bytes_read) == (1, iso.stat().st_size)
        third = run_sync(s)  # rsync wrote it as a new file: the md5 read stays good though it is recent
        assert third.ok and third.generation is None and (third.manifest_files_read, third.manifest_bytes_read) == (0, 0)
    served = gen.current_root(tmp_path / "L")
    assert_one_etag_per_item(served)
    assert (served / "Tools" / "tools.iso").read_bytes() == iso.read_bytes()
