"""The container images built from deploy/Dockerfile and run for real with podman.

A server and a client started by podman-compose from deploy/compose/*.yml (the drop-in files,
their ports unchanged: the engine has a network namespace of its own), with only the values a
site edits set for this test (SYNC_PEER; TLS_CUSTOM_CERT with a certificate for TLS_NAME, since
no ACME CA is reachable). A real sync over ssh, every file read back over HTTPS, health checks,
kill -9 of the main process (restart policy), SIGTERM; the images as a migrated original compose
file runs them; the build context filter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support import cli, require_tool, wait_until

from library_syncer.sample import make_sample_library

from .engine import REPO, Engine

PEER = "192.0.2.1"  # an address of the engine's namespace: the server's published ports are reached on it
TLS_NAME = "library.example.com"
FETCH = Path(__file__).with_name("fetch_library.py")


def compose_service(role: str) -> tuple[dict, dict]:
    """(the whole compose document, its one service) of deploy/compose/ROLE.yml."""
    doc = yaml.safe_load((REPO / "deploy/compose" / f"{role}.yml").read_text())
    (service,) = doc["services"].values()
    return doc, service


def set_env(service: dict, **values: str) -> None:
    """Change environment entries of a compose service (list form), adding missing ones."""
    env = dict(e.split("=", 1) for e in service["environment"])
    env.update(values)
    service["environment"] = [f"{k}={v}" for k, v in env.items()]


def make_cert(folder: Path, name: str) -> Path:
    """A self-signed certificate for ``name``: cert.pem/key.pem in ``folder`` (the original's layout)."""
    openssl = require_tool("openssl", "openssl")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"), "-days", "2",
                    "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}", "-noenc"],
                   check=True, capture_output=True)
    (folder / "key.pem").chmod(0o644)  # as a bind-mounted file usually is
    return folder / "cert.pem"


def inspect(engine: Engine, name: str, fmt: str) -> str:
    return engine.podman("inspect", name, "--format", fmt).stdout.strip()


def healthy(engine: Engine, name: str) -> bool:
    return engine.podman("healthcheck", "run", name, check=False).returncode == 0


def fetch_all(engine: Engine, out: Path, address: str, *tls: str) -> list[str]:
    r = engine.ns(sys.executable, str(FETCH), address, str(out), *(("--tls", *tls) if tls else ()))
    return json.loads(r.stdout)


