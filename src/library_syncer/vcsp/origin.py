"""The origin manifest: what the primary exports, as one version number that only grows.

The server keeps it in its state folder (never in the library): an origin id made
once, an integer ``version`` that grows with every change of content, and for each
item its own version, a digest of its files and each file's size, md5 and xxh128 (the
digest rsync reports with its default checksums), and for a file an item's ``.mf`` checks,
the digests it asks for (SHA-256 mostly), all computed in one read.  Sites read it through
the forced-command dispatcher (``library-syncer origin``); a relay re-exports the document
it received with each generation it publishes, so a version means the same content at
every tier.

Pure rules: :func:`next_origin` (the new document from the previous one and the files
now), :func:`parse_origin` (a document read from a peer, validated), :func:`peer_verdict`
(may a site take a peer's content: never an origin version lower than the published one,
never through itself), :func:`vouched_digests` (the origin's digests of the files rsync
verified with the origin's md5 or xxh128: a site need not read them for its manifest).  I/O:
:func:`scan_origin` hashes the library through the hash cache; :func:`refresh_origin`
writes the state files.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..util.fs import atomic_write
from .ovf import MF_ALGORITHMS, manifests, needed_algorithms
from .scan import HashCache, scan_tree

FORMAT = "library-syncer-origin/1"
ORIGIN_FILE = "origin.json"
HASHES_FILE = "origin-hashes.json"
MAX_DOC_BYTES = 64 * 1024 * 1024  # what a site reads from a peer at most
MAX_PATH = 16  # relays a document may have passed through

Files = dict[str, dict[str, tuple[int, str]]]  # item -> item-relative path -> (size, md5)
Extra = dict[str, dict[str, dict[str, str]]]  # item -> path -> xxh128 and the digests its .mf asks for
_HEX_LENGTH = {"md5": 32, "xxh128": 32, "sha1": 40, "sha256": 64, "sha512": 128}


def _digest(files: dict[str, tuple[int, str]]) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        size, md5 = files[path]
        h.update(f"{path}\0{size}\0{md5}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def next_origin(previous: dict[str, Any] | None, files: Files, now: str,
                changing: dict[str, Any] | None = None, extra: Extra | None = None) -> dict[str, Any]:
    """The origin document for ``files``: ``previous`` unchanged when the content is the same,
    else the version (and each changed item's version) plus one.

    ``changing`` maps items whose files are still being written to their previous entry (or
    None): they keep that entry (or stay absent), so a half-finished export changes nothing.
    ``extra`` adds to a file's entry the digests its item's ``.mf`` asks for (they are not part
    of the item's digest: the md5s say what the content is).
    """
    prev_items = (previous or {}).get("items", {})
    items: dict[str, Any] = {}
    for name, entry in (changing or {}).items():
        if entry is not None:
            items[name] = entry
    for name, item_files in files.items():
        if name in items:
            continue
        digest = _digest(item_files)
        old = prev_items.get(name)
        version = old["version"] if old and old.get("digest") == digest else (old["version"] + 1 if old else 1)
        more = (extra or {}).get(name, {})
        items[name] = {"version": version, "digest": digest, "files": {
            p: {"size": s, "md5": m, **more.get(p, {})} for p, (s, m) in sorted(item_files.items())}}
    if previous and previous.get("items") == items:
        return previous
    return {
        "format": FORMAT,
        "origin_id": (previous or {}).get("origin_id") or f"urn:uuid:{uuid.uuid4()}",
        "version": int((previous or {}).get("version", 0)) + 1,
        "updated": now,
        "items": dict(sorted(items.items())),
    }


@dataclass(frozen=True)
class Origin:
    """A validated origin document (``doc`` is the whole document, kept to re-export)."""

    origin_id: str
    version: int
    doc: dict[str, Any]

    @property
    def path(self) -> list[dict[str, str]]:
        """The relays this document came through, nearest last."""
        return list(self.doc.get("path", []))

    @property
    def upstream_version(self) -> int | None:
        """For a relay's document: the newest version its own upstream offered (how far behind it is)."""
        value = self.doc.get("upstream_version")
        return value if isinstance(value, int) else None

    @property
    def items(self) -> dict[str, Any]:
        return dict(self.doc.get("items", {}))


def parse_origin(data: bytes) -> Origin:
    """Validate an origin document read from a peer; ValueError with the reason."""
    if len(data) > MAX_DOC_BYTES:
        raise ValueError(f"origin manifest larger than {MAX_DOC_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"origin manifest is not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"origin manifest has not the format {FORMAT}")
    origin_id, version = doc.get("origin_id"), doc.get("version")
    if not isinstance(origin_id, str) or not origin_id or len(origin_id) > 200:
        raise ValueError("origin manifest has no origin_id")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError("origin manifest has no positive integer version")
    items = doc.get("items")
    if not isinstance(items, dict) or not all(isinstance(v, dict) and isinstance(v.get("version"), int)
                                              for v in items.values()):
        raise ValueError("origin manifest items are not {name: {version, ...}}")
    path = doc.get("path", [])
    if not isinstance(path, list) or len(path) > MAX_PATH or not all(
            isinstance(p, dict) and isinstance(p.get("id"), str) for p in path):
        raise ValueError(f"origin manifest path is not a list of at most {MAX_PATH} relays")
    return Origin(origin_id, version, doc)


@dataclass(frozen=True)
class Refusal:
    """Why a site does not take a peer's content; ``lagging``: the peer may catch up (try it again later)."""

    reason: str
    lagging: bool


def peer_verdict(published: Origin | None, offered: Origin | None, self_id: str | None) -> Refusal | None:
    """Why a site must not take a peer's content now (None: it may).

    - the peer's document came through this site (a cycle of relays);
    - the same origin at a lower version than the one published (the peer lags behind).

    A peer without an origin manifest (an older server) or of another origin is not refused here:
    there is no order to keep; the delete guard still applies.
    """
    if offered is None:
        return None
    if self_id and any(p.get("id") == self_id for p in offered.path):
        names = " -> ".join(p.get("name", "?") for p in offered.path)
        return Refusal(f"its library comes through this site (a cycle of relays: {names})", lagging=False)
    if published is not None and published.origin_id == offered.origin_id and offered.version < published.version:
        return Refusal(f"it offers origin version {offered.version}, older than the published {published.version}",
                       lagging=True)
    return None


def _hex(value: object, algorithm: str) -> bool:
    return (isinstance(value, str) and len(value) == _HEX_LENGTH[algorithm]
            and all(c in "0123456789abcdef" for c in value))


def vouched_digests(origin: Origin | None, verified: dict[str, tuple[int, str]], checksum: str = "md5"
                    ) -> dict[str, tuple[int, dict[str, str]]]:
    """Root-relative path -> (size, digests) of the files rsync verified with its ``checksum``
    (``verified``: path -> (size, rsync's whole-file digest)) that need no read by the site.

    rsync checked the bytes it wrote against the sender's digest of them; when that digest and
    the size are the ones the primary recorded, the primary's md5 and SHA-256 (or SHA-1,
    SHA-512) are of the same bytes.  With md5 rsync's own digest is the md5, so every verified
    file is vouched for; with xxh128 only those the origin knows.
    """
    out: dict[str, tuple[int, dict[str, str]]] = {}
    items = origin.items if origin is not None else {}
    for relpath, (size, digest) in verified.items():
        item, _, path = relpath.partition("/")
        files = items.get(item, {}).get("files") if isinstance(items.get(item), dict) else None
        entry = files.get(path) if isinstance(files, dict) else None
        known: dict[str, Any] = entry if isinstance(entry, dict) and entry.get("size") == size \
            and entry.get(checksum) == digest else {}
        if checksum == "md5":
            digests = {"md5": digest}
        elif _hex(known.get("md5"), "md5"):
            digests = {"md5": known["md5"]}
        else:
            continue  # the site reads it: nothing says what its md5 is
        digests.update({a: v for a, v in known.items() if a in MF_ALGORITHMS and _hex(v, a)})
        out[relpath] = (size, digests)
    return out


def reexport(origin: Origin, *, relay_id: str, relay_name: str, upstream_version: int | None,
             held_back: list[str]) -> dict[str, Any]:
    """The document a relay serves with a generation: the one it received, with itself on the path."""
    doc = dict(origin.doc)
    doc["path"] = (origin.path + [{"id": relay_id, "name": relay_name}])[-MAX_PATH:]
    doc["upstream_version"] = max(upstream_version or origin.version, origin.version)
    if held_back:
        doc["held_back"] = sorted(held_back)
    else:
        doc.pop("held_back", None)
    return doc


def dumps(doc: dict[str, Any]) -> bytes:
    """The document as stored and sent."""
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"


# --- I/O ------------------------------------------------------------------------------

def read_doc(path: Path) -> dict[str, Any] | None:
    """A stored origin document, or None when missing or unreadable."""
    try:
        return parse_origin(path.read_bytes()).doc
    except (OSError, ValueError):
        return None


def scan_origin(library: Path, cache: HashCache, *, settle: float, now: float | None = None
                ) -> tuple[Files, set[str], Extra]:
    """(size, md5) of every file of every item of ``library``, through ``cache``; the items with a
    file modified within ``settle`` seconds (still being written: not read now); and each file's
    xxh128 and the digests the items' ``.mf`` files ask for, computed in the same read as the md5."""
    now = time.time() if now is None else now
    scan = scan_tree(library)
    files: Files = {}
    extra: Extra = {}
    changing: set[str] = set()
    for folder, found in scan.items.items():
        if any(now - f.key[3] / 1e9 < settle for f in found):
            changing.add(folder)
            continue
        by_path = {f.path: f for f in found}
        mf = {p: cache.mf_entries(f"{folder}/{p}", by_path[p]) for p in manifests(sorted(by_path))}
        needed = needed_algorithms(set(by_path), mf)
        try:
            digests = {f.path: cache.digests(f"{folder}/{f.path}", f, needed.get(f.path, set()) | {"xxh128"})
                       for f in found}
        except OSError:  # removed or unreadable while scanned: as if still changing
            changing.add(folder)
            continue
        files[folder] = {p: (by_path[p].size, d["md5"]) for p, d in digests.items()}
        more = {p: {a: v for a, v in d.items() if a != "md5"} for p, d in digests.items() if len(d) > 1}
        if more:
            extra[folder] = more
    return files, changing, extra


def refresh_origin(library: Path, state_dir: Path, *, settle: float, now_text: str) -> tuple[dict[str, Any], bool]:
    """Rescan ``library`` and update ``STATE/origin.json``; returns (document, whether it changed)."""
    origin_file, hashes_file = state_dir / ORIGIN_FILE, state_dir / HASHES_FILE
    previous = read_doc(origin_file)
    try:
        entries = json.loads(hashes_file.read_bytes())
    except (OSError, ValueError):
        entries = {}
    cache = HashCache(entries if isinstance(entries, dict) else {})
    files, changing, extra = scan_origin(library, cache, settle=settle)
    prev_items = (previous or {}).get("items", {})
    doc = next_origin(previous, files, now_text, {n: prev_items.get(n) for n in changing}, extra)
    atomic_write(hashes_file, json.dumps(cache.saved()).encode(), 0o600)
    if doc is previous:
        return doc, False
    atomic_write(origin_file, dumps(doc), 0o644)
    return doc, True
