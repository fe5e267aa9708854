"""The shape of the package (ARCHITECTURE.md): the layer rules, the type check, the size of a module.

The import contracts live in ``pyproject.toml`` ([tool.importlinter]) and the type check's
settings in [tool.mypy]; these tests run the two tools the way a developer does, so the
README's test command (and CI through it) fails with their report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "library_syncer"
MAX_LINES = 330  # "no module over ~300 lines"


def _tool(name: str) -> str:
    """An executable of this virtual environment; a missing one fails loudly."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is missing from {path.parent}: install the test extra (scripts/setup.sh does)")
    return str(path)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_import_contracts_hold():
    """Each layer imports only the ones below it, siblings stay apart, no import cycle."""
    done = _run([_tool("lint-imports"), "--no-logo"])
    assert done.returncode == 0, f"lint-imports:\n{done.stdout}{done.stderr}"
    assert "0 broken" in done.stdout, done.stdout


def test_contracts_cover_every_package():
    """A new top-level package or module cannot slip past the layers contract."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    named = {part.strip() for row in layers for part in row.split("|")}
    present = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
               if (p.is_dir() and (p / "__init__.py").exists())
               or (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))}
    assert present - named == set(), f"not in the layers contract of pyproject.toml: {sorted(present - named)}"


def test_type_check_passes():
    """mypy over src/ with the settings of pyproject.toml."""
    done = _run([sys.executable, "-m", "mypy", "src"])
    assert done.returncode == 0, f"mypy src:\n{done.stdout}{done.stderr}"


def test_no_module_over_the_size_limit():
    long = {str(p.relative_to(ROOT)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by the question each part answers): {long}"
