"""One etag per item on real folders: the value, an upgrade from per-file md5 etags, ``manifest --check``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from inprocess import run_cli
from library_syncer.vcsp import STATE_DIRNAME, check_manifest, update_manifest
from library_syncer.vcsp.published import read_published

from .helpers import assert_one_etag_per_item, folder_etag, load, mtimes, put, template


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    root = tmp_path / "library"
    template(root / "Ubuntu Server", disk=b"disk v1" * 50)
    put(root / "tools iso" / "tools.iso", b"iso" * 100)
    put(root / "misc" / "notes.txt", "hello")
    put(root / "misc" / "sub dir" / "deep #1.bin", b"x" * 10)
    return root


def docs(root: Path) -> dict[str, dict]:
    return {e["name"]: e for e in load(root / "items.json")["items"]}


def gens(entry: dict) -> dict[str, int]:
    return {f["name"]: f["generationNum"] for f in entry["files"]}


def test_all_files_of_an_item_share_the_etag_their_bytes_give(lib: Path):
    update_manifest(lib, "Branch")
    assert_one_etag_per_item(lib)
    before = docs(lib)
    put(lib / "misc" / "notes.txt", "hallo", age=-10)  # same size, other bytes
    report = update_manifest(lib, "Branch")
    assert report.changed and check_manifest(lib) == []
    assert_one_etag_per_item(lib)
    after = docs(lib)
    assert after["misc"]["files"][0]["etag"] != before["misc"]["files"][0]["etag"]
    assert after["misc"]["version"] == "2"
    assert gens(after["misc"]) == {"notes.txt": 2, "sub dir/deep #1.bin": 1}  # only the changed file is sent
    assert after["Ubuntu Server"] == before["Ubuntu Server"] and after["tools iso"] == before["tools iso"]


def test_a_reexport_of_the_same_files_gives_the_same_etags(lib: Path, tmp_path: Path):
    update_manifest(lib, "Branch")
    copy = tmp_path / "relay"
    shutil.copytree(lib, copy, ignore=shutil.ignore_patterns("*.json", STATE_DIRNAME))
    update_manifest(copy, "Relay")
    assert {n: e["files"][0]["etag"] for n, e in docs(copy).items()} == \
        {n: e["files"][0]["etag"] for n, e in docs(lib).items()}


def per_file_md5(root: Path, doc: dict) -> dict:
    """``doc`` as the release before one etag per item wrote it: each file's own md5 as its etag."""
    folder = root / doc["selfHref"].replace("%20", " ").rsplit("/", 1)[0]
    old = json.loads(json.dumps(doc))
    for f in old["files"]:
        f["etag"] = hashlib.md5((folder / f["name"]).read_bytes()).hexdigest()
    return old


def downgrade(root: Path, keep_state: bool) -> None:
    """Leave ``root`` as the release with per-file md5 etags left it: its item.json, items.json and state."""
    items = load(root / "items.json")
    items["items"] = [per_file_md5(root, e) for e in items["items"]]
    for entry in items["items"]:
        (root / entry["selfHref"].replace("%20", " ")).write_text(json.dumps(entry, indent=2) + "\n")
    (root / "items.json").write_text(json.dumps(items, indent=2) + "\n")
    state_file = root / STATE_DIRNAME / "state.json"
    if not keep_state:
        state_file.unlink()
        return
    state = load(state_file)
    state["items"] = {k: per_file_md5(root, v) for k, v in state["items"].items()}
    del state["md5"]  # that release kept no md5 per file
    state_file.write_text(json.dumps(state))


@pytest.mark.parametrize("keep_state", [True, False], ids=["state-kept", "state-lost"])
def test_upgrade_from_per_file_etags_sends_vcenter_nothing_again(lib: Path, keep_state: bool):
    update_manifest(lib, "Branch")
    put(lib / "tools iso" / "tools.iso", b"ISO" * 100, age=-10)
    update_manifest(lib, "Branch")  # versions and generations other than 1
    downgrade(lib, keep_state)
    old, lib_before = docs(lib), (lib / "lib.json").read_bytes()
    lib_mtime = mtimes(lib)["lib.json"]
    problems = check_manifest(lib)
    assert problems == [
        "items.json entry of Ubuntu Server: its 3 files carry 3 different etags; vCenter expects one etag per item",
        "items.json entry of misc: its 2 files carry 2 different etags; vCenter expects one etag per item",
    ]

    report = update_manifest(lib, "Branch")
    assert not report.changed and report.library_version == 2 and not report.problems
    assert report.files_written > 0  # item.json and items.json now carry one etag per item
    assert (lib / "lib.json").read_bytes() == lib_before and mtimes(lib)["lib.json"] == lib_mtime
    new = docs(lib)
    for name, entry in new.items():  # vCenter sees the same versions: no item, no file fetched again
        assert (entry["id"], entry["version"], entry["contentVersion"]) == \
            (old[name]["id"], old[name]["version"], old[name]["contentVersion"])
        assert gens(entry) == gens(old[name])
    assert gens(new["tools iso"]) == {"tools.iso": 2} and new["tools iso"]["version"] == "2"
    assert_one_etag_per_item(lib)
    assert check_manifest(lib) == []

    # after the upgrade a real change counts as before: one file changed, its generation and the version go up
    put(lib / "misc" / "notes.txt", "hallo", age=-20)
    report = update_manifest(lib, "Branch")
    assert report.changed and report.library_version == 3
    misc = docs(lib)["misc"]
    assert misc["version"] == "2" and gens(misc) == {"notes.txt": 2, "sub dir/deep #1.bin": 1}
    assert_one_etag_per_item(lib)


def test_a_held_back_item_keeps_the_md5_of_its_published_files(lib: Path, tmp_path: Path):
    update_manifest(lib, "Branch")
    pub = tmp_path / "published"
    shutil.copytree(lib, pub, ignore=shutil.ignore_patterns(STATE_DIRNAME))
    put(lib / "Ubuntu Server" / "vm-disk1.vmdk", b"disk v2" * 60, age=-10)  # the .mf not rewritten yet
    held = update_manifest(lib, "Branch", published=read_published(pub))
    assert list(held.held_back) == ["Ubuntu Server"]
    template(lib / "Ubuntu Server", disk=b"disk v2" * 60, age=-20)  # the export completes; the .ovf is the same
    done = update_manifest(lib, "Branch", published=read_published(pub))
    assert not done.held_back and check_manifest(lib) == []
    ubuntu = docs(lib)["Ubuntu Server"]
    assert ubuntu["version"] == "2"
    assert gens(ubuntu) == {"vm.ovf": 1, "vm-disk1.vmdk": 2, "vm.mf": 2}
    assert {f["etag"] for f in ubuntu["files"]} == {folder_etag(lib / "Ubuntu Server")}


def test_manifest_check_names_each_item_whose_files_disagree(lib: Path):
    update_manifest(lib, "Branch")
    assert run_cli("manifest", "--check", lib).returncode == 0
    downgrade(lib, keep_state=True)
    bad = run_cli("manifest", "--check", lib)
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [
        "items.json entry of Ubuntu Server: its 3 files carry 3 different etags; vCenter expects one etag per item",
        "items.json entry of misc: its 2 files carry 2 different etags; vCenter expects one etag per item",
    ]
    assert "manifest of" in bad.stderr and "2 problem(s)" in bad.stderr
