"""Settings groups of the primary site: its sshd and its fleet view."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from ..errors import ConfigError

from .common import env


class ServerSettings(BaseModel):
    """Server: the sshd the sites pull from and the account they log in as."""

    ssh_host: str = Field(
        "0.0.0.0", validation_alias=env("SYNCER_SSH_HOST"),
        description="Address sshd listens on",
    )
    ssh_port: int = Field(
        2222, ge=1, le=65535, validation_alias=env("SYNCER_SSH_PORT"),
        description="Port sshd listens on",
    )
    syncer_uid: int = Field(
        31337, ge=1, le=2**31 - 1, validation_alias=env("SYNCER_UID"),
        description="UID of the 'syncer' account created in root mode",
    )
    syncer_user: str = Field(
        "syncer", pattern=r"^[a-z_][a-z0-9_-]{0,31}$", validation_alias=env("SYNCER_USER"),
        description="Account the sites log in as in root mode (created with SYNCER_UID if missing)",
    )
    unprivileged: bool = Field(
        False, validation_alias=env("SYNCER_UNPRIVILEGED"),
        description="Run sshd as the current user (no account created), even as root",
    )
    allow_old_rsync: bool = Field(
        False, validation_alias=env("SYNCER_ALLOW_OLD_RSYNC"),
        description="Start even if rsync is older than 3.5.0 (known security fixes missing)",
    )


class OriginSettings(BaseModel):
    """Origin manifest: the primary's record of what it exports, the version sites compare."""

    origin_refresh_seconds: int = Field(
        60, ge=1, validation_alias=env("SYNCER_ORIGIN_REFRESH"),
        description="Seconds between rescans of the library for the origin manifest (files written "
        "more recently are read at the next one)",
    )


class RelaySettings(BaseModel):
    """Relay: a site that also serves the generation it publishes to the sites behind it."""

    relay_keys_dir: Path | None = Field(
        None, validation_alias=env("SYNCER_RELAY_KEYS_DIR"),
        description="Folder of the public keys (*.pub) of the sites a relay serves",
    )

    def require_relay_keys(self) -> Path:
        """The relay's site keys folder; ConfigError (one line) when unset."""
        if self.relay_keys_dir is None:
            raise ConfigError("setting relay_keys_dir (SYNCER_RELAY_KEYS_DIR / --relay-keys-dir) is required "
                              "for a relay: the folder of the public keys of the sites it serves")
        return self.relay_keys_dir


class FleetSettings(BaseModel):
    """Fleet view: the server's web page, metrics and health of its sites."""

    fleet_host: str = Field(
        "0.0.0.0", validation_alias=env("SYNCER_FLEET_HOST"),
        description="Address of the server's fleet view, metrics and health web server",
    )
    fleet_port: int | None = Field(
        None, ge=1, le=65535, validation_alias=env("SYNCER_FLEET_PORT"),
        description="Port of the server's fleet view, metrics and health web server (unset: none)",
    )
    site_silent_after_seconds: int = Field(
        8 * 86400, ge=1, validation_alias=env("SYNCER_SITE_SILENT_AFTER"),
        description="The fleet view flags a site not seen for longer than this",
    )
