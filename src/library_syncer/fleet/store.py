"""The fleet history file in the server's state folder (kept across restarts)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import OperationFailed
from ..util.fs import atomic_write
from .model import Fleet

log = logging.getLogger("library_syncer.server")  # the server's lines, as before
FLEET_FILE = "fleet.json"


def load_fleet(state_dir: Path, keys: dict[str, str], *, silent_after: float) -> Fleet:
    """The fleet with the history saved in ``state_dir`` (a new one if there is none or it is unreadable)."""
    path = state_dir / FLEET_FILE
    try:
        return Fleet.from_json(path.read_text(), keys, silent_after=silent_after)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.warning("%s: %s; starting a new fleet history", path, exc)
    return Fleet(keys, silent_after=silent_after)


def save_fleet(state_dir: Path, fleet: Fleet) -> None:
    """Write the fleet history into ``state_dir`` (atomically); a failure is logged, not raised."""
    path = state_dir / FLEET_FILE
    try:
        atomic_write(path, fleet.to_json().encode(), 0o600)
    except OperationFailed as exc:
        fleet.dirty = True
        log.error("cannot save the fleet history: %s", exc)
