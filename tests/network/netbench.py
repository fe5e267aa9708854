"""Separate hosts on one machine: network namespaces, veth links shaped with tbf and nftables.

Topology (one run; every name starts with ``lsn<pid>``, so runs never collide)::

    [lsnPID-srv]  s1 10.231.1.1/24 ==veth== 10.231.1.2/24 wan0  [lsnPID-c1]
                  s2 10.231.2.1/24 ==veth== 10.231.2.2/24 wan0  [lsnPID-c2]
                  ...

The server namespace holds one end of every site's link; each site is its own
namespace.  Each direction of a link is shaped where it leaves a host (``tbf``
on the sending end) and loses packets where it arrives (an nftables
``prerouting`` rule, so the sender's TCP really sees a loss).  A cut drops
everything arriving at both ends: packets vanish silently, like a dead WAN.
The kernel here has no ``netem``, so links have no added latency; the
queue of the ``tbf`` bottleneck is the only delay.

Only addresses inside these namespaces are used; deleting a namespace deletes
its ends of the veth pairs, its qdiscs and its rules.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PREFIX = f"lsn{os.getpid()}"
SUBNET = "10.231"
CLIENT_DEV = "wan0"


def clean_env(extra: dict | None = None) -> dict[str, str]:
    """The environment without the product's settings (a test states every setting it uses)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "SYNCER_", "LIBRARY_", "TLS_"))}
    env.update(extra or {})
    return env


