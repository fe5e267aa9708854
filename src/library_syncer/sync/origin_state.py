"""A site's record of the origin versions it publishes (files; the rules are in vcsp/origin.py).

Each generation has the origin manifest it was synced at, as the site re-exports it
(``L/.library-syncer/origin/NNNNNN.json``, see :func:`~library_syncer.publish.generations.origin_path`):
the version the site publishes, what a relay serves to the sites behind it, and the
yardstick that keeps a site from taking an older version from a lagging peer.  The site's
own id (``STATE/site-id``) marks the documents that went through it, so a cycle of relays
is recognised.
"""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path

from ..publish.generations import current_generation, origin_path
from ..util.fs import atomic_write
from ..vcsp.origin import Origin, dumps, parse_origin, reexport

log = logging.getLogger(__name__)

SITE_ID_FILE = "site-id"


def site_id(state_dir: Path) -> str:
    """This site's id, made once (a UUID URN in ``STATE/site-id``); a fresh one if it cannot be stored."""
    path = state_dir / SITE_ID_FILE
    try:
        text = path.read_text().strip()
        if text.startswith("urn:uuid:"):
            return text
    except OSError:
        pass
    value = f"urn:uuid:{uuid.uuid4()}"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (value + "\n").encode())
    except Exception as exc:  # noqa: BLE001 - a missing id only weakens cycle detection
        log.warning("cannot store the site id in %s: %s", path, exc)
    return value


def read_site_origin(library: Path) -> Origin | None:
    """The origin manifest of the published generation, or None (nothing published, or synced without one)."""
    number = current_generation(library)
    if number is None:
        return None
    try:
        return parse_origin(origin_path(library, number).read_bytes())
    except (OSError, ValueError):
        return None


def record_origin(library: Path, number: int, origin: Origin, *, own_id: str, upstream_version: int | None,
                  held_back: list[str]) -> Origin:
    """Store the origin manifest of generation ``number`` as this site re-exports it; returns it."""
    doc = reexport(origin, relay_id=own_id, relay_name=socket.gethostname(), upstream_version=upstream_version,
                   held_back=held_back)
    path = origin_path(library, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, dumps(doc))
    return Origin(origin.origin_id, origin.version, doc)
