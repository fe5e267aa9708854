"""A real sshd + rrsync server on loopback for the client tests (used until the shared server fixture exists)."""

from __future__ import annotations

import contextlib
import getpass
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from support import free_port, require_tool, wait_port


@dataclass
class TestServer:
    host: str
    port: int
    user: str
    key: Path  # the site's private key
    host_key_line: str  # "ssh-ed25519 AAAA..."
    library: Path
    proc: subprocess.Popen


@contextlib.contextmanager
def sshd_server(tmp_path: Path, library: Path, *, host_key: Path | None = None) -> Iterator[TestServer]:
    """Start sshd on 127.0.0.1 whose only use is ``rrsync -ro LIBRARY`` for one site key."""
    sshd = require_tool("sshd", "openssh-server")
    require_tool("rrsync", "rsync")
    keygen = require_tool("ssh-keygen", "openssh-client")
    d = tmp_path / "sshd"
    d.mkdir(exist_ok=True)
    if host_key is None:
        host_key = d / "host_ed25519"
        if not host_key.exists():
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    site_key = d / "site_ed25519"
    if not site_key.exists():
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(site_key)], check=True)
    pub = Path(str(site_key) + ".pub").read_text().strip()
    (d / "authorized_keys").write_text(f'restrict,command="/usr/bin/rrsync -ro {library}" {pub}\n')
    port = free_port()
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile none\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "PermitUserEnvironment no\nAllowTcpForwarding no\nX11Forwarding no\nLogLevel ERROR\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", port, timeout=20)
        line = " ".join(Path(str(host_key) + ".pub").read_text().split()[:2])
        yield TestServer("127.0.0.1", port, getpass.getuser(), site_key, line, library, proc)
    finally:
        proc.terminate()
        proc.wait(10)
