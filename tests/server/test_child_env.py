"""The tool's secrets (library password, admin token, and the files they come from) never reach the
environment of rsync, ssh or sshd, on the client or on the server."""

from __future__ import annotations

import os
from pathlib import Path

from client_fixture import running_client
from library_syncer.util.childenv import child_environ, secret_env_names
from library_syncer.transport import rsync as rs
from library_syncer.transport.sshd import SESSION_MARKER_VAR, session_marker
from server_fixture import running_server
from support import stop_process, wait_until

from .test_revoke import _slow_pull

SECRETS = {"LIBRARY_PASSWORD": "pw-3c1a9e-secret", "SYNCER_ADMIN_TOKEN": "tok-77f0b2-secret"}


VALUES = (*SECRETS.values(), "pwfile-5d2e-secret", "tokfile-91ab-secret")


def secret_files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "pw").write_text("pwfile-5d2e-secret\n")
    (tmp_path / "tok").write_text("tokfile-91ab-secret\n")
    return {"LIBRARY_PASSWORD_FILE": str(tmp_path / "pw"), "SYNCER_ADMIN_TOKEN_FILE": str(tmp_path / "tok")}


def environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def assert_no_secret(pid: int, what: str) -> None:
    env = environ(pid)
    names = {item.partition(b"=")[0].decode().upper() for item in env.split(b"\0") if item}
    assert not names & {"LIBRARY_PASSWORD", "LIBRARY_PASSWORD_FILE", "SYNCER_ADMIN_TOKEN",
                        "SYNCER_ADMIN_TOKEN_FILE"}, what
    assert not [v for v in VALUES if v.encode() in env], what


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (started by any of its threads)."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(Path(f"/proc/{name}/stat").read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(name))
        except OSError:
            continue
    return found


def exe_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_secret_names_come_from_the_settings_model():
    assert {"LIBRARY_PASSWORD", "LIBRARY_PASSWORD_FILE", "SYNCER_ADMIN_TOKEN",
            "SYNCER_ADMIN_TOKEN_FILE"} <= secret_env_names()
    base = {"PATH": "/bin", "library_password": "x", "Syncer_Admin_Token_File": "/t", "LIBRARY_NAME": "Lib",
            "SYNC_PEER": "h", "RSYNC_PROTECT_ARGS": "1"}
    assert child_environ(base) == {"PATH": "/bin", "LIBRARY_NAME": "Lib", "SYNC_PEER": "h",
                                   "RSYNC_PROTECT_ARGS": "1"}
    assert rs.child_env(base) == {"PATH": "/bin", "LIBRARY_NAME": "Lib", "SYNC_PEER": "h", "LC_ALL": "C"}


def test_client_rsync_and_ssh_get_no_secret(tmp_path):
    source = tmp_path / "primary"
    (source / "Big").mkdir(parents=True)
    (source / "Big" / "disk.iso").write_bytes(os.urandom(2_000_000))
    with running_server(tmp_path, source) as srv, \
            running_client(tmp_path, srv, SYNC_MAX_BW="150", **SECRETS, **secret_files(tmp_path)) as site:
        def transfer() -> tuple[int, int] | None:
            assert site.proc.poll() is None, site.log_text()
            for r in children(site.proc.pid):
                if exe_name(r) == "rsync":
                    ssh = [c for c in children(r) if exe_name(c) == "ssh"]
                    if ssh:
                        return r, ssh[0]
            return None

        rsync_pid, ssh_pid = wait_until(transfer, 30, "the client's rsync and ssh")
        assert_no_secret(rsync_pid, "rsync")
        assert_no_secret(ssh_pid, "ssh")
        assert b"LIBRARY_PASSWORD=pw-3c1a9e-secret" in environ(site.proc.pid)  # the client itself has it


def test_server_sshd_and_sessions_get_no_secret(tmp_path):
    lib = tmp_path / "library"
    (lib / "big").mkdir(parents=True)
    (lib / "big" / "disk.vmdk").write_bytes(os.urandom(2_000_000))
    with running_server(tmp_path, lib, env={**SECRETS, **secret_files(tmp_path)}) as server:
        pull = _slow_pull(server, server.key, tmp_path / "dest", 200)
        try:
            sshd = [c for c in children(server.proc.pid) if exe_name(c) == "sshd"]
            assert len(sshd) == 1
            assert_no_secret(sshd[0], "sshd")

            mark = f"{SESSION_MARKER_VAR}={session_marker(server.state_dir / 'authorized_keys')}\0".encode()

            def session_procs() -> list[int]:
                found = []
                for pid in filter(str.isdigit, os.listdir("/proc")):
                    try:
                        if mark in environ(int(pid)) and \
                                exe_name(int(pid)) == "rsync":
                            found.append(int(pid))
                    except OSError:
                        continue
                return found

            for pid in wait_until(session_procs, 20, "the session's rsync sender"):
                assert_no_secret(pid, "session rsync")
        finally:
            stop_process(pull)
