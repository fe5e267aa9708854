"""ssh client options for the sync: the site key, pinned host key, bounded waits.

The user's own ssh configuration never applies (``-F /dev/null``).  The server's
host key is pinned by one of, in order of preference:

- ``sync_known_hosts``: a known_hosts file given by the administrator;
- ``sync_host_key``: a key line (``ssh-ed25519 AAAA…``), written to
  ``STATE/known_hosts.pinned`` as ``[peer]:port type base64``;
- trust on first use: ``STATE/known_hosts``; before the first contact the server's keys
  are read with ``ssh-keyscan``, written there and their fingerprints logged once; ssh runs
  with ``StrictHostKeyChecking=accept-new``, so a recorded key is enforced afterwards.

Every known_hosts file is checked before use (UTF-8 text, a key for the server), so a
bad one stops the start with one line instead of a later "host key could not be verified".
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import shlex
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..vcsp.storage import atomic_write

log = logging.getLogger(__name__)

KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss",
)
TOFU = "trust on first use"
KEYSCAN_TYPES = "ed25519,ecdsa,rsa"


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
    """Resolve (and write, when needed) the known_hosts file that pins the server's host key.

    No network: ConfigError (one line) when a given or recorded known_hosts file is unusable.
    """
    if known_hosts is not None:
        if not known_hosts.is_file():
            raise ConfigError(f"setting sync_known_hosts: file {known_hosts} does not exist")
        where = f"setting sync_known_hosts: file {known_hosts}"
        read_known_hosts(known_hosts, where)
        if not has_host_key(known_hosts, peer, port):
            raise ConfigError(f"{where} has no host key for {host_pattern(peer, port)} "
                              f"(add the line 'library-syncer server --print-host-key' prints)")
        return HostKeyPin(known_hosts, "yes", "sync_known_hosts")
    _ensure_dir(state_dir)
    if host_key:
        try:
            keys = parse_host_keys(host_key)
        except ValueError as exc:
            raise ConfigError(f"setting sync_host_key (SYNC_HOST_KEY): {exc}") from None
        path = state_dir / "known_hosts.pinned"
        data = known_hosts_text(peer, port, keys).encode()
        try:
            if not path.is_file() or path.read_bytes() != data:
                atomic_write(path, data, 0o644)
        except OSError as exc:
            raise ConfigError(f"setting state_dir: cannot write {path} ({exc.strerror})") from None
        return HostKeyPin(path, "yes", "sync_host_key")
    path = state_dir / "known_hosts"
    if path.exists():
        read_known_hosts(path, f"setting state_dir: trust-on-first-use file {path}",
                         remedy="remove it to record the server's key again")
    return HostKeyPin(path, "accept-new", TOFU)


def read_known_hosts(path: Path, where: str, remedy: str = "") -> str:
    """The text of a known_hosts file; ConfigError (one line, starting with ``where``) if unusable."""
    hint = f"; {remedy}" if remedy else ""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{where} is not a known_hosts file: not UTF-8 text "
                          f"(byte 0x{data[exc.start]:02x} on line {line}){hint}") from None
    if "\0" in text:
        raise ConfigError(f"{where} is not a known_hosts file: it holds NUL bytes{hint}")
    return text


def has_host_key(known_hosts: Path, peer: str, port: int) -> bool:
    """Whether ``known_hosts`` holds a key for peer:port (hashed names and patterns included)."""
    proc = _keygen("-F", host_pattern(peer, port), "-f", str(known_hosts))
    return proc.returncode == 0 and bool(proc.stdout.strip())


def _keygen(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["ssh-keygen", *args], input=input, capture_output=True, text=True,
                              errors="replace", stdin=None if input is not None else subprocess.DEVNULL)
    except OSError:
        raise ConfigError("ssh-keygen not found: install the Debian package openssh-client") from None


def fingerprints(lines: str) -> list[str]:
    """``SHA256:… (ED25519)`` for each key line of ``lines``, as ``ssh-keygen -lf`` prints them."""
    proc = _keygen("-l", "-f", "-", input=lines)
    found = []
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1].startswith("SHA256:"):
            found.append(f"{fields[1]} {fields[-1]}")
    return found


def first_use(pin: HostKeyPin, peer: str, port: int, *, timeout: int = 30) -> None:
    """Trust on first use: record the server's host keys unless ``pin.known_hosts`` has some already.

    The keys are read with ``ssh-keyscan`` and written (atomically), and their fingerprints
    logged once, now.  If the server cannot be reached, nothing is written (a warning says
    so) and ssh records the first key it sees when it connects (``accept-new``).
    """
    if pin.source != TOFU or (pin.known_hosts.exists() and has_host_key(pin.known_hosts, peer, port)):
        return
    name = host_pattern(peer, port)
    try:
        proc = subprocess.run(["ssh-keyscan", "-T", str(timeout), "-p", str(port), "-t", KEYSCAN_TYPES, peer],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=4 * timeout + 10)
        scanned = proc.stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        scanned, proc = "", None
        log.debug("ssh-keyscan failed: %s", exc)
    lines = []
    for line in scanned.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] in KEY_TYPES:
            lines.append(f"{name} {fields[1]} {fields[2]}\n")
    if not lines:
        why = " ".join((proc.stderr if proc else "").split()) or "no answer"
        log.warning("trust on first use: could not read the host key of %s now (%s); ssh records the "
                    "first key it is shown when it connects", name, why[:200])
        return
    old = pin.known_hosts.read_bytes() if pin.known_hosts.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    try:
        atomic_write(pin.known_hosts, old + "".join(lines).encode(), 0o644)
    except OSError as exc:
        raise ConfigError(f"setting state_dir: cannot write {pin.known_hosts} ({exc.strerror})") from None
    log.info("trust on first use: pinned the host key of %s in %s: %s (check it with "
             "'library-syncer server --print-host-key | ssh-keygen -lf -' at the server)",
                name, pin.known_hosts, ", ".join(fingerprints("".join(lines))))


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
