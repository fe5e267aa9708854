"""A site never loses a template, or a good version of it, because of a bad or half-finished export.

Real rsync from a local source folder (the same options as over SSH), the real
manifest engine and real generations.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from library_syncer.roles import site_status as st
from library_syncer.sync.guard import publish_guard
from library_syncer.roles.site_metrics import ClientMetrics
from library_syncer.sync.result import SyncResult
from library_syncer.sync.run import run_sync
from library_syncer.publish import generations as gen
from library_syncer.vcsp.check import check_manifest
from library_syncer.vcsp.published import Draft
from library_syncer.web.pages.site import render_status
from support import cli
from client.test_sync_local import settings
from vcsp.helpers import put, template


def served(library: Path) -> tuple[dict, dict[str, dict]]:
    """(lib.json, items by folder) of the current generation."""
    root = gen.current_root(library)
    lib = json.loads((root / "lib.json").read_text())
    items = json.loads((root / "items.json").read_text())["items"]
    return lib, {i["selfHref"].removesuffix("/item.json"): i for i in items}


def disk_bytes(library: Path, folder: str) -> bytes:
    return (gen.current_root(library) / folder / "vm-disk1.vmdk").read_bytes()


def rewrite_disk(src: Path, folder: str, data: bytes) -> None:
    """A re-export in progress: the disk is new, the .mf still lists the old digest."""
    put(src / folder / "vm-disk1.vmdk", data, age=-60)


def test_reexport_in_progress_keeps_every_template_at_its_old_version(tmp_path):
    src = tmp_path / "src"
    for name in ("CentOS", "Ubuntu", "Windows"):
        template(src / name, disk=f"{name} v1".encode() * 100)
    put(src / "Tools" / "tools.iso", b"iso v1")
    first = run_sync(settings(tmp_path), source=str(src))
    assert first.kind == "ok", first.reason
    lib1, items1 = served(tmp_path / "L")

    for name in ("CentOS", "Ubuntu", "Windows"):  # every VMDK rewritten, the .mf files not yet
        rewrite_disk(src, name, f"{name} v2".encode() * 120)
    r = run_sync(settings(tmp_path), source=str(src))
    assert r.ok and r.kind == "degraded", r.reason
    assert sorted(r.held_back) == ["CentOS", "Ubuntu", "Windows"]
    assert all("digest" in why for why in r.held_back.values()), r.held_back
    assert "held back" in r.summary() and "CentOS" in r.reason
    lib2, items2 = served(tmp_path / "L")
    assert items2 == items1  # same ids, versions, generationNums and etags
    assert lib2["version"] == lib1["version"]  # vCenter sees nothing to fetch
    for name in ("CentOS", "Ubuntu", "Windows"):
        assert disk_bytes(tmp_path / "L", name) == f"{name} v1".encode() * 100
    assert check_manifest(gen.current_root(tmp_path / "L")) == []

    # The export finishes (.mf rewritten): the new versions are published.
    for name in ("CentOS", "Ubuntu", "Windows"):
        template(src / name, disk=f"{name} v2".encode() * 120, age=-120)  # new mtimes, as a real export
    done = run_sync(settings(tmp_path), source=str(src))
    assert done.kind == "ok" and not done.held_back, done.reason
    lib3, items3 = served(tmp_path / "L")
    assert int(lib3["version"]) > int(lib1["version"])
    for name in ("CentOS", "Ubuntu", "Windows"):
        assert items3[name]["id"] == items1[name]["id"]
        assert int(items3[name]["version"]) > int(items1[name]["version"])
        assert disk_bytes(tmp_path / "L", name) == f"{name} v2".encode() * 120
    assert items3["Tools"] == items1["Tools"]
    assert check_manifest(gen.current_root(tmp_path / "L")) == []


def test_one_bad_mf_keeps_that_items_last_good_version(tmp_path):
    src = tmp_path / "src"
    template(src / "Good", disk=b"good v1")
    template(src / "Bad", disk=b"bad v1")
    assert run_sync(settings(tmp_path), source=str(src)).kind == "ok"
    _, items1 = served(tmp_path / "L")
    template(src / "Good", disk=b"good v2", age=-120)
    rewrite_disk(src, "Bad", b"bad v2, digest not in the .mf")
    r = run_sync(settings(tmp_path), source=str(src))
    assert r.kind == "degraded" and list(r.held_back) == ["Bad"], r.reason
    _, items2 = served(tmp_path / "L")
    assert items2["Bad"] == items1["Bad"] and disk_bytes(tmp_path / "L", "Bad") == b"bad v1"
    assert int(items2["Good"]["version"]) == int(items1["Good"]["version"]) + 1
    assert disk_bytes(tmp_path / "L", "Good") == b"good v2"
    # The staging tree keeps the new bytes, so the next run only fetches what is still missing.
    staged = gen.Layout(tmp_path / "L").staging / "Bad" / "vm-disk1.vmdk"
    assert staged.read_bytes() == b"bad v2, digest not in the .mf"
    # Held back again on the next run: no new generation, the same result kind.
    number = gen.current_generation(tmp_path / "L")
    again = run_sync(settings(tmp_path), source=str(src))
    assert again.kind == "degraded" and again.generation is None
    assert gen.current_generation(tmp_path / "L") == number


def test_item_without_a_good_version_is_left_out_not_held(tmp_path):
    src = tmp_path / "src"
    template(src / "Good", disk=b"good")
    template(src / "Broken", disk=b"broken")
    put(src / "Broken" / "vm.ovf", "<Envelope>not closed")
    r = run_sync(settings(tmp_path), source=str(src))
    assert r.kind == "ok" and not r.held_back  # nothing published was lost: it never had a good version
    assert any("Broken" in p and "left out" in p for p in r.problems)
    _, items = served(tmp_path / "L")
    assert sorted(items) == ["Good"]


def test_source_whose_items_all_fail_validation_is_refused(tmp_path):
    src = tmp_path / "src"
    template(src / "A", disk=b"a")
    template(src / "B", disk=b"b")
    for name in ("A", "B"):
        rewrite_disk(src, name, b"half-written")
    first = run_sync(settings(tmp_path), source=str(src))
    assert first.kind == "guard" and not first.ok
    assert "none of the 2 items" in first.reason and "validation" in first.reason
    assert gen.current_root(tmp_path / "L") is None  # no empty library published

    for name in ("A", "B"):
        template(src / name, disk=name.encode(), age=-120)
    assert run_sync(settings(tmp_path), source=str(src)).kind == "ok"
    number = gen.current_generation(tmp_path / "L")
    _, before = served(tmp_path / "L")
    staging = gen.Layout(tmp_path / "L").staging
    manifest_before = [(staging / f).read_bytes() for f in ("lib.json", "items.json", "A/item.json")]
    for name in ("A", "B"):
        put(src / name / "vm-disk1.vmdk", b"half-written again", age=-180)
    r = run_sync(settings(tmp_path), source=str(src))
    assert r.kind == "guard" and "none of the 2 items" in r.reason
    assert gen.current_generation(tmp_path / "L") == number and served(tmp_path / "L")[1] == before
    # Refused before anything was written: the staging manifest is untouched too.
    assert [(staging / f).read_bytes() for f in ("lib.json", "items.json", "A/item.json")] == manifest_before
    # Accepting it on purpose (SYNC_ALLOW_MASS_DELETE) still keeps the last good versions.
    forced = run_sync(settings(tmp_path, sync_allow_mass_delete=True), source=str(src))
    assert forced.kind == "degraded" and served(tmp_path / "L")[1] == before


def test_guard_counts_every_way_an_item_vanishes():
    published = {"a", "b", "c", "d"}
    keep_all = Draft(("a", "b", "c", "d"), {}, {})
    assert publish_guard(published, keep_all, 0.5, False) is None
    invalid = Draft(("a",), {}, {"b": "bad .mf", "c": "bad .ovf", "z": "never published"})
    why = publish_guard(published, invalid, 0.5, False)
    assert why and "3 of 4" in why and "2 failed validation (b, c)" in why and "1 no longer at the source (d)" in why
    assert publish_guard(published, invalid, 0.5, True) is None
    # Held back items are still published: they do not count as lost.
    held = Draft(("a", "b", "c", "d"), {"b": "x", "c": "y", "d": "z"}, {})
    assert publish_guard(published, held, 0.5, False) is None
    # Items a site filter leaves out on purpose are not lost either.
    filtered = Draft(("a",), {}, {})
    assert publish_guard(published, filtered, 0.5, False, filtered={"b", "c", "d"}) is None
    assert "all" in publish_guard({"a"}, Draft((), {}, {}), 0.9, False)
    assert publish_guard(set(), Draft(("a",), {}, {}), 0.0, False) is None


def test_degraded_exit_code_and_one_line(tmp_path):
    src = tmp_path / "src"
    template(src / "T", disk=b"one")
    put(src / "Other" / "o.iso", b"o")
    env = {"SYNCER_STATE_DIR": str(tmp_path / "state")}
    ok = cli("sync", "--library", tmp_path / "L", "--from-folder", src, env=env)
    assert ok.returncode == 0, ok.stderr
    rewrite_disk(src, "T", b"two")
    degraded = cli("sync", "--library", tmp_path / "L", "--from-folder", src, env=env)
    assert degraded.returncode == 3, degraded.stdout + degraded.stderr
    assert "sync degraded" in degraded.stdout and "T:" in degraded.stdout
    assert "held back at its published version" in degraded.stderr  # the log names the item and reason


def test_corrupted_staging_item_json_is_repaired_and_published(tmp_path):
    src = tmp_path / "src"
    template(src / "T", disk=b"disk")
    put(src / "I" / "i.iso", b"iso")
    assert run_sync(settings(tmp_path), source=str(src)).kind == "ok"
    staged = gen.Layout(tmp_path / "L").staging / "T" / "item.json"
    # Damage written in place: the published generation shares the inode, so it is damaged too.
    with open(staged, "r+b") as fh:
        fh.write(b"{ not json")
    assert check_manifest(gen.current_root(tmp_path / "L")) != []
    r = run_sync(settings(tmp_path), source=str(src))
    assert r.kind == "ok" and r.generation is not None, r.reason
    root = gen.current_root(tmp_path / "L")
    assert check_manifest(root) == []
    _, items = served(tmp_path / "L")
    assert json.loads((root / "T" / "item.json").read_text()) == items["T"]
    assert items["T"]["version"] == "1"  # same document as before the damage
    # Missing manifest files are written again too.
    (gen.Layout(tmp_path / "L").staging / "items.json").unlink()
    os.unlink(gen.Layout(tmp_path / "L").staging / "I" / "item.json")
    assert run_sync(settings(tmp_path), source=str(src)).kind == "ok"
    assert check_manifest(gen.Layout(tmp_path / "L").staging) == []


def test_held_back_is_visible_in_status_page_metrics_and_webhook():
    now = datetime.now(timezone.utc)
    ok = SyncResult(ok=True, reason="", started=now, ended=now, kind="ok")
    degraded = SyncResult(ok=True, reason="1 item(s) held back", started=now, ended=now, kind="degraded",
                          held_back={"CentOS": "vm.mf: digest of vm-disk1.vmdk does not match"})
    failed = SyncResult(ok=False, reason="ssh could not reach the server", started=now, ended=now, kind="gave-up")
    assert st.webhook_event(ok, degraded) == "sync_degraded"
    assert st.webhook_event(degraded, degraded) is None
    assert st.webhook_event(degraded, ok) == "sync_recovered"
    assert st.webhook_payload("sync_degraded", degraded, site="s", host="h", last_success=now)["held_back"] == {
        "CentOS": "vm.mf: digest of vm-disk1.vmdk does not match"}
    assert st.held_back_now([ok, degraded, failed]) == degraded.held_back  # a failure changes nothing served
    assert st.held_back_now([degraded, ok]) == {}

    published = {"generation": 2, "name": "L", "id": "x", "version": "3", "published_at": now.isoformat(),
                 "bytes": 10, "items": [{"name": "CentOS 9", "folder": "CentOS", "type": "vcsp.ovf",
                                         "version": "1", "size": 10, "files": 2, "changed": None}]}
    doc = st.client_status(site="Site", history=[degraded], running=None, next_run=None, published=published,
                           now=now, stale_after=3600, schedule="0 21 * * 5", tz=None, peer="p",
                           thumbprint=None)
    assert doc["held_back"] == degraded.held_back and doc["ready"]
    page = render_status(doc)
    assert "Held back" in page and "digest of vm-disk1.vmdk does not match" in page
    assert "degraded" in page and "held back</span>" in page

    metrics = ClientMetrics()
    metrics.observe_sync(degraded)
    metrics.observe_published(published, held_back=1)
    text = metrics.render().decode()
    assert "library_syncer_items_held_back 1.0" in text
    assert 'library_syncer_syncs_total{result="degraded"} 1.0' in text
