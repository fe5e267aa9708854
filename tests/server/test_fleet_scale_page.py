"""The fleet page with 500 synthetic sites in real headless Chromium: filters, sorting, the per-item view, a phone.

The sites are a real :class:`Fleet` fed sshd lines, joined (fleet/truth.py) with reports and an
origin manifest of every kind: current, behind, held back, silent (a report older than the
silent period), no report, and sites known only through relays.  Screenshots go to
tests/artifacts/ (fleet-500-*.png).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from browser import artifacts_dir, dump_dom, screenshot, visible_text
from library_syncer.fleet.model import Fleet
from library_syncer.fleet.truth import join
from library_syncer.transport.dispatch import REPORT_FORMAT
from library_syncer.web.pages.fleet import render_fleet_page

DAY = 86400
NOW = 1_800_000_000.0
REGIONS = ("north", "south", "east", "west", "alps")
ITEMS = {"ubuntu-24.04": 7, "win2022-core": 3, "rhel-9.4": 5, "photon-5": 2, "tools.iso": 9, "esxi-8u3.iso": 4}


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def kind_of(i: int) -> str:
    if i % 10 == 0:
        return "no report" if i < 400 else "current"  # a site behind a relay is known from its report only
    if i % 10 == 1:
        return "held back"
    if i % 10 in (2, 3):
        return "behind"
    if i % 25 == 4:
        return "silent"
    return "current"


def report(name: str, i: int, kind: str, via: list[str]) -> dict:
    items = {k: {"version": v} for k, v in ITEMS.items()}
    held = {}
    if kind == "behind":
        items["ubuntu-24.04"] = {"version": 6}
    if kind == "held back":
        items["win2022-core"] = {"version": 2}
        held = {"win2022-core": "OVF descriptor names a disk that is not in the item (disk2.vmdk)"}
    age = 9 * DAY if kind == "silent" else 600 + i * 7
    failure = ({"at": iso(NOW - 3600), "kind": "gave-up", "reason": "ssh: connect to host 10.0.0.1 port 2222: "
                "Connection timed out (retry deadline 3600 s passed)"} if kind == "behind" else None)
    return {"format": REPORT_FORMAT, "site": name, "tool_version": "0.9.0", "at": iso(NOW - age),
            "received": iso(NOW - age), "origin_id": "origin-1", "origin_version": 41 if kind == "behind" else 42,
            "generation": 12, "items": items, "held_back": held,
            "result": {"kind": "gave-up" if kind == "behind" else "ok", "reason": "", "ended": iso(NOW - age),
                       "wire_bytes": 1000, "duration_seconds": 12.5, "peer": "primary:2222"},
            "next_run": iso(NOW + DAY), "last_success": iso(NOW - age - (5 * DAY if kind == "behind" else 0)),
            "last_failure": failure, "via": via}


def fleet_500() -> dict:
    names = [f"site-{REGIONS[i % 5]}-{i:03d}" for i in range(500)]
    keyed = names[:400]  # the last 100 sync from relays: the primary has no key of theirs
    t = [NOW - 2 * DAY]
    fleet = Fleet({f"SHA256:{n}": n for n in keyed}, silent_after=8 * DAY, clock=lambda: t[0])
    for i, name in enumerate(keyed):
        if kind_of(i) in ("no report", "silent"):
            continue
        addr, port = f"10.{i // 250}.{i % 250}.1", 1000 + i
        fleet.feed(f'Connection from {addr} port {port} on 0.0.0.0 port 2222 rdomain ""')
        fleet.feed(f"Accepted publickey for syncer from {addr} port {port} ssh2: ED25519 SHA256:{name}")
        t[0] += 30
        fleet.feed(f"Received disconnect from {addr} port {port}:11: disconnected by user")
        fleet.feed(f"Disconnected from user syncer {addr} port {port}")
    t[0] = NOW
    fleet.feed("Server listening on 0.0.0.0 port 2222.")
    reports = {}
    for i, name in enumerate(names):
        via = [] if i < 400 else (["relay-north"] if i % 2 else ["relay-north", "relay-fjord"])
        if kind_of(i) != "no report":
            reports[name] = report(name, i, kind_of(i), via)
    origin = {"origin_id": "origin-1", "version": 42, "updated": iso(NOW - 2 * 3600),
              "items": {k: {"version": v} for k, v in ITEMS.items()}}
    return join(fleet.snapshot(), reports, origin)


def shown(dom: str) -> tuple[int, int]:
    found = re.search(r'id="shown">(\d+) of (\d+) sites shown<', dom)
    assert found, "the script did not run (no 'N of M sites shown')"
    return int(found.group(1)), int(found.group(2))


def test_500_sites_sort_filter_and_per_item_view_in_chromium():
    doc = fleet_500()
    assert len(doc["sites"]) == 500
    count = {tag: sum(1 for s in doc["sites"] if s["publication"] and tag in s["publication"]["tags"])
             for tag in ("behind", "held back", "silent")}
    assert count["behind"] == 100 and count["held back"] == 50 and count["silent"] == 20
    assert doc["publication_summary"]["no report"] == 40
    assert len(doc["items"]["ubuntu-24.04"]["sites_not_current"]) == 100
    page = artifacts_dir() / "fleet-500.html"
    page.write_text(render_fleet_page(doc))
    url = page.as_uri()
    screenshot(url, "fleet-500-wall-1920.png", width=1920, height=1080)
    screenshot(url, "fleet-500-laptop-1280.png", width=1280, height=900)
    screenshot(url, "fleet-500-phone-390.png", width=390, height=1600)
    screenshot(url + "#f=held-back&s=name&q=", "fleet-500-held-back-1280.png", width=1280, height=900)
    screenshot(url + "#f=behind&s=ok&q=", "fleet-500-behind-phone-390.png", width=390, height=1600)
    screenshot(url, "fleet-500-top-1280.png", width=1280, height=1400)

    dom = dump_dom(url)
    assert shown(dom) == (500, 500)
    first = re.findall(r'<tr data-name="([^"]+)"', dom)
    assert len(first) == 500 and first[0] == "site-north-000" and first[40] != "site-north-000"  # no report first
    text = visible_text(dom)
    for seen in ("NO REPORT", "HELD BACK", "BEHIND", "CURRENT", "STALE", "via relay-north → relay-fjord",
                 "origin v41, 1 behind", "gave-up", "Connection timed out", "disk2.vmdk",
                 "Items: which sites do not publish the current version, and why", "140 sites",
                 "older version (origin v41); last failure: gave-up", "+40 no report", "VIA RELAY"):
        assert seen in text, seen

    for fragment, tag, expected in (("#f=behind", "behind", 100), ("#f=held-back", "held-back", 50),
                                    ("#f=silent", "silent", 20), ("#f=no-report", "no-report", 40),
                                    ("#f=current", "current", None), ("#f=via-relay", "via-relay", 100)):
        dom = dump_dom(url + fragment)
        rows = re.findall(r'<tr data-name="[^"]+" data-tags="([^"]+)"[^>]*?( hidden="")?>', dom)
        visible = [tags for tags, hidden in rows if not hidden]
        assert all(f" {tag} " in tags for tags in visible) and len(rows) == 500, fragment
        assert shown(dom)[0] == len(visible) and (expected is None or len(visible) == expected), (fragment, visible)
    assert shown(dump_dom(url + "#f=all&q=alps"))[0] == 100
    dom = dump_dom(url + "#s=ok")  # last success, oldest first: never (no report), then the silent ones (9 days)
    order = re.findall(r'<tr data-name="([^"]+)"', dom)
    never = {s["site"] for s in doc["sites"] if s["publication"] is None}
    silent = {s["site"] for s in doc["sites"] if s["publication"] and s["publication"]["stale"]}
    assert set(order[:40]) == never and set(order[40:60]) == silent, order[:64]
