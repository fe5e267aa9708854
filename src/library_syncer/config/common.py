"""Shared pieces of the settings groups: environment aliases, secret files, common checks,
and the groups every long-running role uses (folders, admin token, log format)."""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic.fields import FieldInfo

from ..errors import ConfigError


def env(*names: str) -> Any:
    """Field alias: the environment variable name(s) a setting is read from."""
    return AliasChoices(*names)


def is_secret(info: FieldInfo) -> bool:
    """A secret setting (``SecretStr``): read from the environment or TOML only, never a flag."""
    return info.annotation is SecretStr or SecretStr in typing.get_args(info.annotation)


def read_secret(setting: str, path: Path | None, value: SecretStr | None) -> str | None:
    """The secret from ``path`` when set (ConfigError naming ``setting`` if unusable), else ``value``."""
    if path is not None:
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{setting} {path}: cannot read ({exc.strerror})") from None
        if not text:
            raise ConfigError(f"{setting} {path}: file is empty")
        return text
    return (value.get_secret_value() or None) if value is not None else None


def check_host_name(v: str | None) -> str | None:
    """A host name or address without spaces; empty means unset."""
    if v is not None and (not v.strip() or any(c.isspace() for c in v)):
        raise ValueError("must be a host name or address without spaces")
    return v or None


def check_http_url(v: str | None) -> str | None:
    """An http:// or https:// URL; empty means unset."""
    if v and not re.match(r"^https?://[^\s/]+", v):
        raise ValueError("must be an http:// or https:// URL")
    return v or None


class StateSettings(BaseModel):
    """Folders: the library, the state folder and the keys folder."""

    library: Path = Field(
        Path("/syncer/library"), validation_alias=env("SYNCER_LIBRARY"),
        description="Library folder: exported by the server, published by the client",
    )
    state_dir: Path | None = Field(
        None, validation_alias=env("SYNCER_STATE_DIR"),
        description="Folder for host keys, pinned host keys, caches and status "
        "(default: /var/lib/library-syncer as root, else ~/.local/state/library-syncer)",
    )
    keys_dir: Path = Field(
        Path("/syncer/ssh"), validation_alias=env("SYNCER_KEYS_DIR"),
        description="Folder of site public keys (*.pub) the server authorizes",
    )

    def resolved_state_dir(self) -> Path:
        """The state folder, defaulting by whether we run as root."""
        if self.state_dir is not None:
            return self.state_dir
        if os.geteuid() == 0:
            return Path("/var/lib/library-syncer")
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "library-syncer"


class AdminSettings(BaseModel):
    """Admin token: guards the status page, the API, on-demand syncs and the fleet view."""

    admin_token_file: Path | None = Field(
        None, validation_alias=env("SYNCER_ADMIN_TOKEN_FILE"),
        description="File holding the admin token for the status page, API and on-demand syncs",
    )
    admin_token: SecretStr | None = Field(
        None, validation_alias=env("SYNCER_ADMIN_TOKEN"),
        description="Admin token (environment or TOML only, never a flag)",
    )

    def admin_token_value(self) -> str | None:
        """The admin token from the file or the setting, or None when unset."""
        return read_secret("admin_token_file", self.admin_token_file, self.admin_token)


class LogSettings(BaseModel):
    """Logging."""

    log_format: Literal["text", "json"] = Field(
        "text", validation_alias=env("SYNCER_LOG_FORMAT"), description="Log line format"
    )
