"""No orphan transfers: a killed sync takes its rsync and ssh with it; the run lock covers the children.

Real ``library-syncer sync`` processes pull from a real sshd + rrsync on loopback under a
small bandwidth cap, so the transfer is still running when the sync process is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from library_syncer.util import proc
from library_syncer.publish import generations as gen
from library_syncer.transport import rsync as rs
from server_fixture import running_server
from support import cli, cli_popen, free_port, processes, require_tool, wait_until

MiB = 1 << 20


def transfer_children(tmp_path: Path) -> dict[int, tuple[int, str, list[str]]]:
    """The site's rsync processes (their argv names the staging tree) and its ssh (names the site state)."""
    site = {pid: p for pid, p in processes(str(tmp_path / "L")).items() if p[2][0] in ("rsync", "setpriv")}
    site.update({pid: p for pid, p in processes(str(tmp_path / "state")).items() if p[2][0] in ("ssh", "setpriv")})
    return site


def server_session(library: Path) -> list[list[str]]:
    """argv of the server's rrsync and rsync processes serving ``library`` (not the server itself)."""
    return [argv for _, _, argv in processes(str(library)).values()
            if "library_syncer" not in " ".join(argv) and any(w.endswith("rsync") for w in argv[:2])]


@pytest.fixture
def big_library(tmp_path: Path) -> Path:
    lib = tmp_path / "primary"
    (lib / "Alpha").mkdir(parents=True)
    with (lib / "Alpha" / "disk.vmdk").open("wb") as fh:
        for _ in range(8):
            fh.write(os.urandom(MiB))
    (lib / "Beta").mkdir()
    (lib / "Beta" / "notes.txt").write_text("beta\n")
    return lib


def site_env(tmp_path: Path, server, **extra: str) -> dict[str, str]:
    return {"SYNC_PEER": server.host, "SYNC_PORT": str(server.port), "SYNC_USER": server.user,
            "SYNC_KEY": str(server.key), "SYNC_HOST_KEY": server.host_key_line,
            "SYNCER_LIBRARY": str(tmp_path / "L"), "SYNCER_STATE_DIR": str(tmp_path / "state"), **extra}


def start_slow_sync(tmp_path: Path, env: dict[str, str], command: str = "sync"):
    """A real ``library-syncer sync`` (or client daemon) under a 256 KiB/s cap, once its rsync and ssh
    are moving data."""
    sync = cli_popen(command, env={**env, "SYNC_MAX_BW": "256"}, stdout=open(tmp_path / "sync.out", "w"),
                     stderr=open(tmp_path / "sync.err", "w"))
    staging = tmp_path / "L" / ".library-syncer" / "staging"

    def moving():
        names = {p[2][0] for p in transfer_children(tmp_path).values()}
        written = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file()) if staging.is_dir() else 0
        return names >= {"rsync", "ssh"} and written > 256 * 1024

    wait_until(lambda: moving() or sync.poll() is not None, 60, "the transfer to run")
    assert sync.poll() is None, (tmp_path / "sync.err").read_text()
    return sync


