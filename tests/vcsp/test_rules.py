"""Unit tests of the pure VCSP rules (no file system)."""

from __future__ import annotations

import json
import unicodedata
from urllib.parse import unquote, urljoin, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from library_syncer.vcsp import etags, rules
from library_syncer.vcsp.rules import ScannedFile

from .helpers import shared_etag

LIB = "urn:uuid:00000000-0000-4000-8000-000000000001"
NOW = "2024-01-01T00:00:00.000Z"
LATER = "2025-01-01T00:00:00.000Z"

names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\x00"), min_size=1, max_size=200
).filter(lambda s: s not in (".", ".."))


# --- type ---------------------------------------------------------------------------

def test_type_by_extension_not_substring_or_order():
    assert rules.item_type(["a.iso", "b.ovf", "b-disk1.vmdk"]) == "vcsp.ovf"
    assert rules.item_type(["b.ovf", "a.iso"]) == "vcsp.ovf"
    assert rules.item_type(["x.OVA"]) == "vcsp.ovf"
    assert rules.item_type(["ubuntu.iso"]) == "vcsp.iso"
    assert rules.item_type(["ovf-notes.txt", "iso-list.txt", "my.ovf.bak", "isofile"]) == "vcsp.other"
    assert rules.item_type(["sub/deep.ISO"]) == "vcsp.iso"
    assert rules.item_type(["ovf/readme"]) == "vcsp.other"  # a folder named ovf is not an extension
    assert rules.item_type([]) == "vcsp.other"


# --- hrefs --------------------------------------------------------------------------

def test_href_examples():
    assert rules.encode_href("My VM", "disk 1.vmdk") == "My%20VM/disk%201.vmdk"
    assert rules.encode_href("a%b#c?d+e&f", "ü.iso") == "a%25b%23c%3Fd%2Be%26f/%C3%BC.iso"
    assert rules.encode_href("x", "item.json") == "x/item.json"


@given(folder=names, file=names)
@settings(max_examples=150)
def test_href_resolves_to_the_path(folder, file):
    href = rules.encode_href(folder, file)
    assert href.isascii() and " " not in href and "#" not in href and "?" not in href
    assert unquote(href, errors="surrogateescape") == f"{folder}/{file}"
    # resolved against the URL of lib.json it stays under the library and names the file
    url = urljoin("https://site.example/library/lib.json", href)
    path = urlsplit(url).path
    assert path.startswith("/library/")
    assert unquote(path[len("/library/"):]) == f"{folder}/{file}"


def test_href_of_undecodable_name_keeps_raw_bytes():
    name = b"caf\xe9.iso".decode("utf-8", "surrogateescape")
    assert rules.encode_href("x", name) == "x/caf%E9.iso"
    assert rules.display_text(name) == "caf\ufffd.iso"


# --- names --------------------------------------------------------------------------

def test_short_names_unchanged():
    assert rules.display_names(["a", "Ubuntu 22.04"]) == {"a": "a", "Ubuntu 22.04": "Ubuntu 22.04"}


def test_long_names_shortened_keep_extension():
    long = "x" * 100 + ".iso"
    short = rules.display_names([long])[long]
    assert len(short) <= 80 and short.endswith(".iso") and short.startswith("x" * 50)
    nodot = "y" * 120
    assert len(rules.display_names([nodot])[nodot]) <= 80


