"""The server's host key for the sync: where it is pinned, checked before use, recorded on first use.

Pinned by one of, in order of preference:

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
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..util.fs import atomic_write

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
    """:func:`pin_host_keys` for one peer."""
    return pin_host_keys([(peer, port)], state_dir, known_hosts=known_hosts, host_key=host_key)


def host_key_entries(text: str) -> list[tuple[str | None, tuple[str, str]]]:
    """SYNC_HOST_KEY's entries: (host field or None, (type, base64)); one per line (or ``\\n``)."""
    entries: list[tuple[str | None, tuple[str, str]]] = []
    for line in text.replace("\\n", "\n").splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        host = fields[0] if fields[0] not in KEY_TYPES and len(fields) >= 2 else None
        entries.append((host, parse_host_keys(line)[0]))
    if not entries:
        raise ValueError("no key given")
    return entries


def _keys_for(entries: list[tuple[str | None, tuple[str, str]]], peer: str, port: int) -> list[tuple[str, str]]:
    names = {peer, host_pattern(peer, port), f"[{peer}]:{port}"}
    return [key for host, key in entries if host is None or host in names]


def pin_host_keys(
    peers: list[tuple[str, int]], state_dir: Path, *, known_hosts: Path | None = None, host_key: str | None = None
) -> HostKeyPin:
    """Resolve (and write, when needed) the known_hosts file that pins the host key of every peer.

    ``host_key`` lines without a host field pin that key for every peer; ``host KEY`` or
    ``[host]:port KEY`` lines only for that peer.  No network: ConfigError (one line) when a
    given or recorded known_hosts file is unusable or a peer has no pinned key.
    """
    if known_hosts is not None:
        if not known_hosts.is_file():
            raise ConfigError(f"setting sync_known_hosts: file {known_hosts} does not exist")
        where = f"setting sync_known_hosts: file {known_hosts}"
        read_known_hosts(known_hosts, where)
        for peer, port in peers:
            if not has_host_key(known_hosts, peer, port):
                raise ConfigError(f"{where} has no host key for {host_pattern(peer, port)} (add a line "
                                  f"'{host_pattern(peer, port)} KEY' with the KEY 'library-syncer server "
                                  f"--print-host-key' prints)")
        return HostKeyPin(known_hosts, "yes", "sync_known_hosts")
    ensure_state_dir(state_dir)
    if host_key:
        try:
            entries = host_key_entries(host_key)
        except ValueError as exc:
            raise ConfigError(f"setting sync_host_key (SYNC_HOST_KEY): {exc}") from None
        text = ""
        for peer, port in peers:
            keys = _keys_for(entries, peer, port)
            if not keys:
                raise ConfigError(f"setting sync_host_key (SYNC_HOST_KEY): no key for {host_pattern(peer, port)} "
                                  f"(add a line '{host_pattern(peer, port)} KEY', or a KEY for every peer)")
            text += known_hosts_text(peer, port, keys)
        path = state_dir / "known_hosts.pinned"
        data = text.encode()
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


def ensure_state_dir(path: Path) -> None:
    """Create the state folder; ConfigError (one line) if it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"setting state_dir: cannot create folder {path} ({exc.strerror})") from None
