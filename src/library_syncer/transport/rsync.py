"""rsync command lines for the client, and parsing of rsync's output into events.

Building and parsing are pure.  The transfer options follow the server's rules:
no ``-s``/``--protect-args`` (rrsync refuses it), no ``--inplace`` (published
generations share inodes with the staging tree), no ``--checksum`` (it reads every
byte on both sides).  The client's own files in the staging tree (the manifest and
its state) are excluded, so ``--delete`` never removes them; ``item.json`` is a
*perishable* exclude so that a folder whose item vanished at the source is still
deleted.  ``--fsync`` makes each file rsync writes durable before it is renamed into
place; the remote shell runs under :data:`REMOTE_SHELL_GUARD` so it dies with rsync.
``%C`` reports rsync's whole-file check of each transferred file (:attr:`FileChange.digest`,
an xxh128 or, with ``--checksum-choice=md5``, an md5): the manifest needs no read of a file
whose digest says what its md5 is.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from ..util.childenv import child_environ

PARTIAL_DIR = ".rsync-partial"

# Filter rules, in order.  "-p" = perishable: ignored inside folders being deleted.
FILTER_RULES: tuple[str, ...] = (
    "- .vSphere-HA",
    "- /lib.json",
    "- /items.json",
    "-p /*/item.json",
    "- /.library-syncer/",
    f"-p {PARTIAL_DIR}/",
)

OUT_FORMAT = "%i %l %C %n"  # %C: the verified digest of a transferred file, else 32 spaces

COMPRESS_CHOICES = ("none", "zstd", "lz4", "zlib")

# util-linux: the remote shell (ssh) gets SIGKILL when its parent, rsync, dies.
REMOTE_SHELL_GUARD = "setpriv --pdeathsig KILL"

# Environment variables that would change what the rsync client sends or runs.
_SCRUBBED_ENV = ("RSYNC_PROTECT_ARGS", "RSYNC_OLD_ARGS", "RSYNC_RSH", "RSYNC_CONNECT_PROG", "RSYNC_PARTIAL_DIR")


def remote_source(user: str, peer: str) -> str:
    """The rsync source for an rrsync account: the library is the root of the account."""
    host = f"[{peer}]" if ":" in peer and not peer.startswith("[") else peer
    return f"{user}@{host}:./"


def bwlimit_arg(max_bw: str) -> list[str]:
    """``--bwlimit`` for a SYNC_MAX_BW value; nothing when unlimited (0)."""
    value = str(max_bw).strip()
    if not value or re.fullmatch(r"0+(\.0*)?[KMGkmg]?([iI]?[bB])?", value):
        return []
    return [f"--bwlimit={value}"]


def compress_args(choice: str) -> list[str]:
    """rsync's on-the-wire compression for a SYNC_COMPRESS value; nothing for ``none``.

    ``zlib`` is rsync's classic ``-z`` stream (sent to the server as ``--old-compress``);
    ``zstd`` and ``lz4`` need rsync 3.2 at both ends.
    """
    if choice not in COMPRESS_CHOICES:
        raise ValueError(f"unknown compression {choice!r} (expected one of {', '.join(COMPRESS_CHOICES)})")
    return [] if choice == "none" else [f"--compress-choice={choice}"]


def guarded_rsh(rsh: str) -> str:
    """The remote shell started so that the kernel kills it when rsync dies (no orphan ssh)."""
    return rsh if rsh.startswith(REMOTE_SHELL_GUARD) else f"{REMOTE_SHELL_GUARD} {rsh}"


def sync_command(
    source: str,
    dest: Path | str,
    *,
    rsh: str | None = None,
    timeout: int = 300,
    max_bw: str = "0",
    compress: str = "none",
    checksum: str = "xxh128",
    rsync: str = "rsync",
    extra: Iterable[str] = (),
) -> list[str]:
    """The rsync command that pulls ``source`` into the staging folder ``dest``; ``checksum``: rsync's
    checksum choice (``%C`` is each transferred file's verified digest by it); ``compress``: a SYNC_COMPRESS
    value, used with a remote shell only."""
    cmd = [
        rsync, "-a", "--delete-delay", f"--partial-dir={PARTIAL_DIR}", f"--timeout={timeout}",
        "--no-human-readable", "--info=progress2", "--no-inc-recursive", f"--out-format={OUT_FORMAT}",
        "--stats", "--fsync", f"--checksum-choice={checksum}",
    ]
    cmd += [f"--filter={rule}" for rule in FILTER_RULES]
    cmd += bwlimit_arg(max_bw)
    if rsh:  # compression only over the link: a local copy gains nothing from it
        cmd += compress_args(compress) + ["-e", guarded_rsh(rsh)]
    cmd += list(extra)
    cmd += [source, str(dest).rstrip("/") + "/"]
    return cmd


def list_command(source: str, *, rsh: str | None = None, timeout: int = 300, rsync: str = "rsync") -> list[str]:
    """The rsync command that lists the top level of ``source`` (no recursion)."""
    cmd = [rsync, "--list-only", "--no-human-readable", f"--timeout={timeout}"]
    if rsh:
        cmd += ["-e", guarded_rsh(rsh)]
    return cmd + [source]


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for rsync (and the ssh it runs): without the tool's secrets, variables that rrsync
    would refuse or that redirect rsync."""
    env = child_environ(base)
    for name in _SCRUBBED_ENV:
        env.pop(name, None)
    env["LC_ALL"] = "C"  # stable messages for parsing
    return env


# --- output parsing ------------------------------------------------------------------


@dataclass(frozen=True)
class FileChange:
    """One itemized change: ``action`` is transfer, create, delete, attrs or other."""

    action: str
    type: str  # f file, d dir, L symlink, D device, S special, "" for deletions
    path: str
    size: int
    flags: str
    digest: str | None = None  # rsync's verified whole-file digest (SYNC_CHECKSUM) of a transferred file


@dataclass(frozen=True)
class Progress:
    """A ``--info=progress2`` update: bytes of file data done so far, overall."""

    bytes: int
    percent: int
    rate: float  # bytes per second
    eta_seconds: int | None
    files_transferred: int | None = None
    to_check: int | None = None
    total_files: int | None = None


@dataclass
class RsyncStats:
    """The ``--stats`` summary of one rsync run (missing values are 0)."""

    files: int = 0
    files_created: int = 0
    files_deleted: int = 0
    files_transferred: int = 0
    total_size: int = 0
    transferred_size: int = 0
    literal_bytes: int = 0
    matched_bytes: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    rate: float = 0.0

    @property
    def wire_bytes(self) -> int:
        """Bytes that crossed the link, both directions."""
        return self.bytes_sent + self.bytes_received

    def to_dict(self) -> dict:
        return {**asdict(self), "wire_bytes": self.wire_bytes}


_ITEM_RE = re.compile(r"^(\*deleting|[<>ch.][fdLDS][.+?a-zA-Z ]{9})\s+(\d+) ([0-9a-f]{32}| {32}) (.+)$")
_PROGRESS_RE = re.compile(
    r"^\s*(\d[\d,]*)\s+(\d+)%\s+([\d.,]+)([kMGT]?B)/s\s+(\d+:\d\d:\d\d|\?+:\?+:\?+)"
    r"(?:\s+\(xfr#(\d+), (?:to|ir)-chk=(\d+)/(\d+)\))?[ \t]*"
)
_STAT_KEYS = {
    "Number of files": "files",
    "Number of created files": "files_created",
    "Number of deleted files": "files_deleted",
    "Number of regular files transferred": "files_transferred",
    "Total file size": "total_size",
    "Total transferred file size": "transferred_size",
    "Literal data": "literal_bytes",
    "Matched data": "matched_bytes",
    "Total bytes sent": "bytes_sent",
    "Total bytes received": "bytes_received",
}
_SUMMARY_RE = re.compile(r"^sent ([\d,]+) bytes\s+received ([\d,]+) bytes\s+([\d.,]+) bytes/sec")
_UNITS = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def unescape_name(name: str) -> str:
    """Undo rsync's ``\\#ooo`` escaping of unprintable bytes in file names."""
    if "\\#" not in name:
        return name
    raw = re.sub(rb"\\#([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), name.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "replace")


def parse_change(line: str) -> FileChange | None:
    """Parse one :data:`OUT_FORMAT` line; None if the line is something else."""
    m = _ITEM_RE.match(line)
    if not m:
        return None
    flags, size, path = m.group(1), int(m.group(2)), unescape_name(m.group(4))
    digest = m.group(3) if m.group(3)[0] != " " else None
    if flags.startswith("*deleting"):
        return FileChange("delete", "", path, size, flags)
    kind, ftype = flags[0], flags[1]
    if kind in "<>":
        return FileChange("transfer", ftype, path, size, flags, digest if ftype == "f" else None)
    if "+++++++" in flags:
        action = "create"
    elif kind in ".c":
        action = "attrs" if kind == "." else "create"
    else:
        action = "other"
    return FileChange(action, ftype, path, size, flags)


def parse_eta(text: str) -> int | None:
    """Seconds of an ``H:MM:SS`` ETA; None when rsync shows ``??:??:??``."""
    if "?" in text:
        return None
    h, m, s = (int(x) for x in text.split(":"))
    return h * 3600 + m * 60 + s


def parse_progress(line: str) -> Progress | None:
    """Parse one ``--info=progress2`` line; None if the line is something else."""
    m = _PROGRESS_RE.match(line)
    if not m or m.end() != len(line):
        return None
    done, pct, rate, unit, eta, xfr, chk, total = m.groups()
    return Progress(
        bytes=_int(done), percent=int(pct), rate=float(rate.replace(",", "")) * _UNITS.get(unit, 1),
        eta_seconds=parse_eta(eta), files_transferred=int(xfr) if xfr else None,
        to_check=int(chk) if chk else None, total_files=int(total) if total else None,
    )


def parse_stats(text: str) -> RsyncStats:
    """Parse the ``--stats`` block (and the ``sent … received …`` summary) out of rsync's stdout."""
    stats = RsyncStats()
    for raw in text.splitlines():
        line = raw.strip()
        key, sep, value = line.partition(":")
        if sep and key in _STAT_KEYS:
            number = re.match(r"\s*([\d,]+)", value)
            if number:
                setattr(stats, _STAT_KEYS[key], _int(number.group(1)))
            continue
        m = _SUMMARY_RE.match(line)
        if m:
            stats.rate = float(m.group(3).replace(",", ""))
            stats.bytes_sent = stats.bytes_sent or _int(m.group(1))
            stats.bytes_received = stats.bytes_received or _int(m.group(2))
    return stats


@dataclass(frozen=True)
class ListEntry:
    """One line of ``rsync --list-only``."""

    mode: str
    size: int
    name: str

    @property
    def is_dir(self) -> bool:
        return self.mode.startswith("d")


_LIST_RE = re.compile(r"^([dlcbps-][rwxsStT-]{9})\s+([\d,]+)\s+\d{4}/\d\d/\d\d\s+\d\d:\d\d:\d\d\s(.+)$")


def parse_listing(text: str) -> list[ListEntry]:
    """Parse ``rsync --list-only`` output (the ``.`` entry itself is left out)."""
    entries = []
    for line in text.splitlines():
        m = _LIST_RE.match(line)
        if m and m.group(3) != ".":
            name = unescape_name(m.group(3))
            if m.group(1).startswith("l"):
                name = name.split(" -> ", 1)[0]
            entries.append(ListEntry(m.group(1), _int(m.group(2)), name))
    return entries


@dataclass
class LineSplitter:
    """Split a stream of rsync output into lines at ``\\n`` or ``\\r`` (progress updates)."""

    _rest: str = field(default="")

    def feed(self, data: str) -> list[str]:
        parts = re.split(r"[\r\n]", self._rest + data)
        self._rest = parts.pop()
        return [line for p in parts for line in _unglue(p)]

    def close(self) -> list[str]:
        rest, self._rest = self._rest, ""
        return _unglue(rest)


def _unglue(line: str) -> list[str]:
    """rsync may print a message right after a progress update without a line break: split them."""
    if not line.strip():
        return []
    m = _PROGRESS_RE.match(line)
    if m and m.end() < len(line):
        return [line[: m.end()], *_unglue(line[m.end():])]
    return [line]
