"""What each site publishes, from its latest report, joined with the origin manifest.

Sites report at start and after every sync through the forced command
(:mod:`~library_syncer.transport.dispatch` stores ``STATE/reports/SITE.json``).
:func:`join` (pure) answers, per site, which origin version it publishes, which items
are current, behind, held back (with the reason) or missing, and its last result; per
item, how many sites publish its current version and which do not.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..transport.dispatch import report_problem

log = logging.getLogger(__name__)


def load_reports(folder: Path) -> dict[str, dict[str, Any]]:
    """The latest valid report of each site in ``folder`` (a damaged file is skipped, logged once)."""
    reports: dict[str, dict[str, Any]] = {}
    try:
        paths = sorted(folder.glob("*.json"))
    except OSError:
        return reports
    for path in paths:
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if report_problem(doc) is None and isinstance(doc.get("site"), str):
            reports[doc["site"]] = doc
    return reports


class Publications:
    """The reports folder and the origin manifest, read again only when either changed."""

    def __init__(self, reports: Path, origin: Path) -> None:
        self.folder, self.origin_file = reports, origin
        self._key: tuple[int, int] | None = None
        self.reports: dict[str, dict[str, Any]] = {}
        self.origin: dict[str, Any] | None = None

    def _stamp(self, path: Path) -> int:
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return 0

    def enrich(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """The fleet document joined with the latest reports (:func:`join`)."""
        key = (self._stamp(self.folder), self._stamp(self.origin_file))
        if key != self._key:
            self._key, self.reports = key, load_reports(self.folder)
            try:
                self.origin = json.loads(self.origin_file.read_bytes())
            except (OSError, ValueError):
                self.origin = None
        return join(snapshot, self.reports, self.origin)


def site_truth(report: dict[str, Any] | None, origin: dict[str, Any] | None) -> dict[str, Any] | None:
    """One site's publication against the origin manifest (None when it never reported)."""
    if report is None:
        return None
    o_items = (origin or {}).get("items", {})
    same_origin = origin is not None and report.get("origin_id") == origin.get("origin_id")
    held = dict(report.get("held_back", {}))
    current, behind, missing = [], [], []
    for name, entry in sorted(o_items.items()):
        mine = report["items"].get(name)
        if mine is None:
            missing.append(name)
        elif same_origin and mine.get("version") == entry.get("version") and name not in held:
            current.append(name)
        elif name not in held:
            behind.append(name)
    version = report.get("origin_version")
    lag = origin["version"] - version if origin is not None and same_origin and isinstance(version, int) else None
    state = "unknown" if lag is None else ("current" if lag == 0 and not behind and not held else "behind")
    result = report.get("result", {})
    return {
        "state": state, "origin_version": version, "versions_behind": lag, "generation": report.get("generation"),
        "items_current": len(current), "items_behind": behind, "items_missing": missing, "held_back": held,
        "last_result": result.get("kind"), "last_reason": result.get("reason"), "last_ended": result.get("ended"),
        "served_by": result.get("peer"), "next_run": report.get("next_run"), "reported_at": report.get("received"),
        "tool_version": report.get("tool_version"),
    }


def join(snapshot: dict[str, Any], reports: dict[str, dict[str, Any]], origin: dict[str, Any] | None
         ) -> dict[str, Any]:
    """The fleet document with each site's ``publication`` and the per-item view ``items``."""
    doc = dict(snapshot)
    sites = []
    for site in snapshot.get("sites", []):
        sites.append({**site, "publication": site_truth(reports.get(site["site"]), origin)})
    doc["sites"] = sites
    doc["origin"] = ({"origin_id": origin.get("origin_id"), "version": origin.get("version"),
                      "updated": origin.get("updated")} if origin else None)
    items = {}
    for name, entry in sorted(((origin or {}).get("items") or {}).items()):
        pubs = {s["site"]: s["publication"] for s in sites if s["publication"] is not None}
        current = {site for site, p in pubs.items() if p["state"] != "unknown" and name not in
                   p["items_behind"] + p["items_missing"] and name not in p["held_back"]}
        items[name] = {"version": entry.get("version"), "sites_current": len(current),
                       "sites_not_current": sorted(set(pubs) - current)}
    doc["items"] = items
    return doc
