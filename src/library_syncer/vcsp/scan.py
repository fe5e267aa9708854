"""Scan a library folder and hash its files through a cache keyed by (device, inode, size, mtime).

Only files whose key changed since the last run are read.  Entries whose
mtime is within :data:`RACY_SECONDS` of the scan are not cached, so a file
rewritten in place within the same timestamp tick is read again next time.
The change time is deliberately not part of the key: hard-linking a file
into a published generation changes it without changing the bytes.
Digests are hashlib's names plus ``xxh128`` (XXH3-128, the digest rsync reports with its
default checksum choice; from the xxhash package).
An entry of a file rsync wrote (:meth:`HashCache.known`, ``verified``) is never racy: rsync
never rewrites a file in place (no ``--inplace``), so any later change of it is a new inode,
a new key.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import xxhash

from . import names as served
from .names import printable
from .ovf import (
    MAX_DESCRIPTOR_BYTES, MAX_MF_BYTES, MfEntry, TemplateError, parse_mf, parse_ovf_references, too_large,
)

CHUNK_SIZE = 8 * 1024 * 1024
RACY_SECONDS = 2.0
ROOT_MANIFEST_FILES = {"lib.json", "items.json"}
ITEM_MANIFEST_FILE = "item.json"
MAX_DEPTH = 64  # folder levels inside an item; deeper items are left out
# Temporary files of an interrupted atomic write (see util.fs.atomic_write).
_STALE_TMP_RE = re.compile(r"^\.(lib|items|item)\.json\.tmp-\d+(-\d+)?$")
_WHAT = {"ovf": "descriptor", "mf": "manifest"}  # HashCache.parsed kinds, as named in messages


def new_hasher(algorithm: str) -> Any:
    """A hash object for a digest name: hashlib's, or ``xxh128``."""
    return xxhash.xxh3_128() if algorithm == "xxh128" else hashlib.new(algorithm)


@dataclass(frozen=True)
class FoundFile:
    """A regular file of an item: item-relative '/'-path, absolute path and cache key."""

    path: str
    abspath: str
    key: tuple[int, int, int, int]

    @property
    def size(self) -> int:
        return self.key[2]


