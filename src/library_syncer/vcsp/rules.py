"""Pure VCSP rules: types, hrefs, display names, versions and the JSON documents.

Nothing here touches the file system or the clock: callers pass in what was
scanned, what was published before and the current time, and get back the
documents to publish.  Every function is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, TypeGuard
from urllib.parse import quote

from . import etags

VCSP_VERSION = "2"
MAX_NAME_LENGTH = 80
ITEMS_HREF = "items.json"
ITEM_TYPES = ("vcsp.ovf", "vcsp.iso", "vcsp.other")

_UUID_URN_RE = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_EXT_RE = re.compile(r"\.[A-Za-z0-9]{1,8}$")


@dataclass(frozen=True)
class ScannedFile:
    """One file of an item: path relative to the item folder, size and md5 hex digest."""

    path: str
    size: int
    md5: str


@dataclass(frozen=True)
class ItemPlan:
    """The document to publish for one item and whether it differs from the previous one."""

    folder: str
    doc: dict[str, Any]
    changed: bool


# --- small rules ----------------------------------------------------------------------


def item_type(paths: Iterable[str]) -> str:
    """Item type from its files' extensions: any .ovf/.ova -> vcsp.ovf, else any .iso -> vcsp.iso."""
    exts = {p.rsplit("/", 1)[-1].rpartition(".")[2].lower() for p in paths if "." in p.rsplit("/", 1)[-1]}
    if exts & {"ovf", "ova"}:
        return "vcsp.ovf"
    if "iso" in exts:
        return "vcsp.iso"
    return "vcsp.other"


def encode_href(*parts: str) -> str:
    """Root-relative, percent-encoded href of a path made of '/'-separated parts.

    Everything but RFC 3986 unreserved characters and the '/' separators is
    encoded (as UTF-8; undecodable file-name bytes keep their raw value).
    """
    raw = "/".join(parts).encode("utf-8", "surrogateescape")
    return quote(raw, safe="/")


