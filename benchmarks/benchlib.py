"""Shared helpers of the benchmark scripts: machine header, tables, sizes, CPU of process trees,
test data, and a real ``library-syncer server`` on loopback.

Only loopback (127.0.0.1) is ever used.  Tables are printed with rich in Markdown form, so a
run's output can be pasted into benchmarks/README.md as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

from rich import box
from rich.console import Console
from rich.table import Table

MiB = 1024**2
GiB = 1024**3
_UNITS = {"": 1, "K": 1024, "M": MiB, "G": GiB}
_CLK_TCK = os.sysconf("SC_CLK_TCK")

console = Console(width=240, highlight=False, soft_wrap=True)
_STARTED = (datetime.now(timezone.utc), os.getloadavg()[0])  # when the benchmark script started


# --- sizes, statistics ------------------------------------------------------------------


def parse_size(text: str) -> int:
    """Bytes of a size such as 2G, 500M or 1048576."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)i?B?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 2G, 500M)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def human(n: float) -> str:
    """Bytes in binary units, e.g. ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# --- machine header and tables ------------------------------------------------------------


def load1() -> float:
    return os.getloadavg()[0]


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    distro = ""
    try:
        distro = re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text()).group(1) + ", "
    except (OSError, AttributeError):
        pass
    return (f"{cpu_model()}, {os.cpu_count()} cores, {mem / GiB:.0f} GiB RAM; {distro}"
            f"Linux {platform.release()}; Python {platform.python_version()}")


def header(title: str, *lines: str) -> None:
    """Print the benchmark's title, date, machine, load average and extra lines."""
    console.print(f"## {title}")
    console.print()
    console.print(f"- date: {_STARTED[0]:%Y-%m-%d %H:%M UTC}")
    console.print(f"- machine: {machine()}")
    console.print(f"- load average (1 min): {_STARTED[1]:.2f} at start, {load1():.2f} at end")
    for line in lines:
        console.print(f"- {line}")
    console.print()


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], note: str = "") -> None:
    """Print a Markdown table (first column left-aligned, the others right-aligned)."""
    t = Table(box=box.MARKDOWN, show_edge=True, pad_edge=True)
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*(str(c) for c in row))
    console.print(f"### {title} (load average 1 min: {load1():.2f})")
    console.print()
    console.print(t)
    if note:
        console.print(note)
    console.print()


# --- processes ----------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime+stime+cutime+cstime in seconds) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    ppid = int(fields[1])
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ppid, ticks / _CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants, living or reaped.

    Live processes are counted directly; finished ones through their parent's
    cutime/cstime (the kernel adds a child's times when it is waited for).
    """
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            s = _stat(int(entry.name))
            if s:
                stats[int(entry.name)] = s
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(p for p, (ppid, _) in stats.items() if ppid == pid)
    return total


def peak_rss_kib(pid: int) -> int:
    """Peak resident memory (VmHWM) of a live process in KiB."""
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) if match else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM a process we started and wait for it (SIGKILL after ``timeout``)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def syncer_cmd(*args: object) -> list[str]:
    """argv of ``library-syncer ARGS`` run with this Python."""
    return [sys.executable, "-m", "library_syncer", *map(str, args)]


def clean_env() -> dict[str, str]:
    """This environment without settings that would change the product's behaviour."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "SYNCER_", "LIBRARY_", "TLS_"))}


def require(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t) and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        raise SystemExit(f"benchmark: missing tools {', '.join(missing)}: run benchmarks/run_all.sh "
                         "(it installs them) or apt-get install them")


# --- data ---------------------------------------------------------------------------------


def write_random(path: Path, size: int, chunk: int = 4 * MiB) -> None:
    """Write ``size`` bytes of random (incompressible, never repeating) data and fsync."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            left -= fh.write(os.urandom(min(chunk, left)))
        fh.flush()
        os.fsync(fh.fileno())


def evict(paths: Sequence[Path]) -> None:
    """Drop these files' clean pages from the page cache (only ours, not the machine's)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: Sequence[Path]) -> None:
    """Read files once so they are in the page cache."""
    for path in paths:
        with open(path, "rb") as fh:
            while fh.read(8 * MiB):
                pass


def md5_file(path: Path) -> str:
    """The md5 of a file's bytes, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def date_back(paths: Sequence[Path], seconds: float) -> None:
    """Set the files' times ``seconds`` back: an export that finished a while ago."""
    when = time.time() - seconds
    for path in paths:
        os.utime(path, (when, when))


@contextmanager
def workdir(parent: Path | None, prefix: str) -> Iterator[Path]:
    """A temporary folder, removed at the end whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line; ``--repeat`` defaults to 3 (1 with ``--quick``)."""
    args = parser.parse_args()
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the benchmark in a minute")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs per measurement, the median is reported (default 3; --quick 1)")
    parser.add_argument("--dir", type=Path, default=None, help="parent folder of the temporary work folder")


# --- the rsync-over-SSH server ------------------------------------------------------------