def same_files(source: Path, copy: Path) -> None:
    files = [p for p in source.rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert (copy / p.relative_to(source)).read_bytes() == p.read_bytes(), p


class Site:
    """A server and a client deployed with podman-compose in the engine's namespace."""

    def __init__(self, engine: Engine, root: Path) -> None:
        self.engine, self.root = engine, root
        self.server_dir, self.client_dir = root / "server", root / "client"
        self.library = self.server_dir / "data/library"
        for d in ("data/ssh", "data/library", "data/state"):
            (self.server_dir / d).mkdir(parents=True)
        for d in ("data/ssh", "data/library", "data/certs", "data/state"):
            (self.client_dir / d).mkdir(parents=True)
        make_sample_library(self.library, disk_size=3 * 1024 * 1024 + 17)
        r = cli("keys", "new", "site-a", "--out", root / "keys")
        assert r.returncode == 0, r.stderr
        (self.server_dir / "data/ssh/id_syncer.pub").write_bytes((root / "keys/site-a.pub").read_bytes())
        key = self.client_dir / "data/ssh/id_syncer"
        key.write_bytes((root / "keys/site-a").read_bytes())
        key.chmod(0o644)  # the original's entrypoint made it so: the image uses a private copy
        self.cert = make_cert(self.client_dir / "data/certs", TLS_NAME)
        doc, svc = compose_service("server")
        self.server_name = svc["container_name"]
        (self.server_dir / "compose.yml").write_text(yaml.safe_dump(doc))
        doc, svc = compose_service("client")
        self.client_name = svc["container_name"]
        set_env(svc, SYNC_PEER=PEER, TLS_CUSTOM_CERT="true")
        (self.client_dir / "compose.yml").write_text(yaml.safe_dump(doc))

    def compose(self, folder: Path, *args: str) -> subprocess.CompletedProcess:
        return self.engine.ns("podman-compose", "-f", str(folder / "compose.yml"), *args, cwd=folder, timeout=300)

    def log(self, name: str) -> str:
        r = self.engine.podman("logs", name, check=False)
        return r.stdout + r.stderr


@pytest.fixture(scope="module")
def site(engine, tmp_path_factory):
    engine.ns("ip", "addr", "replace", f"{PEER}/32", "dev", "lo")
    s = Site(engine, tmp_path_factory.mktemp("site"))
    s.compose(s.server_dir, "up", "-d")
    wait_until(lambda: healthy(engine, s.server_name), 60, "the server container's health check")
    s.compose(s.client_dir, "up", "-d")
    deadline = time.monotonic() + 120
    while not (s.client_dir / "data/library/current/lib.json").exists():
        if time.monotonic() > deadline:
            pytest.fail("the client container published no lib.json in 120 s; logs:\n"
                        + s.log(s.client_name)[-2500:] + "\n" + s.log(s.server_name)[-2500:])
        time.sleep(0.2)
    yield s
    for folder in (s.client_dir, s.server_dir):
        s.compose(folder, "down")


def test_client_syncs_over_ssh_and_serves_every_file_over_https(site, tmp_path):
    read = fetch_all(site.engine, tmp_path, "127.0.0.1:443", TLS_NAME, str(site.cert))
    assert read[:2] == ["/lib.json", "/items.json"] and len(read) > 8
    same_files(site.library, tmp_path)
    log = site.log(site.client_name)
    assert f"subscription URL: https://{TLS_NAME}:443/lib.json" in log, log[-2000:]
    assert "private copy" in log  # the bind-mounted key readable by others is used through a 0600 copy


def test_plain_http_port_redirects_to_https(site):
    r = site.engine.ns("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                       "-H", f"Host: {TLS_NAME}", "http://127.0.0.1:80/lib.json?x=1")
    assert r.stdout == f"308 https://{TLS_NAME}/lib.json?x=1", r.stdout


def test_health_checks_pass(site):
    for name in (site.server_name, site.client_name):
        assert healthy(site.engine, name), name
        assert inspect(site.engine, name, "{{.State.Health.Status}}") == "healthy"


@pytest.mark.parametrize("role", ["server", "client"])
def test_kill_9_of_the_main_process_restarts_the_container(site, role, tmp_path):
    name = site.server_name if role == "server" else site.client_name
    engine = site.engine
    pid, restarts = inspect(engine, name, "{{.State.Pid}} {{.RestartCount}}").split()
    subprocess.run(["kill", "-9", pid], check=True)

    def restarted() -> bool:
        now_pid, now_restarts = inspect(engine, name, "{{.State.Pid}} {{.RestartCount}}").split()
        return now_pid not in ("0", pid) and int(now_restarts) > int(restarts)

    wait_until(restarted, 60, f"{name} to be restarted after kill -9", interval=0.5)
    wait_until(lambda: healthy(engine, name), 60, f"{name} healthy again", interval=0.5)
    # the pair still works: a sync after the restart (client) or against the restarted server
    r = engine.podman("exec", site.client_name, "library-syncer", "status", "--sync-now", "--wait", "60",
                      check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    fetch_all(engine, tmp_path, "127.0.0.1:443", TLS_NAME, str(site.cert))


def test_sigterm_stops_both_cleanly(site):
    for name in (site.client_name, site.server_name):
        start = time.monotonic()
        site.engine.podman("stop", "-t", "60", name, timeout=90)
        assert time.monotonic() - start < 45, f"{name} took the whole grace to stop"
        assert inspect(site.engine, name, "{{.State.ExitCode}}") == "0", site.log(name)[-2000:]
    assert "web server stopped" in site.log(site.client_name)


def test_migrated_original_setups_work_with_podman_run(engine, tmp_path):
    """A server and a client started with ``podman run`` and only the original compose files'
    environment and volumes (no state volume, no fleet port): health checks, a read-only sync
    by hand, and the client's own sync, published over HTTPS, all through what the images set."""
    engine.ns("ip", "addr", "replace", f"{PEER}/32", "dev", "lo")
    for d in ("ssh", "site/ssh", "site/library", "site/certs"):
        (tmp_path / d).mkdir(parents=True)
    make_sample_library(tmp_path / "library", disk_size=1000)
    r = cli("keys", "new", "site-b", "--out", tmp_path / "keys")
    assert r.returncode == 0, r.stderr
    (tmp_path / "ssh/id_syncer.pub").write_bytes((tmp_path / "keys/site-b.pub").read_bytes())
    (tmp_path / "site/ssh/id_syncer").write_bytes((tmp_path / "keys/site-b").read_bytes())
    (tmp_path / "site/ssh/id_syncer").chmod(0o600)
    cert = make_cert(tmp_path / "site/certs", TLS_NAME)
    engine.podman("run", "-d", "--name", "migrated-server", "--restart", "unless-stopped",
                  "-p", "2322:22", "-e", "TZ=UTC", "-e", "SYNCER_UID=31337",
                  "-v", f"{tmp_path}/ssh:/home/syncer/.ssh", "-v", f"{tmp_path}/library:/syncer/library",
                  "library-syncer-server:latest")
    client_env = {"TZ": "UTC", "SYNC_PEER": PEER, "SYNC_PORT": "2322", "SYNC_SCHEDULE": "0 21 * * 5",
                  "SYNC_DELAY": "true", "SYNC_DELAY_MAX_SECONDS": "21600", "SYNC_MAX_BW": "0",
                  "TLS_NAME": TLS_NAME, "TLS_CUSTOM_CERT": "true", "LIBRARY_NAME": "Library",
                  "LIBRARY_BROWSE": "true"}
    try:
        wait_until(lambda: healthy(engine, "migrated-server"), 60, "the migrated server's health check")
        dest = tmp_path / "copy"
        ssh = (f"ssh -F /dev/null -p 2322 -i {tmp_path}/keys/site-b -o BatchMode=yes -o IdentitiesOnly=yes "
               f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null")
        engine.ns("rsync", "-a", "-e", ssh, "syncer@127.0.0.1:./", f"{dest}/")
        same_files(tmp_path / "library", dest)
        r = engine.ns("rsync", "-a", "-e", ssh, str(tmp_path / "keys/site-b.pub"), "syncer@127.0.0.1:./x",
                      check=False)
        assert r.returncode != 0  # read-only: an upload is refused
        engine.podman("run", "-d", "--name", "migrated-client", "--restart", "unless-stopped",
                      "-p", "2080:80/tcp", "-p", "2443:443/tcp",
                      *(a for k, v in client_env.items() for a in ("-e", f"{k}={v}")),
                      "-v", f"{tmp_path}/site/ssh:/syncer/.ssh", "-v", f"{tmp_path}/site/library:/syncer/library",
                      "-v", f"{tmp_path}/site/certs:/etc/caddycerts", "library-syncer-client:latest")
        wait_until(lambda: (tmp_path / "site/library/current/lib.json").exists(), 120,
                   "the migrated client to publish lib.json")
        assert healthy(engine, "migrated-client")
        fetch_all(engine, tmp_path / "read", "127.0.0.1:2443", TLS_NAME, str(cert))
        same_files(tmp_path / "library", tmp_path / "read")
    finally:
        engine.podman("rm", "-f", "-t", "5", "migrated-client", "migrated-server", check=False)


def test_build_context_is_filtered_for_every_builder(engine, tmp_path):
    """The repository's .dockerignore (read by podman, buildah, docker's classic builder and BuildKit)
    keeps the context to what the Dockerfile copies: no .venv, no tests, no .git."""
    assert not (REPO / "deploy/Dockerfile.dockerignore").exists(), "BuildKit would prefer it to .dockerignore"
    probe = tmp_path / "Containerfile"
    probe.write_text("FROM debian:bookworm-slim\nCOPY . /ctx\n")
    engine.podman("build", "--pull=never", "--network", "none", "-f", str(probe), "-t", "context-probe",
                  str(REPO), timeout=300)
    listing = engine.podman("run", "--rm", "--network", "none", "context-probe", "find", "/ctx",
                            "-maxdepth", "2").stdout.split()
    top = {p for p in listing if p.count("/") == 2}
    assert top == {"/ctx/pyproject.toml", "/ctx/README.md", "/ctx/src", "/ctx/deploy"}, top
    assert "/ctx/src/library_syncer" in listing and "/ctx/deploy/healthcheck.py" in listing
    engine.podman("rmi", "context-probe", check=False)


def test_images_keep_their_health_checks(engine):
    for role, image in (("server", "library-syncer-server"), ("client", "library-syncer-client")):
        out = engine.podman("image", "inspect", image, "--format", "{{json .HealthCheck}}").stdout
        assert "library-syncer-healthcheck" in out and role in out, out