def display_text(name: str) -> str:
    """A file-system name made printable as JSON text (undecodable bytes become U+FFFD)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def is_uuid_urn(value: object) -> TypeGuard[str]:
    """True for a lower-case ``urn:uuid:…`` identifier."""
    return isinstance(value, str) and bool(_UUID_URN_RE.match(value))


def new_id() -> str:
    """A fresh ``urn:uuid:…`` identifier."""
    return f"urn:uuid:{uuid.uuid4()}"


def int_or_none(value: object) -> int | None:
    """The positive integer held by an int or a decimal string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 1 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
        return number if number >= 1 else None
    return None


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` characters of ``text``, never splitting a combining sequence."""
    if len(text) <= limit:
        return text
    end = limit
    while end > 0 and (unicodedata.combining(text[end]) or text[end - 1] == "\u200d"):
        end -= 1
    return text[:end].rstrip(" .-_")


def shorten_name(name: str, salt: int = 0, limit: int = MAX_NAME_LENGTH) -> str:
    """``name`` if short enough, else a cut with a short digest (and the extension) kept.

    The digest of the full name (and ``salt``, used to resolve clashes) keeps
    shortened names apart.  The result never exceeds ``limit`` characters.
    """
    if len(name) <= limit and salt == 0:
        return name
    digest = hashlib.sha1(f"{salt}:{name}".encode("utf-8", "surrogateescape")).hexdigest()[:8]
    match = _EXT_RE.search(name)
    ext = match.group(0) if match and match.start() > 0 else ""
    stem = name[: len(name) - len(ext)]
    tail = f"~{digest}{ext}"
    return _cut(stem, limit - len(tail)) + tail


def display_names(folders: Iterable[str], limit: int = MAX_NAME_LENGTH) -> dict[str, str]:
    """Unique display names (at most ``limit`` characters) for the given item folders."""
    names = {f: display_text(f) for f in sorted(set(folders))}
    result = {f: n for f, n in names.items() if len(n) <= limit}
    used = set(result.values())
    for folder, name in names.items():
        if folder in result:
            continue
        salt = 0
        candidate = shorten_name(name, salt, limit)
        while candidate in used:
            salt += 1
            candidate = shorten_name(name, salt, limit)
        result[folder] = candidate
        used.add(candidate)
    return result


# --- documents ------------------------------------------------------------------------


def type_metadata(item_id: str, version: int, library_id: str) -> str:
    """The ``type-metadata`` value of an OVF item: a JSON document held in a string."""
    return json.dumps(
        {
            "id": item_id,
            "version": str(version),
            "libraryIdParent": library_id,
            "isVappTemplate": "false",
            "vmTemplate": None,
            "vappTemplate": None,
            "networks": [],
            "storagePolicyGroups": None,
        },
        separators=(",", ":"),
    )


def item_doc(
    *, folder: str, item_id: str, created: str, version: int, name: str, type_: str,
    files: list[dict[str, Any]], library_id: str,
) -> dict[str, Any]:
    """The ``item.json`` document (also the item's entry of ``items.json``)."""
    doc: dict[str, Any] = {
        "created": created,
        "description": "",
        "version": str(version),
        "contentVersion": str(version),
        "files": files,
        "id": item_id,
        "name": name,
        "properties": {},
        "selfHref": encode_href(folder, "item.json"),
        "type": type_,
    }
    if type_ == "vcsp.ovf":
        doc["metadata"] = [
            {
                "key": "type-metadata",
                "type": "String",
                "domain": "SYSTEM",
                "visibility": "READONLY",
                "value": type_metadata(item_id, version, library_id),
            }
        ]
    return doc


def file_entry(folder: str, f: ScannedFile, generation: int, etag: str) -> dict[str, Any]:
    """One ``files`` entry of an item document (``etag``: the item's shared one, see :mod:`.etags`)."""
    return {
        "name": display_text(f.path),
        "size": f.size,
        "etag": etag,
        "generationNum": generation,
        "hrefs": [encode_href(folder, *f.path.split("/"))],
    }


def lib_doc(*, library_id: str, created: str, version: int, name: str) -> dict[str, Any]:
    """The ``lib.json`` document."""
    return {
        "vcspVersion": VCSP_VERSION,
        "version": str(version),
        "contentVersion": "1",
        "name": name,
        "id": library_id,
        "created": created,
        "capabilities": {"transferIn": ["httpGet"], "transferOut": ["httpGet"]},
        "itemsHref": ITEMS_HREF,
    }


def items_doc(docs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The ``items.json`` document: every item document, in the given order."""
    return {"items": list(docs)}


def dumps(doc: dict[str, Any]) -> bytes:
    """Deterministic serialisation of a manifest document (UTF-8, 2-space indent, final newline)."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# --- version rules --------------------------------------------------------------------


def _prev_files(prev: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    files = prev.get("files") if isinstance(prev, dict) else None
    out: dict[str, dict[str, Any]] = {}
    for entry in files if isinstance(files, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            out[entry["name"]] = entry
    return out


def plan_item(
    *, folder: str, name: str, files: list[ScannedFile], prev: dict[str, Any] | None,
    library_id: str, now: str, returning: bool = False, known: dict[str, str] | None = None,
) -> ItemPlan:
    """The item document given the scan and the previously published document.

    The id and ``created`` are kept; ``version``/``contentVersion`` go up by one
    when the document would differ in anything else, or when the item comes
    back (``returning``) after being left out of the manifest; a file keeps its
    ``generationNum`` while its bytes stay (``known``: path -> md5 it had when
    ``prev`` was published; see :func:`.etags.file_unchanged`), else it gets one
    above both its previous value and the item's previous version.  Every file
    carries the item's one etag; when only the etag values differ from ``prev``
    (an upgrade from per-file etags) the version stays and the plan is not a change.
    """
    prev = prev if isinstance(prev, dict) else None
    item_id = prev.get("id") if prev else None
    if not is_uuid_urn(item_id):
        item_id = new_id()
    created = prev.get("created") if prev else None
    if not isinstance(created, str) or not created:
        created = now
    old_version = int_or_none(prev.get("version")) if prev else None
    next_version = (old_version or 0) + 1
    old_files = _prev_files(prev)
    shared = etags.item_etag((f.path, f.md5) for f in files)
    entries = []
    for f in sorted(files, key=lambda f: f.path):
        old = old_files.get(display_text(f.path))
        old_gen = old.get("generationNum") if old else None
        old_gen = old_gen if isinstance(old_gen, int) and not isinstance(old_gen, bool) else None
        if old and old_gen is not None and etags.file_unchanged(old, f.size, f.md5, shared, (known or {}).get(f.path)):
            gen = old_gen
        else:
            gen = max(next_version, (old_gen or 0) + 1)
        entries.append(file_entry(folder, f, gen, shared))
    type_ = item_type(f.path for f in files)

    def build(version: int) -> dict[str, Any]:
        return item_doc(folder=folder, item_id=item_id, created=created, version=version, name=name,
                        type_=type_, files=entries, library_id=library_id)

    if old_version is not None and not returning:
        doc = build(old_version)
        if doc == prev or etags.only_etags_differ(doc, prev or {}):
            return ItemPlan(folder, doc, False)
    return ItemPlan(folder, build(next_version), True)


def plan_library(
    *, prev: dict[str, Any] | None, library_id: str, name: str, any_item_changed: bool, now: str,
) -> tuple[dict[str, Any], bool]:
    """The ``lib.json`` document and whether it changed.

    ``created`` is kept; ``version`` goes up when an item was added, removed or
    changed, or when the library document would differ otherwise.
    """
    prev = prev if isinstance(prev, dict) else None
    created = prev.get("created") if prev else None
    if not isinstance(created, str) or not created:
        created = now
    old_version = int_or_none(prev.get("version")) if prev else None
    if old_version is not None and not any_item_changed:
        doc = lib_doc(library_id=library_id, created=created, version=old_version, name=name)
        if doc == prev:
            return doc, False
    return lib_doc(library_id=library_id, created=created, version=(old_version or 0) + 1, name=name), True


def library_id_of(prev: dict[str, Any] | None) -> str | None:
    """The library id of a previous ``lib.json`` document, when valid."""
    value = prev.get("id") if isinstance(prev, dict) else None
    return value if is_uuid_urn(value) else None
