"""Revoking a site key also ends that key's running sessions; other sites' transfers go on."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from library_syncer.transport.sessions import (
    Process,
    Session,
    group_sessions,
    parse_auth_info,
    parse_environ,
    unauthorized,
)
from server_fixture import running_server
from support import require_tool, stop_process, wait_until

from .helpers import client_env, make_library, rsync

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBIkcQS98lcMwjbePH21l+xR802oq0eQNnRim5+kOeK6"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINO50gfcU4arZLt6lz/2V3ReDhViiCCHzPNjQ0wBivqE"


def test_environ_and_auth_info_parsing():
    env = parse_environ(b"PATH=/bin\0SSH_USER_AUTH=/tmp/sshauth.x\0BROKEN\0EMPTY=\0")
    assert env == {"PATH": "/bin", "SSH_USER_AUTH": "/tmp/sshauth.x", "EMPTY": ""}
    assert parse_auth_info(f"publickey {KEY_A}\n") == {KEY_A}
    assert parse_auth_info(f"password\npublickey {KEY_B} extra\nkeyboard-interactive\n") == {KEY_B}
    assert parse_auth_info("") == frozenset()


def test_sessions_grouped_and_picked_by_key():
    procs = [
        Process(11, 10, "/tmp/a", "10.0.0.1 5000"),  # sh under sshd 10
        Process(12, 11, "/tmp/a", "10.0.0.1 5000"),  # rrsync
        Process(13, 12, "/tmp/a", "10.0.0.1 5000"),  # rsync --server
        Process(21, 20, "/tmp/b", "10.0.0.2 6000"),
        Process(31, 30, "/tmp/gone", "10.0.0.3 7000"),  # auth info unreadable: the key is unknown
    ]
    sessions = group_sessions(procs, {"/tmp/a": frozenset({KEY_A}), "/tmp/b": frozenset({KEY_B})})
    assert sessions == [
        Session((11, 12, 13), 10, frozenset({KEY_A}), "10.0.0.1 5000"),
        Session((21,), 20, frozenset({KEY_B}), "10.0.0.2 6000"),
        Session((31,), 30, frozenset(), "10.0.0.3 7000"),
    ]
    assert unauthorized(sessions, {KEY_B}) == [sessions[0]]  # never one whose key is unknown
    assert unauthorized(sessions, {KEY_A, KEY_B}) == []


def _slow_pull(server, key: Path, dest: Path, bwlimit: int) -> subprocess.Popen:
    return subprocess.Popen(
        [require_tool("rsync", "rsync"), "-a", f"--bwlimit={bwlimit}", "-e", server.ssh_command(key),
         server.remote("/big/"), f"{dest}/"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=client_env(),
    )


def test_revoked_key_loses_its_running_transfer_others_finish(tmp_path):
    lib = make_library(tmp_path)
    (lib / "big").mkdir()
    (lib / "big" / "disk.vmdk").write_bytes(os.urandom(3_000_000))
    with running_server(tmp_path, lib, extra_sites=["site2"]) as server:
        a = _slow_pull(server, server.site_keys["site1"], tmp_path / "a", 200)  # about 15 s
        b = _slow_pull(server, server.site_keys["site2"], tmp_path / "b", 300)  # about 10 s
        try:
            wait_until(lambda: "site site1: Starting session" in server.log_text()
                       and "site site2: Starting session" in server.log_text(), 20, "both sessions")
            (server.keys_dir / "site1.pub").unlink()
            server.reload()
            t0 = time.monotonic()
            a.wait(10)
            ended_after = time.monotonic() - t0
            assert a.returncode != 0
            assert b.poll() is None, "site2's transfer must go on"
            wait_until(lambda: "site site1: ended the session from 127.0.0.1" in server.log_text(), 10,
                       "the log line of the ended session")
            r = rsync("-a", "-e", server.ssh_command(server.site_keys["site1"]), server.remote("/iso/"),
                      f"{tmp_path / 'again'}/")
            assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
            _, err = b.communicate(timeout=60)
            assert b.returncode == 0, err
            assert (tmp_path / "b" / "disk.vmdk").read_bytes() == (lib / "big" / "disk.vmdk").read_bytes()
            assert ended_after < 5, ended_after
            assert server.proc.poll() is None
        finally:
            for p in (a, b):
                stop_process(p)


def test_session_of_a_key_removed_while_the_server_was_down_is_ended(tmp_path):
    """The upkeep also ends sessions whose key is not authorized (here: one that outlived a restart)."""
    lib = make_library(tmp_path)
    (lib / "big").mkdir()
    (lib / "big" / "disk.vmdk").write_bytes(os.urandom(3_000_000))
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    with running_server(tmp_path, lib, state_dir=state) as first:
        old_key = first.key
        a = _slow_pull(first, old_key, tmp_path / "a", 150)  # about 20 s
        wait_until(lambda: "site site1: Starting session" in first.log_text(), 20, "the session")
    try:
        assert a.poll() is None  # stopping the listener does not cut running sessions
        # The same server starts again, and site1's key is now another one: the old session must end.
        with running_server(tmp_path, lib, state_dir=state) as second:
            a.wait(15)
            assert a.returncode != 0
            assert "ended the session from 127.0.0.1" in second.log_text()
    finally:
        stop_process(a)
