"""Two tiers on loopback: primary <- relay <- site, each a real process; the primary sees the site behind the relay.

The site (a real ``library-syncer client``) reports to the relay that served it; the relay
forwards its sites' reports upstream; the primary's fleet view shows the site with the path
its report came through, current after its sync, behind after a change at the primary.
"""

from __future__ import annotations

import contextlib
import subprocess

import requests

from server_fixture import make_site_key, running_server
from support import cli_popen, free_port, stop_process, wait_until

from .test_relay import _library, _relay, _wait_origin


@contextlib.contextmanager
def _site(tmp_path, primary, site_key, relay_port):
    host_key = (tmp_path / "relay-state" / "relay" / "host_keys" / "ssh_host_ed25519_key.pub").read_text()
    env = {"SYNC_PEER": f"127.0.0.1:{relay_port}", "SYNC_USER": primary.user, "SYNC_KEY": str(site_key),
           "SYNC_HOST_KEY": " ".join(host_key.split()[:2]), "SYNC_RETRY_DEADLINE": "0",
           "SYNCER_LIBRARY": str(tmp_path / "branch-lib"), "SYNCER_STATE_DIR": str(tmp_path / "branch-state"),
           "SYNCER_HTTP_HOST": "127.0.0.1", "SYNCER_HTTP_PORT": str(free_port()), "SYNC_SCHEDULE": "0 0 1 1 *"}
    log = tmp_path / "branch.log"
    with open(log, "wb") as fh:
        proc = cli_popen("client", env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        def synced():
            assert proc.poll() is None, log.read_text()
            return "succeeded" in log.read_text()
        wait_until(synced, 90, "the branch's first sync")
        yield log
    finally:
        stop_process(proc, 30)


def test_the_primary_sees_the_site_behind_a_relay_with_its_path(tmp_path):
    lib = _library(tmp_path)
    fleet_port = free_port()
    args = ("--origin-refresh-seconds", "1", "--fleet-host", "127.0.0.1", "--fleet-port", str(fleet_port))
    with running_server(tmp_path, lib, args=args) as primary:
        keys_dir = tmp_path / "relay-keys"
        site_key = make_site_key(keys_dir, tmp_path / "branch-private", "branch")  # a key at the relay only
        relay_key = make_site_key(primary.keys_dir, tmp_path / "relay-private", "relay")
        primary.reload()
        wait_until(lambda: "added: relay" in primary.log_text(), 30, "the primary to authorize the relay")
        first = _wait_origin(primary, lib)
        api = f"http://127.0.0.1:{fleet_port}/_syncer/api/fleet"

        def row(name):
            return next((s for s in requests.get(api, timeout=10).json()["sites"] if s["site"] == name), None)

        relay_port = free_port()
        with _relay(tmp_path, primary, relay_key, keys_dir, relay_port) as (_, relay_log, _):
            with _site(tmp_path, primary, site_key, relay_port):
                def branch_current():
                    s = row("branch")
                    return s and s["publication"] and s["publication"]["state"] == "current" and s
                branch = wait_until(branch_current, 60, "the branch's report at the primary, through the relay")
                pub = branch["publication"]
                assert branch["relayed"] and not branch["key"] and pub["via"] == ["relay"]
                assert pub["origin_version"] == first["version"] and pub["items_current"] == 3
                assert pub["served_by"] == f"127.0.0.1:{relay_port}" and pub["last_success"]
                relay = row("relay")["publication"]
                assert relay["state"] == "current" and relay["via"] == []
                # The relay logs the forward after the primary stored it: wait for the line, not assume it.
                wait_until(lambda: "relayed reports: 1 forwarded upstream" in relay_log.read_text(), 30,
                           "the relay's log of the forwarded report")
                page = requests.get(f"http://127.0.0.1:{fleet_port}/_syncer/", timeout=10).text
                assert "via relay" in page

                # A change at the primary: the branch is behind (and the relay too) until they sync again.
                (lib / "Beta" / "beta.iso").write_bytes(b"B" * 20_000)
                second = wait_until(lambda: (d := _wait_origin(primary, lib))["version"] > first["version"] and d,
                                    60, "the primary's new origin version")

                def behind():
                    doc = requests.get(api, timeout=10).json()
                    return doc["items"]["Beta"]["sites_not_current"] == ["branch", "relay"] and doc
                doc = wait_until(behind, 60, "branch and relay behind on Beta")
                why = doc["items"]["Beta"]["why"]
                assert why["branch"].startswith(f"older version (origin v{first['version']})"), why
                assert doc["items"]["Alpha"]["sites_current"] == 2 and second["version"] > first["version"]
                branch = next(s for s in doc["sites"] if s["site"] == "branch")["publication"]
                assert branch["state"] == "behind" and branch["items_behind"] == ["Beta"]
                assert doc["publication_summary"]["behind"] == 2
                metrics = requests.get(f"http://127.0.0.1:{fleet_port}/_syncer/metrics", timeout=10).text
                assert 'library_syncer_item_sites_not_current{item="Beta"} 2.0' in metrics
                assert 'library_syncer_site_seconds_since_last_success{site="branch"}' in metrics
