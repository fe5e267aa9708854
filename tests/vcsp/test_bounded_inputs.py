"""Bounded inputs of the manifest engine: descriptor sizes, folder depth (real CLI subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import cli

from library_syncer.sync.cleanup import remove_empty_items
from library_syncer.publish.generations import link_tree
from library_syncer.vcsp import update_manifest
from library_syncer.vcsp.ovf import MAX_MF_BYTES
from library_syncer.vcsp.scan import MAX_DEPTH, HashCache, scan_tree

from .helpers import OLD, put, template

GiB = 1024 ** 3

# Runs ``library-syncer ARGS`` and prints its exit code and peak resident memory (KiB) as JSON.
_MEASURE = """
import json, resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "library_syncer", *sys.argv[1:]], capture_output=True, text=True,
                      timeout=300)
print(json.dumps({"rc": done.returncode, "stderr": done.stderr,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def measured_cli(*args: str | os.PathLike) -> dict:
    """``library-syncer ARGS`` in a fresh wrapper process, so the peak memory is that run's alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "SYNCER_", "LIBRARY_", "TLS_"))}
    out = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, args)], env=env, capture_output=True,
                         text=True, timeout=330, check=True)
    return json.loads(out.stdout)


def sparse(path: Path, size: int, head: bytes) -> None:
    """A sparse file of ``size`` bytes starting with ``head``, last modified an hour ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    os.utime(path, (OLD, OLD))


@pytest.mark.parametrize("name, what, limit", [("vm.ovf", "descriptor", "16 MiB"), ("vm.mf", "manifest", "1 MiB")])
def test_huge_descriptor_is_refused_from_its_size_with_little_memory(tmp_path: Path, name, what, limit):
    root = tmp_path / "lib"
    template(root / "good")
    sparse(root / "huge" / name, GiB, b"<Envelope>" if name.endswith(".ovf") else b"SHA256(x)= 00\n")
    put(root / "huge" / "vm-disk1.vmdk", "disk")

    run = measured_cli("manifest", root, "--name", "L")
    assert run["rc"] == 1, run["stderr"]
    assert f"item huge: {name}: {what} of {GiB} bytes is larger than the limit of {limit}; left out" in run["stderr"]
    assert "Traceback" not in run["stderr"]
    assert run["maxrss_kib"] < 100 * 1024, f"peak memory {run['maxrss_kib']} KiB"
    assert [i["name"] for i in json.loads((root / "items.json").read_text())["items"]] == ["good"]

    state = json.loads((root / ".library-syncer" / "state.json").read_text())
    assert state["hashes"][f"huge/{name}"][name[-3:].lstrip(".")] == {
        "error": f"{what} of {GiB} bytes is larger than the limit of {limit}"}  # remembered by the file's key
    again = cli("manifest", root, "--name", "L")
    assert again.returncode == 1 and "read 0 file(s)" in again.stdout, again.stdout + again.stderr


def test_descriptor_that_grows_after_its_stat_is_read_only_up_to_the_limit(tmp_path: Path):
    mf = put(tmp_path / "i" / "a.mf", "")
    found = scan_tree(tmp_path).items["i"][0]  # stat says 0 bytes
    mf.write_bytes(b"\n" * (MAX_MF_BYTES + 10))
    assert HashCache().mf_entries("i/a.mf", found) == f"manifest of {MAX_MF_BYTES + 1} bytes is larger than the limit of 1 MiB"


# --- folder depth ------------------------------------------------------------------------


def make_chain(top: Path, depth: int, leaf: bytes | None = None) -> None:
    """``top/d/d/.../d`` with ``depth`` levels of ``d`` (deeper than any path limit), relative to open folders."""
    top.mkdir(parents=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        if leaf is not None:
            file_fd = os.open("leaf.iso", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(file_fd, leaf)
            os.close(file_fd)
    finally:
        os.close(fd)


def remove_chain(top: Path) -> None:
    """Remove a tree made by :func:`make_chain` level by level (rmtree would recurse into it)."""
    spare = top.with_name(top.name + ".next")
    while top.exists():
        for name in os.listdir(top):
            if name != "d":
                os.unlink(top / name)
        if (top / "d").exists():
            os.rename(top / "d", spare)
            os.rmdir(top)
            os.rename(spare, top)
        else:
            os.rmdir(top)


@pytest.fixture
def chains(tmp_path: Path):
    """Collects chain folders to remove after the test, whatever it did."""
    made: list[Path] = []
    yield made
    for top in made:
        remove_chain(top)


def test_ten_thousand_levels_deep_item_is_left_out_with_a_clear_line(tmp_path: Path, chains):
    root = tmp_path / "lib"
    put(root / "ok" / "a.iso", "a")
    chains.append(root / "deep")
    make_chain(root / "deep", 10_000, b"x")

    done = cli("manifest", root, "--name", "L")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    line = next(x for x in done.stderr.splitlines() if "item deep" in x)
    assert f"item deep: folders nested deeper than the limit of {MAX_DEPTH} levels (at d/d/d/" in line
    assert line.endswith("...); left out") and len(line) < 300
    assert [i["name"] for i in json.loads((root / "items.json").read_text())["items"]] == ["ok"]

    checked = cli("manifest", "--check", root)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert checked.stdout.splitlines()[0].startswith(f"item deep: folders nested deeper than the limit of {MAX_DEPTH}")


def test_depth_limit_boundary(tmp_path: Path, chains):
    chains += [tmp_path / "at limit", tmp_path / "over limit"]
    make_chain(tmp_path / "at limit", MAX_DEPTH, b"x")
    make_chain(tmp_path / "over limit", MAX_DEPTH + 1, b"x")
    report = update_manifest(tmp_path, "L")
    assert [i.folder for i in report.items] == ["at limit"]
    assert report.problems == [f"item over limit: folders nested deeper than the limit of {MAX_DEPTH} levels "
                               f"(at {'/'.join(['d'] * 60)}/...); left out"]


def test_empty_item_removal_walks_deep_trees_without_recursion(tmp_path: Path, chains):
    chains += [tmp_path / "deep", tmp_path / "deep empty", tmp_path / "deep hidden" / ".partial"]
    make_chain(tmp_path / "deep", 10_000, b"x")
    make_chain(tmp_path / "deep empty", 10_000)  # only folders, but beyond the limit: kept, reported
    make_chain(tmp_path / "deep hidden" / ".partial", 10_000, b"x")  # not content, but too deep to remove
    make_chain(tmp_path / "shallow empty" / ".partial", 10, b"x")
    put(tmp_path / "shallow empty" / "item.json", "{}")
    put(tmp_path / "kept" / "sub" / "f", "x")
    put(tmp_path / "gone" / "item.json", "{}")
    assert remove_empty_items(tmp_path) == ["gone", "shallow empty"]
    assert sorted(os.listdir(tmp_path)) == ["deep", "deep empty", "deep hidden", "kept"]


def test_publishing_links_a_deep_tree_only_down_to_the_limit(tmp_path: Path, chains):
    src, dst = tmp_path / "staging", tmp_path / "generation"
    chains.append(src / "deep")
    make_chain(src / "deep", 10_000, b"x")
    put(src / "ok" / "a.iso", "a")
    dst.mkdir()
    assert link_tree(src, dst) == (1, 1)
    linked = dst / "deep"
    depth = 0
    while (linked / "d").is_dir():
        linked, depth = linked / "d", depth + 1
    assert depth == MAX_DEPTH  # deep/ plus MAX_DEPTH levels below it; the item is left out of the manifest


def test_a_site_sync_publishes_the_rest_and_reports_what_it_left_out(tmp_path: Path, chains):
    """Through the real sync path (rsync into staging, cleanup, manifest, publish)."""
    from library_syncer.config import load_settings
    from library_syncer.sync.run import run_sync
    from library_syncer.publish import generations as gen

    src = tmp_path / "src"
    for name in (b"_syncer", b"ctl\nname", b"bad\xffname", b"ok"):
        put(Path(os.fsdecode(bytes(src) + b"/" + name + b"/a.iso")), "data")
    chains.append(src / "deep")
    make_chain(src / "deep", 300, b"x")  # rsync copies it; the manifest and the publish stop at the limit
    settings = load_settings(library=tmp_path / "L", state_dir=tmp_path / "state", sync_delete_guard=1.0)
    try:
        r = run_sync(settings, source=str(src))
        assert r.ok, r.reason
        assert [i["selfHref"] for i in json.loads((gen.current_root(tmp_path / "L") / "items.json").read_text())["items"]] \
            == ["ok/item.json"]
        assert len(r.problems) == 4 and all(p.endswith("; left out") for p in r.problems)
        assert any("folders nested deeper than the limit" in p for p in r.problems)
    finally:
        for top in (gen.Layout(tmp_path / "L").staging / "deep", *sorted((tmp_path / "L").glob(".library-syncer/generations/*/deep"))):
            if top.exists():
                remove_chain(top)
