"""Child processes of a sync run (rsync and the ssh it starts) and the run lock.

No orphan transfers: every command is started through ``setpriv --pdeathsig KILL``
(util-linux), so the kernel kills rsync when the thread that started it goes away,
even when the sync process itself is killed with SIGKILL.  :func:`run` blocks in the
thread that started the child until the child has exited, so that thread outlives
it (``PR_SET_PDEATHSIG`` fires when the *thread* that forked exits: a worker thread
of the daemon is fine as long as it is the one that waits).  rsync's own forked
processes end on the closed pipes, and the remote shell is wrapped the same way
(:data:`library_syncer.transport.rsync.REMOTE_SHELL_GUARD`), so ssh dies with rsync.

The run lock covers the children: while the calling thread holds a :class:`RunLock`,
the children :func:`run` starts inherit the lock's file descriptor (flock locks belong
to the open file, shared by every copy), so the lock stays held until the last
process that could still write into the staging tree has exited (ssh closes the
descriptors it inherits; it writes nothing there).  This also covers the one window
the parent-death signal leaves open: the sync killed between the fork and setpriv
arming the signal (microseconds) leaves an rsync that runs to its end, and no new
run starts until it has.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..logs import in_context
from ..transport import rsync as rs

TERMINATE_GRACE_SECONDS = 10.0
PDEATHSIG = ("setpriv", "--pdeathsig", "KILL")
PACKAGES = {"setpriv": "util-linux", "rsync": "rsync", "ssh": "openssh-client"}

_held = threading.local()


@dataclass
class Proc:
    """A finished child: exit code (negative: killed by that signal), output, and whether we stopped it."""

    code: int
    stdout: str
    stderr: str
    stopped: bool


def held_fds() -> tuple[int, ...]:
    """File descriptors of the run locks the calling thread holds (children inherit them)."""
    return tuple(getattr(_held, "fds", ()))


def guarded(cmd: list[str]) -> list[str]:
    """``cmd`` started so that it is killed when the starting thread (or process) dies."""
    return [*PDEATHSIG, *cmd]


def _missing(cmd: list[str]) -> Proc | None:
    """A Proc with exit 127 naming the first program of ``cmd`` that is not installed, or None."""
    for program in (PDEATHSIG[0], cmd[0]):
        if shutil.which(program) is None:
            package = PACKAGES.get(os.path.basename(program))
            hint = f" (install the Debian package {package})" if package else ""
            return Proc(127, "", f"cannot run {program}: command not found or not executable{hint}\n", False)
    return None


def run(cmd: list[str], *, on_line: Callable[[str], None] | None, stop_event: threading.Event | None) -> Proc:
    """Run a command, feeding stdout lines (split at CR/LF) to ``on_line``; stop it when asked.

    Stopping sends SIGTERM to the child's process group (rsync moves the partial file into
    the partial dir), then SIGKILL after :data:`TERMINATE_GRACE_SECONDS`.
    """
    if (missing := _missing(cmd)) is not None:
        return missing
    try:
        proc = subprocess.Popen(guarded(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=rs.child_env(), start_new_session=True,
                                pass_fds=held_fds())
    except OSError as exc:  # fork or pipe failed (resources): transient, like rsync's own IPC error
        return Proc(14, "", f"could not start {cmd[0]}: {exc.strerror}\n", False)
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None  # both are pipes
    out_lines: list[str] = []
    err_chunks: list[bytes] = []

    def read_out() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        splitter = rs.LineSplitter()
        while chunk := os.read(stdout.fileno(), 65536):
            for line in splitter.feed(decoder.decode(chunk)):
                keep(out_lines, line)
                if on_line:
                    on_line(line)
        for line in splitter.close():
            keep(out_lines, line)
            if on_line:
                on_line(line)

    def read_err() -> None:
        while chunk := os.read(stderr.fileno(), 65536):
            err_chunks.append(chunk)
            if len(err_chunks) > 64:
                del err_chunks[:32]

    readers = [in_context(read_out), in_context(read_err)]  # log lines keep the run id
    for t in readers:
        t.start()
    stopped = False
    try:
        while True:
            try:
                proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if stop_event is not None and stop_event.is_set() and not stopped:
                stopped = True
                send_signal(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=TERMINATE_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    send_signal(proc, signal.SIGKILL)
    except BaseException:
        send_signal(proc, signal.SIGTERM)
        proc.wait()
        raise
    finally:
        for t in readers:
            t.join(timeout=5)
        stdout.close()
        stderr.close()
    return Proc(proc.returncode, "\n".join(out_lines), b"".join(err_chunks).decode("utf-8", "replace"), stopped)


def keep(lines: list[str], line: str) -> None:
    """Keep the non-progress lines (the stats block and messages), bounded."""
    if rs.parse_progress(line) is None:
        lines.append(line)
        if len(lines) > 4000:
            del lines[:2000]


def send_signal(proc: subprocess.Popen, sig: int) -> None:
    """Signal the child's whole process group (rsync, its forks and ssh); gone already is fine."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class RunLock:
    """Exclusive, non-blocking flock on a file; ``acquire`` returns False when already held.

    While held, children started by :func:`run` in the same thread inherit the descriptor.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        _held.fds = [*getattr(_held, "fds", ()), fd]
        return True

    def release(self) -> None:
        if self.fd is not None:
            _held.fds = [fd for fd in getattr(_held, "fds", ()) if fd != self.fd]
            os.close(self.fd)
            self.fd = None
