"""``library-syncer demo``: the whole main job on one machine, on loopback.

Creates a sample library, a site key, starts a server (unprivileged sshd +
rrsync) and a client (sync + publish over HTTP), waits for the first
publication and prints the subscription URL.  Every step is the real CLI.
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


def _wait_for(url: str, proc: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OperationFailed(f"the client exited early with code {proc.returncode}; see its log above")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.load(r)
        except OSError:
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


@click.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default=Path("demo-data"),
              show_default=True, help="Folder for the demo's server, site and library data.")
@click.option("--http-port", type=int, default=8080, show_default=True, help="Port the site publishes on.")
@click.option("--once", is_flag=True, help="Exit after the first publication instead of serving until Ctrl-C.")
def command(workdir: Path, http_port: int, once: bool) -> None:
    """Run a server and a client on loopback, sync a sample library and publish it."""
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
    server = subprocess.Popen(_cli(*server_args), env=env)
    client_env = dict(env, SYNC_PEER="127.0.0.1", SYNC_PORT=str(ssh_port), SYNC_USER=getpass.getuser(),
                      SYNC_KEY=str(site_key), SYNC_HOST_KEY=host_key, LIBRARY_NAME="Demo Library",
                      SYNCER_LIBRARY=str(site / "library"), SYNCER_STATE_DIR=str(site / "state"),
                      SYNCER_HTTP_HOST="127.0.0.1", SYNCER_HTTP_PORT=str(http_port), LIBRARY_BROWSE="true")
    client = subprocess.Popen(_cli("client"), env=client_env)
    try:
        url = f"http://127.0.0.1:{http_port}/lib.json"
        lib = _wait_for(url, client, timeout=120)
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
        click.echo("Serving until Ctrl-C (server and client keep running).")
        client.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop(client, server)
