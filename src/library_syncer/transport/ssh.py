"""ssh client options for the sync: the site key, pinned host key (see :mod:`.hostkeys`), bounded waits.

The user's own ssh configuration never applies (``-F /dev/null``).
"""

from __future__ import annotations

import logging
import shlex
import stat
from pathlib import Path

from ..errors import ConfigError
from ..util.fs import atomic_write
from .hostkeys import (  # noqa: F401  (the host-key names are used as ssh.NAME too)
    KEY_TYPES, TOFU, HostKeyPin, ensure_state_dir, fingerprints, first_use, has_host_key, host_pattern,
    known_hosts_text, parse_host_keys, pin_host_key, pin_host_keys, read_known_hosts,
)

log = logging.getLogger(__name__)


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
        ensure_state_dir(state_dir)
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
