"""Root mode: the server creates its login account and serves as it, with root-owned sshd files."""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from server_fixture import _seed_host_keys, make_site_key
from support import cli, cli_popen, free_port, wait_until

from .helpers import client_env, make_library, rsync, tree_digest

# Root mode needs root. CI runs as root: there a missing privilege is a failure, never a skip.
if os.environ.get("CI") and os.geteuid() != 0:
    raise RuntimeError("root-mode tests must run as root in CI")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root mode needs root (outside CI only)")


def _free_uid() -> int:
    while True:
        uid = random.randint(42000, 59000)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid


def _processes_of(uid: int) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path("/proc", pid).stat().st_uid == uid:
                found.append(pid)
        except OSError:
            continue
    return found


def _shadow_password(user: str) -> str:
    for line in Path("/etc/shadow").read_text().splitlines():
        if line.split(":")[0] == user:
            return line.split(":")[1]
    return ""


def _layout(base: Path, tmp_path: Path) -> tuple[Path, Path, Path, Path, int, list]:
    """Library, keys folder with one site key, state folder with seeded host keys, a port, the server's args."""
    lib = make_library(base)
    keys = base / "keys"
    key = make_site_key(keys, tmp_path / "private", "site1")
    state = base / "state"
    state.mkdir(mode=0o755)
    _seed_host_keys(state, base)
    port = free_port()
    args = ["server", "--library", lib, "--keys", keys, "--state-dir", state,
            "--ssh-host", "127.0.0.1", "--port", str(port)]
    return lib, keys, key, state, port, args


@contextlib.contextmanager
def _serving(args: list, env: dict, tmp_path: Path, port: int, key: Path):
    """The server started with ``args``, listening; yields (process, log file, rsync's -e value)."""
    host_key = cli(*args, "--print-host-key", env=env).stdout.strip()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key}\n")
    log = tmp_path / "server.log"
    with open(log, "wb") as fh:
        proc = cli_popen(*args, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is not None or "Server listening on" in log.read_text(), 30, "the server")
        assert proc.poll() is None, log.read_text()
        yield proc, log, (f"ssh -F /dev/null -p {port} -i {key} -o BatchMode=yes -o StrictHostKeyChecking=yes "
                          f"-o UserKnownHostsFile={known_hosts}")
        proc.terminate()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_root_mode_creates_the_account_and_serves_as_it(tmp_path):
    # Outside /tmp: sshd's StrictModes refuses authorized_keys below a world-writable folder.
    base = Path(tempfile.mkdtemp(prefix="library-syncer-test-", dir="/var/lib"))
    base.chmod(0o755)
    user, uid = f"lstest{random.randint(0, 10**6)}", _free_uid()
    env = {"SYNCER_USER": user, "SYNCER_UID": str(uid)}
    try:
        lib, keys, key, state, port, args = _layout(base, tmp_path)

        # The account cannot read the library: refused with the reason.
        lib.chmod(0o700)
        r = cli(*args, env=env)
        assert r.returncode == 2, r.stderr
        assert f"setting library: the account {user} cannot read {lib}" in r.stderr
        pw = pwd.getpwnam(user)  # created by that start
        assert (pw.pw_uid, pw.pw_shell) == (uid, "/bin/sh")
        assert _shadow_password(user) == "*"  # no password can match
        lib.chmod(0o755)

        # An existing account with another uid is not silently reused.
        r = cli(*args, env=dict(env, SYNCER_UID=str(uid + 1)))
        assert r.returncode == 2 and f"the account {user} already exists with uid {uid}" in r.stderr

        with _serving(args, env, tmp_path, port, key) as (proc, log, rsh):
            config = (state / "sshd_config").read_text()
            assert f"AllowUsers {user}\n" in config and "StrictModes yes\n" in config
            assert "PermitRootLogin no\n" in config
            st = (state / "authorized_keys").stat()
            assert st.st_uid == 0 and st.st_mode & 0o022 == 0

            dest = tmp_path / "dest"
            r = rsync("-a", "-e", rsh, f"{user}@127.0.0.1:/", f"{dest}/")
            assert r.returncode == 0, r.stderr + log.read_text()
            assert tree_digest(dest) == tree_digest(lib)
            # Pulled as the account itself, not as root.
            assert "Starting session: forced-command (config)" in log.read_text()
            assert f"for {user} from 127.0.0.1" in log.read_text()

            # The same key as root (or any other account) is refused.
            r = subprocess.run([*rsh.split(), "root@127.0.0.1", "true"], capture_output=True, text=True,
                               timeout=30, env=client_env(), stdin=subprocess.DEVNULL)
            assert r.returncode == 255 and "Permission denied" in r.stderr

            # Revoking the key (SIGHUP) ends its running transfer, whose processes run as the account.
            (lib / "big").mkdir()
            (lib / "big" / "disk.vmdk").write_bytes(os.urandom(2_000_000))
            slow = subprocess.Popen(["rsync", "-a", "--bwlimit=100", "-e", rsh, f"{user}@127.0.0.1:/big/",
                                     f"{tmp_path / 'slow'}/"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=client_env())
            try:
                wait_until(lambda: log.read_text().count("Starting session") >= 2, 20, "the slow session")
                (keys / "site1.pub").unlink()
                proc.send_signal(signal.SIGHUP)
                assert slow.wait(10) != 0
                wait_until(lambda: "site site1: ended the session from 127.0.0.1" in log.read_text(), 10,
                           "the ended session in the log")
                wait_until(lambda: not _processes_of(uid), 10, "every process of the ended session to exit")
            finally:
                slow.kill()
                slow.wait(10)
    finally:
        subprocess.run(["userdel", user], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    with pytest.raises(KeyError):
        pwd.getpwnam(user)


def test_an_existing_account_with_a_noisy_bashrc_still_serves(tmp_path):
    """sshd runs the forced command with the account's shell; bash would read ~/.bashrc, whose output
    breaks the rsync protocol ("is your shell clean?") and whose work slows every session."""
    base = Path(tempfile.mkdtemp(prefix="library-syncer-test-", dir="/var/lib"))
    base.chmod(0o755)
    user, uid = f"lstest{random.randint(0, 10**6)}", _free_uid()
    home = base / "home"
    subprocess.run(["useradd", "-u", str(uid), "-d", str(home), "-m", "-s", "/bin/bash", user], check=True)
    try:
        (home / ".bashrc").write_text("echo 'welcome to this host'\n")
        lib, _, key, _, port, args = _layout(base, tmp_path)
        env = {"SYNCER_USER": user, "SYNCER_UID": str(uid)}
        with _serving(args, env, tmp_path, port, key) as (_, log, rsh):
            assert pwd.getpwnam(user).pw_shell == "/bin/bash"  # the account is used as it is
            dest = tmp_path / "dest"
            r = rsync("-a", "-e", rsh, f"{user}@127.0.0.1:/", f"{dest}/")
            assert r.returncode == 0, r.stderr + log.read_text()
            assert tree_digest(dest) == tree_digest(lib)
            origin = subprocess.run([*rsh.split(), f"{user}@127.0.0.1", "library-syncer origin"],
                                    capture_output=True, timeout=30, env=client_env(), stdin=subprocess.DEVNULL)
            assert origin.returncode == 0 and b"welcome" not in origin.stdout, origin.stderr
    finally:
        subprocess.run(["userdel", user], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
