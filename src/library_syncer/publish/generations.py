"""Staging tree -> immutable generation -> one atomic switch of what is served.

Layout under the client's library folder ``L``::

    L/.library-syncer/staging/              rsync target, kept between runs (resumes)
    L/.library-syncer/generations/000042/   published trees, never modified
    L/current -> .library-syncer/generations/000042   what the web server serves
    L/.library-syncer/leases/000042         touched by web servers, locked by relay sessions
    L/.library-syncer/origin/000042.json    the origin manifest received with it

A generation is a hard-link copy of the staging tree (dot-folders left out), so
unchanged bytes cost no space.  rsync never writes into an existing file (no
``--inplace``): it writes a temporary file and renames it, so the inodes a
generation links to keep their bytes.  The switch is a new symlink renamed over
``L/current`` (one ``rename``); downloads already running keep reading the old tree.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import OperationFailed
from ..vcsp.scan import MAX_DEPTH

log = logging.getLogger(__name__)

META_DIRNAME = ".library-syncer"
CURRENT_NAME = "current"
_DIGITS = 6


@dataclass(frozen=True)
class Layout:
    """Paths of the publishing layout under one library folder."""

    library: Path

    @property
    def meta(self) -> Path:
        return self.library / META_DIRNAME

    @property
    def staging(self) -> Path:
        return self.meta / "staging"

    @property
    def generations(self) -> Path:
        return self.meta / "generations"

    @property
    def current(self) -> Path:
        return self.library / CURRENT_NAME

    @property
    def lock(self) -> Path:
        return self.meta / "sync.lock"

    def generation(self, number: int) -> Path:
        return self.generations / f"{number:0{_DIGITS}d}"


def _number(name: str) -> int | None:
    return int(name) if name.isdigit() and len(name) == _DIGITS else None


def list_generations(library: Path) -> list[int]:
    """Numbers of the complete generations present, ascending."""
    try:
        names = os.listdir(Layout(library).generations)
    except FileNotFoundError:
        return []
    return sorted(n for n in map(_number, names) if n is not None)


def current_generation(library: Path) -> int | None:
    """Number of the generation ``L/current`` points to, or None."""
    try:
        target = os.readlink(Layout(library).current)
    except (FileNotFoundError, OSError):
        return None
    return _number(Path(target).name)


def current_root(library: Path) -> Path | None:
    """The folder the web server should serve (resolved), or None before the first publication."""
    link = Layout(library).current
    if not link.is_symlink():
        return None
    root = link.resolve()
    return root if root.is_dir() else None


def published_items(library: Path) -> set[str]:
    """Item folder names of the current generation (empty before the first publication)."""
    root = current_root(library)
    if root is None:
        return set()
    return {e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_tree(src: Path, dst: Path, *, skip: frozenset[str] | set[str] = frozenset()) -> tuple[int, int]:
    """Hard-link copy of ``src`` into the new folder ``dst``; dot-folders, symlinks and the top-level
    folders named in ``skip`` are left out.

    Returns (files, bytes).  Every created folder is fsynced.
    """
    files = size = 0
    dirs: list[tuple[Path, Path]] = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not os.path.islink(os.path.join(dirpath, d))
                             and not (d in skip and dirpath == str(src)))
        here = Path(dirpath)
        if len(here.relative_to(src).parts) > MAX_DEPTH:  # the manifest leaves such items out; os.walk recurses
            log.warning("not published (folders nested deeper than %d levels): %s", MAX_DEPTH, here.relative_to(src))
            dirnames.clear()
        target = dst / here.relative_to(src)
        target.mkdir(exist_ok=target == dst)
        dirs.append((here, target))
        for name in filenames:
            path = here / name
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                log.warning("not published (not a regular file): %s", path.relative_to(src))
                continue
            os.link(path, target / name, follow_symlinks=False)
            files += 1
            size += st.st_size
    for here, target in reversed(dirs):
        if target != dst:  # the root's own mtime records when the generation was made
            shutil.copystat(here, target, follow_symlinks=False)
        _fsync_dir(target)
    return files, size


def seed_staging(library: Path) -> int:
    """Create the staging tree from a library folder the original client synced in place.

    Before the first sync, files lying directly in ``L`` (the original layout) are
    hard-linked into the staging tree, so rsync only transfers what changed and the
    manifest keeps its ids.  Returns the number of files linked (0 when nothing to do).
    """
    lay = Layout(library)
    if lay.staging.exists():
        return 0
    old = [e for e in os.scandir(library) if not e.name.startswith(".") and e.name != CURRENT_NAME
           and not e.is_symlink()]
    if not old:
        return 0
    tmp = lay.meta / "staging.seed"
    shutil.rmtree(tmp, ignore_errors=True)
    lay.meta.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    files, _ = link_tree(library, tmp)
    os.rename(tmp, lay.staging)
    log.info("seeded the staging tree with %d files already in %s", files, library)
    return files


def publish(library: Path, *, keep: frozenset[str] | set[str] = frozenset()) -> int:
    """Publish the staging tree as a new generation and switch ``L/current`` to it; returns its number.

    The item folders named in ``keep`` (items held back at their last good version) are
    linked from the current generation instead of the staging tree.
    """
    lay = Layout(library)
    current = current_root(library)
    if keep and current is None:
        raise OperationFailed("cannot keep items from the published generation: nothing is published")
    if lay.current.exists() and not lay.current.is_symlink():
        raise OperationFailed(f"{lay.current} exists and is not a symlink: move it away so it can be published")
    lay.generations.mkdir(parents=True, exist_ok=True)
    known = list_generations(library) + [current_generation(library) or 0]
    number = max(known) + 1
    tmp = lay.generations / f".tmp-{number:0{_DIGITS}d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        link_tree(lay.staging, tmp, skip=keep)
        for folder in sorted(keep):
            assert current is not None  # checked above: keeping items needs a published generation
            link_tree(current / folder, tmp / folder)
        os.utime(tmp)
        os.rename(tmp, lay.generation(number))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(lay.generations)
    _create_lease(library, number)
    switch_current(library, number)
    return number


def _create_lease(library: Path, number: int) -> None:
    """The generation's lease file, made before it is served, so a relay session of another account can lock
    it; its time is the epoch until a web server reads from the generation."""
    path = lease_path(library, number)
    try:
        path.parent.mkdir(exist_ok=True)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o644))
        if os.stat(path).st_mtime > 1:
            os.utime(path, (0, 0))
    except OSError as exc:
        log.warning("cannot create the lease file %s: %s", path, exc.strerror)


def switch_current(library: Path, number: int) -> None:
    """Point ``L/current`` at generation ``number`` with one atomic rename."""
    lay = Layout(library)
    target = Path(META_DIRNAME) / "generations" / lay.generation(number).name
    tmp = library / f".{CURRENT_NAME}.tmp-{os.getpid()}"
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, lay.current)
    _fsync_dir(library)


def lease_path(library: Path, number: int) -> Path:
    """The lease file a web server touches while subscribers read generation ``number``."""
    return Layout(library).meta / "leases" / Layout(library).generation(number).name


def origin_path(library: Path, number: int) -> Path:
    """The origin manifest a site received with generation ``number`` (a relay serves it downstream)."""
    return Layout(library).meta / "origin" / f"{Layout(library).generation(number).name}.json"


def leased(library: Path, number: int, grace_seconds: float, now: float) -> bool:
    """True if a web server served from generation ``number`` within the grace period, or a relay
    session reads it now (it holds a shared lock on the lease file)."""
    path = lease_path(library, number)
    try:
        if now - path.stat().st_mtime < grace_seconds:
            return True
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def retired_at(library: Path, number: int) -> float | None:
    """When generation ``number`` stopped being served: the time the next one was published."""
    later = [n for n in list_generations(library) if n > number]
    if not later:
        return None
    return Layout(library).generation(later[0]).stat().st_mtime


def prune(library: Path, grace_seconds: float, *, now: float | None = None,
          lease_grace: float | None = None) -> list[int]:
    """Remove old generations: never the current and the previous one; others once retired for
    ``grace_seconds`` and not read by a pinned subscriber (see ``pins``) within ``lease_grace``
    (default: the same grace).

    Leftovers of an interrupted publication (temporary folders, generations newer
    than the current one) are removed too.  Returns the numbers removed.
    """
    lay = Layout(library)
    now = time.time() if now is None else now
    current = current_generation(library)
    if current is None:
        return []
    numbers = list_generations(library)
    older = [n for n in numbers if n < current]
    keep = {current} | set(older[-1:])
    removed = []
    for n in numbers:
        if n in keep:
            continue
        if n < current:
            retired = retired_at(library, n)
            lease_for = grace_seconds if lease_grace is None else lease_grace
            if retired is None or now - retired < grace_seconds or leased(library, n, lease_for, now):
                continue
        shutil.rmtree(lay.generation(n), ignore_errors=True)
        removed.append(n)
    for entry in os.scandir(lay.generations):
        if entry.name.startswith(".tmp-"):
            shutil.rmtree(entry.path, ignore_errors=True)
    for n in removed:
        lease_path(library, n).unlink(missing_ok=True)
        origin_path(library, n).unlink(missing_ok=True)
    if removed:
        log.info("removed old generations %s", ", ".join(map(str, removed)))
    return removed
