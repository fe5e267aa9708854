"""Selective sync: which item folders a site holds (SYNC_INCLUDE / SYNC_EXCLUDE glob patterns).

Pure.  :func:`is_selected` is the rule; :func:`rsync_filters` says the same thing to
rsync, so unselected items are never transferred.  Both read a pattern the same way:
``*``, ``?`` and ``[...]`` on the folder name (no ``/`` and no backslash are allowed
in a pattern, so shell-style and rsync-style matching agree).  An exclude wins over an
include; no include means every item.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable


def is_selected(folder: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """True when the item folder ``folder`` is one the site holds."""
    include = tuple(include)
    if any(fnmatchcase(folder, p) for p in exclude):
        return False
    return not include or any(fnmatchcase(folder, p) for p in include)


def rsync_filters(include: Iterable[str], exclude: Iterable[str]) -> list[str]:
    """``--filter`` arguments that keep rsync to the selected top-level item folders."""
    include = tuple(include)
    rules = [f"- /{p}/" for p in exclude] + [f"+ /{p}/" for p in include]
    if include:
        rules.append("- /*/")
    return [f"--filter={rule}" for rule in rules]
