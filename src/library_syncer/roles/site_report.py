"""The report a site sends its upstream at start and after every sync (best effort).

:func:`build_report` (pure) says what the site publishes: the origin version, each item's
origin item version (from the origin manifest recorded with the published generation) and
its own manifest version, what is held back and why, the last result, bytes on the wire,
duration, the next run and the tool's version.  :func:`send_report` hands it to the
upstream's forced command (``library-syncer report``) over ssh (:func:`report_command`),
bounded and cancellable; a failure is logged and never fails anything.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from ..config import Settings
from ..errors import UserError
from ..sync.origin_state import read_site_origin
from ..sync.plan import prepare
from ..sync.result import SyncResult
from ..transport import rsync as rs
from ..transport import ssh
from ..transport.dispatch import MAX_REPORT, REPORT_COMMAND, REPORT_FORMAT
from ..util.fmt import iso_utc
from ..util.proc import guarded
from . import site_status as st

log = logging.getLogger(__name__)

REPORT_TIMEOUT_SECONDS = 60


def build_report(*, result: SyncResult | None, published: dict[str, Any] | None,
                 origin: dict[str, Any] | None, held_back: dict[str, str], next_run: datetime | None,
                 now: datetime, history: list[SyncResult] | None = None) -> dict[str, Any]:
    """The report document (the schema is :func:`~library_syncer.transport.dispatch.report_problem`'s); the
    upstream adds the site's name from the key that logged in.  ``history`` (oldest first) gives the last
    success and the last failure with its reason."""
    origin_items = (origin or {}).get("items", {})
    items = {}
    for row in (published or {}).get("items", []):
        folder = row.get("folder") or row.get("name")
        entry = origin_items.get(folder, {})
        items[str(folder)] = {"version": int(entry.get("version", 0)), "site_version": row.get("version"),
                              "digest": entry.get("digest")}
    kind = result.kind if result is not None else "start"
    doc: dict[str, Any] = {
        "format": REPORT_FORMAT, "tool_version": __version__, "at": iso_utc(now) or "",
        "origin_id": (origin or {}).get("origin_id"), "origin_version": (origin or {}).get("version"),
        "generation": (published or {}).get("generation"), "items": items, "held_back": dict(held_back),
        "result": {"kind": kind, "reason": result.reason if result is not None else "",
                   "ended": iso_utc(result.ended) if result is not None else None,
                   "wire_bytes": result.wire_bytes if result is not None else 0,
                   "duration_seconds": round(result.duration, 3) if result is not None else 0,
                   "peer": result.peer if result is not None else None},
        "next_run": iso_utc(next_run),
    }
    done = list(history or ([result] if result is not None else []))
    good = [r for r in done if r.ok]
    bad = [r for r in done if not r.ok and r.kind not in ("stopped", "busy")]
    doc["last_success"] = iso_utc(good[-1].ended) if good else None
    doc["last_failure"] = ({"at": iso_utc(bad[-1].ended), "kind": bad[-1].kind, "reason": bad[-1].reason[:1000]}
                           if bad else None)
    data = json.dumps(doc).encode()
    while len(data) > MAX_REPORT and items:  # a huge library: the items that fit
        items = dict(list(items.items())[: len(items) // 2])
        doc["items"] = items
        doc["truncated"] = True
        data = json.dumps(doc).encode()
    return doc


def report_command(settings: Settings, peer: str | None, command: str = REPORT_COMMAND) -> list[str] | None:
    """The ssh command that hands a report (or, with ``command``, a relay's batch) to ``peer`` (the one
    that served; else the first of SYNC_PEER), or None when there is none (no peer, no usable key yet).
    No network."""
    try:
        plan = prepare(settings, startup=True)
        key = ssh.usable_private_key(settings.site_key(), settings.resolved_state_dir())
    except UserError as exc:
        log.info("report not sent: %s", exc)
        return None
    target = next((p for p in plan.peers if p.name == peer), plan.peers[0] if plan.peers else None)
    if target is None or target.ssh_argv is None:
        return None
    argv = list(target.ssh_argv)
    argv[argv.index("-i") + 1] = str(key)
    return guarded([*argv, target.destination, command])


async def send_report(argv: list[str], doc: dict[str, Any] | bytes) -> bool:
    """Run ``argv`` with the report (or a relay's batch, as bytes) on stdin, bounded; killed when cancelled.
    Whether it was stored."""
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=rs.child_env())
    try:
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        _, err = await asyncio.wait_for(proc.communicate(data), REPORT_TIMEOUT_SECONDS)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        log.info("report not sent: no answer within %ds or stopped", REPORT_TIMEOUT_SECONDS)
        return False
    if proc.returncode != 0:
        why = (err.decode(errors="replace").strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        log.info("report not stored: %s", why)
        return False
    log.info("report sent")
    return True


async def report(settings: Settings, result: SyncResult | None, history: list[SyncResult],
                 next_run: datetime | None, stop: asyncio.Event) -> bool:
    """Build the site's report (in a worker thread: it reads the published library) and send it."""
    def build() -> tuple[list[str] | None, dict[str, Any]]:
        origin = read_site_origin(settings.library)
        doc = build_report(result=result, published=st.published_library(settings.library),
                           origin=origin.doc if origin else None, held_back=st.held_back_now(history),
                           next_run=next_run, now=datetime.now(timezone.utc), history=history)
        return report_command(settings, result.peer if result is not None else None), doc

    argv, doc = await asyncio.to_thread(build)
    return await send_report(argv, doc) if argv is not None and not stop.is_set() else False
