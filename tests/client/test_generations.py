"""Publishing: hard-link generations, atomic switch of L/current, pruning."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from library_syncer.errors import OperationFailed
from library_syncer.publish import generations as gen
from library_syncer.transport import rsync as rs
from support import require_tool


def staging_with(library: Path, files: dict[str, bytes]) -> Path:
    staging = gen.Layout(library).staging
    for rel, data in files.items():
        p = staging / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return staging


def test_nothing_published_yet(tmp_path):
    assert gen.current_root(tmp_path) is None
    assert gen.current_generation(tmp_path) is None
    assert gen.published_items(tmp_path) == set()
    assert gen.prune(tmp_path, 0) == []


def test_publish_hard_links_and_switches(tmp_path):
    lib = tmp_path / "L"
    staging = staging_with(lib, {"lib.json": b"{}", "A/disk.vmdk": b"x" * 1000, "A/.rsync-partial/p": b"half",
                                 ".library-syncer/state.json": b"{}", "B/sub/file.iso": b"iso"})
    os.symlink("/etc/passwd", staging / "A" / "evil")
    n = gen.publish(lib)
    assert n == 1 and gen.current_generation(lib) == 1
    root = gen.current_root(lib)
    assert root == (lib / ".library-syncer/generations/000001").resolve()
    assert os.readlink(lib / "current") == ".library-syncer/generations/000001"  # relative: the folder can move
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "A", "A/disk.vmdk", "B", "B/sub", "B/sub/file.iso", "lib.json"]
    assert (root / "A/disk.vmdk").stat().st_ino == (staging / "A/disk.vmdk").stat().st_ino
    assert gen.published_items(lib) == {"A", "B"}
    assert gen.publish(lib) == 2 and gen.current_generation(lib) == 2
    assert not list(lib.glob(".current.tmp-*"))


def test_current_that_is_a_real_folder_is_refused(tmp_path):
    lib = tmp_path / "L"
    staging_with(lib, {"a/b": b"1"})
    (lib / "current").mkdir()
    with pytest.raises(OperationFailed, match="not a symlink"):
        gen.publish(lib)


def test_prune_keeps_current_and_previous_and_respects_grace(tmp_path):
    lib = tmp_path / "L"
    staging_with(lib, {"a/b": b"1"})
    for _ in range(4):
        gen.publish(lib)
    lay = gen.Layout(lib)
    (lay.generations / ".tmp-000009").mkdir()  # leftover of an interrupted publication
    now = time.time()
    assert gen.prune(lib, 3600, now=now) == []
    assert gen.list_generations(lib) == [1, 2, 3, 4]
    # generation 1 was retired when 2 was published: an hour later it may go; 2 is retired by 3.
    os.utime(lay.generation(2), (now - 7200, now - 7200))
    assert gen.prune(lib, 3600, now=now) == [1]
    assert gen.prune(lib, 0, now=now) == [2]
    assert gen.list_generations(lib) == [3, 4]
    assert not (lay.generations / ".tmp-000009").exists()


def test_prune_removes_orphans_newer_than_current(tmp_path):
    lib = tmp_path / "L"
    staging_with(lib, {"a/b": b"1"})
    gen.publish(lib)
    gen.publish(lib)
    gen.switch_current(lib, 1)  # as if the switch to a newer one never happened
    assert gen.prune(lib, 3600) == [2]
    assert gen.publish(lib) == 2


def test_published_bytes_never_change_under_resync(tmp_path):
    """rsync replaces changed files by rename: the inode a generation links to keeps its bytes."""
    require_tool("rsync", "rsync")
    src = tmp_path / "src"
    (src / "Item").mkdir(parents=True)
    original = os.urandom(1 << 20)
    (src / "Item" / "disk.vmdk").write_bytes(original)
    (src / "Item" / "small.ovf").write_bytes(b"<ovf/>")
    lib = tmp_path / "L"
    staging = gen.Layout(lib).staging
    staging.mkdir(parents=True)

    def sync() -> None:
        subprocess.run(rs.sync_command(str(src) + "/", staging), check=True, capture_output=True, env=rs.child_env())

    sync()
    gen.publish(lib)
    published = gen.current_root(lib) / "Item" / "disk.vmdk"
    with (src / "Item" / "disk.vmdk").open("r+b") as fh:  # change 4 KiB in the middle, same size
        fh.seek(512 * 1024)
        fh.write(b"\xff" * 4096)
    os.utime(src / "Item" / "disk.vmdk", (time.time() + 10, time.time() + 10))
    (src / "Item" / "small.ovf").write_bytes(b"<ovf changed/>")
    sync()
    assert (staging / "Item" / "disk.vmdk").read_bytes() != original
    assert published.read_bytes() == original
    assert (gen.current_root(lib) / "Item" / "small.ovf").read_bytes() == b"<ovf/>"
    gen.publish(lib)
    assert (gen.current_root(lib) / "Item" / "disk.vmdk").read_bytes() == (src / "Item" / "disk.vmdk").read_bytes()
    assert published.read_bytes() == original  # the old generation is still intact
