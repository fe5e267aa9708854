"""An authorized site key can list and pull the whole library through the real server."""

from __future__ import annotations

import subprocess
from pathlib import Path

from server_fixture import running_server
from support import require_tool


def rsync(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real rsync client (never with --protect-args)."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "RSYNC_PROTECT_ARGS"}
    return subprocess.run([require_tool("rsync", "rsync"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def make_library(root: Path) -> Path:
    lib = root / "library"
    (lib / "item-a").mkdir(parents=True)
    (lib / "item-a" / "disk.vmdk").write_bytes(b"\x01" * 200_000)
    (lib / "item-a" / "vm.ovf").write_text("<Envelope/>")
    (lib / "iso").mkdir()
    (lib / "iso" / "installer.iso").write_bytes(b"\x02" * 10_000)
    return lib


def test_list_and_pull_whole_library(tmp_path):
    lib = make_library(tmp_path)
    with running_server(tmp_path, lib) as server:
        listing = rsync("-r", "--list-only", "-e", server.ssh_command(), server.remote("/"))
        assert listing.returncode == 0, listing.stderr
        assert "item-a/disk.vmdk" in listing.stdout and "iso/installer.iso" in listing.stdout
        dest = tmp_path / "dest"
        pull = rsync("-a", "-e", server.ssh_command(), server.remote("/"), f"{dest}/")
        assert pull.returncode == 0, pull.stderr
        assert (dest / "item-a" / "disk.vmdk").read_bytes() == (lib / "item-a" / "disk.vmdk").read_bytes()
        assert (dest / "iso" / "installer.iso").exists()
        log = server.log_text()
        assert "site site1: session from 127.0.0.1" in log
    assert server.proc.returncode == 0
    assert "stopped" in server.log_text()
