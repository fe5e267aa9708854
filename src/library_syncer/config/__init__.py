"""One settings model for every role, composed from role groups.

Precedence: CLI flags > environment (the original container's names, e.g.
``SYNC_PEER``, ``LIBRARY_NAME``) > TOML file (``--config FILE``, keys are the
field names) > defaults.  An invalid value raises :class:`ConfigError` with one
line naming the setting, where it came from and what is wrong.

Each group (``common``, ``sync``, ``web``, ``server``) holds the fields of one
concern with their environment names, defaults, descriptions and validators;
``model`` composes them into the flat :class:`Settings` and says which groups
each role's command takes; ``load`` merges the sources.
"""

from .common import AdminSettings, LogSettings, StateSettings, is_secret
from .load import env_names, load_settings
from .model import CLIENT_GROUPS, GROUPS, RELAY_GROUPS, SERVER_GROUPS, SYNC_GROUPS, Group, Settings, flag_fields
from .server import FleetSettings, RelaySettings, ServerSettings
from .sync import Peer, PublishSettings, ScheduleSettings, SyncSettings, parse_peers
from .web import AcmeSettings, OpsSettings, ShutdownSettings, TlsSettings, WebSettings
from .vcenter import VcenterSettings

__all__ = [
    "AcmeSettings", "AdminSettings", "CLIENT_GROUPS", "FleetSettings", "GROUPS", "Group", "LogSettings",
    "OpsSettings", "Peer", "PublishSettings", "RELAY_GROUPS", "RelaySettings", "SERVER_GROUPS", "SYNC_GROUPS", "ScheduleSettings", "ServerSettings",
    "Settings", "ShutdownSettings", "StateSettings", "SyncSettings", "TlsSettings", "WebSettings",
    "VcenterSettings",
    "env_names", "flag_fields", "is_secret", "load_settings", "parse_peers",
]
