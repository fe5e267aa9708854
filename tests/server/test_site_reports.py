"""Site reports: a site tells the primary what it publishes; the fleet view joins it with the origin manifest."""

from __future__ import annotations

import asyncio
import json
import subprocess

import requests

from library_syncer.config import load_settings
from library_syncer.roles.site_report import build_report, report_command, send_report
from library_syncer.roles import site_status as st
from library_syncer.sync.origin_state import read_site_origin
from library_syncer.sync.run import run_sync
from server_fixture import running_server
from support import free_port, wait_until

from .helpers import client_env, make_library


def _report(server, data: bytes, key=None) -> subprocess.CompletedProcess:
    return subprocess.run([*server.ssh_args(key), server.destination(), "library-syncer report"], input=data,
                          capture_output=True, timeout=30, env=client_env())


def test_a_site_report_shows_at_the_primary_and_bad_ones_change_nothing(tmp_path):
    lib = make_library(tmp_path)
    port = free_port()
    args = ("--origin-refresh-seconds", "1", "--fleet-host", "127.0.0.1", "--fleet-port", str(port))
    with running_server(tmp_path, lib, args=args, extra_sites=("other",)) as server:
        fleet = f"http://127.0.0.1:{port}/_syncer/api/fleet"
        def origin_items():
            try:
                return len(json.loads((server.state_dir / "origin.json").read_text())["items"]) == 2
            except (OSError, ValueError):
                return False
        wait_until(origin_items, 60, "the origin manifest with both items")
        settings = load_settings(library=tmp_path / "site", state_dir=tmp_path / "site-state", sync_peer=server.host,
                                 sync_port=server.port, sync_user=server.user, sync_key=server.key,
                                 sync_host_key=server.host_key_line)
        result = run_sync(settings)
        assert result.ok, result.reason
        origin = read_site_origin(tmp_path / "site")
        doc = build_report(result=result, published=st.published_library(tmp_path / "site"), origin=origin.doc,
                           held_back={}, next_run=None, now=result.ended)
        assert asyncio.run(send_report(report_command(settings, result.peer), doc))
        pub = next(s for s in requests.get(fleet, timeout=10).json()["sites"] if s["site"] == "site1")["publication"]
        assert pub["state"] == "current" and pub["items_current"] == 2 and pub["last_result"] == "ok"

        # A change at the primary: the site is behind until it syncs again.
        (lib / "iso" / "installer.iso").write_bytes(b"\x03" * 10_000)
        def behind():
            p = next(s for s in requests.get(fleet, timeout=10).json()["sites"] if s["site"] == "site1")["publication"]
            return p["state"] == "behind" and p["items_behind"] == ["iso"] and p
        wait_until(behind, 60, "the site to show behind on item iso")
        items = requests.get(fleet, timeout=10).json()["items"]
        assert items["iso"]["sites_not_current"] == ["site1"] and items["item-a"]["sites_current"] == 1
        page = requests.get(f"http://127.0.0.1:{port}/_syncer/", timeout=10).text
        assert "Publishes" in page and "behind: iso" in page
        metrics = requests.get(f"http://127.0.0.1:{port}/_syncer/metrics", timeout=10).text
        assert 'library_syncer_item_sites_not_current{item="iso"} 1.0' in metrics

        # Refused, stored nowhere: too big, not JSON, wrong schema, another site's name.
        before = sorted(p.name for p in (server.state_dir / "reports").iterdir())
        good = json.dumps(doc).encode()
        for data, why in ((b"x" * (1024 * 1024 + 10), "larger than"), (b"{not json", "not JSON"),
                          (json.dumps({**doc, "items": []}).encode(), "items is missing"),
                          (json.dumps({**doc, "site": "other"}).encode(), "names the site 'other'")):
            r = _report(server, data)
            assert r.returncode == 1 and why in r.stderr.decode() and r.stderr.decode().count("\n") == 1, r.stderr
        # The other site's key stores under its own name, whatever the report says of itself.
        r = _report(server, good, key=server.site_keys["other"])
        assert r.returncode == 0, r.stderr
        stored = json.loads((server.state_dir / "reports" / "other.json").read_text())
        assert stored["site"] == "other"
        assert sorted(p.name for p in (server.state_dir / "reports").iterdir()) == sorted(before + ["other.json"])
        assert json.loads((server.state_dir / "reports" / "site1.json").read_text())["items"] == doc["items"]


def test_a_held_back_item_shows_at_the_primary_with_its_reason(tmp_path):
    from vcsp.helpers import template

    lib = tmp_path / "library"
    template(lib / "web", name="web", disk=b"good disk bytes" * 1000)
    (lib / "tools").mkdir()
    (lib / "tools" / "tools.iso").write_bytes(b"iso" * 1000)  # a second item: the source is not all invalid
    port = free_port()
    args = ("--origin-refresh-seconds", "1", "--fleet-host", "127.0.0.1", "--fleet-port", str(port))
    with running_server(tmp_path, lib, args=args) as server:
        fleet = f"http://127.0.0.1:{port}/_syncer/api/fleet"
        settings = load_settings(library=tmp_path / "site", state_dir=tmp_path / "site-state", sync_peer=server.host,
                                 sync_port=server.port, sync_user=server.user, sync_key=server.key,
                                 sync_host_key=server.host_key_line)

        def sync_and_report():
            result = run_sync(settings)
            origin = read_site_origin(tmp_path / "site")
            doc = build_report(result=result, published=st.published_library(tmp_path / "site"),
                               origin=origin.doc if origin else None, held_back=dict(result.held_back), next_run=None,
                               now=result.ended)
            assert asyncio.run(send_report(report_command(settings, result.peer), doc))
            return result

        assert sync_and_report().kind == "ok"
        # A re-export in progress: the disk's new bytes no longer match the .mf.
        (lib / "web" / "web-disk1.vmdk").write_bytes(b"half-written disk" * 1000)
        result = sync_and_report()
        assert result.kind == "degraded" and "web" in result.held_back, result.reason

        def held():
            site = next(s for s in requests.get(fleet, timeout=10).json()["sites"] if s["site"] == "site1")
            return site["publication"]["held_back"] and site["publication"]
        pub = wait_until(held, 30, "the held-back item at the primary")
        assert "web" in pub["held_back"] and pub["held_back"]["web"] == result.held_back["web"]
        page = requests.get(f"http://127.0.0.1:{port}/_syncer/", timeout=10).text
        assert "held back" in page