@dataclass
class TreeScan:
    """Item folders found under a library root, with warnings about what was skipped."""

    items: dict[str, list[FoundFile]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # item folder -> why it could not be scanned
    warnings: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # leftover temporary manifest files


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class _TooDeep(Exception):
    """An item holds folders nested deeper than MAX_DEPTH (the item-relative path of the first)."""


def _walk_item(item_dir: str, item: str, scan: TreeScan) -> list[FoundFile]:
    """The files of one item folder, walked iteratively; a folder deeper than MAX_DEPTH raises _TooDeep."""
    out: list[FoundFile] = []
    pending = [(item_dir, "")]  # folders still to list: absolute path, item-relative path
    while pending:
        top, rel = pending.pop()
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
        depth = rel.count("/") + 1 if rel else 0
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                if not rel and _STALE_TMP_RE.match(entry.name):
                    scan.stale.append(entry.path)
                continue
            if not rel and entry.name == ITEM_MANIFEST_FILE:
                continue
            path = f"{rel}/{entry.name}" if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                kind = "symbolic link" if stat.S_ISLNK(st.st_mode) else "special file"
                scan.warnings.append(f"{printable(item)}/{printable(path)}: {kind} ignored")
                continue
            why = served.path_problem([item, *path.split("/")])
            if why is not None:
                kind = "folder" if stat.S_ISDIR(st.st_mode) else "file"
                scan.warnings.append(f"{printable(item)}/{printable(path)}: {kind} ignored, "
                                     f"not served by the web server: {why}")
            elif stat.S_ISDIR(st.st_mode):
                if depth >= MAX_DEPTH:
                    raise _TooDeep(path)
                subfolders.append((entry.path, path))
            else:
                out.append(FoundFile(path, entry.path, _key(st)))
        pending.extend(reversed(subfolders))  # listed in name order
    return sorted(out, key=lambda f: f.path)


def scan_tree(root: Path) -> TreeScan:
    """Every item folder (top-level, not hidden) of ``root`` and its files, sorted by path.

    Item folders the web server would not serve, unreadable ones and those
    nested deeper than :data:`MAX_DEPTH` go to ``errors`` with their reason.
    """
    scan = TreeScan()
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            if _STALE_TMP_RE.match(entry.name):
                scan.stale.append(entry.path)
            continue
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            why = served.path_problem([entry.name, ITEM_MANIFEST_FILE])
            if why is not None:
                scan.errors[entry.name] = f"not served by the web server: {why}"
                continue
            try:
                scan.items[entry.name] = _walk_item(entry.path, entry.name, scan)
            except OSError as exc:
                scan.errors[entry.name] = f"cannot read {printable(str(exc.filename))}: {exc.strerror}"
            except _TooDeep as exc:
                shown = printable(str(exc))
                shown = shown if len(shown) <= 120 else shown[:120] + "..."
                scan.errors[entry.name] = f"folders nested deeper than the limit of {MAX_DEPTH} levels (at {shown})"
        elif entry.name in ROOT_MANIFEST_FILES and stat.S_ISREG(st.st_mode):
            continue
        else:
            scan.warnings.append(f"{printable(entry.name)}: not in an item folder, ignored")
    return scan


class HashCache:
    """Digests and parsed descriptors by root-relative path, reused while the file's key is unchanged."""

    def __init__(self, entries: dict[str, Any] | None = None) -> None:
        self.old: dict[str, Any] = {}
        self.by_key: dict[tuple, dict[str, Any]] = {}
        for path, entry in (entries or {}).items():
            if isinstance(entry, dict) and isinstance(entry.get("key"), list) and len(entry["key"]) == 4:
                self.old[path] = entry
                self.by_key[tuple(entry["key"])] = entry
        self.new: dict[str, dict[str, Any]] = {}
        self.files_hashed = 0
        self.bytes_hashed = 0
        self.warnings: list[str] = []
        self._racy_ns = time.time_ns() - int(RACY_SECONDS * 1e9)

    def _entry(self, relpath: str, f: FoundFile) -> dict[str, Any]:
        entry = self.new.get(relpath)
        if entry is not None:
            return entry
        old = self.old.get(relpath)
        if not (old and tuple(old["key"]) == f.key):
            old = self.by_key.get(f.key)
        entry = dict(old) if old else {"key": list(f.key)}
        if f.key[3] >= self._racy_ns and not entry.get("verified"):
            entry["racy"] = True
        self.new[relpath] = entry
        return entry

    def known(self, relpath: str, f: FoundFile, digests: dict[str, str]) -> None:
        """A file rsync wrote, as found now: take ``digests`` of it (its verified md5, or the origin's
        md5 and SHA-256 of the same bytes; maybe none), which need no read; its entry is never racy."""
        old = self.old.get(relpath)
        if old and tuple(old["key"]) == f.key and old.get("md5") == digests.get("md5", old.get("md5")):
            old.update(digests, verified=True)  # already known, maybe with more digests
            return
        entry: dict[str, Any] = {**digests, "key": list(f.key), "verified": True}
        self.old[relpath] = self.by_key[f.key] = entry

    def digests(self, relpath: str, f: FoundFile, algorithms: set[str]) -> dict[str, str]:
        """md5 and ``algorithms`` hex digests of the file, reading it only if not cached (then all in one pass)."""
        entry = self._entry(relpath, f)
        wanted = {"md5"} | algorithms
        have = {a for a in wanted if isinstance(entry.get(a), str)}
        if have != wanted:
            hashers = {a: new_hasher(a) for a in wanted}
            size = 0
            with open(f.abspath, "rb") as fh:
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
                while chunk := fh.read(CHUNK_SIZE):
                    size += len(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                after = _key(os.fstat(fh.fileno()))
            self.files_hashed += 1
            self.bytes_hashed += size
            entry.update({a: h.hexdigest() for a, h in hashers.items()})
            if after != f.key or size != f.size:
                entry["racy"] = True
                self.warnings.append(f"{relpath}: changed while being read; it is read again next run")
        return {a: entry[a] for a in wanted}

    def parsed(self, relpath: str, f: FoundFile, kind: str, parse: Callable[[bytes], Any], limit: int) -> Any:
        """``parse(bytes)`` of a small descriptor, cached like digests; a TemplateError gives its text.

        A file over ``limit`` bytes is refused from its size alone (never read),
        and it reads at most ``limit + 1`` bytes in case the file grew since its stat.
        """
        entry = self._entry(relpath, f)
        if kind not in entry:
            try:
                if f.size > limit:
                    raise TemplateError(too_large(_WHAT[kind], f.size, limit))
                with open(f.abspath, "rb") as fh:
                    data = fh.read(limit + 1)
                if len(data) > limit:
                    raise TemplateError(too_large(_WHAT[kind], len(data), limit))
                entry[kind] = {"ok": parse(data)}
            except TemplateError as exc:
                entry[kind] = {"error": str(exc)}
            except OSError as exc:
                entry[kind] = {"error": f"cannot read ({exc.strerror})"}
                entry["racy"] = True
        value = entry[kind]
        return value["error"] if "error" in value else value["ok"]

    def ovf_references(self, relpath: str, f: FoundFile) -> list[str] | str:
        """The descriptor's referenced hrefs, or the reason it cannot be parsed."""
        return self.parsed(relpath, f, "ovf", parse_ovf_references, MAX_DESCRIPTOR_BYTES)

    def mf_entries(self, relpath: str, f: FoundFile) -> list[MfEntry] | str:
        """The ``.mf`` entries, or the reason it cannot be parsed."""

        def parse(data: bytes) -> list[list[str]]:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise TemplateError("not UTF-8 text") from None
            return [[e.algorithm, e.path, e.digest] for e in parse_mf(text)]

        value = self.parsed(relpath, f, "mf", parse, MAX_MF_BYTES)
        return value if isinstance(value, str) else [MfEntry(*e) for e in value]

    def saved(self) -> dict[str, Any]:
        """The entries to keep for the next run: those seen now, without racy ones."""
        return {p: e for p, e in self.new.items() if not e.get("racy")}
