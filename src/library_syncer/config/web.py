"""Settings groups of publishing over HTTP(S): the web server, TLS, automatic HTTPS, site operability."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from .common import check_host_name, check_http_url, env, read_secret


class WebSettings(BaseModel):
    """Web server: address, ports, library access and connection limits."""

    http_host: str = Field(
        "0.0.0.0", validation_alias=env("SYNCER_HTTP_HOST"),
        description="Address the web server listens on",
    )
    http_port: int = Field(
        8080, ge=1, le=65535, validation_alias=env("SYNCER_HTTP_PORT"),
        description="Port the web server listens on",
    )
    https_port: int | None = Field(
        None, ge=1, le=65535, validation_alias=env("SYNCER_HTTPS_PORT"),
        description="Port of HTTPS when TLS is on (unset: the web server port)",
    )
    library_browse: bool = Field(
        False, validation_alias=env("LIBRARY_BROWSE"),
        description="Serve HTML directory listings of the library",
    )
    library_password_file: Path | None = Field(
        None, validation_alias=env("LIBRARY_PASSWORD_FILE"),
        description="File holding the library password (HTTP Basic, user 'vcsp')",
    )
    library_password: SecretStr | None = Field(
        None, validation_alias=env("LIBRARY_PASSWORD"),
        description="Library password (environment or TOML only, never a flag)",
    )
    http_header_timeout_seconds: float = Field(
        10, gt=0, le=3600, validation_alias=env("SYNCER_HTTP_HEADER_TIMEOUT"),
        description="Seconds a client may take to send a request's headers (from connecting or its first byte)",
    )
    http_idle_timeout_seconds: float = Field(
        75, gt=0, le=86400, validation_alias=env("SYNCER_HTTP_IDLE_TIMEOUT"),
        description="Seconds an idle kept-alive web connection stays open",
    )
    http_max_connections: int = Field(
        512, ge=1, le=1_000_000, validation_alias=env("SYNCER_HTTP_MAX_CONNECTIONS"),
        description="Open web connections in total; more are closed at once",
    )
    http_max_per_client: int = Field(
        64, ge=1, le=1_000_000, validation_alias=env("SYNCER_HTTP_MAX_PER_CLIENT"),
        description="Open web connections per client address; more are closed at once",
    )

    def library_password_value(self) -> str | None:
        """The library password from the file or the setting, or None when unset."""
        return read_secret("library_password_file", self.library_password_file, self.library_password)


class ShutdownSettings(BaseModel):
    """Stopping a web server: the grace of running downloads."""

    # A flag of serve only; the client reads it from the environment or the TOML file.

    shutdown_grace_seconds: float = Field(
        30, ge=0, validation_alias=env("SYNCER_SHUTDOWN_GRACE"),
        description="Seconds running downloads may take to finish when the web server stops",
    )


class TlsSettings(BaseModel):
    """HTTPS: the host name, or certificate files."""

    tls_name: str | None = Field(
        None, validation_alias=env("TLS_NAME"),
        description="Serve HTTPS for this host name (unset: plain HTTP)",
    )
    tls_custom_cert: bool = Field(
        False, validation_alias=env("TLS_CUSTOM_CERT"),
        description="Use cert.pem/key.pem from the certs folder instead of ACME",
    )
    certs_dir: Path = Field(
        Path("/syncer/certs"), validation_alias=env("SYNCER_CERTS_DIR"),
        description="Folder holding cert.pem and key.pem",
    )
    tls_cert: Path | None = Field(
        None, validation_alias=env("SYNCER_TLS_CERT"),
        description="Certificate file (PEM); implies HTTPS (default: certs folder/cert.pem)",
    )
    tls_key: Path | None = Field(
        None, validation_alias=env("SYNCER_TLS_KEY"),
        description="Private key file (PEM) for the certificate (default: certs folder/key.pem)",
    )
    tls_front: Literal["caddy", "python"] = Field(
        "caddy", validation_alias=env("SYNCER_TLS_FRONT"),
        description="HTTPS with certificate files: caddy (Caddy in front terminates TLS and sends the library "
        "files; needs the caddy program) or python (the web server itself, one process)",
    )

    @field_validator("tls_name")
    @classmethod
    def _tls_name_host(cls, v: str | None) -> str | None:
        return check_host_name(v)

    def tls_files(self) -> tuple[Path, Path] | None:
        """(certificate, key) when HTTPS with given files is configured, else None."""
        if self.tls_cert or self.tls_key or self.tls_custom_cert:
            return (self.tls_cert or self.certs_dir / "cert.pem", self.tls_key or self.certs_dir / "key.pem")
        return None


class AcmeSettings(BaseModel):
    """Automatic HTTPS (TLS_NAME without certificate files: Caddy in front, ACME)."""

    acme_ca: str | None = Field(
        None, validation_alias=env("SYNCER_ACME_CA"),
        description="ACME directory URL for automatic certificates (unset: Caddy's default public CAs)",
    )
    acme_email: str | None = Field(
        None, validation_alias=env("SYNCER_ACME_EMAIL"),
        description="Contact e-mail given to the ACME CA",
    )
    acme_ca_root: Path | None = Field(
        None, validation_alias=env("SYNCER_ACME_CA_ROOT"),
        description="PEM file of the CA that signs the ACME server's own TLS certificate (private ACME CAs)",
    )
    acme_http_port: int = Field(
        80, ge=1, le=65535, validation_alias=env("SYNCER_ACME_HTTP_PORT"),
        description="Port of the plain-HTTP listener for ACME HTTP challenges and redirects to HTTPS",
    )

    @field_validator("acme_ca")
    @classmethod
    def _acme_ca_url(cls, v: str | None) -> str | None:
        return check_http_url(v)


class OpsSettings(BaseModel):
    """Site operability: the /_syncer/ port, readiness and the failure webhook."""

    status_port: int | None = Field(
        None, ge=1, le=65535, validation_alias=env("SYNCER_STATUS_PORT"),
        description="Serve /_syncer/ (status, API, metrics, health) on this port only (unset: the library port)",
    )
    stale_after_seconds: int = Field(
        8 * 86400, ge=1, validation_alias=env("SYNCER_STALE_AFTER"),
        description="/readyz fails when the last successful sync is older than this",
    )
    webhook_url: str | None = Field(
        None, validation_alias=env("SYNCER_WEBHOOK_URL"),
        description="URL POSTed a small JSON document when a sync fails and when it recovers",
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url_http(cls, v: str | None) -> str | None:
        return check_http_url(v)
