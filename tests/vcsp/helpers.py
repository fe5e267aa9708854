"""Builders of small library folders for the manifest tests."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

OLD = time.time() - 3600


def put(path: Path, data: bytes | str, age: float = 0.0) -> Path:
    """Write ``data`` to ``path`` (creating folders) with an mtime ``age`` seconds before OLD."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.utime(path, (OLD - age, OLD - age))
    return path


def ovf(*hrefs: str) -> str:
    """A small OVF descriptor referencing ``hrefs``."""
    refs = "".join(f'<File ovf:href="{h}" ovf:id="f{i}"/>' for i, h in enumerate(hrefs))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" '
        'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">'
        f"<References>{refs}</References><VirtualSystem ovf:id=\"vm\"/></Envelope>\n"
    )


def template(folder: Path, name: str = "vm", disk: bytes = b"disk-bytes", with_mf: bool = True, age: float = 0) -> None:
    """An OVF template: descriptor, one disk and (optionally) a correct SHA256 .mf."""
    desc = put(folder / f"{name}.ovf", ovf(f"{name}-disk1.vmdk"), age)
    put(folder / f"{name}-disk1.vmdk", disk, age)
    if with_mf:
        lines = [f"SHA256({p.name})= {hashlib.sha256(p.read_bytes()).hexdigest()}"
                 for p in (desc, folder / f"{name}-disk1.vmdk")]
        put(folder / f"{name}.mf", "\n".join(lines) + "\n", age)


def load(path: Path):
    return json.loads(path.read_bytes())


def mtimes(root: Path) -> dict[str, int]:
    """mtime_ns of every manifest file under root."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns
            for p in sorted(root.rglob("*.json")) if ".library-syncer" not in p.parts}