def test_kill_9_of_the_sync_ends_its_rsync_and_ssh_and_the_next_sync_completes(tmp_path, big_library):
    require_tool("setpriv", "util-linux")
    with running_server(tmp_path, big_library) as server:
        env = site_env(tmp_path, server)
        sync = start_slow_sync(tmp_path, env)
        children = transfer_children(tmp_path)
        assert {p[2][0] for p in children.values()} >= {"rsync", "ssh"} and server_session(big_library)
        assert all("--fsync" in p[2] for p in children.values() if p[2][0] == "rsync")  # durable before publish
        os.kill(sync.pid, signal.SIGKILL)
        sync.wait(10)
        wait_until(lambda: not transfer_children(tmp_path), 5, "no rsync or ssh of the killed sync left")
        # ssh gone means the connection closed: the server's rrsync/rsync of that session end too
        wait_until(lambda: not server_session(big_library), 15, "the server side of the session to end")
        assert gen.current_root(tmp_path / "L") is None  # nothing half-done was published
        partial = tmp_path / "L" / ".library-syncer" / "staging" / "Alpha" / rs.PARTIAL_DIR / "disk.vmdk"
        assert partial.stat().st_size > 0  # rsync's receiver kept what it had: the next run resumes

        done = cli("sync", env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        root = gen.current_root(tmp_path / "L")
        assert (root / "Alpha" / "disk.vmdk").read_bytes() == (big_library / "Alpha" / "disk.vmdk").read_bytes()


def test_kill_9_of_the_client_daemon_mid_sync_leaves_no_transfer(tmp_path, big_library):
    """The daemon runs syncs in a worker thread: the same holds."""
    with running_server(tmp_path, big_library) as server:
        env = site_env(tmp_path, server, SYNCER_HTTP_HOST="127.0.0.1", SYNCER_HTTP_PORT=str(free_port()))
        daemon = start_slow_sync(tmp_path, env, "client")
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
        wait_until(lambda: not transfer_children(tmp_path), 5, "no rsync or ssh of the killed daemon left")
        done = cli("sync", env=site_env(tmp_path, server), timeout=120)
        assert done.returncode == 0, done.stderr


def test_a_child_still_holding_the_lock_makes_the_next_run_busy(tmp_path, big_library):
    with running_server(tmp_path, big_library) as server:
        env = site_env(tmp_path, server)
        sync = start_slow_sync(tmp_path, env)
        lock = tmp_path / "L" / ".library-syncer" / "sync.lock"
        rsyncs = {pid: p for pid, p in transfer_children(tmp_path).items() if p[2][0] == "rsync"}
        # rsync's forked receiver writes into staging; it has no parent-death signal of its own
        receiver = next(pid for pid, p in rsyncs.items() if p[0] in rsyncs)
        assert any(os.path.realpath(f"/proc/{receiver}/fd/{fd}") == str(lock) for fd in os.listdir(f"/proc/{receiver}/fd"))
        os.kill(receiver, signal.SIGSTOP)  # hold it back after its parents are gone
        try:
            os.kill(sync.pid, signal.SIGKILL)
            sync.wait(10)
            wait_until(lambda: set(transfer_children(tmp_path)) == {receiver}, 5, "only the stopped receiver left")
            busy = cli("sync", env=env, timeout=60)
            assert busy.returncode == 1 and "already running" in busy.stderr, busy.stderr
        finally:
            os.kill(receiver, signal.SIGCONT)  # it reads EOF from the dead ssh and exits
        wait_until(lambda: not transfer_children(tmp_path), 10, "the receiver to exit")
        done = cli("sync", env=env, timeout=120)
        assert done.returncode == 0, done.stderr


def test_children_started_from_a_worker_thread_live_until_they_finish(tmp_path):
    require_tool("setpriv", "util-linux")
    results: list[proc.Proc] = []
    worker = threading.Thread(target=lambda: results.append(
        proc.run(["sh", "-c", "sleep 0.5; echo done"], on_line=None, stop_event=None)))
    worker.start()
    worker.join(30)
    assert results and results[0].code == 0 and results[0].stdout == "done"


def test_the_parent_death_signal_follows_the_starting_thread(tmp_path):
    """Why :func:`proc.run` waits in the thread that started the child: when that thread ends, the child dies."""
    require_tool("setpriv", "util-linux")
    started: list = []

    def start_and_leave() -> None:
        child = subprocess.Popen(proc.guarded(["sleep", "60"]))
        started.append(child)
        # leave once setpriv has armed the signal and run sleep (armed later, it would follow the new parent)
        wait_until(lambda: Path(f"/proc/{child.pid}/cmdline").read_bytes().startswith(b"sleep"), 10, "sleep to run")

    t = threading.Thread(target=start_and_leave)
    t.start()
    t.join(30)
    child = started[0]
    wait_until(lambda: child.poll() is not None, 10, "the child of an ended thread to be killed")
    assert child.returncode == -signal.SIGKILL


def test_lock_fd_is_inherited_only_while_the_thread_holds_it(tmp_path):
    lock = proc.RunLock(tmp_path / "sync.lock")
    assert lock.acquire()
    try:
        inside = proc.run(["sh", "-c", "ls -l /proc/$$/fd"], on_line=None, stop_event=None)
        assert str(tmp_path / "sync.lock") in inside.stdout
        other: list[proc.Proc] = []
        t = threading.Thread(target=lambda: other.append(
            proc.run(["sh", "-c", "ls -l /proc/$$/fd"], on_line=None, stop_event=None)))
        t.start()
        t.join(30)
        assert str(tmp_path / "sync.lock") not in other[0].stdout  # another thread's children do not hold it
        assert not proc.RunLock(tmp_path / "sync.lock").acquire()
    finally:
        lock.release()
    after = proc.run(["sh", "-c", "ls -l /proc/$$/fd"], on_line=None, stop_event=None)
    assert str(tmp_path / "sync.lock") not in after.stdout and proc.held_fds() == ()


def test_a_missing_program_is_named(tmp_path):
    missing = proc.run(["no-such-rsync-here", "-a"], on_line=None, stop_event=None)
    assert missing.code == 127 and "no-such-rsync-here" in missing.stderr


def test_commands_are_durable_and_guarded():
    cmd = rs.sync_command("u@h:./", "/L/s", rsh="ssh -p 2222")
    assert "--fsync" in cmd
    assert cmd[cmd.index("-e") + 1] == "setpriv --pdeathsig KILL ssh -p 2222"
    listing = rs.list_command("u@h:./", rsh="ssh -p 2222")
    assert listing[listing.index("-e") + 1].startswith("setpriv --pdeathsig KILL ssh")
    assert proc.guarded(["rsync", "-a"]) == ["setpriv", "--pdeathsig", "KILL", "rsync", "-a"]
