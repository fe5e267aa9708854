"""The delete guard: pure rules that refuse a sync which would make a site lose published items.

A subscribed vCenter deletes every item that disappears from ``items.json``,
so losing items must be deliberate.  Two brakes, both pure:

- :func:`delete_guard` before the transfer, on the source's top-level listing
  (an unmounted share at the primary looks empty);
- :func:`publish_guard` on the manifest draft, before anything is written or
  published: it counts every way an item can vanish (removed at the source,
  left out by validation, filtered) and refuses a source none of whose items
  passes validation (a re-export in progress at the primary).

``SYNC_ALLOW_MASS_DELETE`` (``allow``) accepts the loss for one run.
"""

from __future__ import annotations

from typing import Iterable

from ..vcsp.published import Draft

_ALLOW_HINT = "Set SYNC_ALLOW_MASS_DELETE=true for one run to accept the deletion"


def _examples(names: Iterable[str], limit: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def too_many(published: set[str], kept: set[str], max_share: float) -> set[str] | None:
    """The published items not in ``kept`` when they are all of them or more than ``max_share``, else None."""
    if not published:
        return None
    lost = published - kept
    if lost and (lost == published or len(lost) / len(published) > max_share):
        return lost
    return None


def delete_guard(published: set[str], source: set[str], max_share: float, allow: bool) -> str | None:
    """Why a sync must be refused before its transfer (one line), or None.

    Refused when the source no longer has all published items, or more than
    ``max_share`` of them, unless ``allow``.
    """
    lost = None if allow else too_many(published, source, max_share)
    if lost is None:
        return None
    what = "all" if lost == published else f"{len(lost)} of {len(published)}"
    return (f"delete guard: the source no longer has {what} published items ({_examples(lost)}); "
            f"the limit is {max_share:.0%} (setting sync_delete_guard). Is the library at the server "
            f"mounted? {_ALLOW_HINT}")


def publish_guard(published: set[str], draft: Draft, max_share: float, allow: bool,
                  filtered: Iterable[str] = ()) -> str | None:
    """Why the manifest ``draft`` must not be published (one line), or None.

    ``published``: item folders the site lists now; ``filtered``: folders a site
    filter leaves out on purpose (not counted as lost).
    """
    if allow:
        return None
    failing = {**draft.left_out, **draft.held_back}
    if failing and not draft.fresh:
        folder, why = sorted(failing.items())[0]
        return (f"delete guard: none of the {len(failing)} items at the source passed validation "
                f"(e.g. {folder}: {why}); is an export still running at the server? Nothing published "
                f"was changed")
    lost = too_many(published - set(filtered), set(draft.folders), max_share)
    if lost is None:
        return None
    causes = []
    invalid = sorted(lost & set(draft.left_out))
    if invalid:
        causes.append(f"{len(invalid)} failed validation ({_examples(invalid)})")
    gone = sorted(lost - set(draft.left_out))
    if gone:
        causes.append(f"{len(gone)} no longer at the source ({_examples(gone)})")
    what = "all" if lost == published else f"{len(lost)} of {len(published)}"
    return (f"delete guard: the new manifest would drop {what} published items: {'; '.join(causes)}; "
            f"the limit is {max_share:.0%} (setting sync_delete_guard). {_ALLOW_HINT}")
