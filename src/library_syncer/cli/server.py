"""``library-syncer server``: the primary site's read-only rsync-over-SSH endpoint."""

from __future__ import annotations

import click

from . import setting_options, settings_from
from ..config import SERVER_GROUPS


@click.command("server")
@setting_options(*SERVER_GROUPS, ssh_port="--port", keys_dir="--keys")
@click.option("--print-host-key", is_flag=True,
              help="Print the host key line sites pin (generated if missing) and exit.")
def command(print_host_key: bool, **kwargs) -> None:
    """Serve the library folder, read-only, to the sites' keys through a supervised sshd.

    As root, sites log in as the syncer account (created with SYNCER_UID if
    missing); with --unprivileged, or as another user, as the current user.
    SIGHUP re-reads the keys folder; SIGTERM stops the server. With --fleet-port,
    a small web server shows the fleet of sites (/_syncer/), as JSON
    (/_syncer/api/fleet), Prometheus metrics (/_syncer/metrics) and health
    (/_syncer/healthz, also /healthz); the admin token, when set, guards all but
    health.
    """
    from ..roles import server

    settings = settings_from(click.get_current_context(), kwargs)
    if print_host_key:
        click.echo(server.host_key_line(settings))
        return
    plan = server.prepare(settings)
    raise SystemExit(server.run(plan))
