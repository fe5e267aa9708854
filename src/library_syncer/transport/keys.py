"""Site keys and host keys of the server.

The keys folder holds one ``SITE.pub`` file per site (the file name is the
site's name in logs) and optionally ``sites.toml`` with per-site limits::

    [branch-paris]
    from = ["10.1.0.0/16", "192.0.2.7"]

Public keys are parsed here and checked with ``ssh-keygen``, which also gives
their SHA256 fingerprints (the form sshd logs on ``Accepted publickey``).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import shutil
import stat
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..util.childenv import child_environ
from ..errors import ConfigError, OperationFailed
from .ssh import KEY_TYPES, parse_host_keys

SITES_FILE = "sites.toml"
HOST_KEY_TYPES = ("ed25519", "rsa")  # ed25519 first; RSA for old clients
_SITE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SITE_NAME_RULE = "letters, digits, '.', '_', '-' or '@', starting with a letter or digit, at most 64"
# sshd "from=" pattern list entries: addresses, CIDR blocks, or wildcard patterns (optionally negated).
_FROM_PATTERN_RE = re.compile(r"^!?[0-9A-Za-z.:*?-]+$")


@dataclass(frozen=True)
class SiteKey:
    """One authorized site key."""

    site: str
    path: Path
    kind: str
    blob: str
    fingerprint: str = ""  # "SHA256:..."
    from_: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        """The key as ``TYPE BASE64``."""
        return f"{self.kind} {self.blob}"


def find_tool(name: str, package: str, path: str | None = None) -> str:
    """Absolute path of an executable, also looking in the sbin sibling of each PATH folder.

    Raises ConfigError naming the Debian package when it is missing.
    """
    dirs: list[str] = []
    for d in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        if d:
            dirs.append(d)
            if d.endswith("/bin"):
                dirs.append(d[: -len("/bin")] + "/sbin")
    found = shutil.which(name, path=os.pathsep.join(dirs))
    if not found:
        raise ConfigError(f"{name} not found: install the Debian package {package}")
    return os.path.abspath(found)


def site_name_ok(name: str) -> bool:
    """Whether ``name`` is a site name: :data:`SITE_NAME_RULE` (no space, quote or control character).

    The one rule for ``keys new``, ``keys list`` and the ``authorized_keys``
    writer, where the name is the comment of the site's line.
    """
    return bool(_SITE_NAME_RE.fullmatch(name)) and not name.endswith(".pub")


def parse_public_key_file(text: str) -> list[tuple[str, str]]:
    """(type, base64) pairs of a ``.pub`` file (``TYPE BASE64 [comment]`` per line).

    Raises ValueError with the reason when a line is not a plain public key
    (authorized_keys options are not accepted: the server writes its own).
    """
    for line in text.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and fields[0] not in KEY_TYPES:
            raise ValueError(f"expected 'TYPE BASE64 [comment]' with TYPE one of {', '.join(KEY_TYPES[:3])}, ...")
    return parse_host_keys(text)


def fingerprints(path: Path, keygen: str = "ssh-keygen") -> list[str]:
    """SHA256 fingerprints of the keys in a public key file, in file order (via ssh-keygen)."""
    proc = subprocess.run([keygen, "-l", "-E", "sha256", "-f", str(path)], capture_output=True, text=True,
                          env=child_environ())
    if proc.returncode != 0:
        msg = proc.stderr.strip().splitlines()
        raise ValueError(msg[-1] if msg else "ssh-keygen cannot read it")
    return [line.split()[1] for line in proc.stdout.splitlines() if line.strip()]


def check_not_writable_by_others(path: Path, what: str) -> None:
    """Fail when a key file or folder is group/world-writable (anyone could add a key)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc.strerror})") from None
    if mode & 0o022:
        raise ConfigError(
            f"{what} {path} has unsafe permissions {stat.S_IMODE(mode):04o} (group/world-writable): "
            f"run chmod go-w {path}"
        )


def load_sites_config(keys_dir: Path) -> dict[str, tuple[str, ...]]:
    """Per-site ``from`` limits from ``sites.toml`` in the keys folder (empty when absent)."""
    path = keys_dir / SITES_FILE
    if not path.exists():
        return {}
    check_not_writable_by_others(path, "keys config")
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"keys config {path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"keys config {path}: not valid TOML ({exc})") from None
    limits: dict[str, tuple[str, ...]] = {}
    for site, table in data.items():
        if not site_name_ok(site):
            raise ConfigError(f"keys config {path}: [{site!r}] is not a site name ({SITE_NAME_RULE})")
        if not isinstance(table, dict):
            raise ConfigError(f"keys config {path}: [{site}] must be a table such as from = [\"10.1.0.0/16\"]")
        unknown = sorted(set(table) - {"from"})
        if unknown:
            raise ConfigError(f"keys config {path}: [{site}] unknown setting {unknown[0]!r} (known: from)")
        addrs = table.get("from", [])
        if isinstance(addrs, str):
            addrs = [addrs]
        if not isinstance(addrs, list) or not addrs:
            raise ConfigError(f"keys config {path}: [{site}] from must be a non-empty list of addresses")
        for a in addrs:
            if not isinstance(a, str) or not _valid_from(a):
                raise ConfigError(
                    f"keys config {path}: [{site}] from: {a!r} is not an address, CIDR block or pattern"
                )
        limits[site] = tuple(addrs)
    return limits


