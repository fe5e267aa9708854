"""Disk images with real files for the real-disk benchmark: an ext4 file system made from a folder
of files copied from this machine (/usr/share, /usr/lib), patched and grown in two ways, and
converted by ``qemu-img`` to the VMDK formats a Content Library holds.

- :func:`make_ext4` builds an image from a folder with ``mkfs.ext4 -d`` (no mount, no root needed),
  with a fixed UUID and directory hash seed so two builds differ only where the files do.
- :func:`patch_in_place` changes files the way a running guest does (through ``debugfs``: each
  patched file is removed and written again, new files are added), so every other file keeps
  its blocks; :func:`make_ext4` on the patched folder instead lays the whole file system out
  again, and every file after the first one that grew moves.
- :func:`to_vmdk` converts a raw image to ``streamOptimized`` (what an OVF export writes: each
  64 KiB grain deflated on its own) or ``monolithicFlat`` (descriptor + ``-flat.vmdk``, raw).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SOURCES = (Path("/usr/share"), Path("/usr/lib"))
_SAFE = re.compile(r"^[A-Za-z0-9._+-]+$")  # names debugfs takes without quoting
FS_UUID = "6f1d4c2a-8e1b-4b7e-9a55-0c3e2d1f7a10"
HASH_SEED = "0b7f3a4e-51c2-4d8a-8f60-2e9c1b7d5a34"
MAX_FILE = 64 * 1024**2


@dataclass
class Content:
    """Files copied into ``tree`` (paths relative to it) and the files left over for additions."""

    tree: Path
    files: list[Path]
    spare: list[Path]
    bytes: int


def real_files(budget: int, tree: Path, rng: random.Random) -> Content:
    """Copy a random choice of this machine's regular files (at most ``budget`` bytes) into ``tree``."""
    candidates = []
    for root in SOURCES:
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if _SAFE.match(d))
            for name in sorted(names):
                path = Path(folder, name)
                if _SAFE.match(name) and path.is_file() and not path.is_symlink():
                    size = path.stat().st_size
                    if 0 < size <= MAX_FILE and os.access(path, os.R_OK):
                        candidates.append((path, size))
    rng.shuffle(candidates)
    chosen, total, rest = [], 0, 0
    for rest, (path, size) in enumerate(candidates):
        if total + size > budget:
            break
        rel = path.relative_to("/")
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, tree / rel)
        chosen.append(rel)
        total += size
    return Content(tree, chosen, [p for p, _ in candidates[rest:]], total)


def make_ext4(tree: Path, image: Path, size: int) -> None:
    """An ext4 image of ``size`` bytes holding ``tree`` (``mkfs.ext4 -d``), reproducible layout."""
    image.unlink(missing_ok=True)
    # No metadata_csum (and so no uninitialised block groups): debugfs's allocator leaves those
    # groups' unused-inode counts stale, which e2fsck then reports as damage.
    run("mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "^metadata_csum", "-U", FS_UUID, "-E", f"hash_seed={HASH_SEED},root_owner=0:0",
        "-L", "template", "-d", tree, image, f"{size // 1024}k")


@dataclass
class Change:
    """What :func:`change_files` did to the folder: paths relative to the tree."""

    patched: list[Path]
    added: list[Path]
    bytes_patched: int
    bytes_added: int


def change_files(content: Content, patch: int, add_bytes: int, rng: random.Random) -> Change:
    """Patch ``patch`` files (512 bytes rewritten at a random place, 1 KiB of text appended) and add
    spare real files worth ``add_bytes`` under ``opt/added``."""
    patched = sorted(rng.sample(content.files, min(patch, len(content.files))))
    for rel in patched:
        path = content.tree / rel
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            offset = rng.randrange(max(1, size - 512))
            fh.seek(offset)
            old = fh.read(512)
            fh.seek(offset)
            fh.write(bytes(b ^ 0x5A for b in old))
            fh.seek(0, os.SEEK_END)
            fh.write((f"# patched {rel}\n" * 64).encode()[:1024])
    added, total = [], 0
    (content.tree / "opt" / "added").mkdir(parents=True, exist_ok=True)
    for src in content.spare:
        size = src.stat().st_size
        if total + size > add_bytes:
            continue
        rel = Path("opt", "added", f"{len(added):04d}-{src.name}")
        shutil.copyfile(src, content.tree / rel)
        added.append(rel)
        total += size
        if total > add_bytes * 0.98:
            break
    return Change(patched, added, len(patched) * 512 + len(patched) * 1024, total)


def patch_in_place(image: Path, tree: Path, change: Change) -> None:
    """Apply ``change`` to the ext4 ``image`` with ``debugfs -w``: rm + write of each patched file, mkdir +
    write of each added one; the rest of the file system keeps its blocks."""
    cmds = ["mkdir /opt", "mkdir /opt/added"]
    for rel in change.patched + change.added:
        parent = "/" + str(rel.parent)
        if rel in change.patched:
            cmds.append(f"rm /{rel}")
        cmds += [f"cd {parent}", f"write {tree / rel} {rel.name}"]
    script = image.with_suffix(".debugfs")
    script.write_text("\n".join(cmds) + "\n")
    out = run("debugfs", "-w", "-f", script, image)
    errors = [line for line in out.splitlines()
              if line.strip() and not line.startswith(("debugfs", "Allocated inode"))]
    if errors:
        raise SystemExit(f"benchmark: debugfs failed: {errors[0]}")
    run("e2fsck", "-f", "-n", image)  # the file system is consistent


def copy_image(src: Path, dst: Path) -> None:
    """A copy of an image that keeps its holes."""
    run("cp", "--sparse=always", src, dst)


def to_vmdk(image: Path, vmdk: Path, subformat: str) -> list[Path]:
    """Convert a raw image to a VMDK (``streamOptimized`` or ``monolithicFlat``); the files written."""
    vmdk.parent.mkdir(parents=True, exist_ok=True)
    run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", f"subformat={subformat}", image, vmdk)
    files = [vmdk]
    flat = vmdk.with_name(vmdk.stem + "-flat.vmdk")
    if subformat == "monolithicFlat":
        files.append(flat)
    return files


def run(*argv: object) -> str:
    """Run a tool; its output, or the benchmark stops with its last error line."""
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if r.returncode:
        last = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise SystemExit(f"benchmark: {argv[0]} failed (exit {r.returncode}): {last[0]}")
    return r.stdout + r.stderr


def changed_blocks(a: Path, b: Path, block: int = 4096) -> int:
    """How many ``block``-sized blocks of two equally sized images differ."""
    count, chunk = 0, 256 * block
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if not x and not y:
                return count
            if x != y:
                count += sum(x[i:i + block] != y[i:i + block] for i in range(0, max(len(x), len(y)), block))
