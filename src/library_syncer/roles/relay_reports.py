"""A relay forwards the latest reports of the sites behind it to its upstream (best effort).

The relay's forced command stores what its sites report (``STATE/relay/reports/SITE.json``)
and what the relays behind it forward (``…/relayed/RELAY.json``).  :func:`forward_loop`
watches that folder and, soon after it changes (and once at start), hands the whole set,
one report a line (:func:`batch`, pure), to the upstream's ``library-syncer relayed-reports``
form, which replaces its copy of this relay's batch.  The relay's own report goes up by
itself after each of its syncs (:mod:`.site_report`).  A failure is logged, tried again a
minute later, and never touches a sync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from ..config import Settings
from ..fleet.reports import load_reports
from ..transport.dispatch import MAX_RELAYED, MAX_RELAYED_BYTES, MAX_REPORT, RELAYED_COMMAND, RELAYED_DIR
from .site_report import report_command, send_report

log = logging.getLogger(__name__)

POLL_SECONDS = 3.0
RETRY_SECONDS = 60.0
_RECENT_NS = 2_000_000_000  # a folder changed this recently may change again within its mtime's tick


def batch(reports: dict[str, dict[str, Any]]) -> tuple[bytes, list[str]]:
    """The JSON lines to forward (newest reports first, within the upstream's bounds) and the sites left out."""
    lines: list[bytes] = []
    left_out: list[str] = []
    total = 0
    for doc in sorted(reports.values(), key=lambda d: str(d.get("at", "")), reverse=True):
        line = json.dumps(doc).encode() + b"\n"
        if len(line) - 1 > MAX_REPORT or len(lines) >= MAX_RELAYED or total + len(line) > MAX_RELAYED_BYTES:
            left_out.append(str(doc.get("site")))
            continue
        lines.append(line)
        total += len(line)
    return b"".join(lines), left_out


def _stamp(folder: Path) -> tuple[int, int]:
    def one(path: Path) -> int:
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return 0
    return one(folder), one(folder / RELAYED_DIR)


async def forward_once(settings: Settings, folder: Path, peer: str | None) -> bool:
    """Send the folder's reports to ``peer`` (else the first of SYNC_PEER); whether they were stored."""
    def build() -> tuple[list[str] | None, bytes, list[str], int]:
        reports = load_reports(folder)
        data, left_out = batch(reports)
        return report_command(settings, peer, RELAYED_COMMAND), data, left_out, len(reports)

    argv, data, left_out, count = await asyncio.to_thread(build)
    if left_out:
        log.warning("relayed reports: %d left out (beyond the upstream's bounds): %s", len(left_out),
                    ", ".join(left_out[:5]))
    if argv is None:
        return False
    stored = await send_report(argv, data)
    if stored:
        log.info("relayed reports: %d forwarded upstream", count - len(left_out))
    return stored


async def forward_loop(settings: Settings, folder: Path, peer: Callable[[], str | None], stop: asyncio.Event,
                       poll: float = POLL_SECONDS, retry: float = RETRY_SECONDS) -> None:
    """Forward at start and whenever ``folder`` changed, until ``stop``; a failure waits ``retry`` seconds."""
    sent: tuple[int, int] | None = None
    while not stop.is_set():
        stamp = _stamp(folder)
        wait = poll
        if stamp != sent:
            task = asyncio.create_task(forward_once(settings, folder, peer()))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not task.done():  # stopped: the ssh child is killed
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return
            if task.result():
                recent = time.time_ns() - max(stamp) < _RECENT_NS
                sent = None if recent else stamp  # a change in the same tick would look like no change
            else:
                wait = retry
        try:
            await asyncio.wait_for(stop.wait(), wait)
        except asyncio.TimeoutError:
            pass
