"""The server's fleet view on a real server: real rsync pulls by site keys, the page in real
headless Chromium (screenshots in the artifacts folder), the JSON API, the metrics, the token, health."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from browser import dump_dom, screenshot, visible_text
from library_syncer.fleet.model import Fleet
from library_syncer.web.fleet_app import make_fleet_app
from server_fixture import make_site_key, running_server
from support import cli, free_port, wait_until

from .helpers import client_env, make_library, rsync

TOKEN = "fleet-admin-token-4f9c2e"


def get(url: str, headers: dict | None = None, timeout: float = 10) -> tuple[int, dict, str]:
    """(status, headers, body) of a GET; HTTP errors are answers too."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def api(base: str, headers: dict | None = None) -> dict:
    status, _, body = get(base + "/api/fleet", headers)
    assert status == 200, body
    return json.loads(body)


def by_site(doc: dict) -> dict[str, dict]:
    return {s["site"]: s for s in doc["sites"]}


def metrics(base: str, headers: dict | None = None) -> dict[str, list]:
    """Family name -> samples, parsed by prometheus-client's own parser."""
    status, hdrs, body = get(base + "/metrics", headers)
    assert status == 200 and hdrs["Content-Type"].startswith("text/plain"), body
    return {f.name: f.samples for f in text_string_to_metric_families(body)}


def sample(families: dict, name: str, **labels) -> float:
    for family in families.values():
        for s in family:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"no sample {name}{labels}")


def big_library(tmp_path: Path) -> Path:
    lib = make_library(tmp_path)
    (lib / "template").mkdir()
    with open(lib / "template" / "disk.vmdk", "wb") as fh:
        fh.write(os.urandom(4_000_000))
    return lib


