"""What a sync run reports: its events (for progress lines and bars) and its :class:`SyncResult`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ..util.fmt import human_bytes


@dataclass(frozen=True)
class Phase:
    """A step of the run started: listing, guard, transfer, cleanup, manifest, publish, prune."""

    name: str
    detail: str = ""


@dataclass(frozen=True)
class AttemptStarted:
    """Transfer attempt ``number`` (1-based) started."""

    number: int


@dataclass(frozen=True)
class RetryScheduled:
    """Attempt ``attempt`` failed with a retryable error; the next one starts after ``delay`` seconds."""

    attempt: int
    delay: float
    reason: str


Event = Any  # Phase | AttemptStarted | RetryScheduled | rs.FileChange | rs.Progress | rs.RsyncStats


@dataclass
class SyncResult:
    """The outcome of one sync run (shown on the status page and by ``library-syncer sync``).

    ``kind``: ok, degraded (published, but some items were held back at their last
    good version: ``held_back`` maps each to the reason), config (bad setting), busy
    (another run holds the lock), guard (delete guard refused), fatal (not retryable),
    gave-up (retry deadline passed), stopped (asked to stop), error (unexpected failure).
    ``ok`` is True for ok and degraded: something good is published.
    """

    ok: bool
    reason: str
    started: datetime
    ended: datetime
    kind: str = "ok"
    attempts: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    literal_bytes: int = 0
    matched_bytes: int = 0
    files_changed: int = 0
    files_deleted: int = 0
    manifest_files_read: int = 0  # files the manifest step hashed (rsync's md5 spares the others)
    manifest_bytes_read: int = 0
    generation: int | None = None
    items: int = 0
    library_bytes: int = 0
    library_version: int | None = None
    problems: list[str] = field(default_factory=list)
    held_back: dict[str, str] = field(default_factory=dict)
    filtered_out: list[str] = field(default_factory=list)  # published items the site filter removed
    peer: str | None = None  # the peer that served this sync (host:port)
    peers_skipped: dict[str, str] = field(default_factory=dict)  # peers tried and not used, and why
    origin_id: str | None = None
    origin_version: int | None = None  # the origin version published after this sync
    peer_behind: int | None = None  # versions the serving relay was behind its own upstream
    run_id: str | None = None

    @property
    def wire_bytes(self) -> int:
        """Bytes that crossed the link in both directions, all attempts together."""
        return self.bytes_sent + self.bytes_received

    @property
    def duration(self) -> float:
        return (self.ended - self.started).total_seconds()

    def summary(self) -> str:
        """One line for logs."""
        if not self.ok:
            return self.reason
        published = f"published generation {self.generation}" if self.generation else "nothing changed"
        held = (f"; DEGRADED: {len(self.held_back)} item(s) held back at their last good version "
                f"({held_back_text(self.held_back)})" if self.held_back else "")
        held += (f"; removed by the site filter: {', '.join(self.filtered_out)}" if self.filtered_out else "")
        if self.origin_version is not None:
            published += f" (origin version {self.origin_version})"
        if self.peer and self.peers_skipped:
            published += f" from {self.peer} ({len(self.peers_skipped)} peer(s) before it not used)"
        return (f"{published}; {self.files_changed} files changed, {self.files_deleted} deleted; "
                f"{human_bytes(self.wire_bytes)} on the wire in {self.duration:.1f}s, "
                f"{self.attempts} attempt(s); {self.items} items, {human_bytes(self.library_bytes)}{held}")

    def to_dict(self) -> dict:
        """JSON-ready form (times as ISO 8601)."""
        data = asdict(self)
        data["started"] = self.started.isoformat()
        data["ended"] = self.ended.isoformat()
        data["wire_bytes"] = self.wire_bytes
        data["duration_seconds"] = round(self.duration, 3)
        return data


def held_back_text(held_back: dict[str, str], limit: int = 3) -> str:
    """The first held-back items and their reasons, on one line."""
    parts = [f"{folder}: {why}" for folder, why in sorted(held_back.items())[:limit]]
    return "; ".join(parts) + ("; ..." if len(held_back) > limit else "")
