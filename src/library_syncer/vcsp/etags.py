"""One etag per item: the value every file of an item carries in ``item.json`` (pure rules).

Evidence for one shared value per item:

- VMware's sample generator ``make_vcsp_2018.py`` (copyright VMware, copies in public repositories)
  gives every file of an item the same etag, the md5 of the whole item folder (``_dir2item``:
  ``"etag": folder_md5``); the original library-syncer did the same.
- A library published by VMware's own VCSP publisher (a vCloud Director catalog feed, its
  ``/vcsp/lib/<id>/items`` document) carries one etag value on every file of an item.
- The VCSP specification: the files of an item share one etag, "an integer representing the
  version".
- vCenter's subscriber parses the etag with Java's ``Long.valueOf`` when a file has no
  ``generationNum`` (``VcspSyncStrategy.isContentOutdated``; the NumberFormatException on hex md5
  etags is lamw/vmware-scripts issue 127).

The form chosen: a decimal string of a non-negative 63-bit integer (``Long.valueOf`` accepts it),
the first 8 bytes of the SHA-256 of the item's md5 listing: one ``"<md5>  <path>\\n"`` line per
file, paths relative to the item folder, the lines in the order of the paths' UTF-8 bytes. It
changes whenever a file's bytes or name or the file set change, and depends on nothing else (no
time, no generation number), so it is stable across runs, hosts and a re-export of the same files.
``generationNum`` stays per file.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

LONG_MAX = 2**63 - 1


def item_etag(files: Iterable[tuple[str, str]]) -> str:
    """The shared etag of an item whose files are ``(item-relative path, md5 hex)`` pairs."""
    listing = sorted((path.encode("utf-8", "surrogateescape"), md5) for path, md5 in files)
    digest = hashlib.sha256(b"".join(md5.encode("ascii") + b"  " + path + b"\n" for path, md5 in listing))
    return str(int.from_bytes(digest.digest()[:8], "big") & LONG_MAX)


def file_unchanged(old: dict[str, Any], size: int, md5: str, shared: str, known_md5: str | None) -> bool:
    """True when a file's previous ``files`` entry ``old`` describes the same bytes as the scan.

    ``known_md5`` is the md5 the file had when ``old`` was published (kept in the state file);
    without it, ``old``'s etag tells: the file's own md5 (the per-file form written before one etag
    per item) or the item's shared etag unchanged.
    """
    if old.get("size") != size:
        return False
    if known_md5 is not None:
        return known_md5 == md5
    return old.get("etag") in (md5, shared)


def _without_etags(doc: dict[str, Any]) -> dict[str, Any]:
    files = doc.get("files")
    if not isinstance(files, list):
        return doc
    return {**doc, "files": [{k: v for k, v in f.items() if k != "etag"} if isinstance(f, dict) else f
                             for f in files]}


def only_etags_differ(doc: dict[str, Any], prev: dict[str, Any]) -> bool:
    """True when ``doc`` equals ``prev`` but for its files' etag values (the form changed, no byte did)."""
    return doc != prev and _without_etags(doc) == _without_etags(prev)


def etag_problem(files: Any) -> str | None:
    """Why the files of an item document do not share one etag, or None when they do."""
    etags = [f.get("etag") for f in files if isinstance(f, dict)] if isinstance(files, list) else []
    distinct = {e for e in etags if isinstance(e, str)}
    if len(distinct) > 1:
        return f"its {len(etags)} files carry {len(distinct)} different etags; vCenter expects one etag per item"
    return None
