"""A full disk: old generations no reader holds are removed, the transfer is tried once more, and only
then is the sync fatal.  The library lives on a small tmpfs (root, as in CI)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from library_syncer.sync.run import run_sync
from library_syncer.publish import generations as gen
from library_syncer.config import load_settings

MB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs: run it as root (CI does)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def version(src: Path, n: int) -> None:
    data = os.urandom(9 * MB)
    (src / "Big").mkdir(parents=True, exist_ok=True)
    (src / "Big" / "disk.iso").write_bytes(data)
    os.utime(src / "Big" / "disk.iso", (1_000_000 + n, 1_000_000 + n))


def test_disk_full_removes_retired_generations_then_retries_once(tmp_path, small_disk):
    src = tmp_path / "src"
    cfg = load_settings(library=small_disk / "L", state_dir=tmp_path / "state", generation_grace_seconds=3600)
    for n in (1, 2, 3):  # three 9 MB versions: 27 MB of the 30 MB held by generations 1-3
        version(src, n)
        r = run_sync(cfg, source=str(src), retry_base=0.01)
        assert r.kind == "ok", r.reason
    assert gen.list_generations(small_disk / "L") == [1, 2, 3]
    version(src, 4)  # does not fit until generation 1 goes
    r = run_sync(cfg, source=str(src), retry_base=0.01)
    assert r.kind == "ok" and r.attempts == 2, (r.kind, r.attempts, r.reason)
    assert gen.current_generation(small_disk / "L") == 4
    assert 1 not in gen.list_generations(small_disk / "L")

    # A version that cannot fit even after the clean-up: fatal after the one retry.
    (src / "Big" / "disk.iso").write_bytes(os.urandom(25 * MB))
    r = run_sync(cfg, source=str(src), retry_base=0.01)
    assert r.kind == "fatal" and r.attempts == 2, (r.kind, r.attempts, r.reason)
    assert "disk of the library is full" in r.reason
    assert gen.current_generation(small_disk / "L") == 4
