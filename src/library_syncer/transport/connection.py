"""One authenticated SSH connection per peer and sync, shared by every command of that sync.

A sync asks a peer for its origin manifest, lists its top level, transfers, and asks
for the origin manifest again: four sessions.  They run over one connection (OpenSSH
multiplexing): :meth:`Connection.open` starts a master (``ssh -M -N``, no session, so
no forced command runs) and waits until it has authenticated; every later command
(rsync's remote shell included, :meth:`Connection.rsh`) attaches to its control
socket.  Should the master be gone, ssh falls back to a connection of its own.

The master is a child of the calling thread, killed with it (parent-death signal) and
closed by :meth:`Connection.close`; its control socket lives in a private folder
(mode 0700) with a short path, as Unix sockets need.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ..util.childenv import child_environ
from ..util.proc import guarded, held_fds
from .ssh import rsh_string

POLL_SECONDS = 0.01


class Connection:
    """An ssh master to ``destination`` (``user@host``) built from the ssh argv of :func:`.ssh.ssh_command`."""

    def __init__(self, ssh_argv: list[str], destination: str, *, connect_timeout: float,
                 env: dict[str, str] | None = None) -> None:
        self.argv, self.destination, self.connect_timeout = list(ssh_argv), destination, connect_timeout
        self.env = env if env is not None else child_environ()
        self.folder = Path(tempfile.mkdtemp(prefix="library-syncer-ssh-"))
        self.socket = self.folder / "c"
        self.proc: subprocess.Popen | None = None
        self._errfile = self.folder / "master.err"

    def _mux(self) -> list[str]:
        return [*self.argv, "-o", "ControlMaster=no", "-o", f"ControlPath={self.socket}"]

    def open(self, stop_event: threading.Event | None = None) -> tuple[int, str]:
        """Connect and authenticate: (0, "") when the master is up, else (ssh's exit code, its stderr)."""
        with open(self._errfile, "wb") as err:
            self.proc = subprocess.Popen(
                guarded([*self.argv, "-M", "-N", "-o", f"ControlPath={self.socket}", "-o", "ControlPersist=no",
                         self.destination]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=self.env,
                start_new_session=True, pass_fds=held_fds())
        # Authentication and the key exchange can take long on a slow link; ssh's own
        # ConnectTimeout covers the TCP connect, this bounds the rest.
        deadline = time.monotonic() + self.connect_timeout * 4 + 30
        while not self.socket.exists():
            code = self.proc.poll()
            if code is not None:
                return code, self._stderr()
            if (stop_event is not None and stop_event.is_set()) or time.monotonic() > deadline:
                self.close()
                return 255, "ssh: connection not established in time"
            time.sleep(POLL_SECONDS)
        return 0, ""

    def _stderr(self) -> str:
        try:
            return self._errfile.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def rsh(self) -> str:
        """rsync's ``-e`` value: ssh attaching to this connection."""
        return rsh_string(self._mux())

    def run(self, command: str, *, timeout: float) -> tuple[int, bytes, str]:
        """Run ``command`` at the peer over this connection: (exit code, stdout, stderr)."""
        try:
            proc = subprocess.run(guarded([*self._mux(), self.destination, command]), stdin=subprocess.DEVNULL,
                                  capture_output=True, env=self.env, timeout=timeout, start_new_session=True)
        except subprocess.TimeoutExpired:
            return 255, b"", f"ssh: '{command}' did not answer within {timeout:g}s"
        except OSError as exc:
            return 14, b"", f"could not start ssh: {exc.strerror}"
        return proc.returncode, proc.stdout, proc.stderr.decode(errors="replace")

    def close(self) -> None:
        """End the master (its sessions are over) and remove the socket folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
