"""Validate a published manifest against its folder: one line per problem.

The document rules (:func:`lib_problems`, :func:`item_problems`) are pure;
:func:`check_manifest` reads the files and the folder listing.
"""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from . import etags, rules
from . import names as served
from .scan import scan_tree
from .storage import read_json


def _int_text(value: Any) -> bool:
    return rules.int_or_none(value) is not None and isinstance(value, str)


def lib_problems(lib: Any) -> list[str]:
    """Problems of a ``lib.json`` document on its own."""
    if not isinstance(lib, dict):
        return ["lib.json: not a JSON object"]
    out = []
    if lib.get("vcspVersion") != rules.VCSP_VERSION:
        out.append(f"lib.json: vcspVersion is {lib.get('vcspVersion')!r}, expected '2'")
    for key in ("version", "contentVersion"):
        if not _int_text(lib.get(key)):
            out.append(f"lib.json: {key} {lib.get(key)!r} is not a string holding a positive integer")
    if not rules.is_uuid_urn(lib.get("id")):
        out.append(f"lib.json: id {lib.get('id')!r} is not a urn:uuid")
    if not isinstance(lib.get("name"), str) or not lib["name"]:
        out.append("lib.json: name missing")
    if not isinstance(lib.get("created"), str):
        out.append("lib.json: created missing")
    if not isinstance(lib.get("itemsHref"), str):
        out.append("lib.json: itemsHref missing")
    return out


def item_problems(doc: Any, where: str, library_id: Any) -> list[str]:
    """Problems of one item document on its own (``where`` names it in the messages)."""
    if not isinstance(doc, dict):
        return [f"{where}: not a JSON object"]
    out = []
    if not rules.is_uuid_urn(doc.get("id")):
        out.append(f"{where}: id {doc.get('id')!r} is not a urn:uuid")
    for key in ("version", "contentVersion"):
        if not _int_text(doc.get(key)):
            out.append(f"{where}: {key} {doc.get(key)!r} is not a string holding a positive integer")
    name = doc.get("name")
    if not isinstance(name, str) or not name or len(name) > rules.MAX_NAME_LENGTH:
        out.append(f"{where}: name {name!r} is empty or longer than {rules.MAX_NAME_LENGTH} characters")
    if doc.get("type") not in rules.ITEM_TYPES:
        out.append(f"{where}: type {doc.get('type')!r} is not one of {', '.join(rules.ITEM_TYPES)}")
    if not isinstance(doc.get("created"), str):
        out.append(f"{where}: created missing")
    files = doc.get("files")
    if not isinstance(files, list):
        return out + [f"{where}: files is not a list"]
    for i, f in enumerate(files):
        label = f"{where}: files[{i}]"
        if not isinstance(f, dict):
            out.append(f"{label}: not a JSON object")
            continue
        if not isinstance(f.get("name"), str):
            out.append(f"{label}: name missing")
        if not isinstance(f.get("size"), int) or isinstance(f.get("size"), bool) or f["size"] < 0:
            out.append(f"{label}: size {f.get('size')!r} is not an integer")
        if not isinstance(f.get("etag"), str):
            out.append(f"{label}: etag {f.get('etag')!r} is not a string")
        gen = f.get("generationNum")
        if not isinstance(gen, int) or isinstance(gen, bool):
            out.append(f"{label}: generationNum {gen!r} is not an integer")
        hrefs = f.get("hrefs")
        if not isinstance(hrefs, list) or not hrefs or not all(isinstance(h, str) for h in hrefs):
            out.append(f"{label}: hrefs is not a list of strings")
    disagree = etags.etag_problem(files)
    if disagree:
        out.append(f"{where}: {disagree}")
    if doc.get("type") == "vcsp.ovf":
        out += _metadata_problems(doc, where, library_id)
    return out


def _metadata_problems(doc: dict[str, Any], where: str, library_id: Any) -> list[str]:
    entries = doc.get("metadata")
    meta = next((m for m in entries if isinstance(m, dict) and m.get("key") == "type-metadata"), None) \
        if isinstance(entries, list) else None
    if meta is None:
        return [f"{where}: OVF item without type-metadata"]
    if not isinstance(meta.get("value"), str):
        return [f"{where}: type-metadata value is not a JSON string"]
    try:
        value = json.loads(meta["value"])
    except ValueError:
        return [f"{where}: type-metadata value is not valid JSON"]
    if not isinstance(value, dict):
        return [f"{where}: type-metadata value is not a JSON object"]
    out = []
    if value.get("id") != doc.get("id"):
        out.append(f"{where}: type-metadata id {value.get('id')!r} differs from the item id")
    if value.get("libraryIdParent") != library_id:
        out.append(f"{where}: type-metadata libraryIdParent {value.get('libraryIdParent')!r} differs from the library id")
    return out