def _valid_from(pattern: str) -> bool:
    body = pattern.removeprefix("!")
    if "/" in body:
        try:
            ipaddress.ip_network(body, strict=False)
            return True
        except ValueError:
            return False
    return bool(_FROM_PATTERN_RE.fullmatch(pattern))


@dataclass
class KeyScan:
    """What :func:`scan_site_keys` found: usable keys and one line per file left out."""

    keys: list[SiteKey]
    problems: list[str]  # site key files that cannot be used (unparsable, unsafe permissions)
    skipped: list[str]  # files whose name is not a site name: never site keys


def scan_site_keys(keys_dir: Path, keygen: str = "ssh-keygen", *, setting: str = "keys_dir") -> KeyScan:
    """Every usable key of every ``*.pub`` file in ``keys_dir``, and a one-line reason per file left out.

    A file whose name (without ``.pub``) is not a site name (:func:`site_name_ok`)
    is skipped unread.  Raises ConfigError for folder-level problems (missing or
    writable folder, bad ``sites.toml``).
    """
    if not keys_dir.is_dir():
        raise ConfigError(f"setting {setting}: folder {keys_dir} does not exist")
    check_not_writable_by_others(keys_dir, "keys folder")
    limits = load_sites_config(keys_dir)
    scan = KeyScan([], [], [])
    for path in sorted(p for p in keys_dir.glob("*.pub") if not p.name.startswith(".")):
        if not site_name_ok(path.name.removesuffix(".pub")):
            scan.skipped.append(f"key file {str(path)!r}: the name is not a site name ({SITE_NAME_RULE}); skipped")
            continue
        try:
            scan.keys.extend(_read_key_file(path, limits, keygen))
        except ConfigError as exc:
            scan.problems.append(str(exc))
    return scan


def _read_key_file(path: Path, limits: dict[str, tuple[str, ...]], keygen: str) -> list[SiteKey]:
    check_not_writable_by_others(path, "key file")
    try:
        pairs = parse_public_key_file(path.read_text())
        fps = fingerprints(path, keygen)
    except OSError as exc:
        raise ConfigError(f"key file {path}: cannot read ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"key file {path}: not a valid public key ({exc})") from None
    if len(fps) != len(pairs):
        raise ConfigError(f"key file {path}: not a valid public key (ssh-keygen read {len(fps)} of {len(pairs)})")
    site = path.name.removesuffix(".pub")
    return [SiteKey(site, path, k, b, fp, limits.get(site, ())) for (k, b), fp in zip(pairs, fps)]


def load_site_keys(keys_dir: Path, keygen: str = "ssh-keygen", *, setting: str = "keys_dir") -> KeyScan:
    """The keys at start: every key of every site key file in ``keys_dir``, checked, with its site's limits.

    Raises ConfigError (one line naming the file) on a missing folder, no keys,
    an unparsable key, unsafe permissions or a bad ``sites.toml``.  Files whose
    name is not a site name are only reported in ``skipped``.
    """
    scan = scan_site_keys(keys_dir, keygen, setting=setting)
    if scan.problems:
        raise ConfigError(scan.problems[0])
    if not scan.keys:
        skipped = f" ({len(scan.skipped)} file(s) skipped: not a site name)" if scan.skipped else ""
        raise ConfigError(
            f"setting {setting}: no site keys (*.pub) in {keys_dir}{skipped}: "
            "create one with 'library-syncer keys new SITE'"
        )
    return scan


def unknown_sites(keys: list[SiteKey], limits: dict[str, tuple[str, ...]]) -> list[str]:
    """Sites named in ``sites.toml`` that have no key file (likely a typo)."""
    have = {k.site for k in keys}
    return sorted(s for s in limits if s not in have)


def generate_keypair(path: Path, comment: str, kind: str = "ed25519", keygen: str = "ssh-keygen") -> None:
    """Create a passphrase-less keypair ``path`` (mode 0600) and ``path.pub``."""
    args = [keygen, "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)]
    if kind == "rsa":
        args[2:2] = ["-b", "3072"]
    proc = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=child_environ())
    if proc.returncode != 0:
        raise OperationFailed(f"ssh-keygen could not create {path}: {proc.stderr.strip() or proc.returncode}")
    os.chmod(path, 0o600)


def ensure_host_keys(state_dir: Path, keygen: str = "ssh-keygen") -> list[Path]:
    """The server's host private keys in ``STATE/host_keys``, generated once (ed25519 first, then RSA)."""
    folder = state_dir / "host_keys"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"setting state_dir: cannot create folder {folder} ({exc.strerror})") from None
    paths = []
    lock = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:  # two starts at once (a unit's first start and --print-host-key) make the keys once
        fcntl.flock(lock, fcntl.LOCK_EX)
        for kind in HOST_KEY_TYPES:
            path = folder / f"ssh_host_{kind}_key"
            if not path.exists() or not Path(f"{path}.pub").exists():
                for p in (path, Path(f"{path}.pub")):
                    p.unlink(missing_ok=True)
                generate_keypair(path, "library-syncer host key", kind, keygen)
            paths.append(path)
    finally:
        os.close(lock)
    return paths


def host_key_line(private_key: Path) -> str:
    """The ``TYPE BASE64`` line a client pins, read from the key's ``.pub`` file."""
    return " ".join(Path(f"{private_key}.pub").read_text().split()[:2])
