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

:class:`Child` is the same runner for the long-running children of an asyncio
program (sshd, Caddy): a reader thread feeds their output lines to a callback, their
exit is awaited without blocking the loop, and :meth:`Child.stop` sends SIGTERM,
waits a grace and kills.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Mapping, Protocol

from ..logs import in_context
from .childenv import child_environ

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


class Splitter(Protocol):
    """Cuts a stream of text into lines (:class:`LineSplitter`, or rsync's own)."""

    def feed(self, data: str) -> list[str]: ...

    def close(self) -> list[str]: ...


class LineSplitter:
    """Split a stream of text into lines at ``\\n`` or ``\\r``; empty lines are dropped."""

    def __init__(self) -> None:
        self._rest = ""

    def feed(self, data: str) -> list[str]:
        *lines, self._rest = (self._rest + data).replace("\r", "\n").split("\n")
        return [line for line in lines if line.strip()]

    def close(self) -> list[str]:
        rest, self._rest = self._rest, ""
        return [rest] if rest.strip() else []


def _keep_all(line: str) -> bool:
    return True


def run(cmd: list[str], *, on_line: Callable[[str], None] | None, stop_event: threading.Event | None,
        env: Mapping[str, str] | None = None, splitter: Callable[[], Splitter] = LineSplitter,
        keep: Callable[[str], bool] = _keep_all) -> Proc:
    """Run a command, feeding stdout lines (cut by ``splitter``) to ``on_line``; stop it when asked.

    ``env`` defaults to the secret-free child environment; the stdout kept in the result is
    the lines ``keep`` accepts (bounded).  Stopping sends SIGTERM to the child's process group
    (rsync moves the partial file into the partial dir), then SIGKILL after
    :data:`TERMINATE_GRACE_SECONDS`.
    """
    if (missing := _missing(cmd)) is not None:
        return missing
    try:
        proc = subprocess.Popen(guarded(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=dict(env) if env is not None else child_environ(),
                                start_new_session=True, pass_fds=held_fds())
    except OSError as exc:  # fork or pipe failed (resources): transient, like rsync's own IPC error
        return Proc(14, "", f"could not start {cmd[0]}: {exc.strerror}\n", False)
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None  # both are pipes
    out_lines: list[str] = []
    err_chunks: list[bytes] = []

    def read_out() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        lines = splitter()
        while chunk := os.read(stdout.fileno(), 65536):
            for line in lines.feed(decoder.decode(chunk)):
                _keep(out_lines, line, keep)
                if on_line:
                    on_line(line)
        for line in lines.close():
            _keep(out_lines, line, keep)
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


def _keep(lines: list[str], line: str, keep: Callable[[str], bool]) -> None:
    """Keep the lines ``keep`` accepts (rsync: the stats block and messages, not progress), bounded."""
    if keep(line):
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


class Child:
    """A long-running child started from the asyncio loop's thread; ``proc`` is its :class:`subprocess.Popen`.

    ``on_line`` gets every line (decoded, line end kept) of its stderr, or of stdout and
    stderr together with ``merge_output``, in a reader thread that runs until every writer
    of the pipe is gone (sshd's sessions inherit it).  ``guard`` starts it with the
    parent-death signal (:func:`guarded`); ``new_session`` in a session of its own.
    """

    def __init__(self, cmd: list[str], *, env: Mapping[str, str], on_line: Callable[[str], None],
                 merge_output: bool = False, guard: bool = False, new_session: bool = False,
                 cwd: str | None = None) -> None:
        self.proc = subprocess.Popen(
            guarded(cmd) if guard else cmd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if merge_output else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
            env=dict(env), cwd=cwd, start_new_session=new_session,
        )
        stream = self.proc.stdout if merge_output else self.proc.stderr
        assert stream is not None
        self._reader = threading.Thread(target=self._read, args=(stream, on_line), daemon=True)
        self._reader.start()
        self._exited = asyncio.ensure_future(asyncio.to_thread(self.proc.wait))  # exit of the process alone

    @staticmethod
    def _read(stream: IO[bytes], on_line: Callable[[str], None]) -> None:
        with stream:
            for raw in stream:
                on_line(raw.decode("utf-8", "replace"))

    @property
    def returncode(self) -> int | None:
        """The exit code once the child has exited (negative: killed by that signal), else None."""
        return self.proc.returncode

    @property
    def exited(self) -> asyncio.Future:
        """Done when the child has exited (its pipe may still be read)."""
        return self._exited

    async def wait(self) -> int:
        """Wait until the child exits; its exit code."""
        return await asyncio.shield(self._exited)

    async def lines_done(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until every line of the output has been handed on."""
        await asyncio.to_thread(self._reader.join, timeout)

    async def stop(self, grace: float, *, on_kill: Callable[[], None] | None = None) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds (``on_kill`` is called first); the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), grace)
            except asyncio.TimeoutError:
                if on_kill is not None:
                    on_kill()
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
        return await asyncio.shield(self._exited)
