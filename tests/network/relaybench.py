"""A fleet with relays on the bench: a primary behind one shaped uplink, relay hosts, sites behind each relay.

Topology (every name starts with ``lsn<pid>``; subnets are ``10.231.N.0/24`` in link order)::

    [srv] primary  wan0 ==uplink (tbf both ways)== s1  [wan] router  s2 == wan0 [r1] relay A  s4..s9   == wan0 [c1..c6]
                                                                   s3 == wan0 [r2] relay B  s10..s15 == wan0 [c7..c12]

The router and the relay hosts forward packets, so a site reaches its relay on its own
link and the primary through its relay host, the router and the uplink (the path a site's
failover takes when the relay *process* is gone).  ``library-syncer relay`` runs in its
host's namespace: its client pulls from the primary, its sshd (port 2222) serves the sites
behind it; each site's key is authorized at its relay and at the primary.  Bytes that left
the primary are the uplink's counters at the primary's end.
"""

from __future__ import annotations

import getpass
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .netbench import HTTP_PORT, PYTHON, SSH_PORT, SUBNET, Bench, Lines, Link, Netns, Site

_TRIGGER = ("import sys, urllib.request; print(urllib.request.urlopen(urllib.request.Request(sys.argv[1], "
            "method='POST'), timeout=10).read().decode())")
_END = re.compile(r"sync (\S+) (succeeded|failed|degraded): (.*)")


@dataclass
class Relay:
    """A relay host: its namespace, its link to the router, its key at the primary, the sites behind it."""

    name: str
    ns: Netns
    link: Link
    key: Path
    keys_dir: Path  # the public keys of the sites it serves
    library: Path
    state: Path
    sites: list[Site] = field(default_factory=list)
    daemon: Lines | None = None
    starts: int = 0

    @property
    def addr(self) -> str:
        return self.link.site_addr

    def host_key(self) -> str:
        """The relay sshd's ed25519 key (``type base64``), made at its first start."""
        pub = self.state / "relay" / "host_keys" / "ssh_host_ed25519_key.pub"
        return " ".join(pub.read_text().split()[:2])


