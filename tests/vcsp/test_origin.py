"""The origin manifest's pure rules: versions only grow with content, peers are judged by them."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
import xxhash

from library_syncer.vcsp.origin import (
    FORMAT, dumps, next_origin, parse_origin, peer_verdict, refresh_origin, reexport,
)


def test_versions_grow_only_with_content():
    files = {"A": {"a.iso": (3, "m1")}, "B": {"b.ovf": (5, "m2")}}
    v1 = next_origin(None, files, "t1")
    assert v1["version"] == 1 and v1["items"]["A"]["version"] == 1 and v1["origin_id"].startswith("urn:uuid:")
    assert next_origin(v1, files, "t2") is v1  # same content: the same document, not even a new time
    v2 = next_origin(v1, {**files, "A": {"a.iso": (3, "m9")}}, "t3")
    assert v2["version"] == 2 and v2["origin_id"] == v1["origin_id"]
    assert v2["items"]["A"]["version"] == 2 and v2["items"]["B"]["version"] == 1
    v3 = next_origin(v2, {"B": files["B"]}, "t4")  # an item removed is a change too
    assert v3["version"] == 3 and set(v3["items"]) == {"B"}


def test_an_item_still_being_written_keeps_its_entry():
    v1 = next_origin(None, {"A": {"a": (1, "x")}}, "t1")
    # A's files are changing: it keeps its previous entry, nothing changed; a new item still changing is absent.
    assert next_origin(v1, {}, "t2", changing={"A": v1["items"]["A"], "New": None}) is v1


def test_parse_origin_refuses_what_is_not_one():
    good = dumps(next_origin(None, {"A": {"a": (1, "x")}}, "t"))
    assert parse_origin(good).version == 1
    for bad, why in ((b"{", "not JSON"), (b"[]", "format"), (b'{"format": "x"}', "format"),
                     (dumps({"format": FORMAT, "origin_id": "u", "version": 0, "items": {}}), "positive"),
                     (dumps({"format": FORMAT, "origin_id": "u", "version": True, "items": {}}), "positive"),
                     (dumps({"format": FORMAT, "origin_id": "u", "version": 2, "items": []}), "items"),
                     (dumps({"format": FORMAT, "origin_id": "u", "version": 2, "items": {}, "path": [1]}), "path")):
        with pytest.raises(ValueError, match=why):
            parse_origin(bad)


def _origin(version: int, origin_id: str = "urn:uuid:o", path: list | None = None):
    doc = {"format": FORMAT, "origin_id": origin_id, "version": version, "items": {}, "path": path or []}
    return parse_origin(dumps(doc))


def test_peer_verdict_never_backwards_never_through_itself():
    assert peer_verdict(None, _origin(1), "me") is None  # nothing published: anything goes
    assert peer_verdict(_origin(5), None, "me") is None  # an older server without origin manifest
    assert peer_verdict(_origin(5), _origin(5), "me") is None
    assert peer_verdict(_origin(5), _origin(6), "me") is None
    lagging = peer_verdict(_origin(5), _origin(4), "me")
    assert lagging.lagging and "older than the published 5" in lagging.reason
    assert peer_verdict(_origin(5), _origin(4, "urn:uuid:other"), "me") is None  # another origin: no order
    cycle = _origin(9, path=[{"id": "r1", "name": "relay-a"}, {"id": "me", "name": "this"}])
    refused = peer_verdict(_origin(5), cycle, "me")
    assert not refused.lagging and "cycle" in refused.reason


def test_reexport_adds_the_relay_and_its_lag():
    got = reexport(_origin(4, path=[{"id": "r1", "name": "relay-a"}]), relay_id="r2", relay_name="relay-b",
                   upstream_version=6, held_back=["X"])
    assert [p["id"] for p in got["path"]] == ["r1", "r2"] and got["upstream_version"] == 6
    assert got["held_back"] == ["X"] and got["version"] == 4
    again = reexport(parse_origin(dumps(got)), relay_id="r3", relay_name="c", upstream_version=None, held_back=[])
    assert "held_back" not in again and again["upstream_version"] == 4


def test_refresh_reads_each_file_once_and_waits_for_files_to_settle(tmp_path):
    lib, state = tmp_path / "lib", tmp_path / "state"
    (lib / "A").mkdir(parents=True)
    state.mkdir()
    old = time.time() - 100
    (lib / "A" / "a.iso").write_bytes(b"x" * 1000)
    os.utime(lib / "A" / "a.iso", (old, old))
    doc, changed = refresh_origin(lib, state, settle=10, now_text="t1")
    assert changed and doc["items"]["A"]["files"]["a.iso"] == {"size": 1000,
                                                                "md5": hashlib.md5(b"x" * 1000).hexdigest(),
                                                                "xxh128": xxhash.xxh3_128_hexdigest(b"x" * 1000)}
    (lib / "B").mkdir()
    (lib / "B" / "b.iso").write_bytes(b"new")  # just written: read at a later refresh
    doc2, changed = refresh_origin(lib, state, settle=10, now_text="t2")
    assert not changed and doc2["version"] == doc["version"] and "B" not in doc2["items"]
    os.utime(lib / "B" / "b.iso", (old, old))
    doc3, changed = refresh_origin(lib, state, settle=10, now_text="t3")
    assert changed and doc3["version"] == doc["version"] + 1 and set(doc3["items"]) == {"A", "B"}
