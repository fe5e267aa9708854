"""What each site publishes, from its latest report, joined with the origin manifest (pure, no I/O).

:func:`join` answers, per site, which origin version it publishes, which items are
current, behind, held back (with the reason) or missing, its last success and last
failure, how old its report is, and through which relays it came; per item, how many
sites publish its current version and, for every other site, why not.  Sites known only
from a relay's forwarded reports get a row of their own.

A site's publication ``state`` is the first of :data:`PUB_STATES` among its ``tags``:
``no report``; ``silent`` (its report is older than the fleet's silent-after period: the
rest of what it says is shown, but may be out of date); ``held back`` (it holds items at
an older version, with the reason); ``behind`` (it publishes an older origin version, or
items at older versions); ``unknown`` (no origin manifest here yet, or the report is of
another origin); ``current``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

PUB_STATES = ("no report", "silent", "held back", "behind", "unknown", "current")  # worst first


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def _age(now: float | None, text: Any) -> float | None:
    t = _epoch(text)
    return None if t is None or now is None else max(0.0, now - t)


def site_truth(report: dict[str, Any] | None, origin: dict[str, Any] | None, *, now: float | None = None,
               silent_after: float | None = None) -> dict[str, Any] | None:
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
    age = _age(now, report.get("received"))
    tags = [t for t, yes in (("silent", age is not None and silent_after is not None and age > silent_after),
                             ("held back", bool(held)), ("behind", bool(lag) or bool(behind)),
                             ("unknown", lag is None)) if yes]
    state = next((s for s in PUB_STATES if s in tags), "current")
    result = report.get("result", {})
    success = report.get("last_success") if isinstance(report.get("last_success"), str) else None
    if success is None and result.get("kind") in ("ok", "degraded"):
        success = result.get("ended")
    failure = report.get("last_failure") if isinstance(report.get("last_failure"), dict) else None
    if failure is None and result.get("kind") not in ("ok", "degraded", "start", None):
        failure = {"at": result.get("ended"), "kind": result.get("kind"), "reason": result.get("reason")}
    return {
        "state": state, "tags": tags or ["current"], "origin_version": version, "versions_behind": lag,
        "generation": report.get("generation"), "items_current": len(current), "items_behind": behind,
        "items_missing": missing, "held_back": held,
        "last_result": result.get("kind"), "last_reason": result.get("reason"), "last_ended": result.get("ended"),
        "last_success": success, "seconds_since_success": _age(now, success), "last_failure": failure,
        "served_by": result.get("peer"), "next_run": report.get("next_run"), "reported_at": report.get("received"),
        "report_age_seconds": age, "stale": "silent" in tags, "via": list(report.get("via") or []),
        "tool_version": report.get("tool_version"), "truncated": bool(report.get("truncated")),
    }


def _relayed_row(name: str) -> dict[str, Any]:
    """A fleet row for a site this server has no key of: known from a relay's reports only."""
    return {"site": name, "key": False, "relayed": True, "state": "via relay", "silent": False, "last_seen": None,
            "last_seen_timestamp": None, "seconds_since_seen": None, "address": None, "syncing_since": None,
            "last_sync": None, "sessions": {}}


def _why(pub: dict[str, Any] | None, name: str) -> str | None:
    """Why the site does not publish the item's current version (None: it does)."""
    if pub is None:
        return "no report"
    stale = f" (report {int((pub['report_age_seconds'] or 0) // 86400)} days old)" if pub["stale"] else ""
    if name in pub["held_back"]:
        return f"held back: {pub['held_back'][name]}{stale}"
    if pub["state"] == "unknown" or "unknown" in pub["tags"]:
        return "unknown (report of another origin, or no origin manifest here)"
    if name in pub["items_missing"]:
        return f"not published (missing from its report){stale}"
    if name in pub["items_behind"]:
        last = pub["last_failure"]
        because = f"; last failure: {last.get('kind')}: {last.get('reason') or ''}".rstrip(": ") if last else ""
        return f"older version (origin v{pub['origin_version']}){because}{stale}"
    return None


def join(snapshot: dict[str, Any], reports: dict[str, dict[str, Any]], origin: dict[str, Any] | None
         ) -> dict[str, Any]:
    """The fleet document with each site's ``publication``, rows for sites behind relays, the per-item view
    ``items`` and ``publication_summary`` (sites per publication state)."""
    doc = dict(snapshot)
    now = _epoch(snapshot.get("generated_at"))
    silent_after = snapshot.get("silent_after_seconds")
    rows = list(snapshot.get("sites", []))
    known = {s["site"] for s in rows}
    rows += [_relayed_row(n) for n, r in sorted(reports.items()) if n not in known and r.get("via")]
    sites = []
    for site in rows:
        pub = site_truth(reports.get(site["site"]), origin, now=now, silent_after=silent_after)
        sites.append({**site, "publication": pub})
    doc["sites"] = sites
    doc["origin"] = ({"origin_id": origin.get("origin_id"), "version": origin.get("version"),
                      "updated": origin.get("updated")} if origin else None)
    counted = [s for s in sites if s["key"] or s.get("relayed")]
    doc["publication_summary"] = {
        state: sum(1 for s in counted if (s["publication"] or {}).get("state", "no report") == state)
        for state in PUB_STATES}
    items = {}
    for name, entry in sorted(((origin or {}).get("items") or {}).items()):
        why = {s["site"]: w for s in counted if (w := _why(s["publication"], name)) is not None}
        reporting = {s["site"] for s in counted if s["publication"] is not None}
        items[name] = {"version": entry.get("version"), "sites_current": len(reporting - set(why)),
                       "sites_not_current": sorted(reporting & set(why)),
                       "sites_no_report": sum(1 for w in why.values() if w == "no report"),
                       "why": dict(sorted(why.items()))}
    doc["items"] = items
    return doc
