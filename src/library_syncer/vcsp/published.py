"""What a site serves now, as the manifest engine sees it: the published generation's documents, and the
draft of a new manifest shown to the delete guard before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from . import check, rules
from .storage import read_json


@dataclass(frozen=True)
class Published:
    """The manifest of a published generation: ``lib.json`` and each listed item's document by folder.

    ``items`` holds only entries whose files are all present in the generation
    with their listed sizes: those are the *last good versions* a failing item
    falls back to.
    """

    root: Path | None = None
    lib: dict[str, Any] | None = None
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    listed: frozenset[str] = frozenset()  # every folder items.json lists, usable or not


@dataclass(frozen=True)
class Draft:
    """What a manifest run would publish, shown to ``approve`` before anything is written.

    ``folders``: items the new ``items.json`` lists (fresh and held back);
    ``held_back``/``left_out``: folder -> one-line reason.
    """

    folders: tuple[str, ...]
    held_back: dict[str, str]
    left_out: dict[str, str]

    @property
    def fresh(self) -> tuple[str, ...]:
        """Listed items published from the new content."""
        return tuple(f for f in self.folders if f not in self.held_back)


def folder_of(entry: Any) -> str | None:
    """The item folder an ``items.json`` entry names through its ``selfHref``."""
    href = entry.get("selfHref") if isinstance(entry, dict) else None
    if isinstance(href, str) and href.endswith("/item.json"):
        return unquote(href[: -len("/item.json")], errors="surrogateescape")
    return None


def published_folders(items: Any) -> list[str] | None:
    """The item folders an ``items.json`` document lists, or None when it is not one."""
    if not isinstance(items, dict) or not isinstance(items.get("items"), list):
        return None
    return [f for f in map(folder_of, items["items"]) if f is not None]


def read_published(root: Path | None) -> Published:
    """The manifest of the published generation at ``root`` (empty when None or unreadable)."""
    if root is None:
        return Published()
    lib = read_json(root / "lib.json")
    items = read_json(root / "items.json")
    good: dict[str, dict[str, Any]] = {}
    listed = published_folders(items) or []
    for entry in items["items"] if listed else []:
        folder = folder_of(entry)
        if folder is not None and valid_doc(entry) and files_present(root, entry):
            good[folder] = entry
    return Published(root, lib if isinstance(lib, dict) else None, good, frozenset(listed))


def files_present(root: Path, doc: dict[str, Any]) -> bool:
    """True when every file an item document lists is in ``root`` with its listed size and a servable href."""
    files = doc.get("files")
    if not isinstance(files, list) or not files:
        return False
    for f in files:
        hrefs = f.get("hrefs") if isinstance(f, dict) else None
        if not isinstance(hrefs, list) or len(hrefs) != 1 or not isinstance(hrefs[0], str):
            return False
        path = check.href_path(hrefs[0])  # an href the web server would not serve is no good version
        if path is None:
            return False
        try:
            size = (root / path).stat().st_size
        except OSError:
            return False
        if size != f.get("size"):
            return False
    return True


def valid_doc(doc: Any) -> dict[str, Any] | None:
    """``doc`` when it is a document with a valid ``urn:uuid`` id, else None."""
    return doc if isinstance(doc, dict) and rules.is_uuid_urn(doc.get("id")) else None
