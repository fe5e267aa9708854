"""Classify rsync (and ssh) exit codes as retryable or fatal, with a one-line explanation.

Pure: takes the exit code and the captured stderr text, returns an :class:`Outcome`.
The rule: only what a retry cannot fix is fatal; everything else, unknown codes
included, is retried with backoff until SYNC_RETRY_DEADLINE.  stderr decides first
(whatever the code): a full disk, a read-only or failing local disk, a staging tree
we may not write, a changed host key are fatal.  Then the code:

====  ===========================================  =========  ==============================================
code  rsync(1) meaning                             verdict    why
====  ===========================================  =========  ==============================================
0     success                                      ok
1     syntax or usage error                        fatal      our command line or an option the server
                                                              (rrsync) refuses: the same on every try
2     protocol incompatibility                     fatal      rsync versions or a remote shell that prints
                                                              text ("is your shell clean?"): needs a change
3     errors selecting input/output files          retry      the library folder at the primary may be
                                                              missing for a while (a share being remounted)
4     action not supported / refused by server     fatal      an option rrsync does not allow
5     error starting the client-server protocol    retry      the server side could not start (busy,
                                                              restarting); fatal when stderr shows a refusal
6     daemon cannot append to its log              retry      daemon mode only; not ours to fix
10    socket I/O                                   retry      network
11    file I/O                                     retry      fatal when stderr shows a full, read-only or
                                                              failing (EIO) local disk; else transient
12    protocol data stream (connection lost)       retry      network; fatal on auth/host-key text or an
                                                              option the server refuses or does not know
13    program diagnostics                          retry      could not write a message: transient
14    IPC code                                     retry      fork/pipe failure is transient; "Failed to exec
                                                              ssh" (not found / not executable) is fatal,
                                                              whatever the code (12 when rsync sees EOF first)
15    sibling process crashed                      retry      a crash of one run, e.g. memory pressure
16    sibling process killed by a signal           retry      the OOM killer, ssh killed, a stop
19    received SIGUSR1                             retry      someone interrupted this run
20    received SIGINT, SIGTERM or SIGHUP           retry      someone interrupted this run
21    waitpid() error                              retry      transient
22    cannot allocate memory                       retry      memory pressure may pass
23    partial transfer due to error                retry      some files failed (sender side); fatal when
                                                              our side cannot write (disk, permissions)
24    partial transfer: source files vanished      retry      the library changed during the transfer
25    --max-delete stopped deletions               fatal      a deliberate brake: retrying hits it again
30    timeout in data send/receive                 retry      network
35    timeout waiting for daemon connection        retry      network
124   remote shell exited with 255                 retry      ssh failure passed through
125   remote shell killed by a signal              retry      ssh killed
126   command could not be run                     fatal      ssh/rsync/rrsync not executable (named)
127   command not found                            fatal      ssh/rsync/rrsync/setpriv missing (named)
129.. 128+N: killed by signal N (to 192)        retry      a kill (shell style), not a lasting fault
247   256-9: a process killed by SIGKILL           retry      193..254 read as 256-N: killed by signal N
255   ssh failed                                   retry      network; fatal: auth refused, host key changed
                                                              or unverifiable, unusable key file
<0    our rsync killed by signal -code             retry      the OOM killer, an operator's kill
other unknown                                      retry      never fatal on a first, unexplained failure
====  ===========================================  =========  ==============================================
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

# rsync(1) "EXIT VALUES" (rsync 3.5.0) plus rsync's remote-command codes (errcode.h).
MEANINGS: dict[int, str] = {
    0: "success",
    1: "syntax or usage error",
    2: "protocol incompatibility",
    3: "errors selecting input/output files or folders",
    4: "requested action not supported (or refused by the server)",
    5: "error starting the client-server protocol",
    6: "daemon unable to append to its log file",
    10: "error in socket I/O",
    11: "error in file I/O",
    12: "error in the rsync protocol data stream (connection lost)",
    13: "errors with program diagnostics",
    14: "error in IPC code",
    15: "a sibling process crashed",
    16: "a sibling process was killed by a signal",
    19: "received SIGUSR1",
    20: "received SIGINT, SIGTERM or SIGHUP",
    21: "some error returned by waitpid()",
    22: "error allocating core memory buffers",
    23: "partial transfer due to error",
    24: "partial transfer due to vanished source files",
    25: "the --max-delete limit stopped deletions",
    30: "timeout in data send/receive (no I/O for too long)",
    35: "timeout waiting for daemon connection",
    124: "the remote shell failed",
    125: "the remote shell was killed",
    126: "a command could not be run",
    127: "a command was not found",
    255: "ssh failed",
}

FATAL_CODES = frozenset({1, 2, 4, 25, 126, 127})

_KIND = {30: "timeout", 35: "timeout", 23: "partial", 24: "partial", 3: "source", 5: "server", 6: "server",
         11: "io", 13: "local", 14: "local", 21: "local", 22: "local",
         15: "interrupted", 16: "interrupted", 19: "interrupted", 20: "interrupted", 125: "interrupted"}

_DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded", re.I)
_READ_ONLY = re.compile(r"Read-only file system", re.I)
_EIO = re.compile(r"Input/output error", re.I)
_LOCAL_DENIED = re.compile(r"\[(receiver|generator)\].*Permission denied \(13\)", re.I)
_EXEC_FAILED = re.compile(r"Failed to exec (\S+?):|failed to execute (\S+?):|cannot run (\S+?):", re.I)
_NOT_RUN = re.compile(r"(\S+?): (?:(?:command )?not found|No such file or directory|Permission denied)\s*$", re.I)
_HOST_KEY_CHANGED = re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed", re.I)
_HOST_KEY_FAILED = re.compile(r"Host key verification failed|No (ED25519|RSA|ECDSA|\w+) host key is known", re.I)
_AUTH = re.compile(r"Permission denied \((publickey|password|keyboard|gssapi|hostbased)|Too many authentication failures|no mutual signature", re.I)
_KEY_FILE = re.compile(r"UNPROTECTED PRIVATE KEY FILE|bad permissions|Load key .*: (invalid format|"
                       r"error in libcrypto)|no such identity|Identity file .* not accessible", re.I)
_REFUSED_BY_SERVER = re.compile(r"rrsync error|option .* has been disabled|not allowed|: unknown option|"
                                r"syntax or usage error \(code 1\)", re.I)
_SSH_SIGNAL = re.compile(r"Killed by signal (\d+)", re.I)
# A connection that was up and then failed (as opposed to one that never came up).
_BROKE = re.compile(r"Broken pipe|Connection reset|connection unexpectedly closed|Connection to .* closed|"
                    r"not responding|Software caused connection abort")
_UNREACHED = re.compile(r"ssh: connect to host|Could not resolve hostname|Network is unreachable|No route to host|"
                        r"kex_exchange_identification")
_NETWORK = re.compile(
    r"Connection (refused|reset|timed out|closed)|timed out|Network is unreachable|No route to host|"
    r"Broken pipe|Could not resolve hostname|Temporary failure in name resolution|not responding|"
    r"kex_exchange_identification|Connection to .* closed|connection unexpectedly closed|"
    r"Software caused connection abort|Name or service not known",
    re.I,
)


@dataclass(frozen=True)
class Outcome:
    """What an exit code means: ``retryable`` or not, a short ``kind`` and a one-line ``message``."""

    code: int
    retryable: bool
    # ok | network | timeout | partial | source | server | io | local | interrupted | unknown | ssh
    # | disk-full | disk | program
    # | host-key | auth | key | refused | fatal
    kind: str
    message: str

    @property
    def ok(self) -> bool:
        return self.code == 0


def last_error_line(stderr: str) -> str:
    """The most telling line of stderr: the last one that is not rsync's summary of the failure."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("rsync error:", "@"))]
    causes = [ln for ln in useful if "connection unexpectedly closed" not in ln]
    return (causes or useful or lines or [""])[-1]