def run(*argv: str, input: str | None = None, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command to completion (bounded); a failure raises with its stderr."""
    p = subprocess.run([str(a) for a in argv], input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({p.returncode}): {p.stderr.strip()}")
    return p


class Netns:
    """One network namespace (a host of the bench)."""

    def __init__(self, name: str, *, create: bool = True) -> None:
        self.name = name
        if create:
            run("ip", "netns", "add", name)
            run("ip", "-n", name, "link", "set", "lo", "up")

    def argv(self, *cmd: str | os.PathLike) -> list[str]:
        return ["ip", "netns", "exec", self.name, *map(str, cmd)]

    def popen(self, *cmd: str | os.PathLike, env: dict | None = None, **kw) -> subprocess.Popen:
        """Start a process inside the namespace."""
        return subprocess.Popen(self.argv(*cmd), env=clean_env(env), **kw)

    def run(self, *cmd: str | os.PathLike, **kw) -> subprocess.CompletedProcess:
        return run(*self.argv(*cmd), **kw)

    def pids(self) -> list[int]:
        p = run("ip", "netns", "pids", self.name, check=False)
        return [int(x) for x in p.stdout.split()]

    def kill_all(self, timeout: float = 10) -> None:
        """SIGKILL every process in the namespace (a host crash) and wait until none is left."""
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {pids} in {self.name} survived SIGKILL")
            time.sleep(0.05)

    def nft(self, script: str) -> None:
        self.run("nft", "-f", "-", input=script)

    def forward(self) -> None:
        """Route packets between this namespace's links (a WAN router, or a relay host on the way)."""
        self.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

    def route(self, dest: str, via: str) -> None:
        """A route to ``dest`` (``default`` or a prefix) through the neighbour at ``via``."""
        run("ip", "-n", self.name, "route", "replace", dest, "via", via)

    def delete(self) -> None:
        """Kill what runs inside, then delete the namespace (its veth ends, qdiscs and rules go with it)."""
        try:
            self.kill_all()
        finally:
            run("ip", "netns", "delete", self.name, check=False)


def tbf(ns: Netns, dev: str, mbit: float) -> None:
    """Rate-limit what leaves ``dev`` to ``mbit`` Mbit/s (token bucket, a short queue)."""
    rate_bytes = mbit * 1e6 / 8
    burst = max(16 * 1024, int(rate_bytes / 100))  # at least 10 ms worth of tokens
    run("tc", "-n", ns.name, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{mbit}mbit",
        "burst", str(burst), "latency", "20ms")


@dataclass
class Link:
    """A veth pair between an upstream namespace (the server, a router, a relay host) and a downstream one
    (a site, or the primary behind its uplink); ``server``/``site`` name its two ends."""

    server: Netns
    site: Netns
    index: int
    mbit: float | None = None
    loss_percent: float = 0
    cut: bool = False

    @property
    def server_dev(self) -> str:
        return f"s{self.index}"

    @property
    def server_addr(self) -> str:
        return f"{SUBNET}.{self.index}.1"

    @property
    def site_addr(self) -> str:
        return f"{SUBNET}.{self.index}.2"

    def create(self) -> None:
        run("ip", "-n", self.server.name, "link", "add", self.server_dev, "type", "veth",
            "peer", "name", CLIENT_DEV, "netns", self.site.name)
        for ns, dev, addr in ((self.server, self.server_dev, self.server_addr), (self.site, CLIENT_DEV, self.site_addr)):
            run("ip", "-n", ns.name, "addr", "add", f"{addr}/24", "dev", dev)
            run("ip", "-n", ns.name, "link", "set", dev, "up")
        self.apply()

    def shape(self, mbit: float | None = None, loss_percent: float = 0) -> None:
        """Set the rate of each direction and the random loss of each direction."""
        self.mbit, self.loss_percent = mbit, loss_percent
        self.apply()

    def set_cut(self, cut: bool) -> None:
        """Cut the link (everything arriving at either end is dropped) or restore it."""
        self.cut = cut
        self._filters()

    def apply(self) -> None:
        for ns, dev in ((self.server, self.server_dev), (self.site, CLIENT_DEV)):
            if self.mbit:
                tbf(ns, dev, self.mbit)
            else:
                run("tc", "-n", ns.name, "qdisc", "del", "dev", dev, "root", check=False)
        self._filters()

    def _filters(self) -> None:
        if self.cut:
            rule = "counter drop"
        elif self.loss_percent:
            rule = f"numgen random mod 1000 < {round(self.loss_percent * 10)} counter drop"
        else:
            rule = ""
        for ns, dev in ((self.server, self.server_dev), (self.site, CLIENT_DEV)):
            table = f"lsn_{dev}"
            body = f'iifname "{dev}" {rule}' if rule else ""
            ns.nft(f"add table inet {table}\ndelete table inet {table}\n"
                   f"table inet {table} {{\n chain pre {{\n  type filter hook prerouting priority -300; policy accept;\n"
                   f"  {body}\n }}\n}}\n")

    def dropped_packets(self) -> int:
        """Packets the loss or cut rules dropped at both ends so far (since the rules were last set)."""
        total = 0
        for ns, dev in ((self.server, self.server_dev), (self.site, CLIENT_DEV)):
            out = ns.run("nft", "-j", "list", "table", "inet", f"lsn_{dev}").stdout
            for entry in json.loads(out)["nftables"]:
                for expr in entry.get("rule", {}).get("expr", []):
                    if "counter" in expr:
                        total += expr["counter"]["packets"]
        return total

    def site_counters(self) -> tuple[int, int]:
        """Bytes (received, sent) by the site's interface so far: what crossed the link."""
        p = run("ip", "-n", self.site.name, "-s", "-j", "link", "show", "dev", CLIENT_DEV)
        stats = json.loads(p.stdout)[0]["stats64"]
        return stats["rx"]["bytes"], stats["tx"]["bytes"]


def stale_namespaces() -> list[str]:
    """Bench namespaces left by runs whose process is gone (a killed test run)."""
    out = run("ip", "netns", "list", check=False).stdout
    stale = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith("lsn") and "-" in name:
            pid = name[3:].split("-", 1)[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                stale.append(name)
    return stale


# --- processes of the bench --------------------------------------------------------------

HERE = Path(__file__).parent
PYTHON = sys.executable
SSH_PORT = 2222
HTTP_PORT = 8080


class Lines:
    """A started process whose stdout lines are collected (JSON lines parsed) with their arrival time."""

    def __init__(self, proc: subprocess.Popen, what: str, *, parse_json: bool = True) -> None:
        self.proc, self.what, self.parse_json = proc, what, parse_json
        self.items: list = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if not line:
                continue
            if self.parse_json:
                try:
                    item = json.loads(line)
                except ValueError:
                    item = {"event": "text", "t": time.time(), "line": line}
            else:
                item = (time.time(), line)
            with self.cond:
                self.items.append(item)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[object], bool], timeout: float, what: str):
        """The first collected item matching ``pred``; fails after ``timeout`` seconds or if the process ended."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for item in self.items:
                    if pred(item):
                        return item
                if not self.reader.is_alive():
                    raise AssertionError(f"{self.what} ended (exit {self.proc.poll()}) before {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what} ({self.what})")
                self.cond.wait(min(left, 1.0))

    def snapshot(self) -> list:
        with self.cond:
            return list(self.items)

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.reader.join(5)


class SyncRun(Lines):
    """A sync of one site running in its namespace (tests/network/site_sync.py)."""

    def events(self, name: str) -> list[dict]:
        return [e for e in self.snapshot() if e.get("event") == name]

    def wait_event(self, name: str, timeout: float, pred: Callable[[dict], bool] = lambda e: True) -> dict:
        return self.wait_for(lambda e: e.get("event") == name and pred(e), timeout, f"event {name!r}")

    def go(self) -> None:
        """Let a sync started with ``barrier=True`` begin."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.close()

    def result(self, timeout: float) -> dict:
        """The sync's result (``SyncResult.to_dict()``), waited for at most ``timeout`` seconds."""
        res = self.wait_event("result", timeout)
        self.proc.wait(10)
        return res


