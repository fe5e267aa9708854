"""The site's start-up checks, run by the client command before the daemon is built.

Each problem is one ConfigError line naming the setting: a library folder that
cannot be used, an unusable host-key file (the sync plan's own checks, without
network), incomplete vCenter settings, a web port that cannot be bound, or Caddy missing
where it terminates HTTPS.
"""

from __future__ import annotations

import errno
import shutil
import socket

from ..config import Settings
from ..errors import ConfigError
from ..sync.plan import prepare
from ..vcenter.trust import tls_trust


def check_start(settings: Settings) -> None:
    """The start-up checks, before anything starts: ConfigError (one line naming the setting) for a library
    folder that cannot be used, an unusable host-key file, an incomplete vCenter setting or a web port
    that cannot be bound."""
    settings.require_vcenter()  # the vCenter to tell: user, library, a readable password file
    if settings.vcenter_enabled():
        tls_trust(settings.vcenter_ca_file, settings.vcenter_thumbprint)  # a CA file that loads
    if settings.tls_files() and settings.tls_front == "caddy" and shutil.which("caddy") is None:
        raise ConfigError("setting tls_front (SYNCER_TLS_FRONT=caddy): HTTPS with a certificate file through Caddy "
                          "needs the caddy program: install the Debian package 'caddy', or set SYNCER_TLS_FRONT=python")
    prepare(settings, startup=True)  # no network; the site key may be installed later
    acme = bool(settings.tls_name) and not settings.tls_files()
    check_ports(settings.http_host, listen_ports(settings, acme=acme))


def listen_ports(settings: Settings, *, acme: bool) -> list[tuple[str, int]]:
    """(setting, port) of every TCP port the site's web servers (or Caddy in front) listen on."""
    s = settings
    if acme:
        ports = [("https_port" if s.https_port else "http_port", s.https_port or s.http_port),
                 ("acme_http_port", s.acme_http_port)]
    elif s.tls_files() and s.https_port:
        ports = [("https_port", s.https_port)] + ([("http_port", s.http_port)] if s.http_port != s.https_port else [])
    else:
        ports = [("http_port", s.http_port)]
    return ports + ([("status_port", s.status_port)] if s.status_port else [])


def check_ports(host: str, ports: list[tuple[str, int]]) -> None:
    """ConfigError (one line naming the setting) unless every port can be bound on ``host`` now."""
    seen: dict[int, str] = {}
    for setting, port in ports:
        if port and port in seen:
            raise ConfigError(f"settings {seen[port]} and {setting} are both port {port}")
        seen[port] = setting
        try:
            addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise ConfigError(f"setting http_host: cannot resolve {host!r} ({exc.strerror})") from None
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as exc:
                    if exc.errno == errno.EADDRNOTAVAIL:
                        raise ConfigError(f"setting http_host: cannot listen on {address[0]}, not an address "
                                          f"of this host ({exc.strerror})") from None
                    raise ConfigError(f"setting {setting}: cannot listen on {address[0]} port {port} "
                                      f"({exc.strerror})") from None
