"""Running sessions of the server's sshd, and ending those whose key is no longer authorized.

sshd (``sshd_config`` from :mod:`..transport.sshd`) puts two variables into the
environment of every session's command (the shell, ``rrsync`` and the ``rsync``
sender it runs): ``SESSION_MARKER_VAR`` with this server's mark, and, with
``ExposeAuthInfo``, ``SSH_USER_AUTH`` naming a file (removed when the session
ends) whose lines say how the session logged in: ``publickey TYPE BASE64``.
So the key of each running session is read from ``/proc``, not guessed from
the log, and sessions of other servers on the same machine are never touched.

The pure parts (:func:`parse_environ`, :func:`parse_auth_info`,
:func:`group_sessions`, :func:`unauthorized`) are separate from the ``/proc``
scan and the signals.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from .sshd import SESSION_MARKER_VAR

AUTH_INFO_VAR = "SSH_USER_AUTH"
_MAX_AUTH_INFO = 64 * 1024


@dataclass(frozen=True)
class Process:
    """One process of a session's command, as read from ``/proc``."""

    pid: int
    ppid: int
    auth_file: str  # SSH_USER_AUTH: one per session
    client: str  # SSH_CONNECTION's client address and port: "ADDR port PORT"


@dataclass(frozen=True)
class Session:
    """One running session: its command's processes, its sshd process, the key it logged in with."""

    pids: tuple[int, ...]
    sshd_pid: int  # the parent of the command: sshd's process of this connection
    keys: frozenset[str]  # "TYPE BASE64"; empty when the auth info could not be read
    client: str


def parse_environ(data: bytes) -> dict[str, str]:
    """The variables of a ``/proc/PID/environ`` text (NUL-separated ``NAME=VALUE``)."""
    env = {}
    for item in data.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep:
            env[name.decode(errors="replace")] = value.decode(errors="replace")
    return env


def parse_auth_info(text: str) -> frozenset[str]:
    """The public keys (``TYPE BASE64``) of ``publickey`` lines in sshd's ExposeAuthInfo file."""
    keys = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "publickey":
            keys.add(f"{fields[1]} {fields[2]}")
    return frozenset(keys)


def group_sessions(procs: list[Process], auth: dict[str, frozenset[str]]) -> list[Session]:
    """Processes grouped by session (their auth file); the sshd process is the parent of the topmost one."""
    by_file: dict[str, list[Process]] = {}
    for p in procs:
        by_file.setdefault(p.auth_file, []).append(p)
    sessions = []
    for path, members in sorted(by_file.items()):
        pids = {p.pid for p in members}
        tops = [p for p in members if p.ppid not in pids]
        top = min(tops or members, key=lambda p: p.pid)
        sessions.append(Session(tuple(sorted(pids)), top.ppid, auth.get(path, frozenset()), top.client))
    return sessions


def unauthorized(sessions: list[Session], authorized: set[str]) -> list[Session]:
    """Sessions that logged in with a key that is not in ``authorized`` (unknown keys are kept)."""
    return [s for s in sessions if s.keys and not (s.keys & authorized)]


# --- /proc and signals ------------------------------------------------------------------

def _read_process(pid: int, marker: str, uid: int) -> Process | None:
    base = Path("/proc", str(pid))
    try:
        if base.stat().st_uid != uid:
            return None
        data = (base / "environ").read_bytes()
        if f"{SESSION_MARKER_VAR}={marker}".encode() not in data:
            return None
        env = parse_environ(data)
        stat_text = (base / "stat").read_text()
    except OSError:
        return None  # gone, or not ours to read
    if env.get(SESSION_MARKER_VAR) != marker or not env.get(AUTH_INFO_VAR):
        return None
    ppid = int(stat_text.rpartition(")")[2].split()[1])
    client = " port ".join(env.get("SSH_CONNECTION", "").split()[:2])  # "ADDR port PORT", as sshd logs it
    return Process(pid, ppid, env[AUTH_INFO_VAR], client)


def _read_auth_info(path: str, uid: int) -> frozenset[str]:
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_uid != uid:
                return frozenset()
            return parse_auth_info(fh.read(_MAX_AUTH_INFO).decode(errors="replace"))
    except OSError:
        return frozenset()


def running_sessions(marker: str, uid: int) -> list[Session]:
    """The sessions of the server marked ``marker`` whose commands run as ``uid``, from ``/proc``."""
    procs = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            p = _read_process(int(name), marker, uid)
            if p is not None:
                procs.append(p)
    auth = {path: _read_auth_info(path, uid) for path in {p.auth_file for p in procs}}
    return group_sessions(procs, auth)


def _signal_if(pid: int, check, sig: int) -> bool:
    """Send ``sig`` to ``pid`` through a pidfd, after ``check(pid)`` confirms it is still the same process."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if not check(pid):
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def end_session(session: Session, marker: str, uid: int) -> bool:
    """SIGTERM the session's sshd process (the connection) and its command's processes; True if any got it."""
    def member(pid: int) -> bool:
        p = _read_process(pid, marker, uid)
        return p is not None and p.pid in session.pids

    def its_sshd(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip() == "sshd" and any(
                (p := _read_process(c, marker, uid)) is not None and p.ppid == pid for c in session.pids)
        except OSError:
            return False

    done = _signal_if(session.sshd_pid, its_sshd, signal.SIGTERM)
    for pid in session.pids:
        done = _signal_if(pid, member, signal.SIGTERM) or done
    return done


def end_unauthorized(marker: str, uid: int, authorized: set[str]) -> list[Session]:
    """End every running session of this server whose key is not in ``authorized``; the ones ended."""
    ended = []
    for session in unauthorized(running_sessions(marker, uid), authorized):
        if end_session(session, marker, uid):
            ended.append(session)
    return ended
