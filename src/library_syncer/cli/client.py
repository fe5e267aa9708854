"""``library-syncer client``: the remote-site daemon (the original client container)."""

from __future__ import annotations

import asyncio

import click

from . import setting_options, settings_from
from ..config import CLIENT_GROUPS


@click.command("client")
@setting_options(*CLIENT_GROUPS)
def command(**values) -> None:
    """Run a remote site: serve the library, sync now, then on SYNC_SCHEDULE.

    Pulls the library from SYNC_PEER over rsync+SSH into a private staging tree,
    regenerates the Content Library manifest and publishes each good result as a
    new immutable generation (one atomic switch). vCenter subscribes to
    http(s)://HOST:PORT/lib.json. With TLS_NAME and no certificate files, Caddy
    serves HTTPS in front with an automatic ACME certificate.
    """
    from ..roles.client import ClientDaemon, check_start

    settings = settings_from(click.get_current_context(), values)
    settings.require_peer("for the client")
    check_start(settings)  # one line naming the setting, before anything starts
    daemon = ClientDaemon(settings)

    def started(urls: list[str]) -> None:
        for url in urls:
            click.echo(f"Subscription URL: {url}")

    asyncio.run(daemon.run(on_started=started))
