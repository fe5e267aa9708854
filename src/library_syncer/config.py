"""One settings model for every role.

Precedence: CLI flags > environment (the original container's names, e.g.
``SYNC_PEER``, ``LIBRARY_NAME``) > TOML file (``--config FILE``, keys are the
field names below) > defaults.  An invalid value raises :class:`ConfigError`
with one line naming the setting, where it came from and what is wrong.
"""

from __future__ import annotations

import os
import re
import tomllib
import zoneinfo
from pathlib import Path
from typing import Any, Literal

from cronsim import CronSim, CronSimError
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError

# rsync --bwlimit syntax: a number with an optional unit suffix (K=1024 bytes by default).
_BWLIMIT_RE = re.compile(r"^\d+(\.\d+)?([KMGkmg]([iI]?[bB])?)?$")


def _env(*names: str) -> Any:
    """Field alias: the environment variable name(s) a setting is read from."""
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every setting of every role; each command uses the ones it needs."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="forbid", validate_default=True
    )

    # --- library and web publishing -------------------------------------------------
    library: Path = Field(
        Path("/syncer/library"), validation_alias=_env("SYNCER_LIBRARY"),
        description="Library folder: exported by the server, published by the client",
    )
    library_name: str = Field(
        "Library", validation_alias=_env("LIBRARY_NAME"),
        description="Display name of the Content Library (lib.json name)",
    )
    library_browse: bool = Field(
        False, validation_alias=_env("LIBRARY_BROWSE"),
        description="Serve HTML directory listings of the library",
    )
    library_password_file: Path | None = Field(
        None, validation_alias=_env("LIBRARY_PASSWORD_FILE"),
        description="File holding the library password (HTTP Basic, user 'vcsp')",
    )
    library_password: SecretStr | None = Field(
        None, validation_alias=_env("LIBRARY_PASSWORD"),
        description="Library password (environment or TOML only, never a flag)",
    )
    http_host: str = Field(
        "0.0.0.0", validation_alias=_env("SYNCER_HTTP_HOST"),
        description="Address the web server listens on",
    )
    http_port: int = Field(
        8080, ge=1, le=65535, validation_alias=_env("SYNCER_HTTP_PORT"),
        description="Port the web server listens on",
    )
    https_port: int | None = Field(
        None, ge=1, le=65535, validation_alias=_env("SYNCER_HTTPS_PORT"),
        description="Port of HTTPS when TLS is on (unset: the web server port)",
    )
    tls_name: str | None = Field(
        None, validation_alias=_env("TLS_NAME"),
        description="Serve HTTPS for this host name (unset: plain HTTP)",
    )
    tls_custom_cert: bool = Field(
        False, validation_alias=_env("TLS_CUSTOM_CERT"),
        description="Use cert.pem/key.pem from the certs folder instead of ACME",
    )
    certs_dir: Path = Field(
        Path("/syncer/certs"), validation_alias=_env("SYNCER_CERTS_DIR"),
        description="Folder holding cert.pem and key.pem",
    )
    tls_cert: Path | None = Field(
        None, validation_alias=_env("SYNCER_TLS_CERT"),
        description="Certificate file (PEM); implies HTTPS (default: certs folder/cert.pem)",
    )
    tls_key: Path | None = Field(
        None, validation_alias=_env("SYNCER_TLS_KEY"),
        description="Private key file (PEM) for the certificate (default: certs folder/key.pem)",
    )
    shutdown_grace_seconds: float = Field(
        30, ge=0, validation_alias=_env("SYNCER_SHUTDOWN_GRACE"),
        description="Seconds running downloads may take to finish when the web server stops",
    )
    http_header_timeout_seconds: float = Field(
        10, gt=0, le=3600, validation_alias=_env("SYNCER_HTTP_HEADER_TIMEOUT"),
        description="Seconds a client may take to send a request's headers (from connecting or its first byte)",
    )
    http_idle_timeout_seconds: float = Field(
        75, gt=0, le=86400, validation_alias=_env("SYNCER_HTTP_IDLE_TIMEOUT"),
        description="Seconds an idle kept-alive web connection stays open",
    )
    http_max_connections: int = Field(
        512, ge=1, le=1_000_000, validation_alias=_env("SYNCER_HTTP_MAX_CONNECTIONS"),
        description="Open web connections in total; more are closed at once",
    )
    http_max_per_client: int = Field(
        64, ge=1, le=1_000_000, validation_alias=_env("SYNCER_HTTP_MAX_PER_CLIENT"),
        description="Open web connections per client address; more are closed at once",
    )

    # --- automatic HTTPS (TLS_NAME without TLS_CUSTOM_CERT: Caddy in front, ACME) ------
    acme_ca: str | None = Field(
        None, validation_alias=_env("SYNCER_ACME_CA"),
        description="ACME directory URL for automatic certificates (unset: Caddy's default public CAs)",
    )
    acme_email: str | None = Field(
        None, validation_alias=_env("SYNCER_ACME_EMAIL"),
        description="Contact e-mail given to the ACME CA",
    )
    acme_ca_root: Path | None = Field(
        None, validation_alias=_env("SYNCER_ACME_CA_ROOT"),
        description="PEM file of the CA that signs the ACME server's own TLS certificate (private ACME CAs)",
    )
    acme_http_port: int = Field(
        80, ge=1, le=65535, validation_alias=_env("SYNCER_ACME_HTTP_PORT"),
        description="Port of the plain-HTTP listener for ACME HTTP challenges and redirects to HTTPS",
    )

    # --- operability: status page, API, metrics, health, webhook, fleet view ---------
    admin_token_file: Path | None = Field(
        None, validation_alias=_env("SYNCER_ADMIN_TOKEN_FILE"),
        description="File holding the admin token for the status page, API and on-demand syncs",
    )
    admin_token: SecretStr | None = Field(
        None, validation_alias=_env("SYNCER_ADMIN_TOKEN"),
        description="Admin token (environment or TOML only, never a flag)",
    )
    status_port: int | None = Field(
        None, ge=1, le=65535, validation_alias=_env("SYNCER_STATUS_PORT"),
        description="Serve /_syncer/ (status, API, metrics, health) on this port only (unset: the library port)",
    )
    stale_after_seconds: int = Field(
        8 * 86400, ge=1, validation_alias=_env("SYNCER_STALE_AFTER"),
        description="/readyz fails when the last successful sync is older than this",
    )
    webhook_url: str | None = Field(
        None, validation_alias=_env("SYNCER_WEBHOOK_URL"),
        description="URL POSTed a small JSON document when a sync fails and when it recovers",
    )
    fleet_host: str = Field(
        "0.0.0.0", validation_alias=_env("SYNCER_FLEET_HOST"),
        description="Address of the server's fleet view, metrics and health web server",
    )
    fleet_port: int | None = Field(
        None, ge=1, le=65535, validation_alias=_env("SYNCER_FLEET_PORT"),
        description="Port of the server's fleet view, metrics and health web server (unset: none)",
    )
    site_silent_after_seconds: int = Field(
        8 * 86400, ge=1, validation_alias=_env("SYNCER_SITE_SILENT_AFTER"),
        description="The fleet view flags a site not seen for longer than this",
    )

    # --- general ----------------------------------------------------------------------
    tz: str | None = Field(None, validation_alias=_env("TZ"), description="Time zone of the schedule")
    state_dir: Path | None = Field(
        None, validation_alias=_env("SYNCER_STATE_DIR"),
        description="Folder for host keys, pinned host keys, caches and status "
        "(default: /var/lib/library-syncer as root, else ~/.local/state/library-syncer)",
    )
    log_format: Literal["text", "json"] = Field(
        "text", validation_alias=_env("SYNCER_LOG_FORMAT"), description="Log line format"
    )

    # --- server role ------------------------------------------------------------------
    keys_dir: Path = Field(
        Path("/syncer/ssh"), validation_alias=_env("SYNCER_KEYS_DIR"),
        description="Folder of site public keys (*.pub) the server authorizes",
    )
    ssh_host: str = Field(
        "0.0.0.0", validation_alias=_env("SYNCER_SSH_HOST"),
        description="Address sshd listens on",
    )
    ssh_port: int = Field(
        2222, ge=1, le=65535, validation_alias=_env("SYNCER_SSH_PORT"),
        description="Port sshd listens on",
    )
    syncer_uid: int = Field(
        31337, ge=1, le=2**31 - 1, validation_alias=_env("SYNCER_UID"),
        description="UID of the 'syncer' account created in root mode",
    )
    syncer_user: str = Field(
        "syncer", pattern=r"^[a-z_][a-z0-9_-]{0,31}$", validation_alias=_env("SYNCER_USER"),
        description="Account the sites log in as in root mode (created with SYNCER_UID if missing)",
    )
    unprivileged: bool = Field(
        False, validation_alias=_env("SYNCER_UNPRIVILEGED"),
        description="Run sshd as the current user (no account created), even as root",
    )
    allow_old_rsync: bool = Field(
        False, validation_alias=_env("SYNCER_ALLOW_OLD_RSYNC"),
        description="Start even if rsync is older than 3.5.0 (known security fixes missing)",
    )

    # --- client role ------------------------------------------------------------------
    sync_peer: str | None = Field(
        None, validation_alias=_env("SYNC_PEER"), description="Server host name or address"
    )
    sync_port: int = Field(
        2222, ge=1, le=65535, validation_alias=_env("SYNC_PORT"), description="Server SSH port"
    )
    sync_user: str = Field(
        "syncer", validation_alias=_env("SYNC_USER"), description="Account on the server"
    )
    sync_key: Path | None = Field(
        None, validation_alias=_env("SYNC_KEY"),
        description="Site private key (default: keys folder/id_ed25519)",
    )
    sync_host_key: str | None = Field(
        None, validation_alias=_env("SYNC_HOST_KEY"),
        description="Server host key to pin ('ssh-ed25519 AAAA...'); unset: trust on first use",
    )
    sync_known_hosts: Path | None = Field(
        None, validation_alias=_env("SYNC_KNOWN_HOSTS"),
        description="known_hosts file holding the server's pinned host key",
    )
    sync_schedule: str = Field(
        "0 21 * * 5", validation_alias=_env("SYNC_SCHEDULE"),
        description="Cron expression of the scheduled syncs (in TZ)",
    )
    sync_delay: bool = Field(
        False, validation_alias=_env("SYNC_DELAY"),
        description="Wait a random delay before each scheduled sync",
    )
    sync_delay_max_seconds: int = Field(
        21600, ge=0, validation_alias=_env("SYNC_DELAY_MAX_SECONDS"),
        description="Upper bound of the random delay, in seconds",
    )
    sync_max_bw: str = Field(
        "0", validation_alias=_env("SYNC_MAX_BW", "SYNC_MAX_KBPS"),
        description="Bandwidth cap in rsync --bwlimit syntax (KiB/s, or e.g. 1.5m); 0 = unlimited",
    )
    sync_timeout: int = Field(
        300, ge=10, validation_alias=_env("SYNC_TIMEOUT"),
        description="Seconds without I/O after which a transfer is abandoned and retried",
    )
    sync_connect_timeout: int = Field(
        30, ge=1, validation_alias=_env("SYNC_CONNECT_TIMEOUT"),
        description="Seconds allowed to connect to the server",
    )
    sync_retry_deadline: int = Field(
        4 * 3600, ge=0, validation_alias=_env("SYNC_RETRY_DEADLINE"),
        description="Seconds a sync keeps retrying before it gives up until the next run",
    )
    sync_delete_guard: float = Field(
        0.5, ge=0.0, le=1.0, validation_alias=_env("SYNC_DELETE_GUARD"),
        description="Refuse a sync that removes more than this share of the published items",
    )
    sync_allow_mass_delete: bool = Field(
        False, validation_alias=_env("SYNC_ALLOW_MASS_DELETE"),
        description="Allow a sync to remove more items than the delete guard permits",
    )
    generation_grace_seconds: int = Field(
        3600, ge=0, validation_alias=_env("SYNCER_GENERATION_GRACE"),
        description="Seconds an unpublished generation is kept for downloads still running",
    )

    # --- validators -------------------------------------------------------------------
    @field_validator("library_name")
    @classmethod
    def _name_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("tz")
    @classmethod
    def _valid_tz(cls, v: str | None) -> str | None:
        if v:
            try:
                zoneinfo.ZoneInfo(v.lstrip(":"))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r}") from None
        return v or None

    @field_validator("sync_schedule")
    @classmethod
    def _valid_cron(cls, v: str) -> str:
        from datetime import datetime

        try:
            CronSim(v, datetime(2000, 1, 1))
        except (CronSimError, ValueError) as exc:
            raise ValueError(f"not a valid cron expression ({exc})") from None
        return v

    @field_validator("sync_max_bw")
    @classmethod
    def _valid_bwlimit(cls, v: str) -> str:
        v = str(v).strip()
        if not _BWLIMIT_RE.match(v):
            raise ValueError("expected rsync --bwlimit syntax such as 0, 500, 1.5m or 2M")
        return v

    @field_validator("webhook_url", "acme_ca")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v or None

    @field_validator("sync_peer", "tls_name")
    @classmethod
    def _no_blank_host(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(c.isspace() for c in v)):
            raise ValueError("must be a host name or address without spaces")
        return v or None

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # TOML values are passed in through init kwargs underneath the CLI (see load_settings).
        return (init_settings, env_settings)

    # --- derived values ---------------------------------------------------------------
    def resolved_state_dir(self) -> Path:
        """The state folder, defaulting by whether we run as root."""
        if self.state_dir is not None:
            return self.state_dir
        if os.geteuid() == 0:
            return Path("/var/lib/library-syncer")
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "library-syncer"

    def library_password_value(self) -> str | None:
        """The library password from the file or the setting, or None when unset."""
        return self._secret("library_password_file", self.library_password_file, self.library_password)

    def admin_token_value(self) -> str | None:
        """The admin token from the file or the setting, or None when unset."""
        return self._secret("admin_token_file", self.admin_token_file, self.admin_token)

    @staticmethod
    def _secret(setting: str, path: Path | None, value: SecretStr | None) -> str | None:
        if path is not None:
            try:
                text = path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{setting} {path}: cannot read ({exc.strerror})") from None
            if not text:
                raise ConfigError(f"{setting} {path}: file is empty")
            return text
        return (value.get_secret_value() or None) if value is not None else None

    def tls_files(self) -> tuple[Path, Path] | None:
        """(certificate, key) when HTTPS with given files is configured, else None."""
        if self.tls_cert or self.tls_key or self.tls_custom_cert:
            return (self.tls_cert or self.certs_dir / "cert.pem", self.tls_key or self.certs_dir / "key.pem")
        return None


