"""update_manifest / check_manifest on real folders."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from library_syncer.errors import OperationFailed, UserError
from library_syncer.vcsp import STATE_DIRNAME, check_manifest, update_manifest

from .helpers import OLD, load, mtimes, put, template


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    root = tmp_path / "library"
    template(root / "Ubuntu Server")
    put(root / "tools iso" / "tools.iso", b"iso" * 100)
    put(root / "misc" / "notes.txt", "hello")
    put(root / "misc" / "sub dir" / "deep #1.bin", b"x" * 10)
    return root


def test_first_run_writes_a_valid_manifest(lib: Path):
    report = update_manifest(lib, "Branch")
    assert report.changed and report.library_version == 1 and not report.problems
    assert [(i.folder, i.type, i.version) for i in report.items] == [
        ("Ubuntu Server", "vcsp.ovf", 1), ("misc", "vcsp.other", 1), ("tools iso", "vcsp.iso", 1)]
    assert report.files_hashed == 6
    libdoc = load(lib / "lib.json")
    assert libdoc["name"] == "Branch" and libdoc["version"] == "1" and libdoc["itemsHref"] == "items.json"
    items = load(lib / "items.json")["items"]
    for entry in items:
        folder = entry["selfHref"].rsplit("/", 1)[0]
        assert load(lib / entry["selfHref"].replace("%20", " ")) == entry
        assert entry["id"] != libdoc["id"] and folder
    misc = next(e for e in items if e["name"] == "misc")
    assert [f["hrefs"][0] for f in misc["files"]] == ["misc/notes.txt", "misc/sub%20dir/deep%20%231.bin"]
    assert [f["name"] for f in misc["files"]] == ["notes.txt", "sub dir/deep #1.bin"]
    assert check_manifest(lib) == []


def test_rerun_without_change_rewrites_nothing_and_reads_nothing(lib: Path):
    first = update_manifest(lib, "Branch")
    before = mtimes(lib)
    state_before = (lib / STATE_DIRNAME / "state.json").stat().st_mtime_ns
    again = update_manifest(lib, "Branch")
    assert not again.changed and again.files_hashed == 0 and again.files_written == 0
    assert again.library_version == first.library_version
    assert mtimes(lib) == before
    assert (lib / STATE_DIRNAME / "state.json").stat().st_mtime_ns == state_before


def test_one_changed_file_is_the_only_one_read(lib: Path):
    update_manifest(lib, "Branch")
    items_before = {e["name"]: e for e in load(lib / "items.json")["items"]}
    put(lib / "tools iso" / "tools.iso", b"ISO" * 100, age=10)  # same size, new content
    report = update_manifest(lib, "Branch")
    assert report.files_hashed == 1 and report.bytes_hashed == 300
    assert report.changed and report.library_version == 2
    items = {e["name"]: e for e in load(lib / "items.json")["items"]}
    iso = items["tools iso"]
    assert iso["version"] == "2" and iso["files"][0]["generationNum"] == 2
    assert iso["id"] == items_before["tools iso"]["id"] and iso["created"] == items_before["tools iso"]["created"]
    assert items["misc"] == items_before["misc"] and items["Ubuntu Server"] == items_before["Ubuntu Server"]
    assert [i.folder for i in report.items if i.changed] == ["tools iso"]


def test_unchanged_item_json_files_keep_their_mtime_when_another_item_changes(lib: Path):
    update_manifest(lib, "Branch")
    before = mtimes(lib)
    put(lib / "misc" / "notes.txt", "hello again", age=5)
    update_manifest(lib, "Branch")
    after = mtimes(lib)
    assert after["tools iso/item.json"] == before["tools iso/item.json"]
    assert after["misc/item.json"] != before["misc/item.json"]
    assert after["lib.json"] != before["lib.json"]


def test_add_and_remove_items(lib: Path):
    update_manifest(lib, "Branch")
    put(lib / "new" / "n.iso", "n")
    assert update_manifest(lib, "Branch").library_version == 2
    for p in sorted((lib / "misc").rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    (lib / "misc").rmdir()
    report = update_manifest(lib, "Branch")
    assert report.library_version == 3 and [i.folder for i in report.items] == ["Ubuntu Server", "new", "tools iso"]
    assert check_manifest(lib) == []


def test_ignored_entries(lib: Path):
    put(lib / ".vSphere-HA" / "x" / "y.iso", "ha")
    put(lib / "misc" / ".hidden", "h")
    put(lib / "misc" / ".dotdir" / "z", "z")
    put(lib / "stray.iso", "root file")
    put(lib / "misc" / "sub dir" / "item.json", "{}")  # a user file, not our manifest
    os.symlink("/etc/passwd", lib / "misc" / "link")
    report = update_manifest(lib, "Branch")
    assert "stray.iso: not in an item folder, ignored" in report.warnings
    assert "misc/link: symbolic link ignored" in report.warnings
    misc = load(lib / "misc" / "item.json")
    assert [f["name"] for f in misc["files"]] == ["notes.txt", "sub dir/deep #1.bin", "sub dir/item.json"]
    assert [i.folder for i in report.items] == ["Ubuntu Server", "misc", "tools iso"]
    assert not any(e.startswith(".") for e in json.dumps(load(lib / "items.json")).split('"'))


def test_names_that_need_encoding(tmp_path: Path):
    root = tmp_path / "lib"
    weird = ["a b", "ünï cødé", "100%", "x#y", "q?r", "p+q", "a&b", "x" * 120]
    for name in weird:
        put(root / name / f"{name[:50]} file %#?+&.iso", "data")
    update_manifest(root, "L")
    assert check_manifest(root) == []
    items = load(root / "items.json")["items"]
    assert len({e["name"] for e in items}) == len(weird) and all(len(e["name"]) <= 80 for e in items)
    for e in items:
        from urllib.parse import unquote
        assert (root / unquote(e["files"][0]["hrefs"][0])).is_file()
        assert (root / unquote(e["selfHref"])).is_file()


def test_bad_templates_are_left_out_and_the_rest_published(lib: Path):
    template(lib / "missing disk")
    (lib / "missing disk" / "vm-disk1.vmdk").unlink()
    (lib / "missing disk" / "vm.mf").unlink()
    template(lib / "bad digest")
    put(lib / "bad digest" / "vm-disk1.vmdk", b"tampered!!", age=3)
    template(lib / "two ovf", with_mf=False)
    template(lib / "two ovf", name="other", with_mf=False)
    put(lib / "broken xml" / "vm.ovf", "<Envelope><References>")
    report = update_manifest(lib, "Branch")
    assert sorted(report.problems) == sorted([
        "item bad digest: vm.mf: SHA256 digest of 'vm-disk1.vmdk' does not match; left out",
        "item broken xml: vm.ovf: not well-formed XML (no element found, line 1); left out",
        "item missing disk: vm.ovf: referenced file 'vm-disk1.vmdk' is missing; left out",
        "item two ovf: 2 OVF descriptors (other.ovf, vm.ovf): one template per item; left out",
    ])
    assert [i.folder for i in report.items] == ["Ubuntu Server", "misc", "tools iso"]
    problems = check_manifest(lib)
    assert sorted(problems) == [f"item {n}: folder not listed in items.json"
                                for n in ("bad digest", "broken xml", "missing disk", "two ovf")]


def test_mf_digests_are_cached(lib: Path):
    update_manifest(lib, "Branch")
    state = json.loads((lib / STATE_DIRNAME / "state.json").read_text())
    disk = state["hashes"]["Ubuntu Server/vm-disk1.vmdk"]
    assert {"md5", "sha256"} <= set(disk) and state["hashes"]["Ubuntu Server/vm.mf"]["mf"]
    assert update_manifest(lib, "Branch").files_hashed == 0
    put(lib / "Ubuntu Server" / "vm-disk1.vmdk", b"tampered!!", age=7)  # digest now wrong
    report = update_manifest(lib, "Branch")
    assert report.files_hashed == 1 and report.problems
    assert update_manifest(lib, "Branch").files_hashed == 0


def test_fixed_item_comes_back_with_its_id(lib: Path):
    update_manifest(lib, "Branch")
    item_id = load(lib / "Ubuntu Server" / "item.json")["id"]
    (lib / "Ubuntu Server" / "vm-disk1.vmdk").rename(lib / "Ubuntu Server" / "moved")
    assert update_manifest(lib, "Branch").problems
    (lib / "Ubuntu Server" / "moved").rename(lib / "Ubuntu Server" / "vm-disk1.vmdk")
    report = update_manifest(lib, "Branch")
    assert not report.problems and report.library_version == 3
    doc = load(lib / "Ubuntu Server" / "item.json")
    assert doc["id"] == item_id and doc["version"] == "2"  # back after being left out


@pytest.mark.parametrize("damage", ["delete", "corrupt", "garbage-json"])
def test_lost_or_corrupt_state_keeps_ids_and_versions(lib: Path, damage: str):
    update_manifest(lib, "Branch")
    put(lib / "tools iso" / "tools.iso", b"ISO" * 100, age=10)
    update_manifest(lib, "Branch")
    before = {p: load(lib / p) for p in mtimes(lib)}
    state = lib / STATE_DIRNAME / "state.json"
    if damage == "delete":
        state.unlink()
    elif damage == "corrupt":
        state.write_bytes(state.read_bytes()[:50])
    else:
        state.write_text('{"format": 1, "items": [], "hashes": 3}')
    before_mtimes = mtimes(lib)
    report = update_manifest(lib, "Branch")
    assert not report.changed and report.library_version == 2
    assert {p: load(lib / p) for p in mtimes(lib)} == before
    assert mtimes(lib) == before_mtimes
    assert any("state file" in w for w in report.warnings) == (damage != "delete")
    put(lib / "tools iso" / "tools.iso", b"IsO" * 100, age=20)
    update_manifest(lib, "Branch")
    iso = load(lib / "tools iso" / "item.json")
    assert iso["id"] == before["tools iso/item.json"]["id"] and iso["version"] == "3"
    assert iso["files"][0]["generationNum"] == 3


def test_deleted_item_json_is_rewritten_unchanged(lib: Path):
    update_manifest(lib, "Branch")
    doc = load(lib / "misc" / "item.json")
    (lib / "misc" / "item.json").unlink()
    report = update_manifest(lib, "Branch")
    assert not report.changed and report.files_written == 1 and load(lib / "misc" / "item.json") == doc


def test_state_path_elsewhere(lib: Path, tmp_path: Path):
    state = tmp_path / "elsewhere" / "state.json"
    update_manifest(lib, "Branch", state_path=state)
    assert state.is_file() and not (lib / STATE_DIRNAME).exists()
    assert update_manifest(lib, "Branch", state_path=state).files_hashed == 0


def test_bad_root(tmp_path: Path):
    with pytest.raises(UserError, match=r"library folder .*/nope: does not exist"):
        update_manifest(tmp_path / "nope", "L")
    put(tmp_path / "file", "x")
    with pytest.raises(UserError, match="is not a folder"):
        update_manifest(tmp_path / "file", "L")
    with pytest.raises(UserError, match="name"):
        update_manifest(tmp_path, " ")


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)


@pytest.mark.root
def test_read_only_root(tmp_path: Path):
    mnt = tmp_path / "ro"
    _mount_tmpfs(mnt, "size=1m")
    try:
        put(mnt / "item" / "a.iso", "a")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(UserError, match="is not writable") as err:
            update_manifest(mnt, "L")
        assert err.value.exit_code == 2
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.root
def test_full_disk_keeps_the_previous_manifest(tmp_path: Path):
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "size=1m")
    try:
        for i in range(3):
            put(mnt / f"item{i}" / "a.iso", f"a{i}")
        update_manifest(mnt, "L")
        before = {p: (mnt / p).read_bytes() for p in mtimes(mnt)}
        # many new items: their item.json files and items.json no longer fit
        for i in range(3, 12):
            put(mnt / f"item-with-a-longer-name-{i:03}" / "a.iso", "b")
        filler = mnt / ".filler"
        with open(filler, "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        with pytest.raises(OperationFailed, match="No space left on device"):
            update_manifest(mnt, "L")
        assert (mnt / "lib.json").read_bytes() == before["lib.json"]
        assert (mnt / "items.json").read_bytes() == before["items.json"]
        assert not [p for p in mnt.rglob(".*.tmp-*")]
        filler.unlink()
        report = update_manifest(mnt, "L")
        assert report.library_version == 2 and check_manifest(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_second_writer_waits_then_fails(lib: Path):
    from library_syncer.util.fs import writer_lock

    update_manifest(lib, "Branch")
    lock = lib / STATE_DIRNAME / "state.json.lock"
    with writer_lock(lock, 1):
        with pytest.raises(OperationFailed, match="another manifest update"):
            update_manifest(lib, "Branch", lock_timeout=0.2)
    assert update_manifest(lib, "Branch").files_hashed == 0


def test_concurrent_writers_agree(lib: Path):
    errors = []

    def run():
        try:
            update_manifest(lib, "Branch")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and check_manifest(lib) == []
    assert load(lib / "lib.json")["version"] == "1"


def test_check_reports_every_problem(lib: Path):
    update_manifest(lib, "Branch")
    items = load(lib / "items.json")
    entry = next(e for e in items["items"] if e["name"] == "tools iso")
    entry["files"][0]["generationNum"] = "7"
    (lib / "items.json").write_text(json.dumps(items))
    put(lib / "misc" / "notes.txt", "longer than before", age=30)
    put(lib / "misc" / "added.bin", "new")
    put(lib / "later" / "x.iso", "x")
    ovf_doc = load(lib / "Ubuntu Server" / "item.json")
    ovf_doc["metadata"][0]["value"] = "{not json"
    (lib / "Ubuntu Server" / "item.json").write_text(json.dumps(ovf_doc))
    problems = check_manifest(lib)
    text = "\n".join(problems)
    assert "Ubuntu Server/item.json: differs from its entry in items.json" in problems
    assert "items.json entry of tools iso: files[0]: generationNum '7' is not an integer" in problems
    assert "tools iso/item.json: differs from its entry in items.json" in problems
    assert "item misc: misc/notes.txt has 18 bytes, listed as 5" in problems
    assert "item misc: file added.bin is not listed" in problems
    assert "item later: folder not listed in items.json" in problems, text
    (lib / "Ubuntu Server" / "item.json").unlink()
    (lib / "items.json").write_text(json.dumps({"items": [dict(entry, type="vcsp.ovf")]}))
    problems = check_manifest(lib)
    assert "items.json entry of tools iso: OVF item without type-metadata" in problems
    (lib / "lib.json").write_text("{")
    assert check_manifest(lib) == ["lib.json: missing or not valid JSON"]


def test_hash_cache_reuses_by_key_after_a_rename(lib: Path):
    update_manifest(lib, "Branch")
    (lib / "tools iso").rename(lib / "tools")
    report = update_manifest(lib, "Branch")
    assert report.files_hashed == 0 and [i.folder for i in report.items][-1] == "tools"


def test_recently_modified_files_are_read_again(tmp_path: Path):
    root = tmp_path / "lib"
    (root / "i").mkdir(parents=True)
    (root / "i" / "fresh.iso").write_text("now")  # mtime = now: could change again within the tick
    assert update_manifest(root, "L").files_hashed == 1
    assert update_manifest(root, "L").files_hashed == 1
    os.utime(root / "i" / "fresh.iso", (OLD, OLD))
    assert update_manifest(root, "L").files_hashed == 1
    assert update_manifest(root, "L").files_hashed == 0


def test_leftover_temporary_files_are_removed(lib: Path):
    put(lib / ".lib.json.tmp-4242", "{")
    put(lib / "misc" / ".item.json.tmp-17", "{")
    put(lib / "misc" / ".keep.tmp-17", "user file")
    update_manifest(lib, "Branch")
    assert not (lib / ".lib.json.tmp-4242").exists() and not (lib / "misc" / ".item.json.tmp-17").exists()
    assert (lib / "misc" / ".keep.tmp-17").exists()
