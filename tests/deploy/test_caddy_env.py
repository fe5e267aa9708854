"""Caddy, started for automatic HTTPS, gets none of the tool's settings or secrets in its environment."""

from __future__ import annotations

from pathlib import Path

from library_syncer.web.caddy import caddy_env

from .test_caddy_acme import acme_bench  # noqa: F401  (the Pebble + Caddy fixture)

SECRETS = {"LIBRARY_PASSWORD": "pw-48d1-secret", "SYNCER_ADMIN_TOKEN": "tok-0c7e-secret",
           "LIBRARY_PASSWORD_FILE": "/run/pw-secret", "SYNCER_ADMIN_TOKEN_FILE": "/run/tok-secret"}


def test_caddy_env_keeps_only_what_caddy_needs(tmp_path):
    env = caddy_env(tmp_path, {"PATH": "/bin", "TZ": "UTC", "library_password": "x", "SYNC_PEER": "h",
                               "Syncer_Http_Port": "1", **SECRETS})
    assert env == {"PATH": "/bin", "TZ": "UTC", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path),
                   "XDG_CONFIG_HOME": str(tmp_path)}


def test_running_caddy_has_no_secret(acme_bench, monkeypatch):  # noqa: F811
    loop, make, front = acme_bench
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    _, settings = make()
    f = front(settings, "127.0.0.1:9")
    loop.run(f.start(timeout=60))
    env = Path(f"/proc/{f.proc.pid}/environ").read_bytes()
    assert b"LIBRARY_" not in env and b"SYNCER_" not in env
    assert not [v for v in SECRETS.values() if v.encode() in env]
