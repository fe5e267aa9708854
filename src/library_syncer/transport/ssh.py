"""ssh client options for the sync: the site key, pinned host key, bounded waits.

The user's own ssh configuration never applies (``-F /dev/null``).  The server's
host key is pinned by one of, in order of preference:

- ``sync_known_hosts``: a known_hosts file given by the administrator;
- ``sync_host_key``: a key line (``ssh-ed25519 AAAA…``), written to
  ``STATE/known_hosts.pinned`` as ``[peer]:port type base64``;
- trust on first use: ``StrictHostKeyChecking=accept-new`` with ``STATE/known_hosts``,
  so the first key seen is recorded and enforced afterwards.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..vcsp.storage import atomic_write

log = logging.getLogger(__name__)

KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss",
)


@dataclass(frozen=True)
class HostKeyPin:
    """Where the server's host key is pinned and how strictly it is checked."""

    known_hosts: Path
    strict: str  # "yes" or "accept-new"
    source: str  # "sync_known_hosts", "sync_host_key" or "trust on first use"

    def remedy(self) -> str:
        """What the administrator should do when the host key no longer matches."""
        if self.source == "sync_known_hosts":
            return f"if the server's key really changed, update the file {self.known_hosts} (setting sync_known_hosts)"
        if self.source == "sync_host_key":
            return "if the server's key really changed, set SYNC_HOST_KEY to the new key"
        return (f"if the server's key really changed, remove its line from {self.known_hosts} "
                f"or set SYNC_HOST_KEY to the new key")


def host_pattern(peer: str, port: int) -> str:
    """The known_hosts name ssh looks up for ``peer`` on ``port``."""
    return peer if port == 22 else f"[{peer}]:{port}"


def parse_host_keys(text: str) -> list[tuple[str, str]]:
    """(type, base64) pairs from host key lines; a leading host field and trailing comments are ignored.

    Raises ValueError with the reason when a line is not a public key.
    """
    keys = []
    for line in text.replace("\\n", "\n").splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0] not in KEY_TYPES and len(fields) >= 2 and fields[1] in KEY_TYPES:
            fields = fields[1:]  # "[host]:port type key" or "host type key"
        if len(fields) < 2 or fields[0] not in KEY_TYPES:
            raise ValueError(f"expected 'KEYTYPE BASE64' with KEYTYPE one of {', '.join(KEY_TYPES[:3])}, ...")
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the key is not valid base64") from None
        if not blob.startswith(len(fields[0]).to_bytes(4, "big") + fields[0].encode()):
            raise ValueError(f"the base64 data is not a {fields[0]} key")
        keys.append((fields[0], fields[1]))
    if not keys:
        raise ValueError("no key given")
    return keys


def known_hosts_text(peer: str, port: int, keys: list[tuple[str, str]]) -> str:
    """known_hosts content pinning ``keys`` for ``peer``:``port``."""
    name = host_pattern(peer, port)
    return "".join(f"{name} {kind} {b64}\n" for kind, b64 in keys)


def pin_host_key(
    peer: str, port: int, state_dir: Path, *, known_hosts: Path | None = None, host_key: str | None = None
) -> HostKeyPin:
    """Resolve (and write, when needed) the known_hosts file that pins the server's host key."""
    if known_hosts is not None:
        if not known_hosts.is_file():
            raise ConfigError(f"setting sync_known_hosts: file {known_hosts} does not exist")
        if not os.access(known_hosts, os.R_OK):
            raise ConfigError(f"setting sync_known_hosts: file {known_hosts} is not readable")
        return HostKeyPin(known_hosts, "yes", "sync_known_hosts")
    _ensure_dir(state_dir)
    if host_key:
        try:
            keys = parse_host_keys(host_key)
        except ValueError as exc:
            raise ConfigError(f"setting sync_host_key (SYNC_HOST_KEY): {exc}") from None
        path = state_dir / "known_hosts.pinned"
        text = known_hosts_text(peer, port, keys)
        if not path.exists() or path.read_text() != text:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        return HostKeyPin(path, "yes", "sync_host_key")
    return HostKeyPin(state_dir / "known_hosts", "accept-new", "trust on first use")


