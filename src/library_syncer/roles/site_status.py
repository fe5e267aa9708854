"""What a site shows about itself: the published library, its syncs, readiness, webhook events.

The decisions (readiness, when to call the webhook) and the assembly of the
status document are pure functions; :func:`published_library` and the history
file functions are the only ones that read or write files.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote

from ..errors import OperationFailed
from ..publish.generations import current_generation, current_root
from ..util.fmt import iso_utc
from ..util.fs import atomic_write
from ..sync.result import SyncResult
from ..sync.schedule import zone
from ..sync.timetable import Timetable, status as bandwidth_status

log = logging.getLogger(__name__)

HISTORY_FILE = "client-history.json"


# --- the published library (reads the current generation) -------------------------------


def published_library(library: Path) -> dict[str, Any] | None:
    """The current generation's manifest summary, or None when nothing is published (or unreadable)."""
    root = current_root(library)
    if root is None:
        return None
    try:
        lib = json.loads((root / "lib.json").read_text())
        items = json.loads((root / lib.get("itemsHref", "items.json")).read_text())["items"]
        published_at = root.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot read the published manifest in %s: %s", root, exc)
        return None
    rows = []
    for item in items:
        href = str(item.get("selfHref", ""))
        try:
            changed = (root / unquote(href)).stat().st_mtime if href else None  # rewritten on each change
        except OSError:
            changed = None
        rows.append({
            "name": item.get("name"), "folder": unquote(href.removesuffix("/item.json")) if href else None,
            "type": item.get("type"), "version": item.get("version"),
            "size": sum(int(f.get("size", 0)) for f in item.get("files", [])),
            "files": len(item.get("files", [])), "changed": _iso(changed),
        })
    rows.sort(key=lambda r: str(r["name"]).lower())
    return {
        "generation": current_generation(library), "name": lib.get("name"), "id": lib.get("id"),
        "version": lib.get("version"), "published_at": _iso(published_at),
        "items": rows, "bytes": sum(r["size"] for r in rows),
    }


_iso = iso_utc  # the one time format of the JSON documents


def _run_doc(result: SyncResult) -> dict[str, Any]:
    """A result in the status document: its ``to_dict()`` form with the document's time format."""
    return {**result.to_dict(), "started": _iso(result.started), "ended": _iso(result.ended)}


# --- history kept across restarts --------------------------------------------------------


def result_from_dict(data: dict[str, Any]) -> SyncResult:
    """A :class:`SyncResult` from its ``to_dict()`` form."""
    fields = {k: v for k, v in data.items() if k in SyncResult.__dataclass_fields__}
    fields["started"] = datetime.fromisoformat(data["started"])
    fields["ended"] = datetime.fromisoformat(data["ended"])
    return SyncResult(**fields)


def load_history(state_dir: Path) -> list[SyncResult]:
    """Sync results saved by an earlier run of the daemon (oldest first); [] when none or unreadable."""
    path = state_dir / HISTORY_FILE
    try:
        return [result_from_dict(d) for d in json.loads(path.read_text())]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("sync history %s unreadable, starting a new one: %s", path, exc)
        return []


