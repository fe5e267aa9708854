"""One rule for the names the web server serves: the manifest lists exactly what a real ``serve`` answers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from inprocess import run_cli
from support import cli_popen, free_port, stop_process, wait_until
from web.helpers import raw_request

from library_syncer.vcsp.names import MAX_REQUEST_PATH, name_problem, path_problem, printable
from library_syncer.vcsp import check_manifest, update_manifest
from library_syncer.vcsp import rules
from library_syncer.web.rules import split_request_path

from .helpers import put

BAD_UTF8 = b"bad\xffname".decode("utf-8", "surrogateescape")
SERVED = ["plain", "with space", "100%", "q?r#s;t&u+v", "ünï cødé", "line\u2028sep", "_SYNCER", "_syncer2",
          "x" * 200, "~tilde", "-dash"]
REFUSED = {
    "_syncer": "name '_syncer' is reserved for the web server's own pages",
    "ctl\nname": "name 'ctl\\nname' contains a control character (U+000A)",
    "cr\rname": "name 'cr\\rname' contains a control character (U+000D)",
    "tab\tname": "name 'tab\\tname' contains a control character (U+0009)",
    "del\x7fname": "name 'del\\x7fname' contains a control character (U+007F)",
    "c1\x85name": "name 'c1\\x85name' contains a control character (U+0085)",
    "back\\slash": "name 'back\\slash' contains a slash or backslash",
    BAD_UTF8: "name 'bad\\xffname' is not valid UTF-8",
}
FILE_SERVED = SERVED + ["_syncer"]  # reserved only as the first segment of a path
FILE_REFUSED = {n: why for n, why in REFUSED.items() if n not in FILE_SERVED}


def test_name_rules():
    for name in SERVED:
        assert name_problem(name) is None and path_problem([name, "a.iso"]) is None
    for name, why in REFUSED.items():
        assert path_problem([name, "a.iso"]) == why
        if name != "_syncer":
            assert path_problem(["item", name]) == why
    assert path_problem(["item", "_syncer"]) is None  # reserved only as the first segment
    assert path_problem([]) is None  # the root
    assert name_problem("") == "is empty" and name_problem(".hidden") == "starts with a dot"
    assert name_problem("a\0b") == "contains a control character (U+0000)"
    assert path_problem(["a" * (MAX_REQUEST_PATH - 1)]) is None
    assert path_problem(["a" * MAX_REQUEST_PATH]) == (
        f"its URL path has {MAX_REQUEST_PATH + 1} characters, over the web server's limit of {MAX_REQUEST_PATH}")
    assert printable("a\nb\x1b" + BAD_UTF8) == "a\\nb\\x1bbad\\xffname"


def test_web_request_paths_follow_the_same_rule():
    assert split_request_path("/" + quote("ünï cødé") + "/a.iso") == ("ünï cødé", "a.iso")
    for raw in ("/tab%09x/a.iso", "/a/b%0Ac", "/c1%C2%85x", "/del%7F", "/a%5Cb"):
        assert split_request_path(raw) is None, raw


@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=4))
@settings(max_examples=200)
def test_length_rule_measures_the_published_href(parts):
    if all(name_problem(p) is None for p in parts):
        assert path_problem(parts) is None or "URL path" in path_problem(parts)
        assert len("/" + rules.encode_href(*parts)) == 1 + len(quote("/".join(parts), safe="/"))


def _long_names(limit: int) -> tuple[list[str], str, str]:
    """Folders under item ``long`` and two file names whose request paths are ``limit`` and ``limit + 1``."""
    folders = ["é" * 40] * 33
    used = len("/" + rules.encode_href("long", *folders, ""))
    stem = "a" * (limit - used - len(".iso"))
    return folders, stem + ".iso", stem + "b.iso"


def _fs(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    for name in SERVED + list(REFUSED):
        put(Path(os.fsdecode(_fs(str(root)) + b"/" + _fs(name) + b"/a.iso")), f"folder {name!r}")
    for name in FILE_SERVED + list(FILE_REFUSED):
        put(Path(os.fsdecode(_fs(str(root)) + b"/files/" + _fs(name) + b".iso")), f"file {name!r}")
    folders, at_limit, over_limit = _long_names(MAX_REQUEST_PATH)
    put(root.joinpath("long", *folders, at_limit), "at the limit")
    put(root.joinpath("long", *folders, over_limit), "one over")
    return root


def test_manifest_lists_exactly_what_the_web_server_serves(library: Path):
    done = run_cli("manifest", library, "--name", "L")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    for name, why in REFUSED.items():  # each refused folder: its reason
        assert any(f": not served by the web server: {why}; left out" in line for line in lines), why
    for name, why in FILE_REFUSED.items():  # each refused file: a warning
        assert any(f"files/{printable(name)}.iso: file ignored, not served by the web server: "
                   f"{why.replace(printable(name), printable(name) + '.iso', 1)}" in line for line in lines), why
    assert f"{len(REFUSED)} problem(s)" in done.stderr

    items = {i["selfHref"]: i for i in json.loads((library / "items.json").read_text())["items"]}
    listed = {h for i in items.values() for f in i["files"] for h in f["hrefs"]} | set(items)
    folders, at_limit, over_limit = _long_names(MAX_REQUEST_PATH)
    expect = {rules.encode_href(n, "a.iso") for n in SERVED} | {rules.encode_href("files", n + ".iso") for n in FILE_SERVED}
    expect |= {rules.encode_href(n, "item.json") for n in SERVED + ["files", "long"]}
    expect.add(rules.encode_href("long", *folders, at_limit))
    assert listed == expect
    refused = {rules.encode_href(n, "a.iso") for n in REFUSED} | {rules.encode_href("files", n + ".iso") for n in FILE_REFUSED}
    refused.add(rules.encode_href("long", *folders, over_limit))

    port = free_port()
    proc = cli_popen("serve", library, "--host", "127.0.0.1", "--port", port,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _get_ok(port), 30, "the web server to answer")
        for href in sorted(listed):
            status, _, body = raw_request(port, "/" + href)
            assert status == 200, (status, href[:80])
        assert raw_request(port, "/" + rules.encode_href("long", *folders, at_limit))[2] == b"at the limit"
        for href in sorted(refused):  # what the manifest leaves out, the web server does not serve either
            status, _, _ = raw_request(port, "/" + href)
            assert status in (400, 404), (status, href[:80])
    finally:
        stop_process(proc)


def _get_ok(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/lib.json", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def test_check_flags_listed_hrefs_the_web_server_refuses(tmp_path: Path):
    put(tmp_path / "tab x" / "a.iso", "a")
    update_manifest(tmp_path, "L")
    items = json.loads((tmp_path / "items.json").read_text())
    items["items"][0]["files"][0]["hrefs"] = ["tab%20x/a%09.iso"]
    (tmp_path / "items.json").write_text(json.dumps(items))
    assert "item tab x: href 'tab%20x/a%09.iso' is not a served path inside the item folder" in check_manifest(tmp_path)
