"""Sync runs over a real sshd + rrsync on loopback: delta transfer, resume, host-key pinning."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from library_syncer.config import load_settings
from library_syncer.sync.result import Phase
from library_syncer.sync.run import run_sync
from library_syncer.publish import generations as gen
from support import cli, wait_until

from server_fixture import running_server

MiB = 1 << 20


def site_settings(tmp_path: Path, server, **kw):
    values = dict(library=tmp_path / "L", state_dir=tmp_path / "state", sync_peer=server.host,
                  sync_port=server.port, sync_user=server.user, sync_key=server.key)
    values.update(kw)
    return load_settings(**values)


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "primary"
    (lib / "Alpha").mkdir(parents=True)
    (lib / "Alpha" / "alpha.iso").write_bytes(b"a" * 10000)
    (lib / "Beta").mkdir()
    (lib / "Beta" / "notes.txt").write_text("beta\n")
    return lib


def test_cli_sync_over_ssh_tofu_then_changed_host_key(tmp_path, library):
    with running_server(tmp_path, library) as server:
        env = {"SYNC_PEER": server.host, "SYNC_PORT": str(server.port), "SYNC_USER": server.user,
               "SYNC_KEY": str(server.key), "SYNCER_LIBRARY": str(tmp_path / "L"),
               "SYNCER_STATE_DIR": str(tmp_path / "state"), "RSYNC_PROTECT_ARGS": "1"}
        p = cli("sync", env=env)
        assert p.returncode == 0, p.stderr
        assert "published generation 1" in p.stdout
        assert gen.published_items(tmp_path / "L") == {"Alpha", "Beta"}
        known = tmp_path / "state" / "known_hosts"
        assert server.host_key_line in known.read_text()  # trusted on first use, recorded

        other = tmp_path / "other_host_key"
        os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
        other_line = " ".join(Path(f"{other}.pub").read_text().split()[:2])
        known.write_text(f"[{server.host}]:{server.port} {other_line}\n")
        (library / "Gamma").mkdir()
        (library / "Gamma" / "g.iso").write_bytes(b"g")
        p = cli("sync", env=env)
        assert p.returncode == 1
        error = [ln for ln in p.stderr.splitlines() if ln.startswith("library-syncer: error:")]
        assert len(error) == 1 and "host key has CHANGED" in error[0], p.stderr
        assert f"remove its line from {known}" in error[0] and "SYNC_HOST_KEY" in error[0]

        p = cli("sync", env={**env, "SYNC_HOST_KEY": other_line})  # a pinned key that is not the server's
        assert p.returncode == 1 and "host key" in p.stderr and "SYNC_HOST_KEY" in p.stderr
        assert gen.published_items(tmp_path / "L") == {"Alpha", "Beta"}  # nothing changed
        p = cli("sync", env={**env, "SYNC_HOST_KEY": server.host_key_line})
        assert p.returncode == 0, p.stderr
        assert gen.published_items(tmp_path / "L") == {"Alpha", "Beta", "Gamma"}


def test_delta_of_a_large_file_moves_a_small_fraction(tmp_path, library):
    big = library / "Alpha" / "disk.vmdk"
    size = 64 * MiB
    with big.open("wb") as fh:
        for _ in range(size // MiB):
            fh.write(os.urandom(MiB))
    with running_server(tmp_path, library) as server:
        s = site_settings(tmp_path, server, sync_host_key=server.host_key_line)
        first = run_sync(s)
        assert first.ok, first.reason
        assert first.bytes_received > size and first.literal_bytes >= size
        with big.open("r+b") as fh:
            fh.seek(size // 2 + 1000)
            fh.write(os.urandom(4096))
        st = big.stat()
        os.utime(big, (st.st_atime, st.st_mtime + 5))
        second = run_sync(s)
        assert second.ok, second.reason
        assert second.generation == 2 and second.files_changed == 1
        assert second.literal_bytes < 64 * 1024
        assert second.matched_bytes > size - 64 * 1024
        assert second.wire_bytes < size // 50, second.to_dict()  # under 2 % of the file crossed the link
        assert (gen.current_root(tmp_path / "L") / "Alpha" / "disk.vmdk").read_bytes() == big.read_bytes()


def _rsync_children(staging: Path) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if cmd and cmd[0] == b"rsync" and ppid == os.getpid() and str(staging).encode() + b"/" in cmd:
            pids.append(int(pid))
    return pids


def test_killed_transfer_resumes_without_resending(tmp_path, library):
    big = library / "Alpha" / "disk.vmdk"
    size = 8 * MiB
    big.write_bytes(os.urandom(size))
    with running_server(tmp_path, library) as server:
        s = site_settings(tmp_path, server, sync_host_key=server.host_key_line, sync_max_bw="4096")
        staging = gen.Layout(tmp_path / "L").staging
        box: list = []
        t = threading.Thread(target=lambda: box.append(run_sync(s, retry_base=0.05)))
        t.start()

        def partial_size() -> int:
            temps = [p for p in (staging / "Alpha").glob(".disk.vmdk.*")] if (staging / "Alpha").exists() else []
            return max((p.stat().st_size for p in temps), default=0)

        wait_until(lambda: partial_size() >= 2 * MiB, 30, "2 MiB of the file to arrive")
        arrived = partial_size()
        pids = _rsync_children(staging)
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGTERM)  # as if the link broke: rsync keeps the partial file
        t.join(60)
        r = box[0]
        assert r.ok, r.reason
        assert r.attempts == 2
        # the second attempt used what had arrived: only the rest crossed the link again
        assert r.matched_bytes >= arrived - 256 * 1024
        assert r.literal_bytes <= size - arrived + 256 * 1024
        assert (gen.current_root(tmp_path / "L") / "Alpha" / "disk.vmdk").read_bytes() == big.read_bytes()
        assert not list((staging / "Alpha").glob(".rsync-partial/*"))


def test_unreachable_peer_and_refused_key(tmp_path, library):
    with running_server(tmp_path, library) as server:
        s = site_settings(tmp_path, server, sync_host_key=server.host_key_line)
        other_key = tmp_path / "stranger"
        os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other_key}")
        r = run_sync(site_settings(tmp_path, server, sync_host_key=server.host_key_line, sync_key=other_key))
        assert not r.ok and r.kind == "fatal" and r.attempts == 1
        assert "authentication failed" in r.reason
        port = server.port
    events = []
    r = run_sync(site_settings(tmp_path, server, sync_host_key=server.host_key_line, sync_retry_deadline=1),
                 retry_base=0.2, on_event=events.append)
    assert not r.ok and r.kind == "gave-up" and r.attempts >= 1
    assert "Connection refused" in r.reason and f"{port}" in r.reason
    assert gen.current_root(tmp_path / "L") is None
    phases = [e.name for e in events if isinstance(e, Phase)]
    assert phases[0] == "connect" and "listing" not in phases  # the connection failed: nothing else ran
