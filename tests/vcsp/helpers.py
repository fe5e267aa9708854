"""Builders of small library folders for the manifest tests."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from urllib.parse import unquote

OLD = time.time() - 3600


def put(path: Path, data: bytes | str, age: float = 0.0) -> Path:
    """Write ``data`` to ``path`` (creating folders) with an mtime ``age`` seconds before OLD."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.utime(path, (OLD - age, OLD - age))
    return path


def ovf(*hrefs: str) -> str:
    """A small OVF descriptor referencing ``hrefs``."""
    refs = "".join(f'<File ovf:href="{h}" ovf:id="f{i}"/>' for i, h in enumerate(hrefs))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" '
        'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">'
        f"<References>{refs}</References><VirtualSystem ovf:id=\"vm\"/></Envelope>\n"
    )


def template(folder: Path, name: str = "vm", disk: bytes = b"disk-bytes", with_mf: bool = True, age: float = 0) -> None:
    """An OVF template: descriptor, one disk and (optionally) a correct SHA256 .mf."""
    desc = put(folder / f"{name}.ovf", ovf(f"{name}-disk1.vmdk"), age)
    put(folder / f"{name}-disk1.vmdk", disk, age)
    if with_mf:
        lines = [f"SHA256({p.name})= {hashlib.sha256(p.read_bytes()).hexdigest()}"
                 for p in (desc, folder / f"{name}-disk1.vmdk")]
        put(folder / f"{name}.mf", "\n".join(lines) + "\n", age)


def load(path: Path):
    return json.loads(path.read_bytes())


def mtimes(root: Path) -> dict[str, int]:
    """mtime_ns of every manifest file under root."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns
            for p in sorted(root.rglob("*.json")) if ".library-syncer" not in p.parts}


def shared_etag(files: dict[str, str]) -> str:
    """The one etag of an item, computed here on its own: ``files`` maps item-relative path -> md5 hex.

    Decimal (Java ``Long.valueOf`` parses it) of the first 63 bits of the SHA-256 of the md5 listing
    (``"<md5>  <path>\\n"`` lines in the order of the paths' UTF-8 bytes).
    """
    order = sorted(files, key=lambda p: p.encode("utf-8", "surrogateescape"))
    listing = "".join(f"{files[p]}  {p}\n" for p in order).encode("utf-8", "surrogateescape")
    return str(int(hashlib.sha256(listing).hexdigest()[:16], 16) & (2**63 - 1))


def folder_etag(item: Path) -> str:
    """The one etag the files of the item folder ``item`` must carry, from their bytes."""
    files = {p.relative_to(item).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
             for p in item.rglob("*") if p.is_file() and p.name != "item.json"}
    return shared_etag(files)


def assert_one_etag_per_item(root: Path) -> None:
    """Every listed item's files share one etag, the one their bytes give, and Java's Long.valueOf takes it."""
    for entry in load(root / "items.json")["items"]:
        folder = root / unquote(entry["selfHref"], errors="surrogateescape").rsplit("/", 1)[0]
        tags = {f["etag"] for f in entry["files"]}
        assert tags == {folder_etag(folder)}, (entry["name"], tags)
        tag = tags.pop()
        assert re.fullmatch(r"0|[1-9][0-9]{0,18}", tag) and int(tag) <= 2**63 - 1