def _first_line(pattern: re.Pattern, stderr: str) -> str | None:
    return next((ln.strip() for ln in stderr.splitlines() if pattern.search(ln)), None)


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; ``signal N`` when the number is not a known signal."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _killed_by(code: int) -> int | None:
    """The signal number a code reports (negative, 128+N shell style, 256-N), or None."""
    if code < 0:
        return -code
    if 128 < code < 128 + 65:
        return code - 128
    if 192 < code < 255:
        return 256 - code
    return None


def _local_disk(code: int, stderr: str) -> Outcome | None:
    """Fatal outcomes read from stderr whatever the code: our disk is full, read-only, failing, or closed to us."""
    if line := _first_line(_DISK_FULL, stderr):
        # The line that says so, not the last one (rsync's other process often ends with "Broken pipe").
        return Outcome(code, False, "disk-full", f"the disk of the library is full (rsync exit {code}): {line}")
    if line := _first_line(_READ_ONLY, stderr):
        return Outcome(code, False, "disk", f"the library's file system is read-only (rsync exit {code}): {line}")
    eio = [ln.strip() for ln in stderr.splitlines() if _EIO.search(ln) and "[sender]" not in ln]
    if eio:
        return Outcome(code, False, "disk", f"the library's disk reports I/O errors (rsync exit {code}): {eio[0]}")
    if line := _first_line(_LOCAL_DENIED, stderr):
        return Outcome(code, False, "disk", f"rsync may not write into the staging tree (rsync exit {code}): {line}")
    return None


