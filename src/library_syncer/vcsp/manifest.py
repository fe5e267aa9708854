"""Write or update the VCSP manifest (``lib.json``, ``items.json``, ``<item>/item.json``) of a folder.

Order of writes, each one atomic (temporary file + fsync + rename): changed
``item.json`` files, then ``items.json``, then ``lib.json``, the commit point.
A reader that follows vCenter's order (lib.json, then items.json, then each
item.json) never sees a half-written file, sees an ``items.json`` at least as
new as the ``lib.json`` it read, and an ``item.json`` at least as new as its
``items.json`` entry: same version means identical content (but for the etag
values, once, when an upgrade from per-file etags rewrites them unchanged files
and all: see :func:`.rules.plan_item`).  Readers of a
published generation (see :mod:`library_syncer.publish`) never see a rewrite.

State (hash cache, last published documents, the md5 of every file they list:
an item's files share one etag, so a file's own digest is kept here) lives in the hidden folder
``PATH/.library-syncer/`` unless ``state_path`` names another file; when it
is lost or corrupt, ids, ``created``, versions and generation numbers are
recovered from the manifest files themselves, then from the published
generation (``published``).  A manifest file that is missing, not valid JSON
or disagrees with the folder is rewritten.

Last good version wins: given the published manifest (``published``), an
item whose new content fails validation keeps its published document (same
id, version and generationNums) and is reported *held back*; the caller
publishes that item's files from the published generation.  Only an item
that never had a good version is left out.  An ``approve`` callback sees the
draft (what the new ``items.json`` would list) before anything is written and
can refuse it (the delete guard).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import UserError
from ..util.fs import atomic_write, fsync_dir, writer_lock
from . import check, rules
from .names import printable
from .ovf import descriptors, manifests, needed_algorithms, template_problems
from .published import Draft, Published, published_folders, valid_doc
from .scan import HashCache, scan_tree
from .storage import load_state, read_json, save_state

log = logging.getLogger(__name__)

STATE_DIRNAME = ".library-syncer"
STATE_FILENAME = "state.json"
MANIFEST_FILENAMES = {"lib.json", "items.json", "item.json"}


@dataclass
class ItemSummary:
    """One published item: display name, folder, type, total bytes, version, changed this run."""

    name: str
    folder: str
    type: str
    size: int
    version: int
    changed: bool
    held_back: bool = False


@dataclass
class ManifestReport:
    """Outcome of :func:`update_manifest`.

    ``problems`` lists items left out of the manifest (one line each);
    ``held_back`` maps items kept at their published version to the reason;
    ``warnings`` lists things ignored or recovered from; ``refused`` is the
    reason ``approve`` gave (then nothing was written).
    """

    changed: bool
    library_version: int
    items: list[ItemSummary]
    problems: list[str]
    files_hashed: int
    bytes_hashed: int
    warnings: list[str] = field(default_factory=list)
    files_written: int = 0
    held_back: dict[str, str] = field(default_factory=dict)
    refused: str | None = None


def now_text() -> str:
    """The current UTC time as VCSP ``created`` text (ISO 8601, milliseconds, ``Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def check_root(root: Path, *, writable: bool) -> Path:
    """``root`` if it is an existing (writable) folder, else a one-line UserError naming it."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"library folder {root}: does not exist")
    if not root.is_dir():
        raise UserError(f"library folder {root}: is not a folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise UserError(f"library folder {root}: is not readable")
    if writable and (not os.access(root, os.W_OK) or os.statvfs(root).f_flag & os.ST_RDONLY):
        raise UserError(f"library folder {root}: is not writable")
    return root


def default_state_path(root: Path) -> Path:
    """Where the state file of the library at ``root`` lives by default."""
    return Path(root) / STATE_DIRNAME / STATE_FILENAME


def _write_if_different(path: Path, doc: dict[str, Any]) -> bool:
    """Write ``doc`` unless the file holds the same document already; whether it wrote.

    The comparison parses the file (C speed) instead of serialising ``doc`` with an indent
    (pure Python): with 10,000 files that halves a manifest run in which nothing changed.
    """
    try:
        if json.loads(path.read_bytes()) == doc:
            return False
    except (OSError, ValueError):
        pass
    atomic_write(path, rules.dumps(doc))
    return True


def update_manifest(
    root: Path, name: str, *, state_path: Path | None = None, lock_timeout: float = 60.0,
    published: Published | None = None, approve: Callable[[Draft], str | None] | None = None,
    known: Mapping[str, tuple[int, dict[str, str]]] | None = None,
) -> ManifestReport:
    """Bring the manifest of the library folder ``root`` up to date; see the module docstring.

    ``published``: the manifest being served (last good versions, ids to recover);
    ``approve``: called with the :class:`Draft` before any write; a reason refuses it;
    ``known``: root-relative path -> (size, digests) of a file rsync wrote and verified (taken for
    the file found now when its size agrees: those digests need no read; without an md5 it is read).
    Raises UserError (exit 2) for a bad folder or name, OperationFailed when a
    write fails (the previous manifest stays intact) or another writer holds the lock.
    """
    root = check_root(root, writable=True)
    if not name or not name.strip():
        raise UserError("library name: must not be empty")
    state_file = Path(state_path) if state_path is not None else default_state_path(root)
    with writer_lock(state_file.with_name(state_file.name + ".lock"), lock_timeout):
        return _update(root, name, state_file, published or Published(), approve, known or {})


def _update(root: Path, name: str, state_file: Path, published: Published,
            approve: Callable[[Draft], str | None] | None, known: Mapping[str, tuple[int, dict[str, str]]]
            ) -> ManifestReport:
    now = now_text()
    state, state_warning = load_state(state_file)
    warnings = [state_warning] if state_warning else []
    prev_lib = (valid_doc(state.get("library")) or valid_doc(read_json(root / "lib.json"))
                or valid_doc(published.lib))
    prev_published = state.get("published")
    if not isinstance(prev_published, list):
        prev_published = published_folders(read_json(root / "items.json"))
        if prev_published is None:
            prev_published = list(published.items)
    library_id = rules.library_id_of(prev_lib) or rules.new_id()

    scan = scan_tree(root)
    warnings += scan.warnings
    for leftover in scan.stale:  # from an interrupted earlier run; we hold the writer lock
        with contextlib.suppress(OSError):
            os.unlink(leftover)
    cache = HashCache(state.get("hashes"))
    for folder, found in scan.items.items():
        for f in found:
            size_digests = known.get(f"{folder}/{f.path}")
            if size_digests is not None and size_digests[0] == f.size:
                cache.known(f"{folder}/{f.path}", f, size_digests[1])
    saved = state.get("md5")
    saved_md5: dict[str, Any] = saved if isinstance(saved, dict) else {}
    md5s: dict[str, dict[str, str]] = {}  # item folder -> path -> md5 of each file its document lists
    names = rules.display_names(list(scan.items) + list(scan.errors))
    left_out: dict[str, str] = {}
    held_back: dict[str, str] = {}
    problems: list[str] = []
    kept: dict[str, Any] = {}  # state records of every item folder still present
    plans: list[rules.ItemPlan] = []
    summaries: list[ItemSummary] = []

    def fail(folder: str, *reasons: str) -> None:
        """The new content of ``folder`` is not usable: keep its last good version, or leave it out."""
        good = published.items.get(folder)
        if good is None:
            left_out[folder] = "; ".join(reasons)
            problems.extend(f"item {folder}: {why}; left out" for why in reasons)
            return
        held_back[folder] = "; ".join(reasons)
        kept[folder] = good
        if folder in saved_md5 and valid_doc(state["items"].get(folder)) == good:
            md5s[folder] = saved_md5[folder]
        plans.append(rules.ItemPlan(folder, good, False))
        summaries.append(ItemSummary(
            name=str(good.get("name")), folder=folder, type=str(good.get("type")),
            size=sum(int(f.get("size", 0)) for f in good.get("files", [])),
            version=rules.int_or_none(good.get("version")) or 0, changed=False, held_back=True,
        ))

    for folder in sorted(set(scan.items) | set(scan.errors)):
        from_state = valid_doc(state["items"].get(folder))
        prev = (from_state or valid_doc(read_json(root / folder / "item.json"))
                or valid_doc(published.items.get(folder)))
        if prev is not None:
            kept[folder] = prev
        if folder in scan.errors:
            fail(folder, scan.errors[folder])
            continue
        files = scan.items[folder]
        if not files:
            warnings.append(f"item {folder}: no files; left out")
            continue
        paths = {f.path for f in files}
        by_path = {f.path: f for f in files}
        ovf_refs = {p: cache.ovf_references(f"{folder}/{p}", by_path[p])
                    for p in descriptors(sorted(paths)) if p.lower().endswith(".ovf")}
        mf_entries = {p: cache.mf_entries(f"{folder}/{p}", by_path[p]) for p in manifests(sorted(paths))}
        unreadable = [f"{p}: {why}" for p, why in sorted({**ovf_refs, **mf_entries}.items()) if isinstance(why, str)]
        if unreadable:  # refused before hashing: a huge bad descriptor costs no read of its disks
            fail(folder, *unreadable)
            continue
        needed = needed_algorithms(paths, mf_entries)
        try:
            digests = {f.path: cache.digests(f"{folder}/{f.path}", f, needed.get(f.path, set())) for f in files}
        except OSError as exc:
            fail(folder, f"cannot read {exc.filename}: {exc.strerror}")
            continue
        bad = template_problems(paths, ovf_refs, mf_entries, digests)
        if bad:
            fail(folder, *bad)
            continue
        scanned = [rules.ScannedFile(f.path, f.size, digests[f.path]["md5"]) for f in files]
        plan = rules.plan_item(folder=folder, name=names[folder], files=scanned, prev=prev,
                               library_id=library_id, now=now, returning=folder not in prev_published,
                               known=_md5_record(saved_md5.get(folder)) if from_state else None)
        plans.append(plan)
        md5s[folder] = {f.path: f.md5 for f in scanned}
        kept[folder] = plan.doc
        summaries.append(ItemSummary(
            name=plan.doc["name"], folder=folder, type=plan.doc["type"], size=sum(f.size for f in files),
            version=int(plan.doc["version"]), changed=plan.changed,
        ))
    warnings += cache.warnings
    plans.sort(key=lambda p: p.folder)
    listed = [p.folder for p in plans]
    refusal = approve(Draft(tuple(listed), dict(held_back), dict(left_out))) if approve else None
    if refusal:
        return ManifestReport(
            changed=False, library_version=rules.int_or_none((prev_lib or {}).get("version")) or 0,
            items=summaries, problems=problems, files_hashed=cache.files_hashed,
            bytes_hashed=cache.bytes_hashed, warnings=warnings, held_back=held_back, refused=refusal,
        )
    any_changed = any(p.changed for p in plans) or sorted(listed) != sorted(prev_published)
    lib, lib_changed = rules.plan_library(prev=prev_lib, library_id=library_id, name=name,
                                          any_item_changed=any_changed, now=now)

    written = 0
    for plan in plans:
        if plan.folder in held_back:
            continue  # its folder holds the new, failing content; the published copy keeps its item.json
        if _write_if_different(root / plan.folder / "item.json", plan.doc):
            written += 1
            fsync_dir(root / plan.folder)
    if _write_if_different(root / "items.json", rules.items_doc(p.doc for p in plans)):
        written += 1
        fsync_dir(root)
    if _write_if_different(root / "lib.json", lib):
        written += 1
        fsync_dir(root)

    new_state = {"format": state.get("format", 1), "library": lib, "items": kept,
                 "published": listed, "hashes": cache.saved(), "md5": md5s}
    if new_state != state:
        try:
            save_state(state_file, new_state)
        except (UserError, OSError) as exc:
            warnings.append(f"state file {state_file}: not saved ({exc}); the next run reads every file again")
    warnings = [printable(line) for line in warnings]  # one line each, whatever the names hold
    problems = [printable(line) for line in problems]
    held_back = {folder: printable(why) for folder, why in held_back.items()}
    for line in warnings:
        log.warning("%s", line)
    for line in problems:
        log.error("%s", line)
    for folder, why in sorted(held_back.items()):
        log.error("item %s: %s; held back at its published version %s", printable(folder), why,
                  published.items[folder].get("version"))
    return ManifestReport(
        changed=lib_changed, library_version=int(lib["version"]), items=summaries, problems=problems,
        files_hashed=cache.files_hashed, bytes_hashed=cache.bytes_hashed, warnings=warnings,
        files_written=written, held_back=held_back,
    )


def _md5_record(value: Any) -> dict[str, str] | None:
    """A saved path -> md5 record of an item, when it is one."""
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    return None


def check_manifest(root: Path) -> list[str]:
    """Every problem of the manifest of ``root`` against the folder's content (empty when OK)."""
    return check.check_manifest(check_root(root, writable=False))
