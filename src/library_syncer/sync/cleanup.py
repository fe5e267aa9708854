"""Clean-up of the staging tree before its manifest: item folders left empty, items the site filter leaves out."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

from ..vcsp.scan import MAX_DEPTH
from .selection import is_selected


def remove_empty_items(staging: Path) -> list[str]:
    """Remove item folders that hold no file other than ``item.json`` (their item was deleted).

    A folder nested deeper than the scanner's depth limit counts as content: such
    an item is kept (the manifest reports it) and never handed to ``rmtree``.
    """
    removed = []
    for entry in os.scandir(staging):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        if not _has_content(Path(entry.path), MAX_DEPTH):
            shutil.rmtree(entry.path)
            removed.append(entry.name)
    return sorted(removed)


def _has_content(item: Path, max_depth: int) -> bool:
    """True when ``item`` holds a file other than its ``item.json`` (files in hidden folders, such as
    rsync's partial dir, do not count) or folders nested deeper than ``max_depth``."""
    pending = [(str(item), 0, False)]  # iterative: no recursion limit, whatever the depth
    while pending:
        folder, depth, hidden = pending.pop()
        with os.scandir(folder) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    if depth >= max_depth:
                        return True
                    pending.append((entry.path, depth + 1, hidden or entry.name.startswith(".")))
                elif not hidden and not (depth == 0 and entry.name == "item.json"):
                    return True
    return False


def remove_unselected(staging: Path, include: Iterable[str], exclude: Iterable[str]) -> list[str]:
    """Remove the item folders of ``staging`` the site filter leaves out; returns their names."""
    include, exclude = tuple(include), tuple(exclude)
    if not include and not exclude:
        return []
    gone = []
    for entry in os.scandir(staging):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        if not is_selected(entry.name, include, exclude):
            shutil.rmtree(entry.path)
            gone.append(entry.name)
    return sorted(gone)
