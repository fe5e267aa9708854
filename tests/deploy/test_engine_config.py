"""Pure rules of the deployment tests' engine: the base image's apt sources come from the host's
own mirror (both apt formats), with updates and security; the engine's configuration stays
under its folder."""

from __future__ import annotations

from pathlib import Path

from .engine import DEFAULT_MIRROR, DEFAULT_SECURITY, base_sources_list, engine_config, host_mirrors

DEB822 = """Types: deb
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""

ONE_LINE = """# comment
deb [arch=amd64] http://apt.example/debian bookworm main contrib
deb-src http://apt.example/debian bookworm main
deb http://apt.example/security bookworm-security main
deb https://packages.cloud.example/apt cloud-sdk main
"""


def test_mirrors_from_deb822_and_one_line_sources():
    assert host_mirrors([DEB822]) == ("http://mirror.example/debian", "http://mirror.example/debian-security")
    assert host_mirrors([ONE_LINE]) == ("http://apt.example/debian", "http://apt.example/security")
    assert host_mirrors(["Types: deb\nURIs: http://x\nSuites: bookworm\nEnabled: no\n"]) == (
        DEFAULT_MIRROR, DEFAULT_SECURITY)
    assert host_mirrors([]) == (DEFAULT_MIRROR, DEFAULT_SECURITY)


def test_base_sources_have_updates_and_security():
    text = base_sources_list("http://m/debian", "http://m/security")
    assert text.splitlines() == ["deb http://m/debian bookworm main", "deb http://m/debian bookworm-updates main",
                                 "deb http://m/security bookworm-security main"]


def test_engine_configuration_stays_under_its_folder():
    storage, containers = engine_config(Path("/t/e"), 1024, 512)
    assert 'graphroot = "/t/e/storage"' in storage and 'runroot = "/t/e/run"' in storage
    assert 'runtime = "runc"' in containers and 'cgroup_manager = "cgroupfs"' in containers
    assert 'events_logger = "file"' in containers and '"nofile=1024:1024", "nproc=512:512"' in containers
    assert 'network_config_dir = "/t/e/networks"' in containers
