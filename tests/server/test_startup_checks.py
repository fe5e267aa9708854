"""Each start-up check of ``library-syncer server`` fails with one line naming the problem and exit code 2
(the CLI in-process: the checks read the same PATH, files and ports; the server as a process is tested
with server_fixture)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from inprocess import run_cli
from server_fixture import make_site_key
from support import free_port, require_tool


@pytest.fixture
def setup(tmp_path):
    lib = tmp_path / "library"
    lib.mkdir()
    keys = tmp_path / "keys"
    make_site_key(keys, tmp_path / "private", "site1")
    port = free_port()
    args = ["server", "--unprivileged", "--library", lib, "--keys", keys, "--state-dir", tmp_path / "state",
            "--ssh-host", "127.0.0.1", "--port", str(port)]
    return tmp_path, lib, keys, port, args


def fail_line(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("library-syncer: error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def fake_bin(tmp_path: Path, *tools: str, rsync_version: str | None = None) -> str:
    """A PATH folder holding only the given real tools (and optionally a fake rsync of some version)."""
    d = tmp_path / "fake" / "bin"
    d.mkdir(parents=True, exist_ok=True)
    for name in tools:
        os.symlink(require_tool(name, "openssh-server" if "ssh" in name else "rsync"), d / name)
    if rsync_version:
        (d / "rsync").write_text(f"#!/bin/sh\necho 'rsync  version {rsync_version}  protocol version 31'\n")
        (d / "rsync").chmod(0o755)
    return str(d)


@pytest.mark.parametrize("present, missing, package", [
    ((), "sshd", "openssh-server"),
    (("sshd",), "rsync", "rsync"),
    (("sshd", "rsync"), "rrsync", "rsync"),
])
def test_missing_tool(setup, present, missing, package):
    tmp_path, _, _, _, args = setup
    r = run_cli(*args, env={"PATH": fake_bin(tmp_path, *present)})
    assert fail_line(r).endswith(f"{missing} not found: install the Debian package {package}")


def test_old_rsync_refused_unless_allowed(setup):
    tmp_path, lib, _, _, args = setup
    path = fake_bin(tmp_path, "sshd", "rrsync", "ssh-keygen", rsync_version="3.4.1")
    line = fail_line(run_cli(*args, env={"PATH": path}))
    assert "rsync 3.4.1" in line and "older than 3.5.0" in line and "allow_old_rsync" in line
    # Allowed: that check passes and the next one (a missing library here) decides.
    lib.rmdir()
    line = fail_line(run_cli(*args, "--allow-old-rsync", env={"PATH": path}))
    assert "setting library" in line


def test_library_missing(setup):
    _, lib, _, _, args = setup
    lib.rmdir()
    assert fail_line(run_cli(*args)).endswith(f"setting library: folder {lib} does not exist")


def test_no_keys(setup):
    _, _, keys, _, args = setup
    (keys / "site1.pub").unlink()
    line = fail_line(run_cli(*args))
    assert f"no site keys (*.pub) in {keys}" in line and "keys new" in line


def test_unparsable_key_names_the_file(setup):
    _, _, keys, _, args = setup
    (keys / "broken.pub").write_text("ssh-ed25519 not-base64!!\n")
    line = fail_line(run_cli(*args))
    assert f"key file {keys / 'broken.pub'}: not a valid public key" in line
    (keys / "broken.pub").write_text("this is not a key\n")
    assert f"key file {keys / 'broken.pub'}" in fail_line(run_cli(*args))


def test_group_or_world_writable_key_file(setup):
    _, _, keys, _, args = setup
    (keys / "site1.pub").chmod(0o666)
    line = fail_line(run_cli(*args))
    assert f"key file {keys / 'site1.pub'} has unsafe permissions 0666" in line
    (keys / "site1.pub").chmod(0o644)
    keys.chmod(0o777)
    assert f"keys folder {keys} has unsafe permissions 0777" in fail_line(run_cli(*args))


def test_bad_sites_config(setup):
    _, _, keys, _, args = setup
    (keys / "sites.toml").write_text('[site1]\nfrom = ["10.1.0.0/33"]\n')
    line = fail_line(run_cli(*args))
    assert f"keys config {keys / 'sites.toml'}: [site1] from: '10.1.0.0/33'" in line


def test_port_in_use(setup):
    _, _, _, port, args = setup
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        line = fail_line(run_cli(*args))
    assert f"cannot listen on 127.0.0.1:{port}" in line
