"""Settings groups of syncing: the server to pull from, the schedule, publishing."""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from ..errors import ConfigError
from . import bwtable
from .common import check_host_name, env


@dataclass(frozen=True)
class Peer:
    """One upstream a site pulls from: a server or a relay."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


_PEER_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+))(?::(?P<port>\d{1,5}))?$")


def parse_peers(text: str, default_port: int) -> list[Peer]:
    """``relay-a:2222,relay-b,[2001:db8::1]:22,primary`` as peers; a bare IPv6 address is one host.

    ValueError naming the entry when one is empty, malformed, has a bad port or repeats.
    """
    peers: list[Peer] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            raise ValueError("has an empty entry (expected host, host:port or [IPv6]:port, comma-separated)")
        if entry.count(":") > 1 and not entry.startswith("["):
            peer = Peer(entry, default_port)
        else:
            m = _PEER_RE.match(entry)
            if not m:
                raise ValueError(f"entry {entry!r} is not host, host:port or [IPv6]:port")
            port = int(m["port"]) if m["port"] else default_port
            if not 1 <= port <= 65535:
                raise ValueError(f"entry {entry!r}: port {port} is not between 1 and 65535")
            peer = Peer(m["v6"] or m["host"], port)
        if peer in peers:
            raise ValueError(f"entry {entry!r} is listed twice")
        peers.append(peer)
    return peers


class PublishSettings(BaseModel):
    """Publishing: the library's name in its manifest and how long retired generations stay."""

    library_name: str = Field(
        "Library", validation_alias=env("LIBRARY_NAME"),
        description="Display name of the Content Library (lib.json name)",
    )
    generation_grace_seconds: int = Field(
        3600, ge=0, validation_alias=env("SYNCER_GENERATION_GRACE"),
        description="Seconds an unpublished generation is kept for downloads still running",
    )

    @field_validator("library_name")
    @classmethod
    def _library_name_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


