"""The flat settings model, composed from the role groups, and each role's groups.

``Settings`` inherits every group, so the flat names (``settings.sync_peer``), the
TOML keys and ``Settings.model_fields`` stay one namespace.  A role's command gets a
flag for every field of its groups (secrets excepted, see :func:`flag_fields`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .common import AdminSettings, LogSettings, StateSettings, is_secret
from .server import FleetSettings, OriginSettings, RelaySettings, ServerSettings
from .sync import PublishSettings, ScheduleSettings, SyncSettings
from .web import AcmeSettings, OpsSettings, ShutdownSettings, TlsSettings, WebSettings
from .vcenter import VcenterSettings

Group = type[BaseModel]

# Every group, in the order of the README's configuration table.
GROUPS: tuple[Group, ...] = (
    StateSettings, ServerSettings, OriginSettings, RelaySettings, FleetSettings, AdminSettings, SyncSettings, PublishSettings,
    ScheduleSettings, WebSettings, TlsSettings, AcmeSettings, OpsSettings, VcenterSettings, ShutdownSettings,
    LogSettings,
)

# The groups of each role: its command has a flag for each of their fields.
SERVER_GROUPS: tuple[Group, ...] = (StateSettings, ServerSettings, OriginSettings, FleetSettings, AdminSettings)
SYNC_GROUPS: tuple[Group, ...] = (StateSettings, SyncSettings, PublishSettings)
CLIENT_GROUPS: tuple[Group, ...] = SYNC_GROUPS + (
    ScheduleSettings, WebSettings, TlsSettings, AcmeSettings, OpsSettings, VcenterSettings, AdminSettings,
)
RELAY_GROUPS: tuple[Group, ...] = CLIENT_GROUPS + (ServerSettings, RelaySettings)


# Bases are listed last group first: pydantic orders inherited fields from the last base on,
# so model_fields follows GROUPS.
class Settings(
    LogSettings, ShutdownSettings, VcenterSettings,
    OpsSettings, AcmeSettings, TlsSettings, WebSettings, ScheduleSettings,
    PublishSettings, SyncSettings, AdminSettings, FleetSettings, RelaySettings, OriginSettings, ServerSettings,
    StateSettings,
    BaseSettings,
):
    """Every setting of every role; each command uses the ones it needs."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="forbid", validate_default=True)

    def site_key(self) -> Path:
        """The site's private key as set: SYNC_KEY, else KEYS_DIR/id_ed25519."""
        return self.sync_key or self.keys_dir / "id_ed25519"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # TOML values are passed in through init kwargs underneath the CLI (see load_settings).
        return (init_settings, env_settings)


def flag_fields(*groups: Group) -> list[str]:
    """The fields of ``groups`` that have a command-line flag, in order: all but the secrets."""
    names: list[str] = []
    for group in groups:
        names += [n for n, info in group.model_fields.items() if not is_secret(info) and n not in names]
    return names
