"""Fixtures of the hostile-network bench: a ``bench`` of namespaces, removed even when a test fails.

Every scenario records its figures with ``figures(...)``; they are printed with
the test's output and again in pytest's terminal summary, so CI logs show them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pytest

from support import require_tool

from . import netbench

_FIGURES: list[str] = []


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "network: hostile-network bench (network namespaces; needs root, runs by default)")


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "tests/network/" in item.path.as_posix():
            item.add_marker(pytest.mark.network)


def pytest_terminal_summary(terminalreporter) -> None:
    if _FIGURES:
        terminalreporter.section("hostile-network bench figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture
def figures(request):
    """Record one scenario's figures: ``figures("10 Mbit/s, 1% loss", time="12.3 s", ...)``."""

    def record(title: str, **values) -> None:
        line = f"{request.node.name}: {title}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in values.items())
        print(line)
        _FIGURES.append(line)

    return record


@contextlib.contextmanager
def _open_bench(work: Path) -> Iterator[netbench.Bench]:
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables"),
                          ("sshd", "openssh-server"), ("rrsync", "rsync"), ("rsync", "rsync")):
        require_tool(tool, package)
    if os.geteuid() != 0:
        pytest.fail("the hostile-network bench needs root (network namespaces); CI runs as root")
    for name in netbench.stale_namespaces():  # left by a run that was killed
        netbench.Netns(name, create=False).delete()
    b = netbench.Bench(work)
    try:
        yield b
    finally:
        problems = b.close()
        assert not problems, f"bench cleanup failed: {problems}"


@pytest.fixture
def bench(tmp_path):
    """A :class:`netbench.Bench` in ``tmp_path``: server namespace ready, sites added by the test."""
    with _open_bench(tmp_path) as b:
        yield b


@pytest.fixture(scope="module")
def module_bench(tmp_path_factory):
    """One bench shared by the tests of a module (a topology too costly to build per test), removed after
    the module's last test, even when one fails."""
    with _open_bench(tmp_path_factory.mktemp("bench")) as b:
        yield b
