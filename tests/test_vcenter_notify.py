"""Telling the site's vCenter to sync, against govmomi's vcsim (the vSphere API simulator) on loopback:
the REST exchange itself (session, library found by name or id, sync accepted, certificate trust), a
real site daemon asking after each publication that changed something (seen in vcsim's library), and
the failure path (vCenter down: retried, reported on status, metrics and webhook, publication kept)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from client_fixture import running_client
from inprocess import run_cli
from library_syncer.config import load_settings
from library_syncer.roles.site_metrics import ClientMetrics
from library_syncer.roles.vcenter_notify import VcenterNotifier
from library_syncer.sample import make_sample_library
from library_syncer.vcenter.api import Target, VcenterError, request_sync
from library_syncer.vcenter.trust import tls_trust
from server_fixture import running_server
from support import free_port, wait_until
from vcsim_fixture import running_vcsim
from web.helpers import make_cert, openssl_sha1

TOKEN = "vcenter-test-token-81"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCHEDULE = "0 3 1 1 *"  # far away: only the sync at start and on-demand syncs run


def _digest(cert: Path, algorithm: str) -> str:
    return hashlib.new(algorithm, ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def _ask(vc_url: str, library: str, trust, password: str = "secret") -> object:
    return asyncio.run(request_sync(Target(vc_url, "syncer@vsphere.local", password, library, trust)))


# --- the REST exchange with vcsim -----------------------------------------------------------


def test_sync_requested_by_name_and_by_id_with_each_kind_of_trust(tmp_path):
    cert, key = make_cert(tmp_path / "vc")
    with running_vcsim(tmp_path, cert, key) as vc:
        lib_id = vc.create_subscribed_library("Branch 7", "http://127.0.0.1:1/lib.json")
        assert "last_sync_time" not in vc.library(lib_id)

        accepted = _ask(vc.url, "Branch 7", tls_trust(None, openssl_sha1(cert)))  # SHA-1, as vCenter shows it
        assert accepted.library_id == lib_id
        assert accepted.api == "rest"  # vcsim 0.24 has no /api/session: the /rest forms answered
        first = vc.library(lib_id)["last_sync_time"]

        accepted = _ask(vc.url, lib_id, tls_trust(None, _digest(cert, "sha256")))  # by id, SHA-256 pin
        assert accepted.library_id == lib_id
        second = vc.library(lib_id)["last_sync_time"]
        assert second > first

        assert _ask(vc.url, "Branch 7", tls_trust(cert, None)).library_id == lib_id  # CA file
        assert vc.library(lib_id)["last_sync_time"] > second


def test_untrusted_certificates_and_unknown_libraries_are_one_line_errors(tmp_path):
    cert, key = make_cert(tmp_path / "vc")
    with running_vcsim(tmp_path, cert, key) as vc:
        lib_id = vc.create_subscribed_library("Branch 7", "http://127.0.0.1:1/lib.json")

        with pytest.raises(VcenterError) as err:  # a pin of another certificate: refused before any request
            _ask(vc.url, "Branch 7", tls_trust(None, "AB" * 20))
        assert "does not match vcenter_thumbprint" in str(err.value) and not err.value.retryable
        assert openssl_sha1(cert) in str(err.value)  # what it has, to compare with vCenter's UI

        with pytest.raises(VcenterError) as err:  # system CAs do not know a self-signed certificate
            _ask(vc.url, "Branch 7", tls_trust(None, None))
        assert "not trusted" in str(err.value) and not err.value.retryable
        assert "last_sync_time" not in vc.library(lib_id)

        with pytest.raises(VcenterError) as err:
            _ask(vc.url, "Elsewhere", tls_trust(cert, None))
        assert str(err.value) == ("find library: vCenter has no subscribed library named 'Elsewhere' "
                                  "(setting vcenter_library)")
        assert err.value.retryable  # the library may be created in a moment

    with pytest.raises(VcenterError) as err:  # vcsim stopped: nothing listens
        _ask(vc.url, "Branch 7", tls_trust(cert, None))
    assert str(err.value).startswith(f"login: cannot connect to 127.0.0.1:{vc.port}") and err.value.retryable


def test_publications_during_a_request_fold_into_one_for_the_newest_generation(tmp_path):
    cert, key = make_cert(tmp_path / "vc")
    (tmp_path / "pw").write_text("secret\n")
    with running_vcsim(tmp_path, cert, key) as vc:
        lib_id = vc.create_subscribed_library("Branch 7", "http://127.0.0.1:1/lib.json")
        settings = load_settings(vcenter_url=vc.url, vcenter_user="syncer", vcenter_password_file=tmp_path / "pw",
                                 vcenter_library="Branch 7", vcenter_ca_file=cert)
        metrics = ClientMetrics()

        def oks() -> float | None:
            return metrics.registry.get_sample_value("library_syncer_vcenter_sync_requests_total", {"result": "ok"})

        async def publish_four() -> VcenterNotifier:
            notifier = VcenterNotifier(settings, metrics, asyncio.Event())
            first = notifier.published(1)
            assert first is not None
            assert notifier.published(2) is None and notifier.published(3) is None  # one runs already
            await first
            assert notifier.last.generation == 3 and notifier.last.state == "ok"
            assert oks() == 1  # generations 1 and 2 were folded in
            later = notifier.published(4)  # none runs any more: a request of its own
            assert later is not None
            await later
            return notifier

        notifier = asyncio.run(publish_four())
        assert notifier.last.generation == 4 and notifier.last.library_id == lib_id
        assert oks() == 2
        assert vc.library(lib_id)["last_sync_time"]


# --- settings ---------------------------------------------------------------------------------


def test_vcenter_settings_are_off_by_default_and_read_from_environment_toml_and_flags(tmp_path, monkeypatch):
    s = load_settings()
    assert not s.vcenter_enabled() and s.vcenter_url is None
    toml = tmp_path / "site.toml"
    toml.write_text('vcenter_url = "https://vc.example.com/"\nvcenter_library = "Branch"\n'
                    'vcenter_thumbprint = "ab cd ' + "ef" * 18 + '"\n')
    s = load_settings(toml)
    assert s.vcenter_url == "https://vc.example.com" and s.vcenter_library == "Branch"
    assert s.vcenter_thumbprint == "AB:CD:" + ":".join(["EF"] * 18)
    monkeypatch.setenv("SYNCER_VCENTER_USER", "syncer@vsphere.local")
    assert load_settings(toml).vcenter_user == "syncer@vsphere.local"
    help_text = run_cli("client", "--help").stdout
    for flag in ("--vcenter-url", "--vcenter-user", "--vcenter-password-file", "--vcenter-library",
                 "--vcenter-ca-file", "--vcenter-thumbprint"):
        assert flag in help_text
    assert "--vcenter-password " not in help_text and "--vcenter-password\n" not in help_text


@pytest.mark.parametrize("extra, words", [
    ({"SYNCER_VCENTER_URL": "http://vc.example.com"}, ["vcenter_url", "https://HOST"]),
    ({"SYNCER_VCENTER_URL": "https://vc.example.com/ui"}, ["vcenter_url", "no path"]),
    ({"SYNCER_VCENTER_URL": "https://vc.example.com:99999"}, ["vcenter_url", "port"]),
    ({"SYNCER_VCENTER_THUMBPRINT": "12:34"}, ["vcenter_thumbprint", "SHA-256", "SHA-1"]),
    ({"SYNCER_VCENTER_USER": "a:b"}, ["vcenter_user", "':'"]),
    ({"SYNCER_VCENTER_LIBRARY": " Branch"}, ["vcenter_library", "spaces"]),
    ({"VC": 1, "SYNCER_VCENTER_USER": ""}, ["vcenter_user", "required with vcenter_url"]),
    ({"VC": 1, "SYNCER_VCENTER_LIBRARY": ""}, ["vcenter_library", "required with vcenter_url"]),
    ({"VC": 1, "SYNCER_VCENTER_PASSWORD_FILE": ""}, ["vcenter_password_file", "required with vcenter_url"]),
    ({"VC": 1, "SYNCER_VCENTER_PASSWORD_FILE": "{tmp}/nope"}, ["vcenter_password_file", "cannot read"]),
    ({"VC": 1, "SYNCER_VCENTER_PASSWORD_FILE": "{tmp}/empty"}, ["vcenter_password_file", "empty"]),
    ({"VC": 1, "SYNCER_VCENTER_CA_FILE": "{tmp}/nope.pem"}, ["vcenter_ca_file", "no such file"]),
    ({"VC": 1, "SYNCER_VCENTER_CA_FILE": "{tmp}/empty"}, ["vcenter_ca_file", "not a PEM"]),
    ({"VC": 1, "SYNCER_VCENTER_CA_FILE": "{tmp}/password", "SYNCER_VCENTER_THUMBPRINT": "ab" * 32},
     ["vcenter_ca_file and vcenter_thumbprint", "not both"]),
])
def test_a_bad_vcenter_setting_is_one_line_and_exit_2(tmp_path, extra, words):
    (tmp_path / "password").write_text("s3cret-vc-password\n")
    (tmp_path / "empty").write_text("")
    env = {"SYNC_PEER": "127.0.0.1", "SYNCER_STATE_DIR": str(tmp_path / "state")}
    if extra.pop("VC", None):
        env |= {"SYNCER_VCENTER_URL": "https://vc.example.com", "SYNCER_VCENTER_USER": "syncer",
                "SYNCER_VCENTER_LIBRARY": "Branch", "SYNCER_VCENTER_PASSWORD_FILE": str(tmp_path / "password")}
    env |= {k: v.replace("{tmp}", str(tmp_path)) for k, v in extra.items()}
    r = run_cli("client", "--library", tmp_path / "library", env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    line, = r.stderr.strip().splitlines()
    for word in words:
        assert word in line, line
    assert "s3cret" not in line


# --- a real site daemon -----------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self) -> None:  # noqa: N802
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _status(site) -> dict | None:
    try:
        r = requests.get(site.url("_syncer/api/status"), headers=AUTH, timeout=10)
    except requests.ConnectionError:
        return None
    return r.json() if r.status_code == 200 else None


def _vcenter_request(site, generation: int, state: str) -> dict | None:
    st = _status(site)
    req = st and st["vcenter"] and st["vcenter"]["last_request"]
    return req if req and req["generation"] == generation and req["state"] == state else None


def _metric(site, line_start: str) -> str:
    text = requests.get(site.url("_syncer/metrics"), headers=AUTH, timeout=10).text
    return next((ln for ln in text.splitlines() if ln.startswith(line_start)), "")


def _sync_now(site) -> dict:
    r = requests.post(site.url("_syncer/api/sync"), headers=AUTH, timeout=10)
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    return wait_until(lambda: (s := _status(site)) and s["last_sync"]["run_id"] == run_id and s["last_sync"],
                      90, f"sync {run_id}")


def _site_env(tmp_path: Path, vc_port: int, cert: Path, hook_port: int) -> dict:
    (tmp_path / "vc-password").write_text("s3cret-vc-password\n")
    return {"SYNC_SCHEDULE": SCHEDULE, "SYNCER_ADMIN_TOKEN": TOKEN, "LIBRARY_NAME": "Branch 7",
            "SYNCER_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
            "SYNCER_VCENTER_URL": f"https://127.0.0.1:{vc_port}", "SYNCER_VCENTER_USER": "syncer@vsphere.local",
            "SYNCER_VCENTER_PASSWORD_FILE": str(tmp_path / "vc-password"), "SYNCER_VCENTER_LIBRARY": "Branch 7",
            "SYNCER_VCENTER_THUMBPRINT": openssl_sha1(cert)}


def test_the_site_asks_vcenter_to_sync_after_each_publication_that_changed_something(tmp_path):
    source = tmp_path / "primary"
    make_sample_library(source, disk_size=64 * 1024)
    cert, key = make_cert(tmp_path / "vc")
    _Hook.received = []
    hook = ThreadingHTTPServer(("127.0.0.1", free_port()), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    vc_port = free_port()
    env = _site_env(tmp_path, vc_port, cert, hook.server_port)
    try:
        with running_server(tmp_path, source) as srv, running_client(tmp_path, srv, **env) as site:
            # vCenter is down when the first generation is published: tried 4 times, then reported
            failed = wait_until(lambda: _vcenter_request(site, 1, "failed"), 90, "the failed request")
            assert failed["tries"] == 4 and f"cannot connect to 127.0.0.1:{vc_port}" in failed["error"]
            assert requests.get(site.url("lib.json"), timeout=10).status_code == 200  # the publication stays
            st = _status(site)
            assert st["published"]["generation"] == 1 and st["last_sync"]["ok"]
            assert st["vcenter"]["url"] == f"https://127.0.0.1:{vc_port}"
            assert st["vcenter"]["trust"].startswith("SHA-1 thumbprint")
            assert _metric(site, 'library_syncer_vcenter_sync_requests_total{result="failed"}').endswith(" 1.0")
            assert _metric(site, "library_syncer_vcenter_last_sync_request_ok ").endswith(" 0.0")
            wait_until(lambda: [e["event"] for e in _Hook.received] == ["vcenter_sync_failed"], 30, "webhook")
            event = _Hook.received[0]
            assert event["site"] == "Branch 7" and event["generation"] == 1 and event["tries"] == 4
            page = requests.get(site.url("_syncer/"), auth=("admin", TOKEN), timeout=10).text
            assert "vCenter" in page and "cannot connect" in page
            log = site.log_text()
            assert "s3cret" not in log and "not requested after 4 tries" in log

            with running_vcsim(tmp_path, cert, key, port=vc_port) as vc:
                lib_id = vc.create_subscribed_library("Branch 7", site.url("lib.json"))
                # a sync that changes nothing publishes nothing and asks nothing
                assert _sync_now(site)["generation"] is None
                # a new item: generation 2, and vCenter is asked to sync
                (source / "New ISO").mkdir()
                (source / "New ISO" / "new.iso").write_bytes(b"iso" * 5000)
                assert _sync_now(site)["generation"] == 2
                ok = wait_until(lambda: _vcenter_request(site, 2, "ok"), 60, "the accepted request")
                assert ok["tries"] == 1 and ok["library_id"] == lib_id and ok["api"] == "rest" and not ok["error"]
                assert vc.library(lib_id)["last_sync_time"]  # what vcsim received
                assert _metric(site, 'library_syncer_vcenter_sync_requests_total{result="ok"}').endswith(" 1.0")
                assert _metric(site, 'library_syncer_vcenter_sync_requests_total{result="failed"}').endswith(" 1.0")
                assert _metric(site, "library_syncer_vcenter_last_sync_request_ok ").endswith(" 1.0")
                wait_until(lambda: [e["event"] for e in _Hook.received]
                           == ["vcenter_sync_failed", "vcenter_sync_recovered"], 30, "webhook: recovered")
                assert "sync of library 'Branch 7' (id " + lib_id in site.log_text()
        assert site.proc.returncode == 0, site.log_text()
    finally:
        hook.shutdown()
