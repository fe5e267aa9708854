"""A site upgraded from per-file md5 etags: its next sync publishes one etag per item and keeps every
version and generationNum, so its vCenter downloads nothing again (real rsync, real generations)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from library_syncer.publish import generations as gen
from library_syncer.sync.run import run_sync
from library_syncer.vcsp.check import check_manifest
from client.test_publish_safety import served
from client.test_sync_local import settings
from vcsp.helpers import assert_one_etag_per_item, put, template


def replace_json(path: Path, doc: dict) -> None:
    """Write ``doc`` to ``path`` as a new file (the old one may be hard-linked into a generation)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def as_released_before(tree: Path) -> None:
    """Give every file of every item in ``tree`` its own md5 as etag, as the earlier release wrote them."""
    items = json.loads((tree / "items.json").read_text())
    for entry in items["items"]:
        folder = tree / entry["selfHref"].removesuffix("/item.json")
        for f in entry["files"]:
            f["etag"] = hashlib.md5((folder / f["name"]).read_bytes()).hexdigest()
        replace_json(folder / "item.json", entry)
    replace_json(tree / "items.json", items)


def test_upgraded_site_switches_etags_and_keeps_versions(tmp_path):
    src = tmp_path / "src"
    template(src / "CentOS", disk=b"CentOS v1" * 100)
    put(src / "Tools" / "tools.iso", b"iso v1")
    assert run_sync(settings(tmp_path), source=str(src)).kind == "ok"
    template(src / "CentOS", disk=b"CentOS v2" * 100, age=-60)  # versions and generations above 1
    assert run_sync(settings(tmp_path), source=str(src)).kind == "ok"

    library = tmp_path / "L"
    staging = gen.Layout(library).staging
    for tree in (staging, gen.current_root(library)):  # what the earlier release left, published and staged
        as_released_before(tree)
    state = staging / ".library-syncer" / "state.json"
    old_state = json.loads(state.read_text())
    old_state["items"] = json.loads((staging / "items.json").read_text())["items"]
    old_state["items"] = {e["selfHref"].removesuffix("/item.json"): e for e in old_state["items"]}
    del old_state["md5"]
    replace_json(state, old_state)
    lib1, items1 = served(library)
    assert len({f["etag"] for f in items1["CentOS"]["files"]}) == 3
    before = gen.current_root(library)

    r = run_sync(settings(tmp_path), source=str(src))
    assert r.kind == "ok", r.reason
    assert gen.current_root(library) != before  # a new generation carries the new etags
    lib2, items2 = served(library)
    assert lib2 == lib1  # vCenter polls lib.json: same version, nothing to fetch
    for name in ("CentOS", "Tools"):
        old, new = items1[name], items2[name]
        assert (new["id"], new["version"]) == (old["id"], old["version"])
        assert [f["generationNum"] for f in new["files"]] == [f["generationNum"] for f in old["files"]]
    assert {f["generationNum"] for f in items2["CentOS"]["files"]} == {1, 2}
    assert_one_etag_per_item(gen.current_root(library))
    assert check_manifest(gen.current_root(library)) == []