class SyncSettings(BaseModel):
    """Sync: the server, its host key, the transfer's limits and the delete guard."""

    sync_peer: str | None = Field(
        None, validation_alias=env("SYNC_PEER"),
        description="Server (or relay) to pull from; a comma-separated list is tried in order "
        "(host, host:port, [IPv6]:port)",
    )
    sync_port: int = Field(
        2222, ge=1, le=65535, validation_alias=env("SYNC_PORT"), description="Server SSH port"
    )
    sync_user: str = Field(
        "syncer", validation_alias=env("SYNC_USER"), description="Account on the server"
    )
    sync_key: Path | None = Field(
        None, validation_alias=env("SYNC_KEY"),
        description="Site private key (default: keys folder/id_ed25519)",
    )
    sync_host_key: str | None = Field(
        None, validation_alias=env("SYNC_HOST_KEY"),
        description="Server host key to pin ('ssh-ed25519 AAAA...'); unset: trust on first use",
    )
    sync_known_hosts: Path | None = Field(
        None, validation_alias=env("SYNC_KNOWN_HOSTS"),
        description="known_hosts file holding the server's pinned host key",
    )
    sync_max_bw: str = Field(
        "0", validation_alias=env("SYNC_MAX_BW", "SYNC_MAX_KBPS"),
        description="Bandwidth cap in rsync --bwlimit syntax (KiB/s, or e.g. 1.5m; 0 = unlimited), or a "
        "timetable in TZ ('08:00,512k 18:00,off', 'Mon-08:00,1m Sat-00:00,pause'; off = unlimited, "
        "pause = no transfer)",
    )
    sync_compress: Literal["none", "zstd", "lz4", "zlib"] = Field(
        "zstd", validation_alias=env("SYNC_COMPRESS"),
        description="rsync's compression on the wire: zstd, lz4, zlib or none (zstd and lz4 need rsync 3.2 "
        "on both ends)",
    )
    sync_checksum: Literal["md5", "xxh128"] = Field(
        "xxh128", validation_alias=env("SYNC_CHECKSUM"),
        description="rsync's checksums: xxh128 (rsync's fast default; a changed file the primary's origin "
        "manifest vouches for is not read again, others once) or md5 (no changed file is read again, even "
        "from a server without an origin manifest; about 4x the server CPU per delta)",
    )
    sync_timeout: int = Field(
        300, ge=10, validation_alias=env("SYNC_TIMEOUT"),
        description="Seconds without I/O after which a transfer is abandoned and retried",
    )
    sync_connect_timeout: int = Field(
        30, ge=1, validation_alias=env("SYNC_CONNECT_TIMEOUT"),
        description="Seconds allowed to connect to the server",
    )
    sync_retry_deadline: int = Field(
        4 * 3600, ge=0, validation_alias=env("SYNC_RETRY_DEADLINE"),
        description="Seconds a sync keeps retrying before it gives up until the next run",
    )
    sync_delete_guard: float = Field(
        0.5, ge=0.0, le=1.0, validation_alias=env("SYNC_DELETE_GUARD"),
        description="Refuse a sync that removes more than this share of the published items",
    )
    sync_allow_mass_delete: bool = Field(
        False, validation_alias=env("SYNC_ALLOW_MASS_DELETE"),
        description="Allow a sync to remove more items than the delete guard permits",
    )
    sync_include: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=env("SYNC_INCLUDE"),
        description="Only items whose folder name matches one of these glob patterns (comma-separated)",
    )
    sync_exclude: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=env("SYNC_EXCLUDE"),
        description="Leave out items whose folder name matches one of these glob patterns (comma-separated)",
    )

    @field_validator("sync_include", "sync_exclude", mode="before")
    @classmethod
    def _item_patterns(cls, v: Any) -> tuple[str, ...]:
        items = v.split(",") if isinstance(v, str) else v
        if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) for p in items):
            raise ValueError("must be a list of glob patterns (TOML) or a comma-separated text")
        patterns = tuple(p.strip() for p in items if p.strip())
        for pattern in patterns:
            if "/" in pattern or "\\" in pattern or pattern.startswith("."):
                raise ValueError(f"pattern {pattern!r}: matches item folder names "
                                 "(no '/' or backslash, no leading '.')")
        return patterns

    @field_validator("sync_peer")
    @classmethod
    def _sync_peer_host(cls, v: str | None) -> str | None:
        v = check_host_name(v)
        if v:
            parse_peers(v, 22)
        return v

    @field_validator("sync_max_bw", mode="before")
    @classmethod
    def _sync_max_bw_syntax(cls, v: Any) -> str:
        v = bwtable.canonical(v)
        bwtable.parse(v)  # one line naming the entry when malformed
        return v

    def require_peer(self, purpose: str = "to sync") -> str:
        """The server(s) to sync from as set; ConfigError (one line) when SYNC_PEER is unset."""
        if not self.sync_peer:
            raise ConfigError(f"setting sync_peer (SYNC_PEER / --sync-peer) is required {purpose}")
        return self.sync_peer

    def peers(self) -> list[Peer]:
        """The peers of SYNC_PEER in the order they are tried (empty when unset)."""
        return parse_peers(self.sync_peer, self.sync_port) if self.sync_peer else []


class ScheduleSettings(BaseModel):
    """Schedule of the site's syncs: cron expression, time zone, random delay, the sync at start."""

    tz: str | None = Field(None, validation_alias=env("TZ"), description="Time zone of the schedule")
    sync_schedule: str = Field(
        "0 21 * * 5", validation_alias=env("SYNC_SCHEDULE"),
        description="Cron expression of the scheduled syncs (in TZ)",
    )
    sync_delay: bool = Field(
        False, validation_alias=env("SYNC_DELAY"),
        description="Wait a random delay before each scheduled sync",
    )
    sync_delay_max_seconds: int = Field(
        21600, ge=0, validation_alias=env("SYNC_DELAY_MAX_SECONDS"),
        description="Upper bound of the random delay, in seconds",
    )
    sync_skip_initial: bool = Field(
        False, validation_alias=env("SYNC_SKIP_INITIAL"),
        description="Skip the sync at start when a generation is already published (first start still syncs)",
    )

    @field_validator("tz")
    @classmethod
    def _tz_known(cls, v: str | None) -> str | None:
        if v:
            try:
                zoneinfo.ZoneInfo(v.lstrip(":"))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r}") from None
        return v or None

    @field_validator("sync_schedule")
    @classmethod
    def _sync_schedule_cron(cls, v: str) -> str:
        try:
            CronSim(v, datetime(2000, 1, 1))
        except (CronSimError, ValueError) as exc:
            raise ValueError(f"not a valid cron expression ({exc})") from None
        return v
