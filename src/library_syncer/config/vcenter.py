"""Settings group of telling the site's vCenter to sync its subscribed library after a publication."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator

from ..errors import ConfigError
from .common import env, read_secret


def normal_thumbprint(v: str | None) -> str | None:
    """A SHA-256 (64 hex digits) or SHA-1 (40) certificate thumbprint as ``AB:CD:…``; empty means unset."""
    if not v:
        return None
    digits = re.sub(r"[\s:]", "", v)
    if not re.fullmatch(r"[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}", digits):
        raise ValueError("must be a SHA-256 (64 hex digits) or SHA-1 (40 hex digits) thumbprint, "
                         "with or without colons")
    digits = digits.upper()
    return ":".join(digits[i:i + 2] for i in range(0, len(digits), 2))


class VcenterSettings(BaseModel):
    """The site's vCenter: told to sync the subscribed library after each publication that changed something."""

    vcenter_url: str | None = Field(
        None, validation_alias=env("SYNCER_VCENTER_URL"),
        description="https://address of the site's vCenter, told to sync after a publication (unset: off)",
    )
    vcenter_user: str | None = Field(
        None, validation_alias=env("SYNCER_VCENTER_USER"),
        description="vCenter user allowed to sync the subscribed library (e.g. syncer@vsphere.local)",
    )
    vcenter_password_file: Path | None = Field(
        None, validation_alias=env("SYNCER_VCENTER_PASSWORD_FILE"),
        description="File holding the vCenter user's password (the password is never a setting of its own)",
    )
    vcenter_library: str | None = Field(
        None, validation_alias=env("SYNCER_VCENTER_LIBRARY"),
        description="Name or id of the subscribed library in vCenter that subscribes to this site",
    )
    vcenter_ca_file: Path | None = Field(
        None, validation_alias=env("SYNCER_VCENTER_CA_FILE"),
        description="PEM file of the CA(s) that sign vCenter's certificate (unset: the system's CAs)",
    )
    vcenter_thumbprint: str | None = Field(
        None, validation_alias=env("SYNCER_VCENTER_THUMBPRINT"),
        description="SHA-256 or SHA-1 thumbprint of vCenter's certificate: trust exactly it, no CA check",
    )

    @field_validator("vcenter_url")
    @classmethod
    def _vcenter_url_https(cls, v: str | None) -> str | None:
        if not v:
            return None
        parts = urlsplit(v)
        if (parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/") or parts.query
                or parts.username or any(c.isspace() for c in v)):
            raise ValueError("must be https://HOST or https://HOST:PORT (no path, no user)")
        try:
            parts.port
        except ValueError:
            raise ValueError("has a bad port") from None
        return f"https://{parts.netloc}"

    @field_validator("vcenter_password_file", "vcenter_ca_file", mode="before")
    @classmethod
    def _vcenter_file_unset(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("vcenter_user", "vcenter_library")
    @classmethod
    def _vcenter_text(cls, v: str | None) -> str | None:
        if v is not None and v.strip() != v:
            raise ValueError("must not start or end with spaces")
        return v or None

    @field_validator("vcenter_user")
    @classmethod
    def _vcenter_user_colon(cls, v: str | None) -> str | None:
        if v and ":" in v:
            raise ValueError("must not contain ':' (HTTP Basic user names cannot)")
        return v

    @field_validator("vcenter_thumbprint")
    @classmethod
    def _vcenter_thumbprint_hex(cls, v: str | None) -> str | None:
        return normal_thumbprint(v)

    def vcenter_enabled(self) -> bool:
        """True when the site tells a vCenter to sync (``vcenter_url`` is set)."""
        return self.vcenter_url is not None

    def vcenter_password_value(self) -> str:
        """The vCenter password from its file; ConfigError (one line) when unusable."""
        password = read_secret("vcenter_password_file", self.vcenter_password_file, None)
        if password is None:
            raise ConfigError("setting vcenter_password_file (SYNCER_VCENTER_PASSWORD_FILE) is required "
                              "with vcenter_url")
        return password

    def require_vcenter(self) -> None:
        """ConfigError (one line naming the setting) when vcenter_url is set without what it needs."""
        if not self.vcenter_enabled():
            return
        for name in ("vcenter_user", "vcenter_library"):
            if not getattr(self, name):
                raise ConfigError(f"setting {name} (SYNCER_{name.upper()}) is required with vcenter_url")
        self.vcenter_password_value()
        if self.vcenter_ca_file and self.vcenter_thumbprint:
            raise ConfigError("settings vcenter_ca_file and vcenter_thumbprint: set one, not both")
