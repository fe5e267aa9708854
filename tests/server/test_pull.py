"""An authorized site key can list and pull the whole library through the real server."""

from __future__ import annotations

from server_fixture import running_server

from .helpers import make_library, rsync, tree_digest


def test_list_and_pull_whole_library(tmp_path):
    lib = make_library(tmp_path)
    with running_server(tmp_path, lib) as server:
        listing = rsync("-r", "--list-only", "-e", server.ssh_command(), server.remote("/"))
        assert listing.returncode == 0, listing.stderr
        assert "item-a/disk.vmdk" in listing.stdout and "iso/installer.iso" in listing.stdout
        dest = tmp_path / "dest"
        pull = rsync("-a", "--delete", "-e", server.ssh_command(), server.remote("/"), f"{dest}/")
        assert pull.returncode == 0, pull.stderr
        assert tree_digest(dest) == tree_digest(lib)
        # A sub-folder can be pulled on its own.
        part = rsync("-a", "-e", server.ssh_command(), server.remote("item-a/"), f"{tmp_path / 'part'}/")
        assert part.returncode == 0, part.stderr
        assert tree_digest(tmp_path / "part") == tree_digest(lib / "item-a")
        log = server.log_text()
        assert "site site1: session from 127.0.0.1" in log
    assert server.proc.returncode == 0
    assert "stopped" in server.log_text()
