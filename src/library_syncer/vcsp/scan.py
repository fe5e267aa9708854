"""Scan a library folder and hash its files through a cache keyed by (device, inode, size, mtime).

Only files whose key changed since the last run are read.  Entries whose
mtime is within :data:`RACY_SECONDS` of the scan are not cached, so a file
rewritten in place within the same timestamp tick is read again next time.
The change time is deliberately not part of the key: hard-linking a file
into a published generation changes it without changing the bytes.
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

from .ovf import MfEntry, TemplateError, parse_mf, parse_ovf_references

CHUNK_SIZE = 8 * 1024 * 1024
RACY_SECONDS = 2.0
ROOT_MANIFEST_FILES = {"lib.json", "items.json"}
ITEM_MANIFEST_FILE = "item.json"
# Temporary files of an interrupted atomic write (see storage.atomic_write).
_STALE_TMP_RE = re.compile(r"^\.(lib|items|item)\.json\.tmp-\d+$")


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


def _walk_item(top: str, rel: str, out: list[FoundFile], scan: TreeScan, item: str) -> None:
    with os.scandir(top) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            if not rel and _STALE_TMP_RE.match(entry.name):
                scan.stale.append(entry.path)
            continue
        if not rel and entry.name == ITEM_MANIFEST_FILE:
            continue
        path = f"{rel}/{entry.name}" if rel else entry.name
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            _walk_item(entry.path, path, out, scan, item)
        elif stat.S_ISREG(st.st_mode):
            out.append(FoundFile(path, entry.path, _key(st)))
        else:
            kind = "symbolic link" if stat.S_ISLNK(st.st_mode) else "special file"
            scan.warnings.append(f"{item}/{path}: {kind} ignored")


def scan_tree(root: Path) -> TreeScan:
    """Every item folder (top-level, not hidden) of ``root`` and its files, sorted by path."""
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
            files: list[FoundFile] = []
            try:
                _walk_item(entry.path, "", files, scan, entry.name)
            except OSError as exc:
                scan.errors[entry.name] = f"cannot read {exc.filename}: {exc.strerror}"
                continue
            scan.items[entry.name] = files
        elif entry.name in ROOT_MANIFEST_FILES and stat.S_ISREG(st.st_mode):
            continue
        else:
            scan.warnings.append(f"{entry.name}: not in an item folder, ignored")
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
        if f.key[3] >= self._racy_ns:
            entry["racy"] = True
        self.new[relpath] = entry
        return entry

    def digests(self, relpath: str, f: FoundFile, algorithms: set[str]) -> dict[str, str]:
        """md5 and ``algorithms`` hex digests of the file, reading it only if not cached."""
        entry = self._entry(relpath, f)
        wanted = {"md5"} | algorithms
        have = {a for a in wanted if isinstance(entry.get(a), str)}
        if have != wanted:
            hashers = {a: hashlib.new(a) for a in wanted}
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

    def parsed(self, relpath: str, f: FoundFile, kind: str, parse: Callable[[bytes], Any]) -> Any:
        """``parse(bytes)`` of a small descriptor, cached like digests; a TemplateError gives its text."""
        entry = self._entry(relpath, f)
        if kind not in entry:
            try:
                with open(f.abspath, "rb") as fh:
                    data = fh.read(f.size + 1)
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
        return self.parsed(relpath, f, "ovf", parse_ovf_references)

    def mf_entries(self, relpath: str, f: FoundFile) -> list[MfEntry] | str:
        """The ``.mf`` entries, or the reason it cannot be parsed."""

        def parse(data: bytes) -> list[list[str]]:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise TemplateError("not UTF-8 text") from None
            return [[e.algorithm, e.path, e.digest] for e in parse_mf(text)]

        value = self.parsed(relpath, f, "mf", parse)
        return value if isinstance(value, str) else [MfEntry(*e) for e in value]

    def saved(self) -> dict[str, Any]:
        """The entries to keep for the next run: those seen now, without racy ones."""
        return {p: e for p, e in self.new.items() if not e.get("racy")}
