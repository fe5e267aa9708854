"""The latest report of every site, as the forced command stored them, and the cached reader.

Sites report at start and after every sync through the forced command
(:mod:`~library_syncer.transport.dispatch` stores ``REPORTS/SITE.json``); a relay forwards
the reports of the sites behind it (``REPORTS/relayed/RELAY.json``, one report a line, each
with its ``via``).  :func:`load_reports` keeps, for each site, the newest of its own report
and the relayed copies (by the time the site made it); the join with the origin manifest
is :func:`.truth.join`.  A relay reads its own folder the same way to forward it upstream.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..transport.dispatch import RELAYED_DIR, relayed_problem, report_problem
from ..vcsp.origin import read_doc
from .truth import join, site_truth

__all__ = ["Publications", "join", "load_reports", "site_truth"]

log = logging.getLogger(__name__)
RECENT_NS = 2_000_000_000  # a folder changed this recently is read again (its mtime ticks coarsely)


def _newer(doc: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """Whether ``doc`` was made later than ``than`` (ISO times compare as text); a tie keeps ``than``."""
    return than is None or str(doc.get("at", "")) > str(than.get("at", ""))


def load_reports(folder: Path) -> dict[str, dict[str, Any]]:
    """The latest valid report of each site in ``folder``: its own (``via`` empty) or a relay's copy,
    whichever the site made last; damaged files and lines are skipped."""
    reports: dict[str, dict[str, Any]] = {}
    try:
        paths = sorted(folder.glob("*.json"))
        relayed = sorted((folder / RELAYED_DIR).glob("*.json"))
    except OSError:
        return reports
    for path in paths:
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if report_problem(doc) is None and isinstance(doc.get("site"), str):
            reports[doc["site"]] = {**doc, "via": []}
    for path in relayed:
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if (relayed_problem(doc) is None and doc.get("via", [None])[0] == path.stem
                    and doc["site"] != path.stem and _newer(doc, reports.get(doc["site"]))):
                reports[doc["site"]] = doc
    return reports


class Publications:
    """The reports folders and the origin manifest, read again only when one of them changed."""

    def __init__(self, reports: Path, origin: Path) -> None:
        self.folder, self.origin_file = reports, origin
        self._key: tuple[int, int, int] | None = None
        self.reports: dict[str, dict[str, Any]] = {}
        self.origin: dict[str, Any] | None = None

    def _stamp(self, path: Path) -> int:
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return 0

    def enrich(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """The fleet document joined with the latest reports (:func:`join`)."""
        key = (self._stamp(self.folder), self._stamp(self.folder / RELAYED_DIR), self._stamp(self.origin_file))
        if key != self._key or time.time_ns() - max(key) < RECENT_NS:
            self._key, self.reports = key, load_reports(self.folder)
            self.origin = read_doc(self.origin_file)
        return join(snapshot, self.reports, self.origin)
