"""A real ``library-syncer client`` process syncing from a :mod:`server_fixture` server, on loopback.

Usage::

    with running_server(tmp_path, source) as srv, running_client(tmp_path, srv, LIBRARY_NAME="Branch") as site:
        requests.get(site.url("lib.json"))
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from support import cli_popen, free_port


@dataclass
class RunningClient:
    """A started client: its web address, folders and log file."""

    port: int
    library: Path
    state_dir: Path
    proc: subprocess.Popen
    log: Path
    env: dict

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, wait, return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise


def client_env(tmp_path: Path, srv, **extra: str) -> dict:
    """Environment for a client of ``srv`` (original variable names), publishing on a free port."""
    env = {
        "SYNC_PEER": srv.host, "SYNC_PORT": str(srv.port), "SYNC_USER": srv.user, "SYNC_KEY": str(srv.key),
        "SYNC_HOST_KEY": srv.host_key_line, "SYNCER_LIBRARY": str(tmp_path / "site"),
        "SYNCER_STATE_DIR": str(tmp_path / "site-state"), "SYNCER_HTTP_HOST": "127.0.0.1",
        "SYNCER_HTTP_PORT": str(free_port()),
    }
    env.update(extra)
    return env


@contextlib.contextmanager
def running_client(tmp_path: Path, srv, *args: str, **extra: str) -> Iterator[RunningClient]:
    """Start ``library-syncer [ARGS] client`` with :func:`client_env`; stopped (SIGTERM) on exit."""
    env = client_env(tmp_path, srv, **extra)
    log = tmp_path / f"client-{env['SYNCER_HTTP_PORT']}.log"
    with open(log, "wb") as fh:
        proc = cli_popen(*args, "client", env=env, stdout=fh, stderr=subprocess.STDOUT)
    client = RunningClient(int(env["SYNCER_HTTP_PORT"]), Path(env["SYNCER_LIBRARY"]),
                           Path(env["SYNCER_STATE_DIR"]), proc, log, env)
    try:
        yield client
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            client.stop()
