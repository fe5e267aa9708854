"""SYNC_COMPRESS: rsync's compression on the wire, through the real server (sshd + rrsync -ro)."""

from __future__ import annotations

from pathlib import Path

import pytest

from library_syncer.config import load_settings
from library_syncer.publish import generations as gen
from library_syncer.sync.run import run_sync
from library_syncer.transport import rsync as rs
from support import cli

from server_fixture import running_server

TEXT = b"".join(b"line %06d of a log file that compresses well\n" % i for i in range(60_000))  # ~2.8 MB


def test_compress_args():
    assert rs.compress_args("none") == []
    assert rs.compress_args("zstd") == ["--compress-choice=zstd"]
    assert "--compress-choice=lz4" in rs.sync_command("u@h:./", "b", rsh="ssh", compress="lz4")
    for cmd in (rs.sync_command("u@h:./", "b", rsh="ssh", compress="none"), rs.sync_command("a/", "b", compress="zstd")):
        assert not any(a.startswith(("--compress", "-z")) for a in cmd)  # none, or a local copy
    assert load_settings().sync_compress == "zstd"  # the default: see benchmarks/README.md, real disks
    with pytest.raises(ValueError, match="unknown compression 'gzip'"):
        rs.compress_args("gzip")


def test_a_bad_value_is_one_line(tmp_path):
    r = cli("sync", "--library", tmp_path / "L", "--state-dir", tmp_path / "s", env={"SYNC_COMPRESS": "fast"})
    assert r.returncode == 2
    assert r.stderr.startswith("library-syncer: error: setting sync_compress") and r.stderr.count("\n") == 1


def test_each_choice_passes_the_server_and_only_compression_shrinks_the_wire(tmp_path):
    library = tmp_path / "primary"
    (library / "Logs").mkdir(parents=True)
    (library / "Logs" / "big.txt").write_bytes(TEXT)
    wire = {}
    with running_server(tmp_path, library) as server:
        for choice in rs.COMPRESS_CHOICES:
            site = tmp_path / f"site-{choice}"
            s = load_settings(library=site, state_dir=tmp_path / f"state-{choice}", sync_peer=server.host,
                              sync_port=server.port, sync_user=server.user, sync_key=server.key,
                              sync_host_key=server.host_key_line, sync_compress=choice)
            r = run_sync(s)
            assert r.ok, r.reason
            assert (gen.current_root(site) / "Logs" / "big.txt").read_bytes() == TEXT
            wire[choice] = r.wire_bytes
    assert wire["none"] > len(TEXT)
    for choice in ("zstd", "lz4", "zlib"):
        assert wire[choice] < len(TEXT) / 4, wire
