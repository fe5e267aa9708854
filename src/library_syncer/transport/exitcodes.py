"""Classify rsync (and ssh) exit codes as retryable or fatal, with a one-line explanation.

Pure: takes the exit code and the captured stderr text, returns a :class:`Outcome`.
ssh's own failures all exit 255, so stderr decides whether a 255 is a network
problem (retry) or an authentication / host-key problem (fatal: retrying cannot help).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# rsync(1) "EXIT VALUES".
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
    20: "received SIGUSR1 or SIGINT",
    21: "some error returned by waitpid()",
    22: "error allocating core memory buffers",
    23: "partial transfer due to error",
    24: "partial transfer due to vanished source files",
    25: "the --max-delete limit stopped deletions",
    30: "timeout in data send/receive (no I/O for too long)",
    35: "timeout waiting for daemon connection",
    255: "ssh failed",
}

RETRYABLE_CODES = frozenset({10, 12, 20, 23, 24, 30, 35})

_DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded", re.I)
_HOST_KEY_CHANGED = re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed", re.I)
_HOST_KEY_FAILED = re.compile(r"Host key verification failed|No (ED25519|RSA|ECDSA|\w+) host key is known", re.I)
_AUTH = re.compile(r"Permission denied \((publickey|password|keyboard|gssapi|hostbased)|Too many authentication failures|no mutual signature", re.I)
_KEY_FILE = re.compile(r"UNPROTECTED PRIVATE KEY FILE|bad permissions|Load key .*: (invalid format|"
                       r"error in libcrypto)|no such identity|Identity file .* not accessible", re.I)
_REFUSED_BY_SERVER = re.compile(r"rrsync error|option .* has been disabled|not allowed", re.I)
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
    kind: str  # ok | network | timeout | partial | interrupted | disk-full | host-key | auth | key | refused | fatal
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


def classify(code: int, stderr: str = "") -> Outcome:
    """Classify one rsync exit code (negative: killed by that signal) using its stderr."""
    detail = last_error_line(stderr)
    suffix = f": {detail}" if detail else ""
    if code == 0:
        return Outcome(0, False, "ok", "success")
    if code < 0:
        return Outcome(code, True, "interrupted", f"rsync was killed by signal {-code}")
    if _DISK_FULL.search(stderr):
        # The line that says so, not the last one (rsync's other process often ends with "Broken pipe").
        full = next(ln.strip() for ln in stderr.splitlines() if _DISK_FULL.search(ln))
        return Outcome(code, False, "disk-full", f"the disk of the library is full (rsync exit {code}): {full}")
    if _HOST_KEY_CHANGED.search(stderr):
        return Outcome(code, False, "host-key", "the server's host key has CHANGED")
    if code == 255 or code in (5, 12):
        if _HOST_KEY_FAILED.search(stderr):
            return Outcome(code, False, "host-key", "the server's host key could not be verified")
        if _KEY_FILE.search(stderr):
            return Outcome(code, False, "key", f"ssh cannot use the private key{suffix}")
        if _AUTH.search(stderr):
            return Outcome(code, False, "auth", f"the server refused the site key (authentication failed){suffix}")
    if _REFUSED_BY_SERVER.search(stderr) and code in (1, 2, 4, 5, 12):
        return Outcome(code, False, "refused", f"the server refused the rsync request (exit {code}){suffix}")
    if code == 255:
        kind = "network" if _NETWORK.search(stderr) or not detail else "ssh"
        return Outcome(code, True, kind, f"ssh could not reach the server{suffix}")
    if code == 11:
        return Outcome(code, False, "fatal", f"rsync exit 11, {MEANINGS[11]} (is the disk full or read-only?){suffix}")
    if code in RETRYABLE_CODES:
        kind = {30: "timeout", 35: "timeout", 23: "partial", 24: "partial", 20: "interrupted"}.get(code, "network")
        return Outcome(code, True, kind, f"rsync exit {code}, {MEANINGS[code]}{suffix}")
    meaning = MEANINGS.get(code, "unknown error")
    return Outcome(code, False, "fatal", f"rsync exit {code}, {meaning}{suffix}")