def test_fleet_view_after_real_pulls(tmp_path):
    lib = big_library(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(tmp_path, lib, site="branch-paris", extra_sites=("branch-rome", "branch-oslo"),
                        args=("--fleet-host", "127.0.0.1", "--fleet-port", str(port))) as server:
        keys = server.site_keys
        # paris pulls the whole library.
        pull = rsync("-a", "-e", server.ssh_command(keys["branch-paris"]), server.remote("/"), f"{tmp_path / 'paris'}/")
        assert pull.returncode == 0, pull.stderr
        # rome's transfer is killed halfway (a slow link, then the site goes away).
        rome = subprocess.Popen(
            ["rsync", "-a", "--bwlimit=200", "-e", server.ssh_command(keys["branch-rome"]), server.remote("/"),
             f"{tmp_path / 'rome'}/"],
            env=client_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            wait_until(lambda: by_site(api(base))["branch-rome"]["state"] == "syncing", 30, "rome's session")
        finally:
            os.killpg(rome.pid, signal.SIGKILL)
            rome.wait(10)
        # a key of no site is refused.
        stranger = make_site_key(tmp_path / "not-authorized", tmp_path / "stranger", "stranger")
        refused = rsync("-a", "-e", server.ssh_command(stranger), server.remote("/"), f"{tmp_path / 'x'}/")
        # (ssh exits 255; rsync may report 12 when it reaps ssh a moment late)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused.stderr

        last: list[dict] = []

        def settled() -> dict | None:
            last[:] = [api(base)]
            sites = by_site(last[0])
            done = (sites["branch-paris"]["last_sync"] and sites["branch-rome"]["last_sync"]
                    and last[0]["unknown_keys"]["attempts"] == 1)
            return last[0] if done else None

        try:
            doc = wait_until(settled, 30, "the fleet to show the three connections")
        except BaseException:
            print(json.dumps(last, indent=1), server.log_text())
            raise
        sites = by_site(doc)
        # --- the JSON API
        paris, rome_doc, oslo = sites["branch-paris"], sites["branch-rome"], sites["branch-oslo"]
        assert paris["state"] == "ok" and paris["address"] == "127.0.0.1" and not paris["silent"]
        assert paris["last_sync"]["result"] == "ok" and 0 < paris["last_sync"]["duration_seconds"] < 30
        assert paris["sessions"] == {"ok": 1, "error": 0, "lost": 0, "refused": 0}
        assert paris["last_seen"].endswith("Z") and paris["last_seen_timestamp"] > 0
        assert rome_doc["state"] == "failing" and rome_doc["last_sync"]["result"] == "lost"
        assert oslo["state"] == "never seen" and oslo["silent"] and oslo["last_seen"] is None
        assert doc["summary"]["sites"] == 3 and doc["summary"]["silent"] == 1 and doc["summary"]["failing"] == 1
        assert doc["unknown_keys"]["last"]["address"] == "127.0.0.1"
        assert doc["sshd"] == {"up": True, "restarts": 0}
        assert doc["silent_after_seconds"] == 691200

        # --- metrics, through prometheus-client's parser
        fams = metrics(base)
        assert sample(fams, "library_syncer_sites") == 3
        assert sample(fams, "library_syncer_sites_silent") == 1
        assert sample(fams, "library_syncer_site_last_seen_timestamp_seconds", site="branch-paris") == \
            paris["last_seen_timestamp"]
        assert 0 < sample(fams, "library_syncer_site_last_sync_duration_seconds", site="branch-paris") < 30
        assert sample(fams, "library_syncer_site_sessions_total", site="branch-paris", result="ok") == 1
        assert sample(fams, "library_syncer_site_sessions_total", site="branch-rome", result="lost") == 1
        assert sample(fams, "library_syncer_site_last_sync_ok", site="branch-rome") == 0
        assert sample(fams, "library_syncer_site_silent", site="branch-oslo") == 1
        assert sample(fams, "library_syncer_unknown_key_attempts_total") == 1
        assert sample(fams, "library_syncer_sshd_up") == 1
        assert sample(fams, "library_syncer_sshd_restarts_total") == 0
        assert not [s for s in fams["library_syncer_site_last_seen_timestamp_seconds"]
                    if s.labels["site"] == "branch-oslo"]  # never seen: no timestamp

        # --- the page, as a person sees it in a real browser
        phone = screenshot(base + "/", "fleet-phone-390.png", width=390, height=1100)
        wall = screenshot(base + "/", "fleet-wall-1920.png", width=1920, height=1080)
        assert phone.stat().st_size > 5000 and wall.stat().st_size > 5000
        text = visible_text(dump_dom(base + "/"))
        assert "Fleet of sites" in text
        for seen in ("branch-paris", "branch-rome", "branch-oslo", "NEVER SEEN", "never seen (since start)",
                     "FAILING", "connection lost", "OK", "3 sites", "1 silent", "1 unknown keys refused",
                     "sshd running"):
            assert seen in text, f"{seen!r} not on the page: {text}"
        assert text.index("branch-oslo") < text.index("branch-rome") < text.index("branch-paris")  # problems first

        status, _, body = get(base + "/healthz")
        assert status == 200 and "sshd is running" in body
    # The history is saved in the state folder when the server stops.
    saved = json.loads((server.state_dir / "fleet.json").read_text())
    assert {s["site"]: s["last_result"] for s in saved["sites"]} == {"branch-paris": "ok", "branch-rome": "lost"}
    assert (server.state_dir / "fleet.json").stat().st_mode & 0o077 == 0


def test_token_guards_everything_but_health_and_history_survives_a_restart(tmp_path):
    lib = make_library(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    args = ("--fleet-host", "127.0.0.1", "--fleet-port", str(port), "--admin-token-file", str(token_file))
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with running_server(tmp_path, lib, args=args) as server:
        pull = rsync("-a", "-e", server.ssh_command(), server.remote("/"), f"{tmp_path / 'dest'}/")
        assert pull.returncode == 0, pull.stderr
        for path in ("/", "/api/fleet", "/metrics"):
            status, headers, _ = get(base + path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm="), path
            assert get(base + path, {"Authorization": "Bearer wrong"})[0] == 401, path
            basic_wrong = base64.b64encode(b"admin:wrong").decode()
            assert get(base + path, {"Authorization": f"Basic {basic_wrong}"})[0] == 401, path
            assert get(base + path, bearer)[0] == 200, path
            basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
            assert get(base + path, {"Authorization": f"Basic {basic}"})[0] == 200, path
        assert get(base + "/healthz")[0] == 200
        # A browser opens the page with the token as Basic password; the token is never shown.
        dom = dump_dom(f"http://admin:{TOKEN}@127.0.0.1:{port}/")
        assert "site1" in visible_text(dom) and TOKEN not in dom
        wait_until(lambda: by_site(api(base, bearer))["site1"]["last_sync"], 30, "site1's session")
        assert TOKEN not in get(base + "/api/fleet", bearer)[2] and TOKEN not in server.log_text()
        state_dir = server.state_dir
    # Same state folder, new server: site1's history is still there before it connects again.
    with running_server(tmp_path, lib, args=args, state_dir=state_dir) as again:
        doc = api(base, bearer)
        site1 = by_site(doc)["site1"]
        assert site1["sessions"]["ok"] == 1 and site1["last_sync"]["result"] == "ok" and site1["state"] == "ok"
        assert doc["history_since"] <= doc["server_started"]
    assert again.proc.returncode == 0


def test_sshd_restart_is_counted_and_health_follows_sshd(tmp_path):
    lib = make_library(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(tmp_path, lib, args=("--fleet-host", "127.0.0.1", "--fleet-port", str(port))) as server:
        assert get(base + "/healthz")[0] == 200
        sshd_pid = _child_pids(server.proc.pid)
        assert len(sshd_pid) == 1
        os.kill(sshd_pid[0], signal.SIGKILL)
        wait_until(lambda: sample(metrics(base), "library_syncer_sshd_restarts_total") == 1, 30, "the restart count")
        wait_until(lambda: get(base + "/healthz")[0] == 200 and sample(metrics(base), "library_syncer_sshd_up") == 1,
                   30, "sshd to be back")
        assert _child_pids(server.proc.pid) != sshd_pid


def _child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(p) for p in (task / "children").read_text().split()]
    return children


def test_health_is_503_while_sshd_is_down():
    fleet = Fleet({}, silent_after=60)

    async def check() -> tuple[int, int]:
        async with TestClient(TestServer(make_fleet_app(fleet, token=TOKEN))) as client:
            down = (await client.get("/healthz")).status
            fleet.feed("Server listening on 127.0.0.1 port 2222.")
            up = (await client.get("/healthz")).status
            return down, up

    assert asyncio.run(check()) == (503, 200)


def test_fleet_port_in_use_is_a_start_up_error(tmp_path):
    lib = make_library(tmp_path)
    keys = tmp_path / "keys"
    make_site_key(keys, tmp_path / "private", "site1")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli("server", "--unprivileged", "--library", lib, "--keys", keys, "--state-dir", tmp_path / "state",
                "--ssh-host", "127.0.0.1", "--port", str(free_port()), "--fleet-host", "127.0.0.1",
                "--fleet-port", str(port), timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"setting fleet_port: cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "Server listening" not in r.stderr
