"""Session fixtures of the deployment tests: one debootstrap base tree, one private podman with
the base and both images built, shared by every test of the session (all under tmp_path_factory)."""

from __future__ import annotations

import time

import pytest

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def base_tree(tmp_path_factory):
    """A Debian bookworm minbase tree made with debootstrap (the base of the images and of the VM)."""
    from deploy.engine import make_base_tree

    start = time.monotonic()
    tree = make_base_tree(tmp_path_factory.mktemp("base") / "bookworm")
    TIMINGS["debootstrap base"] = time.monotonic() - start
    return tree


@pytest.fixture(scope="session")
def engine(tmp_path_factory, base_tree):
    """A private podman holding debian:bookworm-slim (the base tree) and both images."""
    from deploy.engine import Engine

    eng = Engine.create(tmp_path_factory.mktemp("engine"))
    try:
        eng.import_tree(base_tree)
        eng.build("server")
        eng.build("client")
        yield eng
    finally:
        TIMINGS.update(eng.timings)
        eng.close()


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.write_line("deployment stage: " + ", ".join(f"{k} {v:.0f}s" for k, v in TIMINGS.items()))
