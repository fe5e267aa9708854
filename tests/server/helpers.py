"""Helpers of the server tests: the real rsync/ssh clients and a sample library."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from support import require_tool


def client_env() -> dict[str, str]:
    """The environment for rsync/ssh clients: no RSYNC_PROTECT_ARGS (rrsync rejects -s)."""
    return {k: v for k, v in os.environ.items() if k not in ("RSYNC_PROTECT_ARGS", "SSH_AUTH_SOCK")}


def rsync(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real rsync client (never with --protect-args)."""
    return subprocess.run([require_tool("rsync", "rsync"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=client_env())


def make_library(root: Path) -> Path:
    """A small library: an OVF item and an ISO item."""
    lib = root / "library"
    (lib / "item-a").mkdir(parents=True)
    (lib / "item-a" / "disk.vmdk").write_bytes(os.urandom(200_000))
    (lib / "item-a" / "vm.ovf").write_text("<Envelope/>")
    (lib / "iso").mkdir()
    (lib / "iso" / "installer.iso").write_bytes(b"\x02" * 10_000)
    return lib


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> content digest (or link target / 'dir') of everything under root."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
