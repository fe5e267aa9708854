"""A program the sync needs is missing: one line naming it, exit 1, no retries (a real ``library-syncer sync``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from support import cli, free_port, require_tool


def bin_with(folder: Path, *names: str) -> str:
    """A PATH holding only ``names`` (links to the real programs)."""
    folder.mkdir()
    for name in names:
        os.symlink(shutil.which(name), folder / name)
    return str(folder)


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("library-syncer: error:")]


def local_sync(tmp_path: Path, path: str) -> subprocess.CompletedProcess:
    src = tmp_path / "src" / "Alpha"
    src.mkdir(parents=True)
    (src / "a.iso").write_bytes(b"a" * 100)
    return cli("sync", "--from-folder", tmp_path / "src",
               env={"SYNCER_LIBRARY": str(tmp_path / "L"), "SYNCER_STATE_DIR": str(tmp_path / "state"),
                    "PATH": path, "SYNC_RETRY_DEADLINE": "600"}, timeout=60)


def test_missing_rsync_is_named(tmp_path):
    require_tool("setpriv", "util-linux")
    p = local_sync(tmp_path, bin_with(tmp_path / "bin", "setpriv"))
    errors = error_lines(p.stderr)
    assert p.returncode == 1 and len(errors) == 1, p.stderr
    assert "the program rsync was not found" in errors[0] and "Debian package rsync" in errors[0]
    assert "retrying" not in p.stderr


def test_missing_setpriv_is_named(tmp_path):
    require_tool("rsync", "rsync")
    p = local_sync(tmp_path, bin_with(tmp_path / "bin", "rsync"))
    errors = error_lines(p.stderr)
    assert p.returncode == 1 and len(errors) == 1, p.stderr
    assert "the program setpriv was not found" in errors[0] and "util-linux" in errors[0]


def test_missing_ssh_is_named(tmp_path):
    keygen = require_tool("ssh-keygen", "openssh-client")
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    host_key = " ".join((tmp_path / "key.pub").read_text().split()[:2])
    p = cli("sync", env={"SYNC_PEER": "127.0.0.1", "SYNC_PORT": str(free_port()), "SYNC_KEY": str(tmp_path / "key"),
                         "SYNC_HOST_KEY": host_key, "SYNCER_LIBRARY": str(tmp_path / "L"),
                         "SYNCER_STATE_DIR": str(tmp_path / "state"), "SYNC_RETRY_DEADLINE": "600",
                         "PATH": bin_with(tmp_path / "bin", "setpriv", "rsync")}, timeout=60)
    errors = error_lines(p.stderr)
    assert p.returncode == 1 and len(errors) == 1, p.stderr
    assert "the program ssh was not found" in errors[0], errors[0]
    assert "retrying" not in p.stderr
