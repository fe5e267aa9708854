"""After a sync over sshd + rrsync, the manifest step reads only what rsync's md5 cannot stand for.

rsync verifies each file it writes with a whole-file md5 (``--checksum-choice=md5``) and
reports it (``%C``); the manifest takes it instead of reading the file.  A file a ``.mf``
checks with SHA-256 is read once, every digest in that one pass, unless the primary's origin
manifest has that file's SHA-256 for the same md5: then nothing is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from library_syncer.config import load_settings
from library_syncer.publish import generations as gen
from library_syncer.sync.run import run_sync
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


def _settings(tmp_path: Path, server):
    return load_settings(library=tmp_path / "L", state_dir=tmp_path / "state", sync_peer=server.host,
                         sync_port=server.port, sync_user=server.user, sync_key=server.key,
                         sync_host_key=server.host_key_line)


def _origin_md5(server, path: str) -> str | None:
    """The md5 the primary's origin manifest holds for ``item/path`` (None: not in it yet)."""
    try:
        doc = json.loads((server.state_dir / "origin.json").read_bytes())
    except (OSError, ValueError):
        return None
    item, _, rest = path.partition("/")
    return doc["items"].get(item, {}).get("files", {}).get(rest, {}).get("md5")


def test_manifest_reads_nothing_for_rsync_verified_files_and_sha256_files_once(tmp_path):
    lib = tmp_path / "primary"
    iso, disk = _template(lib)  # files just written: the primary's origin manifest does not read them yet
    web = disk.parent
    with running_server(tmp_path, lib) as server:
        s = _settings(tmp_path, server)
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


def test_with_the_origin_manifest_a_sha256_file_is_not_read_either(tmp_path):
    lib = tmp_path / "primary"
    iso, disk = _template(lib, age=3600)  # an export finished an hour ago: the primary has read it
    web = disk.parent
    with running_server(tmp_path, lib) as server:
        md5 = hashlib.md5(disk.read_bytes()).hexdigest()
        wait_until(lambda: _origin_md5(server, "Web/web-disk1.vmdk") == md5, 30, "the origin manifest")
        s = _settings(tmp_path, server)
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
    served = gen.current_root(tmp_path / "L")
    assert served is not None
    assert_one_etag_per_item(served)
    assert (served / "Web" / "web-disk1.vmdk").read_bytes() == disk.read_bytes()


def test_with_rsyncs_fast_checksums_the_manifest_reads_each_changed_file_once(tmp_path):
    lib = tmp_path / "primary"
    iso, _ = _template(lib, age=3600)  # old files: none is "racy" (re-read) at the second sync
    with running_server(tmp_path, lib) as server:
        s = load_settings(**{**_settings(tmp_path, server).model_dump(), "sync_checksum": "xxh128"})
        assert run_sync(s).ok
        _patch(iso, 2 * MiB, 40 * 1024)
        second = run_sync(s)
        assert second.ok and second.files_changed == 1 and second.matched_bytes > 0, second.reason
        assert (second.manifest_files_read, second.manifest_bytes_read) == (1, iso.stat().st_size)
    served = gen.current_root(tmp_path / "L")
    assert_one_etag_per_item(served)
    assert (served / "Tools" / "tools.iso").read_bytes() == iso.read_bytes()