def test_shortening_never_splits_a_combining_sequence():
    name = "e\u0301" * 60  # 120 code points, every second one combining
    short = rules.shorten_name(name)
    stem = short.split("~")[0]
    assert len(short) <= 80 and not unicodedata.combining(stem[0])
    assert unicodedata.normalize("NFC", stem) == "\u00e9" * (len(stem) // 2)


def test_shortened_name_clashing_with_a_real_name_is_made_unique():
    long = "z" * 100
    clash = rules.shorten_name(long)
    result = rules.display_names([long, clash])
    assert result[clash] == clash and result[long] != clash and len(result[long]) <= 80


@given(st.lists(names, max_size=12, unique=True), st.text("ab", min_size=70, max_size=90))
@settings(max_examples=150)
def test_display_names_unique_bounded_deterministic(folders, prefix):
    folders = folders + [prefix + f for f in folders]  # many shared long prefixes
    folders = list(dict.fromkeys(folders))
    result = rules.display_names(folders)
    assert set(result) == set(folders)
    assert len(set(result.values())) == len(folders)
    assert all(0 < len(n) <= 80 for n in result.values())
    assert all(result[f] == f for f in folders if len(f) <= 80)
    assert rules.display_names(list(reversed(folders))) == result


# --- documents ----------------------------------------------------------------------

def _plan(files, prev=None, folder="item", name="item", now=NOW, known=None):
    return rules.plan_item(folder=folder, name=name, files=files, prev=prev, library_id=LIB, now=now, known=known)


def test_ovf_item_document_and_type_metadata():
    plan = _plan([ScannedFile("vm.ovf", 10, "a" * 32), ScannedFile("vm-disk1.vmdk", 20, "b" * 32)], folder="My VM")
    doc = plan.doc
    assert plan.changed and doc["type"] == "vcsp.ovf" and doc["version"] == doc["contentVersion"] == "1"
    assert doc["selfHref"] == "My%20VM/item.json" and rules.is_uuid_urn(doc["id"])
    assert [f["name"] for f in doc["files"]] == ["vm-disk1.vmdk", "vm.ovf"]
    f0 = doc["files"][0]
    etag = shared_etag({"vm.ovf": "a" * 32, "vm-disk1.vmdk": "b" * 32})
    assert f0 == {"name": "vm-disk1.vmdk", "size": 20, "etag": etag, "generationNum": 1,
                  "hrefs": ["My%20VM/vm-disk1.vmdk"]}
    assert doc["files"][1]["etag"] == etag  # one etag per item
    meta = doc["metadata"][0]
    assert (meta["key"], meta["type"], meta["domain"], meta["visibility"]) == (
        "type-metadata", "String", "SYSTEM", "READONLY")
    value = json.loads(meta["value"])
    assert value["id"] == doc["id"] and value["libraryIdParent"] == LIB and value["version"] == "1"
    assert value["isVappTemplate"] == "false" and value["networks"] == []


def test_iso_and_other_have_no_metadata():
    assert "metadata" not in _plan([ScannedFile("a.iso", 1, "c" * 32)]).doc
    assert _plan([ScannedFile("a.txt", 1, "c" * 32)]).doc["type"] == "vcsp.other"


def test_unchanged_item_keeps_everything():
    files = [ScannedFile("a.iso", 5, "d" * 32)]
    first = _plan(files).doc
    again = _plan(files, prev=json.loads(json.dumps(first)), now=LATER)
    assert not again.changed and again.doc == first


def test_changed_file_bumps_version_and_its_generation_only():
    first = _plan([ScannedFile("a.vmdk", 5, "d" * 32), ScannedFile("b.ovf", 5, "e" * 32)]).doc
    second = _plan([ScannedFile("a.vmdk", 6, "f" * 32), ScannedFile("b.ovf", 5, "e" * 32)], prev=first, now=LATER,
                   known={"a.vmdk": "d" * 32, "b.ovf": "e" * 32})
    assert second.changed
    doc = second.doc
    assert (doc["id"], doc["created"]) == (first["id"], first["created"])
    assert doc["version"] == doc["contentVersion"] == "2"
    assert [f["generationNum"] for f in doc["files"]] == [2, 1]
    assert {f["etag"] for f in doc["files"]} == {shared_etag({"a.vmdk": "f" * 32, "b.ovf": "e" * 32})}
    assert json.loads(doc["metadata"][0]["value"])["version"] == "2"


def test_renamed_display_name_bumps_version_not_generations():
    first = _plan([ScannedFile("a.iso", 5, "d" * 32)]).doc
    second = _plan([ScannedFile("a.iso", 5, "d" * 32)], prev=first, name="renamed")
    assert second.changed and second.doc["version"] == "2" and second.doc["files"][0]["generationNum"] == 1


def test_garbage_previous_document_gets_fresh_values():
    plan = _plan([ScannedFile("a.iso", 5, "d" * 32)], prev={"id": "nope", "version": "x", "files": "no"})
    assert rules.is_uuid_urn(plan.doc["id"]) and plan.doc["version"] == "1" and plan.changed


ops = st.lists(
    st.tuples(st.sampled_from(["add", "change", "delete", "touch-nothing"]), st.sampled_from("abcd")),
    min_size=1, max_size=25,
)


@given(ops)
@settings(max_examples=120)
def test_sequences_of_changes(seq):
    """Over any add/change/delete sequence: id and created fixed, versions and generations grow exactly on change."""
    content: dict[str, int] = {"a": 0}
    counter = 0
    doc = _plan([ScannedFile("a", 1, "0" * 32)]).doc
    gens: dict[str, list[int]] = {"a": [1]}
    for op, name in seq:
        before = dict(content)
        if op == "add" and name not in content or op == "change" and name in content:
            counter += 1
            content[name] = counter
        elif op == "delete" and name in content and len(content) > 1:
            del content[name]
        files = [ScannedFile(n, 1, f"{v:032x}") for n, v in content.items()]
        plan = _plan(files, prev=doc, now=LATER, known={n: f"{v:032x}" for n, v in before.items()})
        assert plan.changed == (content != before)
        assert plan.doc["id"] == doc["id"] and plan.doc["created"] == NOW
        assert int(plan.doc["version"]) == int(doc["version"]) + plan.changed
        old = {f["name"]: f for f in doc["files"]}
        for f in plan.doc["files"]:
            n = f["name"]
            if n in old and before.get(n) == content[n]:
                assert f["generationNum"] == old[n]["generationNum"]
            else:
                assert f["generationNum"] > max(gens.get(n, [0]))
                assert f["generationNum"] == int(plan.doc["version"])
            gens.setdefault(n, []).append(f["generationNum"])
        assert {f["etag"] for f in plan.doc["files"]} == {shared_etag({f.path: f.md5 for f in files})}
        doc = json.loads(json.dumps(plan.doc))


def test_library_version_rules():
    lib, changed = rules.plan_library(prev=None, library_id=LIB, name="L", any_item_changed=False, now=NOW)
    assert changed and lib["version"] == "1" and lib["id"] == LIB and lib["created"] == NOW
    assert lib["vcspVersion"] == "2" and lib["itemsHref"] == "items.json"
    assert lib["capabilities"] == {"transferIn": ["httpGet"], "transferOut": ["httpGet"]}
    same, changed = rules.plan_library(prev=lib, library_id=LIB, name="L", any_item_changed=False, now=LATER)
    assert not changed and same == lib
    bumped, changed = rules.plan_library(prev=lib, library_id=LIB, name="L", any_item_changed=True, now=LATER)
    assert changed and bumped["version"] == "2" and bumped["created"] == NOW
    renamed, changed = rules.plan_library(prev=bumped, library_id=LIB, name="M", any_item_changed=False, now=LATER)
    assert changed and renamed["version"] == "3"


def test_dumps_is_deterministic_utf8():
    doc = {"b": "ü", "a": [1, {"c": None}]}
    assert rules.dumps(doc) == rules.dumps(json.loads(rules.dumps(doc)))
    assert rules.dumps(doc).endswith(b"\n") and "ü".encode() in rules.dumps(doc)


def test_returning_item_gets_a_new_version():
    files = [ScannedFile("a.iso", 5, "d" * 32)]
    first = _plan(files).doc
    back = rules.plan_item(folder="item", name="item", files=files, prev=first, library_id=LIB, now=LATER,
                           returning=True)
    assert back.changed and back.doc["version"] == "2" and back.doc["id"] == first["id"]
    assert back.doc["files"][0]["generationNum"] == 1


# --- one etag per item ----------------------------------------------------------------

def test_item_etag_is_a_java_long_that_follows_every_file():
    base = {"vm.ovf": "a" * 32, "vm-disk1.vmdk": "b" * 32}
    tag = etags.item_etag(base.items())
    assert tag == shared_etag(base) and tag.isdigit() and 0 <= int(tag) <= 2**63 - 1
    assert etags.item_etag(reversed(list(base.items()))) == tag  # order of the scan does not matter
    others = [{**base, "vm.ovf": "c" * 32}, {"vm.ovf": "a" * 32}, {"x/vm.ovf": "a" * 32, "vm-disk1.vmdk": "b" * 32},
              {**base, "vm.mf": "d" * 32}]
    assert len({tag} | {etags.item_etag(o.items()) for o in others}) == 1 + len(others)
    odd = b"caf\xe9.iso".decode("utf-8", "surrogateescape")
    assert etags.item_etag([(odd, "e" * 32)]) == shared_etag({odd: "e" * 32})


def _per_file_md5(doc):
    """``doc`` as the release before one etag per item wrote it: each file's own md5 as its etag."""
    old = json.loads(json.dumps(doc))
    for f in old["files"]:
        f["etag"] = MD5[f["name"]]
    return old


MD5 = {"vm.ovf": "a" * 32, "vm-disk1.vmdk": "b" * 32, "vm.mf": "c" * 32}
TEMPLATE = [ScannedFile(n, 10 + i, m) for i, (n, m) in enumerate(MD5.items())]


def test_upgrade_from_per_file_etags_keeps_versions_and_generations():
    first = _plan(TEMPLATE).doc
    second = _plan(TEMPLATE, prev=first, known=MD5).doc
    upgraded = _plan(TEMPLATE, prev=_per_file_md5(second), now=LATER)  # no md5 record (the old state had none)
    assert not upgraded.changed and upgraded.doc == second  # same version and generationNums, one etag
    with_record = _plan(TEMPLATE, prev=_per_file_md5(second), now=LATER, known=MD5)
    assert not with_record.changed and with_record.doc == second
    # a real change in the same run still counts: the disk's generation and the version go up
    changed = [ScannedFile("vm-disk1.vmdk", 11, "f" * 32) if f.path == "vm-disk1.vmdk" else f for f in TEMPLATE]
    plan = _plan(changed, prev=_per_file_md5(second), now=LATER)
    gens = {f["name"]: f["generationNum"] for f in plan.doc["files"]}
    assert plan.changed and plan.doc["version"] == "2" and gens == {"vm.ovf": 1, "vm-disk1.vmdk": 2, "vm.mf": 1}


def test_without_an_md5_record_a_changed_item_bumps_every_file():
    """The state file lost: the shared etag says the item changed, not which file; all files are sent again."""
    first = _plan(TEMPLATE).doc
    changed = [ScannedFile("vm-disk1.vmdk", 11, "f" * 32) if f.path == "vm-disk1.vmdk" else f for f in TEMPLATE]
    plan = _plan(changed, prev=first, now=LATER)
    assert plan.changed and {f["generationNum"] for f in plan.doc["files"]} == {2}
    assert not _plan(TEMPLATE, prev=first, now=LATER).changed  # unchanged: the shared etag tells


def test_etag_problem_names_disagreeing_files():
    assert etags.etag_problem([{"etag": "1"}, {"etag": "1"}]) is None
    assert etags.etag_problem([{"etag": "1"}, {"etag": "2"}, {"etag": "2"}]) == (
        "its 3 files carry 2 different etags; vCenter expects one etag per item")
