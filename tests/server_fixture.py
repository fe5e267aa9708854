"""A real ``library-syncer server`` (unprivileged mode) on loopback, for any test that needs a primary site.

Usage::

    from server_fixture import running_server

    with running_server(tmp_path, library) as server:
        subprocess.run(["rsync", "-a", "-e", server.ssh_command(), f"{server.user}@{server.host}:/", dest])

The server is started through the real CLI on a free port and is ready when
the context is entered; it is stopped with SIGTERM (and waited for) on exit.
Its log goes to ``server.log``.  Host keys are generated once per test run and
seeded into each new state folder (RSA generation is slow).
"""

from __future__ import annotations

import contextlib
import getpass
import shlex
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from inprocess import run_cli
from support import cli_popen, free_port, require_tool, stop_process, wait_until

_host_keys_cache: Path | None = None


@dataclass
class RunningServer:
    """A started server and what a client needs to reach it."""

    host: str
    port: int
    user: str
    key: Path  # the site's private key
    host_key_line: str  # "ssh-ed25519 AAAA..."
    known_hosts: Path  # pins [host]:port
    library: Path
    keys_dir: Path
    state_dir: Path
    proc: subprocess.Popen
    log: Path  # the server's stderr
    site_keys: dict[str, Path] = field(default_factory=dict)  # site name -> private key (all sites)

    def ssh_args(self, key: Path | None = None) -> list[str]:
        """ssh argv (without destination) with BatchMode, the pinned host key, the key (default: the
        first site's) and port."""
        return [
            "ssh", "-F", "/dev/null", "-p", str(self.port), "-i", str(key or self.key),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
        ]

    def ssh_command(self, key: Path | None = None) -> str:
        """The value for ``rsync -e`` (with ``key``, default: the first site's)."""
        return " ".join(shlex.quote(a) for a in self.ssh_args(key))

    def destination(self) -> str:
        """The ssh destination ``user@host``."""
        return f"{self.user}@{self.host}"

    def remote(self, path: str = "/") -> str:
        """An rsync source ``user@host:path``."""
        return f"{self.user}@{self.host}:{path}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def reload(self) -> None:
        """Ask the server to re-read its keys folder (SIGHUP)."""
        self.proc.send_signal(signal.SIGHUP)


def _seed_host_keys(state_dir: Path, work: Path) -> None:
    global _host_keys_cache
    if _host_keys_cache is None or not _host_keys_cache.exists():
        cache = Path(tempfile.mkdtemp(prefix="syncer-hostkeys-"))
        r = run_cli("server", "--unprivileged", "--state-dir", cache, "--print-host-key")
        assert r.returncode == 0, r.stderr
        _host_keys_cache = cache
    shutil.copytree(_host_keys_cache / "host_keys", state_dir / "host_keys", dirs_exist_ok=True)


def make_site_key(keys_dir: Path, private_dir: Path, site: str) -> Path:
    """Create SITE's keypair with ssh-keygen: the public half in ``keys_dir``, the private one returned."""
    keygen = require_tool("ssh-keygen", "openssh-client")
    private_dir.mkdir(parents=True, exist_ok=True)
    keys_dir.mkdir(parents=True, exist_ok=True)
    key = private_dir / site
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", site, "-f", str(key)], check=True)
    shutil.move(f"{key}.pub", keys_dir / f"{site}.pub")
    return key


@contextlib.contextmanager
def running_server(tmp_path: Path, library: Path, *, site: str = "site1", env: dict | None = None,
                   extra_sites: Sequence[str] = (), state_dir: Path | None = None,
                   args: Sequence[str] = ()) -> Iterator[RunningServer]:
    """Start ``library-syncer server --unprivileged`` for ``library`` with one site key, on 127.0.0.1.

    ``extra_sites``: more site keys (``server.site_keys``); ``state_dir``: an existing state
    folder to reuse (a restart); ``args``: more command-line flags (e.g. ``--fleet-port``).
    """
    require_tool("sshd", "openssh-server")
    require_tool("rrsync", "rsync")
    base = Path(tempfile.mkdtemp(prefix="server-", dir=tmp_path))
    keys_dir = base / "keys"
    if state_dir is None:
        state_dir = base / "state"
        state_dir.mkdir(mode=0o755)
    key = make_site_key(keys_dir, base / "site", site)
    site_keys = {site: key, **{name: make_site_key(keys_dir, base / "site", name) for name in extra_sites}}
    _seed_host_keys(state_dir, base)
    host, port = "127.0.0.1", free_port()
    args = ["server", "--unprivileged", "--library", library, "--keys", keys_dir, "--state-dir", state_dir,
            "--ssh-host", host, "--port", str(port), *args]
    r = run_cli(*args, "--print-host-key", env=env)  # in-process: the server itself is a process below
    assert r.returncode == 0, r.stderr
    host_key_line = r.stdout.strip()
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[{host}]:{port} {host_key_line}\n")
    log = base / "server.log"
    with open(log, "wb") as log_fh:
        proc = cli_popen(*args, env=env, stdout=log_fh, stderr=subprocess.STDOUT)
    server = RunningServer(host, port, getpass.getuser(), key, host_key_line, known_hosts, library,
                           keys_dir, state_dir, proc, log, site_keys)
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"the server exited with code {proc.returncode}: {server.log_text()}"
            return "Server listening on" in server.log_text()

        wait_until(ready, 30, f"the server on {host}:{port}")
        yield server
    finally:
        stop_process(proc, 20)

