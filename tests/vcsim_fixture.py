"""govmomi's vcsim (the vSphere API simulator, built by scripts/setup.sh) on a free loopback port.

Usage::

    with running_vcsim(tmp_path, cert, key) as vc:
        library_id = vc.create_subscribed_library("Branch", "http://127.0.0.1:8080/lib.json")
        vc.library(library_id)["last_sync_time"]

The helpers talk to vcsim's own REST API (``/rest``, the only form vcsim 0.24 serves): they are
how a test sees what the simulated vCenter received.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests

from support import free_port, stop_process, wait_port, wait_until

VCSIM = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "vcsim"


def vcsim_binary() -> Path:
    """The vcsim binary; a missing one fails the test loudly (never skips)."""
    if not VCSIM.is_file():
        pytest.fail(f"vcsim is missing at {VCSIM}: run scripts/setup.sh (it builds vcsim from Debian's "
                    "golang-github-vmware-govmomi-dev with Debian's Go)")
    return VCSIM


@dataclass
class Vcsim:
    """A started vcsim: its https address, a datastore for libraries, the CA to trust it with."""

    port: int
    datastore: str
    ca: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _call(self, method: str, path: str, **kw) -> object:
        """One call in a new session (the CA passed on each request: a Session's own verify loses to
        REQUESTS_CA_BUNDLE); the answer's ``value``."""
        with requests.Session() as http:
            r = http.post(f"{self.url}/rest/com/vmware/cis/session", auth=("test", "test"), timeout=10,
                          verify=str(self.ca))
            r.raise_for_status()
            http.headers["vmware-api-session-id"] = r.json()["value"]
            r = http.request(method, self.url + path, timeout=10, verify=str(self.ca), **kw)
            r.raise_for_status()
            return r.json()["value"]

    def create_subscribed_library(self, name: str, subscription_url: str) -> str:
        """Create a subscribed library in vcsim; its id."""
        spec = {"name": name, "type": "SUBSCRIBED",
                "storage_backings": [{"type": "DATASTORE", "datastore_id": self.datastore}],
                "subscription_info": {"subscription_url": subscription_url, "automatic_sync_enabled": False,
                                      "on_demand": True, "authentication_method": "NONE"}}
        return str(self._call("POST", "/rest/com/vmware/content/subscribed-library", json={"create_spec": spec}))

    def library(self, library_id: str) -> dict:
        """The library as vcsim reports it (``last_sync_time`` is set by a sync request)."""
        value = self._call("GET", f"/rest/com/vmware/content/library/id:{library_id}")
        assert isinstance(value, dict)
        return value


@contextlib.contextmanager
def running_vcsim(tmp_path: Path, cert: Path, key: Path, port: int | None = None) -> Iterator[Vcsim]:
    """Start vcsim with ``cert``/``key`` on ``port`` (default: a free one); stopped on exit."""
    port = port or free_port()
    out = tmp_path / f"vcsim-{port}.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen([str(vcsim_binary()), "-l", f"127.0.0.1:{port}", "-tlscert", str(cert),
                                 "-tlskey", str(key)], stdout=fh, stderr=subprocess.STDOUT)
    try:
        lines = wait_until(lambda: proc.poll() is not None or "VCSIM_DATASTORE=" in out.read_text()
                           and out.read_text().splitlines(), 30, "vcsim to start")
        if proc.poll() is not None:
            pytest.fail(f"vcsim exited with {proc.returncode}: {out.read_text()}")
        wait_port("127.0.0.1", port)
        datastore = next(ln.split("=", 1)[1] for ln in lines if ln.startswith("VCSIM_DATASTORE="))
        yield Vcsim(port, datastore, cert, proc)
    finally:
        stop_process(proc)
