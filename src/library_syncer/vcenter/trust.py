"""How the site trusts vCenter's TLS certificate: a pinned thumbprint, a CA file or the system's CAs.

A thumbprint pins the certificate itself (what vCenter's own UI and ``govc about.cert`` show), so
the chain and the host name are not checked; the pin is checked on each new connection before
anything (the password included) is sent on it.  SHA-256 and SHA-1 pins are both accepted:
vCenter is commonly identified by its SHA-1 thumbprint.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path

import aiohttp

from ..errors import ConfigError


class Thumbprint(aiohttp.Fingerprint):
    """aiohttp's certificate pin, for a SHA-256 or a SHA-1 digest of the server's certificate (DER)."""

    def __init__(self, thumbprint: str) -> None:  # noqa: D107 (the parent's sha256-only check is replaced)
        digest = bytes.fromhex(thumbprint.replace(":", ""))
        self._algorithm = {20: "sha1", 32: "sha256"}[len(digest)]
        self._digest = digest

    @property
    def fingerprint(self) -> bytes:
        return self._digest

    def check(self, transport: asyncio.Transport) -> None:
        """Raise :class:`aiohttp.ServerFingerprintMismatch` unless the peer's certificate has the pinned digest."""
        sslobj = transport.get_extra_info("ssl_object")
        cert = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        got = hashlib.new(self._algorithm, cert).digest() if cert else b""
        if got != self._digest:
            host, port, *_ = transport.get_extra_info("peername") or ("?", 0)
            raise aiohttp.ServerFingerprintMismatch(self._digest, got, host, port)


def tls_trust(ca_file: Path | None, thumbprint: str | None) -> ssl.SSLContext | Thumbprint:
    """The ``ssl`` argument of the vCenter requests; ConfigError (one line) for an unusable CA file."""
    if thumbprint:
        return Thumbprint(thumbprint)
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except FileNotFoundError:
            raise ConfigError(f"setting vcenter_ca_file {ca_file}: no such file") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"setting vcenter_ca_file {ca_file}: not a PEM CA certificate "
                              f"({getattr(exc, 'reason', None) or exc.strerror or exc})") from None
    return context


def describe_trust(ca_file: Path | None, thumbprint: str | None) -> str:
    """How vCenter's certificate is trusted, for the status page."""
    if thumbprint:
        return f"{'SHA-1' if len(thumbprint) == 59 else 'SHA-256'} thumbprint {thumbprint}"
    return f"CA file {ca_file}" if ca_file else "the system's CAs"
