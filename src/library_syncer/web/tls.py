"""HTTPS for the library: load a given certificate and key; the SHA-1 thumbprint vCenter pins."""

from __future__ import annotations

import hashlib
import re
import ssl
from pathlib import Path

from ..errors import ConfigError

_PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except IsADirectoryError:
        raise ConfigError(f"{what} {path}: is a folder, expected a PEM file") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc.strerror})") from None


def _first_cert_pem(cert: Path) -> str:
    match = _PEM_CERT_RE.search(_read(cert, "TLS certificate"))
    if not match:
        raise ConfigError(f"TLS certificate {cert}: no PEM certificate in the file")
    return match.group(0)


def sha1_thumbprint(cert: Path) -> str:
    """SHA-1 of the (first) certificate in a PEM file, as vCenter shows it: ``AB:CD:…``."""
    pem = _first_cert_pem(cert)
    try:
        der = ssl.PEM_cert_to_DER_cert(pem)
    except ValueError:
        raise ConfigError(f"TLS certificate {cert}: not a valid PEM certificate") from None
    return format_thumbprint(der)


def format_thumbprint(der: bytes) -> str:
    """SHA-1 of a DER certificate as vCenter shows it: ``AB:CD:…``."""
    digest = hashlib.sha1(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def load_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server SSLContext for ``cert`` and ``key``; a bad file raises ConfigError naming it."""
    pem = _first_cert_pem(cert)
    try:  # the certificate alone first, so that a broken one is not blamed on the key
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError):
        raise ConfigError(f"TLS certificate {cert}: not a valid PEM certificate") from None
    key_text = _read(key, "TLS key")
    if "PRIVATE KEY-----" not in key_text:
        raise ConfigError(f"TLS key {key}: no PEM private key in the file")
    if "ENCRYPTED" in key_text:
        raise ConfigError(f"TLS key {key}: the key is protected by a passphrase; give an unencrypted key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key), password=lambda: b"")
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise ConfigError(f"TLS key {key}: does not match the certificate {cert}") from None
        raise ConfigError(f"TLS key {key}: not a valid PEM private key ({exc.reason or exc})") from None
    except OSError as exc:
        raise ConfigError(f"TLS certificate {cert} or key {key}: cannot read ({exc.strerror})") from None
    return ctx
