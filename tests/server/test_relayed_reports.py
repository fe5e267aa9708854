"""The forced command's relayed-reports form on its own: what a relay may store at its upstream, and what not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from library_syncer.fleet.reports import load_reports
from library_syncer.roles.relay_reports import batch
from library_syncer.transport import dispatch

SCRIPT = Path(dispatch.__file__)
KEYS = {"ssh-ed25519 AAAArelay": "relay1", "ssh-ed25519 AAAAsite": "site1"}


def report(site: str | None = None, at: str = "2026-05-01T10:00:00Z", **more) -> dict:
    doc = {"format": dispatch.REPORT_FORMAT, "tool_version": "1", "at": at, "origin_id": "o", "origin_version": 3,
           "generation": 1, "items": {"A": {"version": 2}}, "held_back": {}, "result": {"kind": "ok"},
           "next_run": None, "site": site, **more}
    return doc


def store(tmp_path: Path, form: str, data: bytes, key: str = "ssh-ed25519 AAAArelay") -> subprocess.CompletedProcess:
    reports = tmp_path / "reports"
    reports.mkdir(exist_ok=True)
    (tmp_path / "keys.json").write_text(json.dumps(KEYS))
    (tmp_path / "auth").write_text(f"publickey {key} comment\n")
    env = {"PATH": os.environ["PATH"], "SSH_ORIGINAL_COMMAND": form, "SSH_USER_AUTH": str(tmp_path / "auth")}
    return subprocess.run([sys.executable, "-I", str(SCRIPT), "--rrsync", "/bin/false", "--library", str(tmp_path),
                           "--reports", str(reports), "--keys", str(tmp_path / "keys.json")],
                          input=data, capture_output=True, env=env, timeout=30)


def lines(*docs: dict) -> bytes:
    return b"".join(json.dumps(d).encode() + b"\n" for d in docs)


def test_a_relay_stores_its_sites_reports_apart_and_never_its_own(tmp_path):
    own = store(tmp_path, dispatch.REPORT_COMMAND, json.dumps(report(at="2026-05-01T09:00:00Z")).encode(),
                key="ssh-ed25519 AAAAsite")
    assert own.returncode == 0, own.stderr
    relayed = tmp_path / "reports" / "relayed" / "relay1.json"
    r = store(tmp_path, dispatch.RELAYED_COMMAND, lines(
        report("branch", via=[]), report("deep", via=["relay2"]),
        report("relay1", via=[]),  # the relay itself: its own report comes from its own key
        report("loop", via=["relay2", "relay1"]),  # came back through the relay: a loop
        report("site1", at="2026-05-01T08:00:00Z", via=[]),  # older than site1's own report
    ))
    assert r.returncode == 0 and r.stdout.decode() == "stored 3, left out 2 naming this relay\n", r.stderr
    stored = [json.loads(line) for line in relayed.read_text().splitlines()]
    assert [(d["site"], d["via"]) for d in stored] == [("branch", ["relay1"]), ("deep", ["relay1", "relay2"]),
                                                        ("site1", ["relay1"])]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["relayed", "site1.json"]
    seen = load_reports(tmp_path / "reports")
    assert seen["site1"]["via"] == [] and seen["site1"]["at"] == "2026-05-01T09:00:00Z"  # its own, newer
    assert seen["deep"]["via"] == ["relay1", "relay2"] and "relay1" not in seen and "loop" not in seen

    # A newer copy from the relay is shown (a site that now syncs through it), its own file untouched.
    before = (tmp_path / "reports" / "site1.json").read_bytes()
    assert store(tmp_path, dispatch.RELAYED_COMMAND, lines(report("site1", at="2026-05-02T08:00:00Z"))).returncode == 0
    assert (tmp_path / "reports" / "site1.json").read_bytes() == before
    assert load_reports(tmp_path / "reports")["site1"]["via"] == ["relay1"]
    assert "branch" not in load_reports(tmp_path / "reports")  # the batch replaced the relay's earlier one


def test_a_bad_batch_is_refused_with_one_line_and_changes_nothing(tmp_path):
    assert store(tmp_path, dispatch.RELAYED_COMMAND, lines(report("branch"))).returncode == 0
    relayed = tmp_path / "reports" / "relayed" / "relay1.json"
    before = relayed.read_bytes()
    big = report("big", items={f"item-{i:06d}": {"version": 1} for i in range(40_000)})
    for data, why in ((lines(report("ok1"), big), "report 2 is larger than"),
                      (lines(report("ok1")) + b"{not json\n", "report 2 is not JSON"),
                      (lines(report("ok1"), {**report("x"), "items": []}), "report 2: items is missing"),
                      (lines(report("ok1", via="relay2")), "report 1: via is not a list"),
                      (lines(report(None)), "report 1: site is not a name"),
                      (lines(*[report(f"s{i}") for i in range(dispatch.MAX_RELAYED + 1)]), "more than 1000")):
        r = store(tmp_path, dispatch.RELAYED_COMMAND, data)
        err = r.stderr.decode()
        assert r.returncode == 1 and why in err and err.count("\n") == 1 and r.stdout == b"", (why, err)
        assert relayed.read_bytes() == before
        assert sorted(p.name for p in relayed.parent.iterdir()) == ["relay1.json"]  # no temporary file left
    r = store(tmp_path, dispatch.RELAYED_COMMAND, lines(report("x")), key="ssh-ed25519 AAAAnobody")
    assert r.returncode == 1 and "not a site's key" in r.stderr.decode()


def test_the_batch_a_relay_sends_stays_within_the_bounds():
    reports = {f"s{i}": report(f"s{i}", at=f"2026-05-01T10:{i % 60:02d}:00Z") for i in range(1005)}
    data, left_out = batch(reports)
    sent = [json.loads(line) for line in data.splitlines()]
    assert len(sent) == dispatch.MAX_RELAYED and len(left_out) == 5
    assert min(d["at"] for d in sent) >= max(reports[s]["at"] for s in left_out)  # the newest are kept