def href_path(href: str) -> str | None:
    """The root-relative file-system path an href names, or None if it is not a plain relative path
    the web server serves (see :func:`library_syncer.served.path_problem`)."""
    if not href or href.startswith("/") or "://" in href or "?" in href or "#" in href:
        return None
    path = unquote(href, errors="surrogateescape")
    if served.path_problem(path.split("/")) is not None:
        return None
    return path


def check_manifest(root: Path) -> list[str]:
    """Every problem of the manifest of ``root`` (an existing folder), one line each."""
    out: list[str] = []
    lib = read_json(root / "lib.json")
    if lib is None:
        return ["lib.json: missing or not valid JSON"]
    out += lib_problems(lib)
    items_path = href_path(lib.get("itemsHref", "")) if isinstance(lib, dict) else None
    if items_path is None:
        return out + ["lib.json: itemsHref is not a relative href"]
    items = read_json(root / items_path)
    if not isinstance(items, dict) or not isinstance(items.get("items"), list):
        return out + [f"{items_path}: missing, not valid JSON or without an items list"]
    library_id = lib.get("id")
    scan = scan_tree(root)
    listed: set[str] = set()
    ids: dict[str, str] = {}
    names: dict[str, str] = {}
    for i, entry in enumerate(items["items"]):
        where = f"{items_path} item {i}"
        self_href = entry.get("selfHref") if isinstance(entry, dict) else None
        self_path = href_path(self_href) if isinstance(self_href, str) else None
        if self_path is None or posixpath.basename(self_path) != "item.json" or "/" not in self_path:
            out.append(f"{where}: selfHref {self_href!r} is not '<folder>/item.json'")
            continue
        folder = self_path.split("/", 1)[0]
        where = f"item {folder}"
        listed.add(folder)
        out += item_problems(entry, f"{items_path} entry of {folder}", library_id)
        on_disk = read_json(root / self_path)
        if on_disk is None:
            out.append(f"{self_path}: missing or not valid JSON")
        elif on_disk != entry:
            out.append(f"{self_path}: differs from its entry in {items_path}")
        if isinstance(entry.get("id"), str):
            if entry["id"] in ids:
                out.append(f"{where}: id {entry['id']} also used by item {ids[entry['id']]}")
            ids.setdefault(entry["id"], folder)
        if isinstance(entry.get("name"), str):
            if entry["name"] in names:
                out.append(f"{where}: name {entry['name']!r} also used by item {names[entry['name']]}")
            names.setdefault(entry["name"], folder)
        out += _file_problems(root, folder, entry, scan.items.get(folder, []))
    for folder in sorted(set(scan.items) - listed):
        if scan.items[folder]:
            out.append(f"item {folder}: folder not listed in {items_path}")
    out += [f"item {folder}: {why}" for folder, why in sorted(scan.errors.items())]
    return [served.printable(line) for line in out]


def _file_problems(root: Path, folder: str, entry: dict[str, Any], found: list) -> list[str]:
    files = entry.get("files")
    if not isinstance(files, list):
        files = []
    out = []
    hrefs_seen: set[str] = set()
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("hrefs"), list):
            continue
        for href in f["hrefs"]:
            path = href_path(href) if isinstance(href, str) else None
            if path is None or not path.startswith(folder + "/"):
                out.append(f"item {folder}: href {href!r} is not a served path inside the item folder")
                continue
            hrefs_seen.add(path)
            try:
                size = os.stat(root / path).st_size
            except OSError:
                out.append(f"item {folder}: listed file {path} is missing")
                continue
            if size != f.get("size"):
                out.append(f"item {folder}: {path} has {size} bytes, listed as {f.get('size')!r}")
    for ff in found:
        if f"{folder}/{ff.path}" not in hrefs_seen:
            out.append(f"item {folder}: file {ff.path} is not listed")
    return out
