"""``library-syncer manifest`` run as a real subprocess; its bad input and the library setting through the CLI
in-process."""

from __future__ import annotations

import json
from pathlib import Path

from inprocess import run_cli
from support import cli

from .helpers import put, template


def test_manifest_command(tmp_path: Path):
    root = tmp_path / "library"
    template(root / "Win 2022")
    put(root / "iso" / "x.iso", "x")
    done = cli("manifest", root, "--name", "Site A")
    assert done.returncode == 0, done.stderr
    assert "library version 1" in done.stdout and "2 item(s)" in done.stdout
    assert json.loads((root / "lib.json").read_text())["name"] == "Site A"

    again = cli("manifest", root, env={"LIBRARY_NAME": "Site A"})
    assert again.returncode == 0 and "unchanged" in again.stdout and "read 0 file(s)" in again.stdout

    ok = cli("manifest", "--check", root)
    assert ok.returncode == 0 and "OK" in ok.stdout

    put(root / "iso" / "y.iso", "y")
    bad = cli("manifest", "--check", root)
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == ["item iso: file y.iso is not listed"]
    assert "library-syncer: error: manifest of" in bad.stderr

    (root / "Win 2022" / "vm-disk1.vmdk").unlink()
    partial = cli("manifest", root, "--name", "Site A")
    assert partial.returncode == 1
    assert "item Win 2022: vm.mf: listed file 'vm-disk1.vmdk' is missing; left out" in partial.stderr
    assert "library-syncer: error: 2 problem(s); the affected items were left out" in partial.stderr
    assert [i["name"] for i in json.loads((root / "items.json").read_text())["items"]] == ["iso"]


def test_manifest_command_bad_input(tmp_path: Path):
    missing = run_cli("manifest", tmp_path / "nope")
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"library-syncer: error: library folder {tmp_path / 'nope'}: does not exist"
    put(tmp_path / "f", "x")
    not_dir = run_cli("manifest", "--check", tmp_path / "f")
    assert not_dir.returncode == 2 and "is not a folder" in not_dir.stderr
    empty_name = run_cli("manifest", tmp_path, "--name", "")
    assert empty_name.returncode == 2 and "library_name" in empty_name.stderr


def test_manifest_path_from_library_setting(tmp_path: Path):
    put(tmp_path / "lib" / "i" / "a.iso", "a")
    done = run_cli("manifest", env={"SYNCER_LIBRARY": str(tmp_path / "lib")})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "lib" / "lib.json").is_file()
