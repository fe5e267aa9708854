"""``library-syncer client``: the remote-site daemon (the original client container)."""

from __future__ import annotations

import asyncio

import click

from . import setting_options, settings_from
from ..errors import ConfigError

CLIENT_SETTINGS = (
    "sync_peer", "sync_port", "sync_user", "sync_key", "sync_host_key", "sync_known_hosts",
    "sync_schedule", "sync_delay", "sync_delay_max_seconds", "sync_max_bw", "sync_timeout",
    "sync_connect_timeout", "sync_retry_deadline", "sync_delete_guard", "sync_allow_mass_delete",
    "library", "library_name", "library_browse", "library_password_file", "http_host", "http_port", "https_port",
    "tls_name", "tls_custom_cert", "certs_dir", "tls_cert", "tls_key", "tz", "state_dir", "keys_dir",
    "generation_grace_seconds", "status_port", "stale_after_seconds", "webhook_url", "admin_token_file",
    "acme_ca", "acme_email", "acme_ca_root", "acme_http_port", "http_header_timeout_seconds",
    "http_idle_timeout_seconds", "http_max_connections", "http_max_per_client",
)


@click.command("client")
@setting_options(*CLIENT_SETTINGS)
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
    if not settings.sync_peer:
        raise ConfigError("setting sync_peer (SYNC_PEER / --sync-peer) is required for the client")
    check_start(settings)  # one line naming the setting, before anything starts
    daemon = ClientDaemon(settings)

    def started(urls: list[str]) -> None:
        for url in urls:
            click.echo(f"Subscription URL: {url}")

    asyncio.run(daemon.run(on_started=started))
