"""``library-syncer demo``: the whole main job on one machine, on loopback.

Creates a sample library, a site key, starts a server (unprivileged sshd +
rrsync) and a client (sync + publish over HTTP), waits for the first
publication and prints the subscription URL.  Every step is the real CLI.

Its ports are free ones unless given.  What it prints is checked to come from its own
client: the client announces its URL only once it holds the port, and the library id
served there must be the one in the client's own library folder.  SIGTERM, SIGINT and
SIGHUP stop the client and the server (which stops its sshd) before the demo exits.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import click

from ..errors import OperationFailed
from ..sample import make_sample_library


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "library_syncer", *args]


class _Stop(Exception):
    """A stop signal arrived."""


def _on_stop_signal(signum: int, frame) -> None:
    raise _Stop(signal.Signals(signum).name)


def _announced_url(client: subprocess.Popen, timeout: float) -> str:
    """The subscription URL the client prints once its web server holds the port (its stdout is
    passed on to ours)."""
    found: list[str] = []
    seen = threading.Event()

    stdout = client.stdout
    assert stdout is not None, "the client is started with stdout=PIPE"

    def relay() -> None:
        for line in stdout:
            if line.startswith("Subscription URL:"):  # the demo prints it once checked
                if not found:
                    found.append(line.split(":", 1)[1].strip())
                    seen.set()
                continue
            sys.stdout.write(line)
            sys.stdout.flush()

    threading.Thread(target=relay, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not seen.wait(0.2):
        if client.poll() is not None:
            raise OperationFailed(f"the client exited early with code {client.returncode}; see its log above")
        if time.monotonic() > deadline:
            raise OperationFailed(f"the client did not start its web server within {timeout:.0f}s")
    return found[0]


def _own_library_id(library: Path) -> str | None:
    try:
        return json.loads((library / "current" / "lib.json").read_text())["id"]
    except (OSError, ValueError, KeyError):
        return None


def _wait_for(url: str, proc: subprocess.Popen, library: Path, timeout: float) -> dict:
    """lib.json at ``url`` once it is the one published in ``library`` (the client's own folder)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OperationFailed(f"the client exited early with code {proc.returncode}; see its log above")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                lib = json.load(r)
            own = _own_library_id(library)
            if own is not None and lib.get("id") == own:
                return lib
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise OperationFailed(f"nothing was published at {url} within {timeout:.0f}s")


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


@click.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default=Path("demo-data"),
              show_default=True, help="Folder for the demo's server, site and library data.")
@click.option("--http-port", type=click.IntRange(0, 65535), default=0,
              help="Port the site publishes on.  [default: a free port]")
@click.option("--once", is_flag=True, help="Exit after the first publication instead of serving until Ctrl-C.")
def command(workdir: Path, http_port: int, once: bool) -> None:
    """Run a server and a client on loopback, sync a sample library and publish it."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_stop_signal)
    try:
        _run(workdir, http_port or _free_port(), once)
    except (_Stop, KeyboardInterrupt):
        pass


def _run(workdir: Path, http_port: int, once: bool) -> None:
    workdir = workdir.resolve()
    primary, site = workdir / "primary", workdir / "site"
    library = primary / "library"
    items = make_sample_library(library)
    click.echo(f"Sample library: {library} ({len(items)} items)")

    keys = primary / "keys"
    site_key = site / "ssh" / "id_ed25519"
    if not site_key.exists():
        shutil.rmtree(workdir / "newkey", ignore_errors=True)
        subprocess.run(_cli("keys", "new", "demo-site", "--out", str(workdir / "newkey")), check=True,
                       stdout=subprocess.DEVNULL)
        keys.mkdir(parents=True, exist_ok=True)
        site_key.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(workdir / "newkey" / "demo-site"), site_key)
        shutil.move(str(workdir / "newkey" / "demo-site.pub"), keys / "demo-site.pub")
        shutil.rmtree(workdir / "newkey", ignore_errors=True)

    ssh_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "SYNCER_", "LIBRARY_", "TLS_"))}
    server_args = ["server", "--unprivileged", "--library", str(library), "--keys", str(keys),
                   "--state-dir", str(primary / "state"), "--ssh-host", "127.0.0.1", "--port", str(ssh_port)]
    host_key = subprocess.run(_cli(*server_args, "--print-host-key"), check=True, capture_output=True,
                              text=True, env=env).stdout.strip()
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(_cli(*server_args), env=env))
        _serve(procs, env, site, site_key, ssh_port, host_key, http_port, once)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a signal now must not cut the stop short
            signal.signal(sig, signal.SIG_IGN)
        _stop(*reversed(procs))


def _serve(procs: list[subprocess.Popen], env: dict, site: Path, site_key: Path, ssh_port: int, host_key: str,
           http_port: int, once: bool) -> None:
    """Start the client (appended to ``procs``), report its publication, serve until stopped."""
    client_env = dict(env, SYNC_PEER="127.0.0.1", SYNC_PORT=str(ssh_port), SYNC_USER=getpass.getuser(),
                      SYNC_KEY=str(site_key), SYNC_HOST_KEY=host_key, LIBRARY_NAME="Demo Library",
                      SYNCER_LIBRARY=str(site / "library"), SYNCER_STATE_DIR=str(site / "state"),
                      SYNCER_HTTP_HOST="127.0.0.1", SYNCER_HTTP_PORT=str(http_port), LIBRARY_BROWSE="true")
    client = subprocess.Popen(_cli("client"), env=client_env, stdout=subprocess.PIPE, text=True)
    procs.append(client)
    url = _announced_url(client, timeout=60)
    if url != f"http://127.0.0.1:{http_port}/lib.json":
        raise OperationFailed(f"the client announced {url}, not port {http_port}")
    lib = _wait_for(url, client, site / "library", timeout=120)
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/items.json", timeout=5) as r:
        published = json.load(r)["items"]
    click.echo("")
    click.echo(f"Published library {lib['name']!r} version {lib['version']} with {len(published)} items:")
    for item in published:
        size = sum(f["size"] for f in item["files"])
        click.echo(f"  {item['name']:<30} {item['type']:<10} {size:>10} bytes")
    click.echo("")
    click.echo(f"Subscription URL: {url}")
    click.echo(f"Status page:      http://127.0.0.1:{http_port}/_syncer/")
    if once:
        return
    click.echo("Serving until Ctrl-C or SIGTERM (server and client keep running).")
    client.wait()
