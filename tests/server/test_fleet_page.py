"""The fleet page as HTML (pure rendering) and a sample fleet of every state in real Chromium."""

from __future__ import annotations

from browser import artifacts_dir, dump_dom, screenshot, visible_text
from library_syncer.fleet.model import Fleet
from library_syncer.web.pages.fleet import human_age, human_duration, render_fleet_page

DAY = 86400


class Clock:
    t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def sample_fleet() -> Fleet:
    """Twelve sites: ok, syncing, failing (lost, refused, error), silent, never seen, key removed."""
    clock = Clock()
    names = [f"branch-{c}" for c in ("amsterdam", "berlin", "cairo", "dublin", "evora", "faro", "geneva",
                                      "helsinki", "istanbul", "jakarta", "kyiv")]
    fleet = Fleet({f"SHA256:{n}": n for n in names} | {"SHA256:lab-old": "lab-old"}, silent_after=8 * DAY, clock=clock)

    def session(port: int, name: str, seconds: float, end: str) -> None:
        addr = f"10.{port % 250}.0.{port % 200 + 1}"
        fleet.feed(f'Connection from {addr} port {port} on 0.0.0.0 port 2222 rdomain ""')
        fleet.feed(f"Accepted publickey for syncer from {addr} port {port} ssh2: ED25519 SHA256:{name}")
        clock.t += seconds
        if end == "ok":
            fleet.feed(f"Received disconnect from {addr} port {port}:11: disconnected by user")
            fleet.feed(f"Disconnected from user syncer {addr} port {port}")
        elif end == "error":
            fleet.feed(f"Received disconnect from {addr} port {port}:2: Packet corrupt")
            fleet.feed(f"Disconnected from user syncer {addr} port {port}")
        elif end == "lost":
            fleet.feed(f"Connection reset by user syncer {addr} port {port}")

    session(1, "branch-geneva", 120, "ok")
    session(2, "lab-old", 30, "ok")
    clock.t += 9 * DAY  # geneva is now silent
    for i, name in enumerate(names[:4]):
        session(10 + i, name, 3600 * 2.5 + i * 61, "ok")
    session(20, "branch-evora", 7200, "lost")
    session(21, "branch-faro", 4, "error")
    fleet.feed('Connection from 192.0.2.50 port 30 on 0.0.0.0 port 2222 rdomain ""')
    fleet.feed("Failed publickey for syncer from 192.0.2.50 port 30 ssh2: ED25519 SHA256:branch-helsinki")
    fleet.feed("Connection closed by authenticating user syncer 192.0.2.50 port 30 [preauth]")
    fleet.feed(f"Accepted publickey for syncer from 10.9.9.9 port 40 ssh2: ED25519 SHA256:{names[1]}")  # berlin again
    fleet.feed('Connection from 203.0.113.9 port 50 on 0.0.0.0 port 2222 rdomain ""')
    fleet.feed("Failed publickey for syncer from 203.0.113.9 port 50 ssh2: RSA SHA256:<script>x</script>")
    fleet.feed("Connection closed by authenticating user syncer 203.0.113.9 port 50 [preauth]")
    clock.t += 3 * 3600
    fleet.feed("Server listening on 0.0.0.0 port 2222.")
    fleet.set_keys({f"SHA256:{n}": n for n in names})  # lab-old's key was removed
    return fleet


def test_helpers():
    assert human_duration(None) == "" and human_duration(4.4) == "4 s" and human_duration(95.5) == "1 min 36 s"
    assert human_duration(3 * 3600 + 5) == "3 h" and human_duration(2 * DAY + 3600 * 5 + 7) == "2 d 5 h"
    assert human_age(5) == "just now" and human_age(600) == "10 min ago" and human_age(7200) == "2 h ago"
    assert human_age(9 * DAY) == "9 days ago"


def test_every_value_is_escaped_and_the_page_is_self_contained():
    doc = sample_fleet().snapshot()
    doc["sites"][0]["address"] = '"><img src=x onerror=alert(1)>'
    page = render_fleet_page(doc)
    assert "<script>x</script>" not in page and "<img" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "&quot;&gt;&lt;img" in page
    assert page.count("<script") == 1  # the inline sort/filter script, nothing loaded from elsewhere
    for external in ("http://", "https://", "<link", "<script src", "src="):
        assert external not in page.replace('src=x', ''), external
    assert '<meta http-equiv="refresh" content="30">' in page
    assert '<meta name="viewport"' in page


def test_sample_fleet_in_chromium():
    page = artifacts_dir() / "fleet-sample.html"
    page.write_text(render_fleet_page(sample_fleet().snapshot()))
    url = page.as_uri()
    screenshot(url, "fleet-sample-phone-390.png", width=390, height=2400)
    screenshot(url, "fleet-sample-wall-1920.png", width=1920, height=1080)
    text = visible_text(dump_dom(url))
    for seen in ("11 sites", "3 ok", "1 syncing now", "3 failing", "4 silent", "1 unknown keys refused",
                 "NEVER SEEN", "SILENT", "9 days ago", "SYNCING", "running since", "FAILING", "connection lost",
                 "refused", "error", "KEY REMOVED", "lab-old", "2 h 30 min", "<script>x</script>"):
        assert seen in text, f"{seen!r} not on the page: {text}"
    order = [text.index(n) for n in ("branch-istanbul", "branch-geneva", "branch-evora", "branch-berlin",
                                     "branch-amsterdam", "lab-old")]
    assert order == sorted(order)  # never seen, silent, failing, syncing, ok, key removed
