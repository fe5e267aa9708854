"""Relays and peer failover on loopback: a real primary, a real ``library-syncer relay`` and a downstream site.

The downstream site lists the relay first and the primary after it.  It publishes what the
primary exports through the relay, with the origin version the primary gave it; it fails over
to the primary when the relay is gone, keeping its ids; it never takes an older origin version
from a relay that lags behind; the relay's forced command allows nothing else.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import requests

from library_syncer.config import load_settings
from library_syncer.publish import generations as gen
from library_syncer.sync.run import run_sync
from library_syncer.vcsp.manifest import check_manifest
from server_fixture import make_site_key, running_server
from support import cli, cli_popen, free_port, stop_process, wait_until


def _library(root: Path) -> Path:
    lib = root / "primary"
    for name, data in (("Alpha", b"a" * 50_000), ("Beta", b"b" * 20_000), ("Gamma", b"g" * 5_000)):
        (lib / name).mkdir(parents=True)
        (lib / name / f"{name.lower()}.iso").write_bytes(data)
    return lib


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.iso"))}


def _origin(server) -> dict:
    proc = subprocess.run([*server.ssh_args(), server.destination(), "library-syncer origin"], capture_output=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def _wait_origin(server, lib: Path) -> dict:
    def settled():
        doc = _origin(server)
        files = {f"{i}/{p}": f["md5"] for i, e in doc.get("items", {}).items() for p, f in e["files"].items()}
        return doc if len(files) == len(_files(lib)) else None
    return wait_until(settled, 60, "the primary's origin manifest")


@contextlib.contextmanager
def _relay(tmp_path: Path, primary, relay_key: Path, keys_dir: Path, ssh_port: int, *, upstream_port=None,
           ready: str = "succeeded", name: str = "relay", **extra: str):
    """``library-syncer relay`` pulling from ``primary`` (or from ``upstream_port``, where nothing listens),
    serving the keys of ``keys_dir`` on ``ssh_port``; yields once its first sync ended with ``ready``.
    ``extra``: more environment (e.g. SYNC_PEER and SYNC_HOST_KEY for several peers)."""
    env = {
        "SYNC_PEER": primary.host, "SYNC_PORT": str(upstream_port or primary.port), "SYNC_USER": primary.user,
        "SYNC_KEY": str(relay_key), "SYNC_HOST_KEY": primary.host_key_line, "SYNC_RETRY_DEADLINE": "0",
        "SYNCER_LIBRARY": str(tmp_path / f"{name}-lib"), "SYNCER_STATE_DIR": str(tmp_path / f"{name}-state"),
        "SYNCER_HTTP_HOST": "127.0.0.1", "SYNCER_HTTP_PORT": str(free_port()), "SYNCER_SSH_HOST": "127.0.0.1",
        "SYNCER_SSH_PORT": str(ssh_port), "SYNCER_RELAY_KEYS_DIR": str(keys_dir), "SYNCER_UNPRIVILEGED": "true",
        "SYNC_SCHEDULE": "0 0 1 1 *", "LIBRARY_NAME": "Relay", **extra,
    }
    log = tmp_path / f"relay-{env['SYNCER_HTTP_PORT']}.log"
    with open(log, "wb") as fh:
        proc = cli_popen("relay", env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        def started():
            assert proc.poll() is None, log.read_text()
            text = log.read_text()
            return "Server listening on" in text and re.search(rf"sync \S+ {ready}", text)
        wait_until(started, 90, f"the relay's sshd and its first sync ({ready})")
        yield f"http://127.0.0.1:{env['SYNCER_HTTP_PORT']}", log, tmp_path / f"{name}-lib"
    finally:
        stop_process(proc, 30)


def test_site_behind_a_relay_fails_over_and_never_goes_backwards(tmp_path):
    lib = _library(tmp_path)
    with running_server(tmp_path, lib, args=("--origin-refresh-seconds", "1")) as primary:
        keys_dir = tmp_path / "relay-keys"
        site_key = make_site_key(keys_dir, tmp_path / "site-private", "branch")
        shutil.copy(keys_dir / "branch.pub", primary.keys_dir / "branch.pub")
        relay_key = make_site_key(primary.keys_dir, tmp_path / "relay-private", "relay")
        primary.reload()
        wait_until(lambda: "added: branch, relay" in primary.log_text(), 30, "the primary to authorize both keys")
        first = _wait_origin(primary, lib)
        relay_port = free_port()

        def site(**kw):
            host_keys = (tmp_path / "relay-state" / "relay" / "host_keys" / "ssh_host_ed25519_key.pub").read_text()
            pins = (f"[127.0.0.1]:{relay_port} {' '.join(host_keys.split()[:2])}\n"
                    f"[127.0.0.1]:{primary.port} {primary.host_key_line}")
            values = dict(library=tmp_path / "site", state_dir=tmp_path / "site-state", sync_user=primary.user,
                          sync_peer=f"127.0.0.1:{relay_port},127.0.0.1:{primary.port}", sync_key=site_key,
                          sync_host_key=pins, sync_retry_deadline=0, sync_connect_timeout=5)
            return run_sync(load_settings(**{**values, **kw}), retry_base=0.01)

        with _relay(tmp_path, primary, relay_key, keys_dir, relay_port) as (relay_url, _, relay_lib):
            up = requests.get(f"{relay_url}/_syncer/api/status", timeout=30).json()["upstream"]
            assert up["served_by"] == f"{primary.host}:{primary.port}" and up["origin_version"] == first["version"]
            # The relay daemon reported its publication to the primary (the key that logged in names it).
            report = primary.state_dir / "reports" / "relay.json"
            wait_until(lambda: report.exists() and json.loads(report.read_text())["origin_version"] == first["version"]
                       and json.loads(report.read_text())["result"]["kind"] == "ok", 60,
                       "the relay's report of its sync at the primary")
            metrics = requests.get(f"{relay_url}/_syncer/metrics", timeout=30).text
            assert f"library_syncer_origin_version {float(first['version'])}" in metrics
            r = site()
            assert r.ok and r.peer == f"127.0.0.1:{relay_port}", r.reason
            assert r.origin_version == first["version"] and r.origin_id == first["origin_id"]
            root = gen.current_root(tmp_path / "site")
            assert _files(root) == _files(lib) and check_manifest(root) == []
            ids = {i["name"]: i["id"] for i in json.loads((root / "items.json").read_text())["items"]}
            # The relay's own manifest is not what the site publishes: its ids are the site's own.
            relay_ids = {i["name"]: i["id"] for i in
                         json.loads((gen.current_root(relay_lib) / "items.json").read_text())["items"]}
            assert set(ids) == set(relay_ids) and not set(ids.values()) & set(relay_ids.values())
            # The relay's forced command: nothing but its two forms.
            pub = tmp_path / "relay-state" / "relay" / "host_keys" / "ssh_host_ed25519_key.pub"
            kh = tmp_path / "kh"
            kh.write_text(f"[127.0.0.1]:{relay_port} {' '.join(pub.read_text().split()[:2])}\n")
            ssh = ["ssh", "-F", "/dev/null", "-p", str(relay_port), "-i", str(site_key), "-o", "BatchMode=yes",
                   "-o", f"UserKnownHostsFile={kh}", "-o", "StrictHostKeyChecking=yes", f"{primary.user}@127.0.0.1"]
            for cmd in ("id", "cat /etc/passwd", "rsync --server -logDtpre.iLsfxC . /", ""):
                p = subprocess.run([*ssh, *([cmd] if cmd else [])], capture_output=True, text=True, timeout=30,
                                   stdin=subprocess.DEVNULL)
                assert p.returncode != 0 and "library-syncer: refused:" in p.stderr, (cmd, p.stderr)
            relayed = json.loads(subprocess.run([*ssh, "library-syncer origin"], capture_output=True,
                                                timeout=30, stdin=subprocess.DEVNULL).stdout)
            assert relayed["version"] == first["version"] and [p["name"] for p in relayed["path"]]

        # The relay is gone: the site fails over to the primary and keeps its ids.
        (lib / "Delta").mkdir()
        (lib / "Delta" / "delta.iso").write_bytes(b"d" * 7_000)
        (lib / "Alpha" / "alpha.iso").write_bytes(b"A" * 50_000)
        second = _wait_origin(primary, lib)
        assert second["version"] > first["version"]
        r = site()
        assert r.ok and r.peer == f"127.0.0.1:{primary.port}", r.reason
        assert f"127.0.0.1:{relay_port}" in r.peers_skipped and r.origin_version == second["version"]
        root = gen.current_root(tmp_path / "site")
        assert _files(root) == _files(lib)
        after = {i["name"]: i["id"] for i in json.loads((root / "items.json").read_text())["items"]}
        assert {k: v for k, v in after.items() if k in ids} == ids

        # The relay comes back one version behind (it does not sync at start: its upstream is unreachable
        # for it now); the site skips it and stays at the primary's version.
        with _relay(tmp_path, primary, relay_key, keys_dir, relay_port, upstream_port=free_port(), ready="failed"):
            r = site(sync_peer=f"127.0.0.1:{relay_port}")
            assert not r.ok and r.kind == "gave-up" and "older than the published" in r.reason, r.reason
            assert gen.current_generation(tmp_path / "site") is not None
            assert _files(gen.current_root(tmp_path / "site")) == _files(lib)
            r = site()
            assert r.ok and r.peer == f"127.0.0.1:{primary.port}" and r.origin_version == second["version"]
            assert "older than the published" in r.peers_skipped[f"127.0.0.1:{relay_port}"]



def _host_key(tmp_path: Path, name: str) -> str:
    text = (tmp_path / f"{name}-state" / "relay" / "host_keys" / "ssh_host_ed25519_key.pub").read_text()
    return " ".join(text.split()[:2])


def test_a_cycle_of_relays_is_refused_and_nobody_loops(tmp_path):
    lib = _library(tmp_path)
    with running_server(tmp_path, lib, args=("--origin-refresh-seconds", "1")) as primary:
        keys_a, keys_b = tmp_path / "keys-a", tmp_path / "keys-b"
        key_a = make_site_key(keys_b, tmp_path / "private-a", "relay-a")  # A's key: at B and at the primary
        key_b = make_site_key(keys_a, tmp_path / "private-b", "relay-b")  # B's key: at A and at the primary
        for pub in (keys_b / "relay-a.pub", keys_a / "relay-b.pub"):
            shutil.copy(pub, primary.keys_dir / pub.name)
        primary.reload()
        wait_until(lambda: "added: relay-a, relay-b" in primary.log_text(), 30, "the primary to authorize A and B")
        origin = _wait_origin(primary, lib)
        port_a, port_b = free_port(), free_port()
        at_primary = f"[127.0.0.1]:{primary.port} {primary.host_key_line}"
        with _relay(tmp_path, primary, key_a, keys_a, port_a, name="a"):
            # B lists A first: it publishes what came through A, with A on the document's path.
            with _relay(tmp_path, primary, key_b, keys_b, port_b, name="b",
                        SYNC_PEER=f"127.0.0.1:{port_a},127.0.0.1:{primary.port}",
                        SYNC_HOST_KEY=f"[127.0.0.1]:{port_a} {_host_key(tmp_path, 'a')}\n{at_primary}"):
                through = json.loads(next((tmp_path / "b-lib" / ".library-syncer" / "origin").iterdir()).read_text())
                assert through["version"] == origin["version"] and len(through["path"]) == 2
                # A misconfigured to list B first: B's library came through A, so A refuses it and takes the primary.
                settings = load_settings(
                    library=tmp_path / "a-lib", state_dir=tmp_path / "a-state", sync_user=primary.user, sync_key=key_a,
                    sync_peer=f"127.0.0.1:{port_b},127.0.0.1:{primary.port}", sync_retry_deadline=0,
                    sync_host_key=f"[127.0.0.1]:{port_b} {_host_key(tmp_path, 'b')}\n{at_primary}")
                r = run_sync(settings, retry_base=0.01)
                assert r.ok and r.peer == f"127.0.0.1:{primary.port}", r.reason
                assert "a cycle of relays" in r.peers_skipped[f"127.0.0.1:{port_b}"]
                r = run_sync(load_settings(**{**settings.model_dump(), "sync_peer": f"127.0.0.1:{port_b}"}),
                             retry_base=0.01)
                assert not r.ok and r.kind == "fatal" and "cycle" in r.reason, r.reason
                # What A publishes still names one relay (itself): paths do not grow around the cycle.
                gen_a = gen.current_generation(tmp_path / "a-lib")
                assert [p["id"] for p in json.loads(gen.origin_path(tmp_path / "a-lib", gen_a).read_text())["path"]] \
                    == [through["path"][0]["id"]]


def test_print_host_key_prints_the_key_of_the_relays_sshd_made_once(tmp_path):
    state = tmp_path / "relay-state"
    r = cli("relay", "--print-host-key", env={"SYNCER_STATE_DIR": str(state)})
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("ssh-ed25519 ") and len(line.splitlines()) == 1
    # the file the relay's sshd serves with (the tests above pin the sites to it)
    pub = (state / "relay" / "host_keys" / "ssh_host_ed25519_key.pub").read_text().split()
    assert line.split() == pub[:2]
    again = cli("relay", "--print-host-key", env={"SYNCER_STATE_DIR": str(state)})
    assert again.stdout.strip() == line  # made once, then kept