class Fleet:
    """The hosts and programs of the relay scenarios, built on a :class:`~.netbench.Bench`."""

    def __init__(self, bench: Bench, *, uplink_mbit: float, relays: int, sites_per_relay: int,
                 site_mbit: float | None) -> None:
        from server_fixture import make_site_key

        self.bench = bench
        self.router = bench.add_host("wan")
        self.router.forward()
        self.uplink = bench.link(self.router, bench.server_ns, uplink_mbit)
        bench.server_ns.route("default", self.uplink.server_addr)
        self.relays: list[Relay] = []
        for k in range(relays):
            name = f"relay{chr(ord('A') + k)}"
            ns = bench.add_host(f"r{k + 1}")
            link = bench.link(self.router, ns)
            ns.forward()
            ns.route("default", link.server_addr)
            key = make_site_key(bench.keys_dir, bench.work / "relay-private", name)
            base = bench.work / name
            self.relays.append(Relay(name, ns, link, key, base / "site-keys", base / "library", base / "state"))
        for relay in self.relays:
            for _ in range(sites_per_relay):
                site = bench.add_site(mbit=site_mbit, upstream=relay.ns)
                site.ns.route("default", site.link.server_addr)
                self.router.route(f"{SUBNET}.{site.link.index}.0/24", relay.addr)
                relay.keys_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(bench.keys_dir / f"{site.name}.pub", relay.keys_dir / f"{site.name}.pub")
                relay.sites.append(site)
        self.known_hosts = bench.work / "primary-known-hosts"

    @property
    def primary_addr(self) -> str:
        return self.uplink.site_addr

    @property
    def sites(self) -> list[Site]:
        return [site for relay in self.relays for site in relay.sites]

    def relay_of(self, site: Site) -> Relay:
        return next(relay for relay in self.relays if site in relay.sites)

    def primary_sent(self) -> int:
        """Bytes that left the primary on its uplink so far (Ethernet framing included)."""
        return self.uplink.site_counters()[1]

    # -- the primary's origin manifest ---------------------------------------------------
    def ssh(self, ns: Netns, key: Path, addr: str, known_hosts: Path, *command: str,
            timeout: float = 30) -> subprocess.CompletedProcess:
        """One ``ssh`` from inside ``ns`` with ``key`` (host key pinned by ``known_hosts``), bounded."""
        argv = ["ssh", "-F", "/dev/null", "-p", str(SSH_PORT), "-i", str(key), "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5", "-o", f"UserKnownHostsFile={known_hosts}",
                "-o", "StrictHostKeyChecking=yes", f"{getpass.getuser()}@{addr}", *command]
        return ns.run(*argv, timeout=timeout, check=False)

    def primary_origin(self) -> dict:
        """The primary's origin manifest, asked from relay A's host with its key."""
        if not self.known_hosts.exists():
            self.known_hosts.write_text(f"[{self.primary_addr}]:{SSH_PORT} {self.bench.host_key_line}\n")
        relay = self.relays[0]
        p = self.ssh(relay.ns, relay.key, self.primary_addr, self.known_hosts, "library-syncer origin")
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    def wait_origin(self, item: str, file: str, md5: str, timeout: float = 60) -> dict:
        """Wait until the primary's origin manifest describes ``item/file`` with ``md5``; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.primary_origin()
            if doc.get("items", {}).get(item, {}).get("files", {}).get(file, {}).get("md5") == md5:
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"the primary's origin manifest did not describe {item}/{file} "
                                     f"within {timeout}s (version {doc.get('version')})")
            time.sleep(0.3)

    # -- relays --------------------------------------------------------------------------
    def start_relay(self, relay: Relay, **env: str) -> None:
        """Start (or restart) ``library-syncer relay`` on its host (:meth:`started` waits for it)."""
        values = {
            "SYNC_PEER": self.primary_addr, "SYNC_PORT": str(SSH_PORT), "SYNC_USER": getpass.getuser(),
            "SYNC_KEY": str(relay.key), "SYNC_HOST_KEY": self.bench.host_key_line, "SYNC_RETRY_DEADLINE": "0",
            "SYNC_TIMEOUT": "10", "SYNC_CONNECT_TIMEOUT": "5", "SYNC_SCHEDULE": "0 0 1 1 *",
            "SYNCER_LIBRARY": str(relay.library), "SYNCER_STATE_DIR": str(relay.state),
            "SYNCER_HTTP_HOST": "127.0.0.1", "SYNCER_HTTP_PORT": str(HTTP_PORT), "SYNCER_SSH_HOST": "0.0.0.0",
            "SYNCER_SSH_PORT": str(SSH_PORT), "SYNCER_RELAY_KEYS_DIR": str(relay.keys_dir),
            "SYNCER_UNPRIVILEGED": "true", "LIBRARY_NAME": relay.name, **env,
        }
        relay.starts += 1
        proc = relay.ns.popen(PYTHON, "-m", "library_syncer", "relay", env=values, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        relay.daemon = Lines(proc, f"{relay.name} (start {relay.starts})", parse_json=False)
        self.bench.lines.append(relay.daemon)

    def started(self, relay: Relay, timeout: float = 120) -> str:
        """Wait until the relay's sshd listens and its start sync ended; returns that sync's end line."""
        assert relay.daemon is not None
        relay.daemon.wait_for(lambda i: "Server listening on" in i[1], timeout, f"{relay.name}'s sshd")
        return relay.daemon.wait_for(lambda i: _END.search(i[1]), timeout, f"{relay.name}'s start sync")[1]

    def cut_relay_upstream(self, relay: Relay, cut: bool) -> None:
        """Drop (or stop dropping) every packet from or to the relay's own address in the WAN router:
        the relay cannot reach the primary, while its sites' packets to the primary still pass."""
        table = f"lsn_cut_{relay.name}"
        rules = f"  ip saddr {relay.addr} counter drop\n  ip daddr {relay.addr} counter drop\n" if cut else ""
        self.router.nft(f"add table inet {table}\ndelete table inet {table}\n"
                        f"table inet {table} {{\n chain pre {{\n  type filter hook prerouting priority -300; "
                        f"policy accept;\n{rules} }}\n}}\n")

    def trigger(self, relay: Relay) -> str:
        """Start a sync of the relay now (POST /_syncer/api/sync from its own loopback); returns its run id."""
        p = relay.ns.run(PYTHON, "-c", _TRIGGER, f"http://127.0.0.1:{HTTP_PORT}/_syncer/api/sync")
        return json.loads(p.stdout)["run_id"]

    def relay_sync_end(self, relay: Relay, run_id: str) -> tuple[float, str, str] | None:
        """(time, outcome, summary) of the relay's sync ``run_id`` if it ended, else None."""
        assert relay.daemon is not None
        for t, line in relay.daemon.snapshot():
            m = _END.search(line)
            if m and m[1] == run_id:
                return t, m[2], m[3]
        if relay.daemon.proc.poll() is not None:
            raise AssertionError(f"{relay.name} exited ({relay.daemon.proc.returncode}) during sync {run_id}")
        return None

    def wait_relay_sync(self, relay: Relay, run_id: str, timeout: float = 90) -> tuple[float, str, str]:
        deadline = time.monotonic() + timeout
        while (end := self.relay_sync_end(relay, run_id)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{relay.name}'s sync {run_id} did not end within {timeout}s")
            time.sleep(0.1)
        return end

    def kill_relay(self, relay: Relay) -> None:
        """SIGKILL every process of the relay host (the relay, its sshd and its sessions); routing stays."""
        relay.ns.kill_all()
        assert relay.daemon is not None
        relay.daemon.proc.wait(5)

    # -- sites ---------------------------------------------------------------------------
    def site_values(self, site: Site, peers: list[str], **overrides) -> dict:
        """Settings of one site sync that tries ``peers`` ("relay", "primary") in that order."""
        relay = self.relay_of(site)
        addr = {"relay": site.link.server_addr, "primary": self.primary_addr}
        pins = {"relay": f"[{site.link.server_addr}]:{SSH_PORT} {relay.host_key()}",
                "primary": f"[{self.primary_addr}]:{SSH_PORT} {self.bench.host_key_line}"}
        values = dict(sync_peer=",".join(f"{addr[p]}:{SSH_PORT}" for p in peers),
                      sync_host_key="\n".join(pins[p] for p in peers), sync_timeout=10, sync_connect_timeout=5,
                      sync_retry_deadline=0, retry_base=1)
        values.update(overrides)
        return values

    def peer_name(self, site: Site, peer: str) -> str:
        """How a sync result names ``peer`` ("relay" or "primary") of ``site``."""
        return f"{site.link.server_addr if peer == 'relay' else self.primary_addr}:{SSH_PORT}"