def save_history(state_dir: Path, history: Iterable[SyncResult]) -> None:
    """Write the history atomically; OperationFailed (one line) if it cannot be written."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OperationFailed(f"cannot create {state_dir}: {exc.strerror or exc}") from None
    atomic_write(state_dir / HISTORY_FILE, json.dumps([r.to_dict() for r in history]).encode())


# --- pure decisions ----------------------------------------------------------------------


def last_success_time(history: Iterable[SyncResult], published_at: str | None) -> datetime | None:
    """When the site last synced successfully: the newest ok result, else when its generation was published."""
    ok = [r.ended for r in history if r.ok]
    if ok:
        return max(ok)
    return datetime.fromisoformat(published_at) if published_at else None


def readiness(published: dict | None, last_success: datetime | None, now: datetime,
              stale_after: float) -> tuple[bool, str]:
    """(ready, reason): ready when a generation is published and the last success is recent enough."""
    if published is None:
        return False, "nothing published yet"
    if last_success is None:
        return False, "no successful sync recorded"
    age = (now - last_success).total_seconds()
    if age > stale_after:
        return False, (f"last successful sync {age / 3600:.1f} h ago, longer than "
                       f"{stale_after / 3600:.1f} h (setting stale_after_seconds)")
    return True, "ok"


def webhook_event(previous: SyncResult | None, result: SyncResult) -> str | None:
    """``sync_failed`` when a sync fails after a success (or as the first result); ``sync_degraded``
    when a sync holds items back and the one before did not hold back the same items;
    ``sync_recovered`` when a clean sync follows a failed or degraded one; else None.
    A refused overlapping start is no event."""
    if result.kind == "busy":
        return None
    if not result.ok:
        return "sync_failed" if previous is None or previous.ok else None
    if result.kind == "degraded":
        same = previous is not None and previous.kind == "degraded" and set(previous.held_back) == set(result.held_back)
        return None if same else "sync_degraded"
    return "sync_recovered" if previous is not None and (not previous.ok or previous.kind == "degraded") else None


def held_back_now(history: Iterable[SyncResult]) -> dict[str, str]:
    """Items the published generation holds at their last good version: those of the newest run that
    published (a failed run changes nothing that is served)."""
    published = [r for r in history if r.ok]
    return dict(published[-1].held_back) if published else {}


def webhook_payload(event: str, result: SyncResult, *, site: str, host: str,
                    last_success: datetime | None) -> dict[str, Any]:
    """The small JSON document POSTed to the webhook."""
    return {
        "event": event, "site": site, "host": host, "run_id": result.run_id, "ok": result.ok,
        "kind": result.kind, "reason": result.reason, "at": _iso(result.ended),
        "held_back": dict(result.held_back),
        "last_success": _iso(last_success),
    }


def site_policy(*, skip_initial: bool, include: Iterable[str], exclude: Iterable[str], max_bw: str,
                tz: str | None, now: datetime) -> dict[str, Any]:
    """The site's policy settings in the status document: the sync at start, the item filter, and the
    bandwidth setting with the timetable slot in force at ``now`` (read in ``tz``) and its next change."""
    return {
        "sync_skip_initial": skip_initial, "sync_include": list(include), "sync_exclude": list(exclude),
        "bandwidth": bandwidth_status(Timetable.parse(max_bw), now, zone(tz)),
    }


def client_status(*, site: str, history: list[SyncResult], running: str | None, next_run: datetime | None,
                  published: dict | None, now: datetime, stale_after: float, schedule: str,
                  tz: str | None, peer: str | None, thumbprint: str | None) -> dict[str, Any]:
    """The status document behind the status page and ``GET /_syncer/api/status``."""
    last_success = last_success_time(history, published.get("published_at") if published else None)
    ready, why = readiness(published, last_success, now, stale_after)
    return {
        "site": site,
        "now": _iso(now),
        "ready": ready,
        "ready_reason": why,
        "published": published,
        "held_back": held_back_now(history),
        "running": running,
        "last_sync": _run_doc(history[-1]) if history else None,
        "last_success": _iso(last_success),
        "next_run": _iso(next_run),
        "schedule": schedule,
        "tz": tz or "UTC",
        "peer": peer,
        "tls_thumbprint": thumbprint,
        "history": [_run_doc(r) for r in reversed(history)],
    }


def upstream_status(history: list[SyncResult], origin: dict[str, Any] | None) -> dict[str, Any]:
    """Where the published library came from: the peer of the last successful sync, the origin version
    published (``origin``: the published generation's origin manifest), how many versions the relay that
    served it was behind its own upstream, and the peers the last sync tried and did not use (why)."""
    last_ok = next((r for r in reversed(history) if r.ok), None)
    path = [p.get("name", "?") for p in (origin or {}).get("path", [])]
    return {
        "served_by": last_ok.peer if last_ok else None,
        "origin_id": (origin or {}).get("origin_id"),
        "origin_version": (origin or {}).get("version"),
        "relays": path[:-1],  # the relays between the primary and this site (the last entry is this site)
        "relay_behind": last_ok.peer_behind if last_ok else None,
        "peers_not_used": dict(history[-1].peers_skipped) if history else {},
    }
