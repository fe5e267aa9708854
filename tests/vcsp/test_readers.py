"""Readers polling a live folder while its manifest is rewritten again and again.

Guarantee tested (readers following vCenter's order lib.json -> items.json ->
item.json): every file read is complete, valid JSON; lib.json versions never go
back; an item.json read after items.json is at least as new as its entry, and
identical to it when the versions are equal.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from urllib.parse import unquote

from library_syncer.vcsp import update_manifest

from .helpers import put, template

ROUNDS = 40


def test_readers_never_see_torn_or_disagreeing_files(tmp_path: Path):
    root = tmp_path / "lib"
    for i in range(4):
        put(root / f"item {i}" / "data.bin", f"v0-{i}")
    template(root / "tpl")
    update_manifest(root, "L")
    stop = threading.Event()
    failures: list[str] = []
    reads = [0]

    def reader() -> None:
        last_lib = 0
        while not stop.is_set() and not failures:
            try:
                lib = json.loads((root / "lib.json").read_bytes())
                items = json.loads((root / lib["itemsHref"]).read_bytes())["items"]
                for entry in items:
                    doc = json.loads((root / unquote(entry["selfHref"])).read_bytes())
                    if int(doc["version"]) < int(entry["version"]):
                        failures.append(f"{entry['selfHref']} older than its items.json entry")
                    elif doc["version"] == entry["version"] and doc != entry:
                        failures.append(f"{entry['selfHref']} differs from its entry at the same version")
                if int(lib["version"]) < last_lib:
                    failures.append("lib.json version went back")
                last_lib = int(lib["version"])
                reads[0] += 1
            except (ValueError, KeyError, OSError) as exc:
                failures.append(f"reader saw {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for n in range(1, ROUNDS + 1):
            put(root / f"item {n % 4}" / "data.bin", f"v{n}-{'x' * (n % 7)}", age=-n)
            if n % 10 == 0:
                put(root / f"added {n}" / "a.iso", "iso")
            report = update_manifest(root, "L")
            assert report.changed and not report.problems
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not failures, failures[:5]
    assert reads[0] > 0
    assert json.loads((root / "lib.json").read_bytes())["version"] == str(ROUNDS + 1)