def _ensure_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"setting state_dir: cannot create folder {path} ({exc.strerror})") from None


def _public_hint(head: bytes) -> str:
    return " (that is a public key)" if head.startswith((b"ssh-", b"ecdsa-", b"sk-")) else ""


def check_private_key(path: Path) -> None:
    """Fail with one line naming the file if ssh could not use it as the site's private key."""
    where = f"setting sync_key: private key file {path}"
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist (create one with 'library-syncer keys new')") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{where} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{where} has permissions {stat.S_IMODE(st.st_mode):04o}, ssh refuses keys that others can read: "
            f"run chmod 600 {path}"
        )
    try:
        with path.open("rb") as fh:
            head = fh.read(100)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror})") from None
    if b"PRIVATE KEY" not in head:
        raise ConfigError(f"{where} is not a private key{_public_hint(head)}")


def usable_private_key(path: Path, state_dir: Path) -> Path:
    """The key file ssh should use: ``path``, or a private copy (mode 0600) in the state folder when
    ``path`` is readable by others (a key mounted into a container often is; the original client
    chmod-ed the user's file, this leaves it as it is).  ConfigError (one line) if it is unusable."""
    try:
        open_to_others = path.is_file() and bool(path.stat().st_mode & 0o077)
    except OSError:
        open_to_others = False
    if not open_to_others:
        check_private_key(path)
        return path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"setting sync_key: private key file {path}: cannot read ({exc.strerror})") from None
    if b"PRIVATE KEY" not in data[:100]:
        raise ConfigError(f"setting sync_key: private key file {path} is not a private key{_public_hint(data)}")
    copy = state_dir / "sync_key"
    if not (copy.is_file() and copy.read_bytes() == data):
        _ensure_dir(state_dir)
        atomic_write(copy, data, 0o600)
        log.warning("private key %s is readable by others (mode %04o): using a private copy %s "
                    "(chmod 600 the original to use it directly)", path, stat.S_IMODE(path.stat().st_mode), copy)
    return copy


def alive_interval(timeout: int) -> int:
    """ServerAliveInterval so that a dead link is noticed within about ``timeout`` seconds.

    rsync's own --timeout does not fire on a silent link (its keep-alives into the ssh pipe
    count as activity); ssh gives up after ServerAliveCountMax (3) unanswered probes, so
    about 4 intervals: at most ``timeout``.
    """
    return max(2, min(60, timeout // 4))


def ssh_command(
    *, port: int, key: Path, pin: HostKeyPin, connect_timeout: int = 30, timeout: int = 300, ssh: str = "ssh"
) -> list[str]:
    """The ssh client command (argv) used as rsync's remote shell."""
    interval = alive_interval(timeout)
    opts = {
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "BatchMode": "yes",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "StrictHostKeyChecking": pin.strict,
        "UserKnownHostsFile": str(pin.known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "CheckHostIP": "no",
        "UpdateHostKeys": "no",
        "ConnectTimeout": str(connect_timeout),
        "ServerAliveInterval": str(interval),
        "ServerAliveCountMax": "3",
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ClearAllForwardings": "yes",
        "LogLevel": "ERROR",
    }
    cmd = [ssh, "-F", "/dev/null", "-p", str(port), "-i", str(key), "-T", "-x", "-a"]
    for name, value in opts.items():
        cmd += ["-o", f"{name}={value}"]
    return cmd


def rsh_string(argv: list[str]) -> str:
    """The ssh argv as one ``rsync -e`` string (rsync splits it at spaces, honouring quotes)."""
    return " ".join(shlex.quote(a) for a in argv)