def env_names(field: str) -> list[str]:
    """Environment variable names a setting is read from."""
    alias = Settings.model_fields[field].validation_alias
    return [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else [field.upper()]


def _field_for(loc: str) -> str:
    for name in Settings.model_fields:
        if loc == name or loc.lower() in (n.lower() for n in env_names(name)):
            return name
    return loc


def load_settings(
    config_file: Path | None = None, flags: dict[str, str] | None = None, **cli: Any
) -> Settings:
    """Build the settings from CLI values (None = not given), environment and TOML file.

    ``flags`` maps field names to the CLI flag that set them, for error messages.
    """
    cli = {k: v for k, v in cli.items() if v is not None}
    toml: dict[str, Any] = {}
    if config_file is not None:
        try:
            toml = tomllib.loads(Path(config_file).read_text())
        except OSError as exc:
            raise ConfigError(f"config file {config_file}: cannot read ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file}: not valid TOML ({exc})") from None
        unknown = sorted(set(toml) - set(Settings.model_fields))
        if unknown:
            raise ConfigError(f"config file {config_file}: unknown setting {unknown[0]!r}")
    env_set = {f for f in Settings.model_fields if any(n.upper() in _environ_upper() for n in env_names(f))}
    # Lowest first: TOML, then environment (applied by pydantic-settings), then CLI on top.
    init = {k: v for k, v in toml.items() if k not in env_set}
    init.update(cli)
    try:
        # Passed by alias: matching by field name would also let pydantic-settings read
        # unrelated environment variables such as HTTP_PORT.
        return Settings(**{env_names(k)[0]: v for k, v in init.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _field_for(str(err["loc"][0])) if err["loc"] else "?"
        if field in cli:
            source = (flags or {}).get(field) or f"--{field.replace('_', '-')}"
        elif field in env_set:
            source = "environment " + "/".join(n for n in env_names(field) if n.upper() in _environ_upper())
        elif field in toml:
            source = f"config file {config_file}"
        else:
            source = "default"
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if "password" in field or "token" in field or isinstance(value, dict) else f" (got {value!r})"
        raise ConfigError(f"setting {field} from {source}: {msg}{shown}") from None


def _environ_upper() -> set[str]:
    return {k.upper() for k in os.environ}
