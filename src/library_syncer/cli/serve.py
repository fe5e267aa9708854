"""``library-syncer serve``: publish a library folder over HTTP(S) for vCenter subscriptions."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from ..config import ShutdownSettings
from ..errors import ConfigError
from . import setting_options, settings_from

log = logging.getLogger(__name__)


@click.command("serve")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@setting_options(
    "certs_dir", "tls_custom_cert", "tls_front", ShutdownSettings, "http_header_timeout_seconds",
    "http_idle_timeout_seconds", "http_max_connections", "http_max_per_client",
    http_host="--host", http_port="--port", library_browse="--browse",
    library_password_file="--password-file", tls_cert="--cert", tls_key="--key",
)
def command(path: Path | None, **kwargs) -> None:
    """Serve PATH (a Content Library folder with lib.json) to vCenter over HTTP or HTTPS.

    PATH defaults to the library setting (SYNCER_LIBRARY). When PATH holds published
    generations (PATH/current), the current one is served and switches are followed.
    GET and HEAD with Range and conditional requests; dot-files and anything outside
    PATH are 404; folders are 404 unless --browse. The password (user 'vcsp') comes
    from --password-file or the LIBRARY_PASSWORD environment variable. HTTPS with
    --cert/--key or TLS_CUSTOM_CERT=true (cert.pem/key.pem in the certs folder), terminated by
    Caddy in front (it sends the files) unless --tls-front python.
    Stops on SIGTERM/SIGINT after running downloads finish (bounded by the grace time).
    """
    from ..web.app import create_app
    from ..web.limits import HttpLimits
    from ..web.runner import serve_app

    settings = settings_from(click.get_current_context(), kwargs)
    root = path if path is not None else settings.library
    if not root.exists():
        raise ConfigError(f"library folder {root}: does not exist")
    if not root.is_dir():
        raise ConfigError(f"library folder {root}: is not a folder")
    password = settings.library_password_value()
    ssl_context = None
    tls = settings.tls_files()
    if tls:
        from ..web.tls import load_tls_context, sha1_thumbprint

        ssl_context = load_tls_context(*tls)
        thumbprint = sha1_thumbprint(tls[0])
        log.info("TLS certificate %s, SHA-1 thumbprint %s", tls[0], thumbprint)
        click.echo(f"TLS certificate SHA-1 thumbprint: {thumbprint}")
    elif settings.tls_name:
        raise ConfigError(
            f"setting tls_name ({settings.tls_name}): serve has no automatic ACME certificate;"
            " give --cert/--key or TLS_CUSTOM_CERT=true, or unset TLS_NAME for plain HTTP"
        )
    elif password:
        log.warning("the library password travels in clear text over plain HTTP; consider HTTPS")
    from ..publish.pins import GenerationPins

    # PATH's published generations when it holds them (each subscriber pinned to the one it
    # started reading), else PATH itself.
    pins = GenerationPins(root, settings.generation_grace_seconds, fallback=root)
    front = tls is not None and settings.tls_front == "caddy"
    app = create_app(pins, browse=settings.library_browse, password=password, front_sends_files=front)

    def started(urls: list[str]) -> None:
        click.echo(f"Serving {root}; subscribe vCenter to:")
        for url in urls:
            click.echo(f"  {url}")

    if front:
        from ..web.front import serve_behind_caddy

        assert tls is not None
        asyncio.run(serve_behind_caddy(
            app, settings, tls, host=settings.http_host, port=settings.http_port,
            shutdown_grace=settings.shutdown_grace_seconds, on_started=started,
            limits=HttpLimits.from_settings(settings),
        ))
        return
    asyncio.run(serve_app(
        app, settings.http_host, settings.http_port, ssl_context=ssl_context,
        shutdown_grace=settings.shutdown_grace_seconds, on_started=started,
        limits=HttpLimits.from_settings(settings),
    ))
