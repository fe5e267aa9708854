"""SIGHUP re-reads the keys folder: sites are added and revoked without stopping running transfers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from server_fixture import make_site_key, running_server
from support import wait_until

from .helpers import client_env, make_library, rsync


def test_add_and_revoke_sites_while_a_transfer_runs(tmp_path):
    lib = make_library(tmp_path)
    (lib / "big").mkdir()
    (lib / "big" / "disk.vmdk").write_bytes(os.urandom(1_200_000))
    with running_server(tmp_path, lib) as server:
        def rsh(key) -> str:
            args = server.ssh_args()
            args[args.index("-i") + 1] = str(key)
            return " ".join(args)

        # A new site is refused until the server is told to reload.
        site2 = make_site_key(tmp_path / "incoming", tmp_path / "site2", "site2")
        r = rsync("-a", "-e", rsh(site2), server.remote("/iso/"), f"{tmp_path / 'early'}/")
        assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
        shutil.move(tmp_path / "incoming" / "site2.pub", server.keys_dir / "site2.pub")
        server.reload()
        wait_until(lambda: "added: site2" in server.log_text(), 20, "the reload adding site2")

        # site2 starts a slow transfer (bounded by --bwlimit, about 3 s).
        dest = tmp_path / "slow"
        slow = subprocess.Popen(
            ["rsync", "-a", "--bwlimit=400", "-e", rsh(site2), server.remote("/big/"), f"{dest}/"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=client_env(),
        )
        wait_until(lambda: "site site2: Starting session" in server.log_text(), 20, "site2's session")

        # Revoke site1 meanwhile.
        (server.keys_dir / "site1.pub").unlink()
        server.reload()
        wait_until(lambda: "revoked: site1" in server.log_text(), 20, "the reload revoking site1")
        r = rsync("-a", "-e", server.ssh_command(), server.remote("/iso/"), f"{tmp_path / 'late'}/")
        assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
        assert slow.poll() is None, "the slow transfer should still be running"

        _, err = slow.communicate(timeout=60)
        assert slow.returncode == 0, err
        assert (dest / "disk.vmdk").read_bytes() == (lib / "big" / "disk.vmdk").read_bytes()
        assert server.proc.poll() is None
        assert "Server listening on" in server.log_text()
        log = server.log_text()
        assert "site site2: session from 127.0.0.1" in log


def test_from_limits_and_awkward_library_path(tmp_path):
    lib = make_library(tmp_path / "it's a library")
    with running_server(tmp_path, lib) as server:
        dest = tmp_path / "dest"
        r = rsync("-a", "-e", server.ssh_command(), server.remote("/"), f"{dest}/")
        assert r.returncode == 0, r.stderr
        assert (dest / "item-a" / "vm.ovf").exists()
        # Limit site1 to another network: refused from loopback once reloaded.
        (server.keys_dir / "sites.toml").write_text('[site1]\nfrom = ["192.0.2.0/24"]\n')
        server.reload()
        wait_until(lambda: "reloaded keys" in server.log_text(), 20, "the reload")
        assert 'from="192.0.2.0/24"' in (server.state_dir / "authorized_keys").read_text()
        r = rsync("-a", "-e", server.ssh_command(), server.remote("/"), f"{tmp_path / 'again'}/")
        assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
        # A broken keys config keeps the previous keys instead of dropping the limit.
        (server.keys_dir / "sites.toml").write_text("[site1\n")
        server.reload()
        wait_until(lambda: "keeping the previous keys" in server.log_text(), 20, "the failed reload")
        assert 'from="192.0.2.0/24"' in (server.state_dir / "authorized_keys").read_text()


def test_sshd_restarted_when_it_dies(tmp_path):
    lib = make_library(tmp_path)
    with running_server(tmp_path, lib) as server:
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
        sshd = next(int(c) for c in children if "sshd" in Path(f"/proc/{c}/cmdline").read_text())
        os.kill(sshd, signal.SIGKILL)
        wait_until(lambda: "restarting in" in server.log_text(), 20, "the restart notice")
        wait_until(lambda: server.log_text().count("Server listening on") == 2, 20, "sshd to listen again")
        r = rsync("-a", "-e", server.ssh_command(), server.remote("/"), f"{tmp_path / 'dest'}/")
        assert r.returncode == 0, r.stderr


def test_sigterm_stops_promptly_during_a_transfer(tmp_path):
    lib = make_library(tmp_path)
    (lib / "big").mkdir()
    (lib / "big" / "disk.vmdk").write_bytes(os.urandom(2_500_000))
    with running_server(tmp_path, lib) as server:
        slow = subprocess.Popen(
            ["rsync", "-a", "--bwlimit=300", "-e", server.ssh_command(), server.remote("/big/"), f"{tmp_path / 'd'}/"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=client_env(),
        )
        try:
            wait_until(lambda: "site site1: Starting session" in server.log_text(), 20, "the session")
            server.proc.terminate()
            assert server.proc.wait(10) == 0
            assert slow.poll() is None  # the listener stopped; the running session was not cut
            assert "stopped" in server.log_text()
        finally:
            slow.kill()
            slow.wait(10)