def _program(code: int, stderr: str) -> Outcome:
    """126/127 or a failed exec: which program could not be run."""
    line = _first_line(_EXEC_FAILED, stderr) or _first_line(_NOT_RUN, stderr)
    m = _EXEC_FAILED.search(line or "") or _NOT_RUN.search(line or "")
    name = next((g for g in m.groups() if g), None) if m else None
    what = "was not found" if code == 127 or "No such file" in (line or "") else "could not be run"
    who = f"the program {name}" if name else "a program (rsync or ssh here, rrsync at the server)"
    return Outcome(code, False, "program", f"{who} {what} (exit {code})" + (f": {line}" if line else ""))


def classify(code: int, stderr: str = "") -> Outcome:
    """Classify one rsync exit code (negative: killed by that signal) using its stderr."""
    detail = last_error_line(stderr)
    suffix = f": {detail}" if detail else ""
    if code == 0:
        return Outcome(0, False, "ok", "success")
    if code in (126, 127) or _EXEC_FAILED.search(stderr):  # rsync may see the closed pipe first: exit 12
        return _program(code, stderr)
    if (local := _local_disk(code, stderr)) is not None:
        return local
    if _HOST_KEY_CHANGED.search(stderr):
        return Outcome(code, False, "host-key", "the server's host key has CHANGED")
    if code in (255, 5, 12, 124):
        if _HOST_KEY_FAILED.search(stderr):
            return Outcome(code, False, "host-key", "the server's host key could not be verified")
        if _KEY_FILE.search(stderr):
            return Outcome(code, False, "key", f"ssh cannot use the private key{suffix}")
        if _AUTH.search(stderr):
            return Outcome(code, False, "auth", f"the server refused the site key (authentication failed){suffix}")
    if _REFUSED_BY_SERVER.search(stderr) and code in (1, 2, 4, 5, 12):
        return Outcome(code, False, "refused", f"the server refused the rsync request (exit {code}){suffix}")
    if code == 255:
        if m := _SSH_SIGNAL.search(stderr):
            return Outcome(code, True, "interrupted", f"ssh was killed by {signal_name(int(m.group(1)))}")
        kind = "network" if _NETWORK.search(stderr) or not detail else "ssh"
        broke = _BROKE.search(stderr) and not _UNREACHED.search(stderr)
        what = "the connection to the server broke" if broke else "ssh could not reach the server"
        return Outcome(code, True, kind, f"{what}{suffix}")
    if code in MEANINGS:
        retryable = code not in FATAL_CODES
        kind = _KIND.get(code, "network") if retryable else "fatal"
        return Outcome(code, retryable, kind, f"rsync exit {code}, {MEANINGS[code]}{suffix}")
    if (sig := _killed_by(code)) is not None:
        return Outcome(code, True, "interrupted", f"rsync was killed by {signal_name(sig)} (exit {code}){suffix}")
    return Outcome(code, True, "unknown", f"rsync exit {code}, an unknown error (retried){suffix}")
