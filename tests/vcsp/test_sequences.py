"""Random add/change/delete sequences on a real folder: the manifest follows every rule."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from library_syncer.vcsp import check_manifest, update_manifest

from .helpers import assert_one_etag_per_item, load, mtimes, put

FILES = ["a/x.iso", "a/y.bin", "b/z.ovf.txt", "c d/sub/w.dat", "%e#/q?.iso"]

steps = st.lists(
    st.lists(st.tuples(st.sampled_from(["write", "delete"]), st.sampled_from(FILES), st.integers(0, 3)),
             max_size=3),
    min_size=1, max_size=6,
)


@given(steps)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_manifest_follows_random_changes(seq):
    tmp = Path(tempfile.mkdtemp())
    try:
        root = tmp / "lib"
        root.mkdir()
        put(root / "keep" / "k.iso", "k")
        report = update_manifest(root, "L")
        lib_id = load(root / "lib.json")["id"]
        published: dict[str, dict] = {e["selfHref"]: e for e in load(root / "items.json")["items"]}
        known = dict(published)  # last document of every item ever published
        content: dict[str, str] = {}
        for step_no, step in enumerate(seq, 1):
            before = dict(content)
            for op, path, value in step:
                if op == "write":
                    content[path] = f"{value}" * (value + 1) + str(step_no % 2)
                    put(root / path, content[path], age=-step_no)
                elif path in content:
                    (root / path).unlink()
                    del content[path]
            old_mtimes = mtimes(root)
            old_lib = load(root / "lib.json")
            report = update_manifest(root, "L")
            assert not report.problems and check_manifest(root) == []
            lib = load(root / "lib.json")
            assert lib["id"] == lib_id
            now = {e["selfHref"]: e for e in load(root / "items.json")["items"]}
            changed_items = {p.split("/")[0] for p in set(before) | set(content) if before.get(p) != content.get(p)}
            for href, entry in now.items():
                folder = entry["files"][0]["hrefs"][0].split("/")[0]
                old = published.get(href)
                if old is None:  # new, or back after being left out: keeps its id
                    if href in known:
                        assert entry["id"] == known[href]["id"]
                        assert int(entry["version"]) > int(known[href]["version"])
                    else:
                        assert entry["version"] == "1"
                    continue
                assert entry["id"] == old["id"] and entry["created"] == old["created"]
                real = _decoded(folder) in changed_items
                assert int(entry["version"]) == int(old["version"]) + real
                old_files = {f["name"]: f for f in old["files"]}
                for f in entry["files"]:
                    prev = old_files.get(f["name"])
                    path = f"{_decoded(folder)}/{f['name']}"
                    if prev and before.get(path) == content.get(path):  # same bytes: vCenter keeps its copy
                        assert f["generationNum"] == prev["generationNum"]
                    elif prev:
                        assert f["generationNum"] > prev["generationNum"]
            assert_one_etag_per_item(root)
            anything = set(now) != set(published) or any(now[h] != published.get(h) for h in now)
            assert int(lib["version"]) == int(old_lib["version"]) + anything
            if not anything:
                assert mtimes(root) == old_mtimes
            published = now
            known.update(now)
    finally:
        shutil.rmtree(tmp)


def _decoded(folder_href: str) -> str:
    from urllib.parse import unquote

    return unquote(folder_href)