@dataclass
class Site:
    """A remote site: its namespace, link to the server, key and library folder."""

    name: str
    ns: Netns
    link: Link
    key: Path
    library: Path
    state: Path


class Bench:
    """The hosts of one test: a server namespace and site namespaces; ``close()`` removes everything."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.namespaces: list[Netns] = []
        self.lines: list[Lines] = []
        self.mounts: list[Path] = []
        self.sites: list[Site] = []
        self.keys_dir = work / "server" / "keys"
        self.server_state = work / "server" / "state"
        self.server_extra: list[str] = []  # more flags of ``library-syncer server``
        self.links: list[Link] = []
        self.server_proc: subprocess.Popen | None = None
        self.server_log: Path | None = None
        self.server_starts = 0
        self.host_key_line = ""
        self.library: Path | None = None
        self.server_ns = self._netns("srv")

    def _netns(self, role: str) -> Netns:
        ns = Netns(f"{PREFIX}-{role}")
        self.namespaces.append(ns)
        return ns

    # -- hosts ---------------------------------------------------------------------------
    def add_host(self, role: str) -> Netns:
        """One more namespace of this run (a router or a relay host), deleted by close()."""
        return self._netns(role)

    def link(self, upstream: Netns, downstream: Netns, mbit: float | None = None, loss_percent: float = 0) -> Link:
        """A veth pair with the next free subnet: ``s<N>`` in ``upstream``, ``wan0`` in ``downstream``."""
        link = Link(upstream, downstream, len(self.links) + 1, mbit, loss_percent)
        link.create()
        self.links.append(link)
        return link

    def add_site(self, mbit: float | None = None, loss_percent: float = 0, upstream: Netns | None = None) -> Site:
        """A new site namespace linked to the server, or to ``upstream`` (a relay host or a router; the test
        sets the routes); sites added after the server started need reload_keys."""
        from server_fixture import make_site_key

        index = len(self.sites) + 1
        name = f"site{index}"
        ns = self._netns(f"c{index}")
        link = self.link(upstream or self.server_ns, ns, mbit, loss_percent)
        key = make_site_key(self.keys_dir, self.work / "site-keys", name)
        site = Site(name, ns, link, key, self.work / name / "library", self.work / name / "state")
        self.sites.append(site)
        return site

    # -- the server ----------------------------------------------------------------------
    def _server_args(self) -> list:
        return ["server", "--unprivileged", "--library", self.library, "--keys", self.keys_dir,
                "--state-dir", self.server_state, "--ssh-host", "0.0.0.0", "--port", str(SSH_PORT), *self.server_extra]

    def start_server(self, library: Path | None = None, timeout: float = 30) -> None:
        """Start (or restart) ``library-syncer server`` in the server namespace; return when sshd listens."""
        from server_fixture import _seed_host_keys
        from support import cli

        if library is not None:
            self.library = library
        if not self.host_key_line:
            self.server_state.mkdir(parents=True, mode=0o755)
            _seed_host_keys(self.server_state, self.work)
            r = cli(*self._server_args(), "--print-host-key")
            assert r.returncode == 0, r.stderr
            self.host_key_line = r.stdout.strip()
        self.server_starts += 1
        self.server_log = self.work / "server" / f"server-{self.server_starts}.log"
        with open(self.server_log, "wb") as log:
            self.server_proc = self.server_ns.popen(PYTHON, "-m", "library_syncer", *self._server_args(),
                                                    stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while "Server listening on" not in self.server_log_text():
            if self.server_proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.server_proc.returncode}): {self.server_log_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not listen within {timeout}s: {self.server_log_text()}")
            time.sleep(0.05)

    def server_log_text(self) -> str:
        return self.server_log.read_text(errors="replace") if self.server_log else ""

    def crash_server(self) -> None:
        """SIGKILL every process of the server host: the server, sshd and every session."""
        self.server_ns.kill_all()
        self.server_proc.wait(5)

    # -- the sites' programs -------------------------------------------------------------
    def site_settings(self, site: Site, **overrides) -> dict:
        values = dict(library=str(site.library), state_dir=str(site.state), sync_peer=site.link.server_addr,
                      sync_port=SSH_PORT, sync_user=getpass.getuser(), sync_key=str(site.key),
                      sync_host_key=self.host_key_line, library_name=site.name)
        values.update(overrides)
        return values

    def sync(self, site: Site, **overrides) -> SyncRun:
        """Start one sync of ``site`` in its namespace (settings as for load_settings, plus retry_base)."""
        values = json.dumps(self.site_settings(site, **overrides))
        stdin = subprocess.PIPE if overrides.get("barrier") else subprocess.DEVNULL
        proc = site.ns.popen(PYTHON, HERE / "site_sync.py", values, stdin=stdin, stdout=subprocess.PIPE,
                             stderr=open(self.work / f"{site.name}-sync.err", "ab"), text=True)
        run = SyncRun(proc, f"sync of {site.name}")
        self.lines.append(run)
        return run

    def serve(self, site: Site, timeout: float = 30) -> Lines:
        """``library-syncer serve`` of the site's library on 127.0.0.1:8080 in its namespace; ready when it answers."""
        proc = site.ns.popen(PYTHON, "-m", "library_syncer", "serve", site.library, "--host", "127.0.0.1",
                             "--port", str(HTTP_PORT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        served = Lines(proc, f"web server of {site.name}", parse_json=False)
        self.lines.append(served)
        served.wait_for(lambda item: "serving on 127.0.0.1" in item[1], timeout, "the web server to listen")
        return served

    def probe(self, site: Site, paths: list[str], max_seconds: float = 300) -> Lines:
        """Poll the site's web server from inside its namespace (tests/network/http_probe.py)."""
        proc = site.ns.popen(PYTHON, HERE / "http_probe.py", f"http://127.0.0.1:{HTTP_PORT}", str(max_seconds),
                             *paths, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        probe = Lines(proc, f"probe of {site.name}")
        self.lines.append(probe)
        return probe

    def publish_first_generation(self, site: Site, base_size: int = 1_000_000) -> tuple[Path, Lines, list]:
        """Primary with one item of ``base_size`` bytes; the site syncs it, serves it, and a probe polls
        ``lib.json`` and the item.  Returns (primary library, probe, what the probe first got)."""
        lib = self.work / "primary"
        write_random(lib / "Base" / "base.iso", base_size)
        self.start_server(lib)
        first = self.sync(site).result(60)
        assert first["ok"] and first["generation"] == 1, first["reason"]
        self.serve(site)
        probe = self.probe(site, ["lib.json", "Base/base.iso"])
        served = probe.wait_for(lambda p: all(g[0] == 200 for g in p["got"]), 30, "the first generation served")
        return lib, probe, served["got"]

    def popen_lines(self, site: Site, *cmd, env: dict | None = None) -> Lines:
        """Any command in the site's namespace, its output lines (stdout+stderr) collected with their time."""
        proc = site.ns.popen(*cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = Lines(proc, f"{cmd[0]} of {site.name}", parse_json=False)
        self.lines.append(lines)
        return lines

    # -- disks ---------------------------------------------------------------------------
    def tmpfs(self, path: Path, size_mb: int) -> Path:
        """A small tmpfs at ``path`` (a site's own disk), unmounted by close()."""
        path.mkdir(parents=True, exist_ok=True)
        run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", path)
        self.mounts.append(path)
        return path

    # -- cleanup -------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Stop every process, delete every namespace and unmount every tmpfs; returns what failed."""
        problems = []
        for lines in self.lines:  # SIGTERM to all first: they stop in parallel
            if lines.proc.poll() is None:
                lines.proc.terminate()
        for lines in self.lines:
            try:
                lines.stop(10)
            except Exception as exc:  # keep cleaning
                problems.append(f"stopping {lines.what}: {exc}")
        for ns in reversed(self.namespaces):
            try:
                ns.delete()
            except Exception as exc:
                problems.append(f"deleting {ns.name}: {exc}")
        for path in self.mounts:
            if run("umount", path, check=False).returncode != 0:
                run("umount", "-l", path, check=False)
        left = [ns.name for ns in self.namespaces if ns.name in run("ip", "netns", "list", check=False).stdout.split()]
        if left:
            problems.append(f"namespaces left: {left}")
        return problems


def wire(before: tuple[int, int], after: tuple[int, int]) -> int:
    """Bytes that crossed a link (both directions) between two counter readings."""
    return (after[0] - before[0]) + (after[1] - before[1])


def write_random(path: Path, size: int) -> None:
    """A file of incompressible bytes (like a stream-optimized VMDK)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(left, 4 << 20)
            fh.write(os.urandom(n))
            left -= n