@dataclass
class SyncServer:
    """A running ``library-syncer server --unprivileged`` on 127.0.0.1 and what a site needs."""

    proc: subprocess.Popen
    port: int
    key: Path
    known_hosts: Path
    log: Path
    state: Path

    def origin_md5(self, relpath: str) -> str | None:
        """The md5 the server's origin manifest holds for ``item/path`` (None: not read yet)."""
        from library_syncer.vcsp.origin import read_doc

        doc = read_doc(self.state / "origin.json")
        if doc is None:
            return None
        item, _, rest = relpath.partition("/")
        return doc["items"].get(item, {}).get("files", {}).get(rest, {}).get("md5")

    def rescan(self, library: Path, relpaths: Sequence[str], timeout: float = 600) -> None:
        """Have the server rescan now (SIGHUP, as it does every origin_refresh_seconds) and wait until its
        origin manifest holds the current md5 of each of ``relpaths`` (files dated back beyond its settle time)."""
        self.proc.send_signal(signal.SIGHUP)
        for relpath in relpaths:
            digest = md5_file(library / relpath)
            wait_for(lambda: self.origin_md5(relpath) == digest, timeout, f"the origin manifest to hold {relpath}")

    def sync_flags(self, library: Path, state_dir: Path) -> list[str]:
        """``library-syncer sync`` flags of a site pulling into ``library``."""
        return ["--sync-peer", "127.0.0.1", "--sync-port", str(self.port), "--sync-user", user(),
                "--sync-key", str(self.key), "--sync-known-hosts", str(self.known_hosts),
                "--library", str(library), "--state-dir", str(state_dir), "--generation-grace-seconds", "0"]

    def settings_values(self, library: Path, state_dir: Path) -> dict[str, object]:
        """The settings of a site pulling into ``library``, JSON-ready (for a sync in a process of its own)."""
        return {"sync_peer": "127.0.0.1", "sync_port": self.port, "sync_user": user(), "sync_key": str(self.key),
                "sync_known_hosts": str(self.known_hosts), "library": str(library), "state_dir": str(state_dir),
                "generation_grace_seconds": 0, "keys_dir": str(self.key.parent)}

    def settings(self, library: Path, state_dir: Path, **extra: object):
        """Client settings for :func:`library_syncer.sync.run.run_sync` (``extra``: more settings)."""
        from library_syncer.config import load_settings

        return load_settings(**self.settings_values(library, state_dir), **extra)

    def cpu_seconds(self) -> float:
        """CPU seconds of the server and its sshd with every session it served so far."""
        return tree_cpu_seconds(self.proc.pid)

    def sshd_cpu_seconds(self) -> float:
        """CPU seconds of the server's sshd and the sessions it served (rrsync, the rsync sender): what
        serving sites cost, without the server's own work such as its origin manifest rescans."""
        total = 0.0
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
                except OSError:
                    continue
                s = _stat(int(entry.name))
                if comm == "sshd" and s and s[0] == self.proc.pid:
                    total += tree_cpu_seconds(int(entry.name))
        return total


def user() -> str:
    import getpass

    return getpass.getuser()


@contextmanager
def sync_server(work: Path, library: Path, sites: int = 1, extra: Sequence[object] = ()) -> Iterator[SyncServer]:
    """Start the real server for ``library`` with one site key (shared by all clients here); ``extra``:
    more server flags."""
    require("sshd", "rrsync", "ssh-keygen")
    base = work / "server"
    keys, state, private = base / "keys", base / "state", base / "private"
    for d in (keys, state, private):
        d.mkdir(parents=True, exist_ok=True)
    key = private / "site"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "site", "-f", str(key)], check=True)
    shutil.move(f"{key}.pub", keys / "site.pub")
    port = free_port()
    args = ["server", "--unprivileged", "--library", library, "--keys", keys, "--state-dir", state,
            "--ssh-host", "127.0.0.1", "--port", port, *extra]
    r = subprocess.run(syncer_cmd(*args, "--print-host-key"), env=clean_env(), capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"benchmark: server --print-host-key failed: {r.stderr.strip()}")
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {r.stdout.strip()}\n")
    log = base / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(syncer_cmd(*args), env=clean_env(), stdout=fh, stderr=subprocess.STDOUT)
    server = SyncServer(proc, port, key, known_hosts, log, state)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"benchmark: the server exited: {log.read_text(errors='replace')[-2000:]}")
            return "Server listening on" in log.read_text(errors="replace")

        wait_for(ready, 60, f"the server on 127.0.0.1:{port}")
        yield server
    finally:
        stop(proc)


def quote(cmd: Sequence[object]) -> str:
    return " ".join(shlex.quote(str(c)) for c in cmd)


def patch_one_percent(path: Path) -> int:
    """Overwrite 1 % of the file in place, in the middle (size unchanged); returns the bytes changed."""
    size = path.stat().st_size
    length = max(1, size // 100)
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(os.urandom(length))
    return length


# One sync (the product's run_sync) in a process of its own, its settings as JSON in argv[1]; prints one
# JSON line: ok, reason, seconds, manifest_seconds, peak RSS of the process and of its children, wire bytes.
SYNC_PROCESS = """
import json, resource, sys, time
from library_syncer.config import load_settings
from library_syncer.sync.result import Phase
from library_syncer.sync.run import run_sync
marks = {}
def on_event(e):
    if isinstance(e, Phase):
        marks[e.name] = time.perf_counter()
t0 = time.perf_counter()
r = run_sync(load_settings(**json.loads(sys.argv[1])), on_event=on_event)
end = time.perf_counter()
manifest = marks.get("publish", marks.get("prune", end)) - marks.get("manifest", end)
print(json.dumps({"ok": r.ok, "reason": r.reason, "seconds": end - t0, "manifest_seconds": manifest,
                  "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "child_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "wire": r.wire_bytes,
                  "manifest_bytes_read": r.manifest_bytes_read, "phases": {k: v - t0 for k, v in marks.items()}}))
"""


def run_json(code: str, *args: str) -> dict:
    """Run Python ``code`` in a process of its own and return the JSON of its last line; SystemExit with the
    reason when it fails or reports ``"ok": false``."""
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=clean_env())
    out = r.stdout.strip().splitlines()
    if r.returncode or not out:
        raise SystemExit(f"benchmark: step failed: {r.stderr.strip()[-800:]}")
    doc = json.loads(out[-1])
    if doc.get("ok") is False:
        raise SystemExit(f"benchmark: sync failed: {doc['reason'][-500:]}")
    return doc
