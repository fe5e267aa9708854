"""``library-syncer relay``: a site that syncs and publishes like ``client`` and serves the sites behind it."""

from __future__ import annotations

import asyncio

import click

from . import setting_options, settings_from
from ..config import RELAY_GROUPS


@click.command("relay")
@setting_options(*RELAY_GROUPS)
@click.option("--print-host-key", is_flag=True,
              help="Print the host key line the sites behind this relay pin (generated if missing) and exit.")
def command(print_host_key: bool, **values) -> None:
    """Run a relay site: a client (sync from SYNC_PEER, publish for the local vCenter) that also
    exports each generation it publishes, read-only over its own sshd (SYNCER_SSH_PORT), to the
    site keys in SYNCER_RELAY_KEYS_DIR, with the origin version it received. Sites behind it list
    it first in their SYNC_PEER and the primary after it. SIGHUP re-reads the relay's site keys.
    """
    from ..roles.client import check_start
    from ..roles.relay import RelayDaemon
    from ..roles.server_setup import host_key_line, prepare

    settings = settings_from(click.get_current_context(), values)
    if print_host_key:
        click.echo(host_key_line(settings, relay=True))
        return
    settings.require_peer("for a relay")
    check_start(settings)
    settings.library.mkdir(parents=True, exist_ok=True)
    plan = prepare(settings, relay=True)
    daemon = RelayDaemon(settings, plan)

    def started(urls: list[str]) -> None:
        for url in urls:
            click.echo(f"Subscription URL: {url}")

    asyncio.run(daemon.run(on_started=started))
