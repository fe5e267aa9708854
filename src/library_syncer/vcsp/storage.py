"""The manifest engine's state file and JSON reading (atomic writes and locks are in util/fs.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..util.fs import atomic_write

STATE_FORMAT = 1


def read_json(path: Path) -> Any:
    """The JSON value in ``path``, or None when missing, unreadable or not valid JSON."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def load_state(path: Path) -> tuple[dict[str, Any], str | None]:
    """(state, warning): the saved state, or an empty one and why it could not be used."""
    empty: dict[str, Any] = {"format": STATE_FORMAT, "library": None, "items": {}, "hashes": {}}
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return empty, None
    except OSError as exc:
        return empty, f"state file {path}: cannot read ({exc.strerror}); recovering from the manifest"
    try:
        state = json.loads(raw)
    except ValueError:
        return empty, f"state file {path}: not valid JSON; recovering from the manifest"
    if (
        not isinstance(state, dict)
        or state.get("format") != STATE_FORMAT
        or not isinstance(state.get("items"), dict)
        or not isinstance(state.get("hashes"), dict)
        or not isinstance(state.get("library"), (dict, type(None)))
    ):
        return empty, f"state file {path}: unexpected content; recovering from the manifest"
    return state, None


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the state file atomically (compact JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(state, separators=(",", ":"), ensure_ascii=True).encode())
