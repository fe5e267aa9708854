"""What a sync needs, checked before anything runs: paths, the rsync source, the remote shell and the pin."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import Settings
from ..errors import ConfigError
from ..publish.generations import Layout
from ..transport import rsync as rs
from ..transport import ssh


def source_items(entries: list[rs.ListEntry]) -> set[str]:
    """Item folder names in a top-level listing of the source."""
    return {e.name for e in entries if e.is_dir and not e.name.startswith(".")}


@dataclass(frozen=True)
class PeerPlan:
    """One upstream of the run: its rsync source and, over ssh, the ssh argv and ``user@host``."""

    name: str  # "host:port", or the local folder
    source: str
    ssh_argv: tuple[str, ...] | None = None
    destination: str = ""


@dataclass(frozen=True)
class SyncPlan:
    """Everything a run needs, checked: paths, the peers in the order they are tried, the pin."""

    layout: Layout
    peers: tuple[PeerPlan, ...]
    pin: ssh.HostKeyPin | None
    timeout: int
    max_bw: str
    connect_timeout: int = 30


def prepare(settings: Settings, *, source: str | None = None, startup: bool = False) -> SyncPlan:
    """Check the settings and files a sync needs; ConfigError (one line) on a problem.

    ``source`` replaces SYNC_PEER with a local folder or another rsync source.  In trust-on-first-use
    mode the peers' host keys are recorded now.  ``startup``: the daemon's start-up check, the
    library and host-key files only (no network; the site key may be installed later).
    """
    library = settings.library
    if library.exists() and not library.is_dir():
        raise ConfigError(f"setting library: {library} is not a folder")
    try:
        library.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"setting library: cannot create folder {library} ({exc.strerror})") from None
    if not os.access(library, os.W_OK | os.X_OK):
        why = " (read-only file system)" if os.statvfs(library).f_flag & os.ST_RDONLY else ""
        raise ConfigError(f"setting library: folder {library} is not writable{why}")
    lay = Layout(library)
    if source is not None:
        if "::" not in source and ":" not in source.split("/", 1)[0]:
            source = str(source).rstrip("/") + "/"
        return SyncPlan(lay, (PeerPlan(source, source),), None, settings.sync_timeout, settings.sync_max_bw)
    settings.require_peer()
    peers = settings.peers()
    key = settings.site_key()
    if not startup:
        key = ssh.usable_private_key(key, settings.resolved_state_dir())
    pin = ssh.pin_host_keys([(p.host, p.port) for p in peers], settings.resolved_state_dir(),
                            known_hosts=settings.sync_known_hosts, host_key=settings.sync_host_key)
    plans = []
    for peer in peers:
        if not startup:
            ssh.first_use(pin, peer.host, peer.port, timeout=settings.sync_connect_timeout)
        argv = ssh.ssh_command(port=peer.port, key=key, pin=pin, connect_timeout=settings.sync_connect_timeout,
                               timeout=settings.sync_timeout)
        plans.append(PeerPlan(str(peer), rs.remote_source(settings.sync_user, peer.host), tuple(argv),
                              f"{settings.sync_user}@{peer.host}"))
    return SyncPlan(lay, tuple(plans), pin, settings.sync_timeout, settings.sync_max_bw,
                    settings.sync_connect_timeout)
