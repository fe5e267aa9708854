"""The primary's start-up: every check a start needs, then the files sshd reads.

:func:`prepare` checks the tools, the rsync version, the library, the keys, the
port and (in root mode) the login account (:mod:`.server_account`), and writes the
host keys, ``sshd_config`` and ``authorized_keys`` into the state folder; the first
problem is one ConfigError line naming the setting (exit 2).
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Settings
from ..errors import ConfigError
from ..transport import dispatch
from ..transport import keys as keymod
from ..transport.sshd import (
    SshdSetup,
    check_line_safe,
    forced_command,
    render_authorized_keys,
    render_sshd_config,
    session_marker,
)
from ..util.childenv import child_environ
from ..util.fs import atomic_write
from ..vcsp.origin import ORIGIN_FILE
from .server_account import ensure_account

log = logging.getLogger("library_syncer.server")

MIN_RSYNC = (3, 5, 0)
DISPATCHER_FILE = "dispatch.py"
PRIVSEP_DIR = Path("/run/sshd")


@dataclass
class Tools:
    """Absolute paths of the programs the server runs."""

    sshd: str
    rsync: str
    rrsync: str
    keygen: str


@dataclass
class ServerPlan:
    """A checked server, ready to run."""

    tools: Tools
    settings: Settings
    state_dir: Path
    setup: SshdSetup
    config_file: Path
    keys: list[keymod.SiteKey] = field(default_factory=list)
    uid: int = -1  # the uid sessions run as (the login account)
    key_sites: dict[str, str] = field(default_factory=dict)  # every key seen ("TYPE BASE64") -> its site
    keys_dir: Path = Path()  # the folder of the site keys it authorizes


# --- checks -----------------------------------------------------------------------------

def find_tools() -> Tools:
    """sshd, rsync, rrsync and ssh-keygen, or ConfigError naming the Debian package."""
    return Tools(
        sshd=keymod.find_tool("sshd", "openssh-server"),
        rsync=keymod.find_tool("rsync", "rsync"),
        rrsync=keymod.find_tool("rrsync", "rsync"),
        keygen=keymod.find_tool("ssh-keygen", "openssh-client"),
    )


def parse_rsync_version(text: str) -> tuple[int, ...] | None:
    """The version in ``rsync --version`` output, e.g. (3, 5, 0)."""
    m = re.search(r"rsync\s+version\s+v?(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(x) for x in m.groups()) if m else None


def check_rsync_version(rsync: str, allow_old: bool) -> tuple[int, ...] | None:
    """Refuse rsync older than 3.5.0 (restricted-directory escape fixed there) unless allowed."""
    try:
        out = subprocess.run([rsync, "--version"], capture_output=True, text=True, timeout=30,
                             env=child_environ()).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"rsync ({rsync}) cannot be run: {exc}") from None
    version = parse_rsync_version(out)
    shown = ".".join(map(str, version)) if version else "unknown"
    if (version is None or version < MIN_RSYNC) and not allow_old:
        raise ConfigError(
            f"rsync {shown} at {rsync} is older than 3.5.0, which fixes an rrsync restricted-directory escape: "
            "upgrade rsync, or set allow_old_rsync (--allow-old-rsync, SYNCER_ALLOW_OLD_RSYNC=true) to start anyway"
        )
    if version is None or version < MIN_RSYNC:
        log.warning("rsync %s is older than 3.5.0: starting anyway (allow_old_rsync is set)", shown)
    return version


def check_library(library: Path, account: pwd.struct_passwd | None = None) -> Path:
    """The library's absolute path; ConfigError when it is missing or unreadable (by ``account``)."""
    library = library.absolute()
    _check_path_text(library, "library")
    if not library.exists():
        raise ConfigError(f"setting library: folder {library} does not exist")
    if not library.is_dir():
        raise ConfigError(f"setting library: {library} is not a folder")
    if not os.access(library, os.R_OK | os.X_OK):
        raise ConfigError(f"setting library: folder {library} is not readable")
    if account is not None:
        blocked = _unreadable_for(library, account)
        if blocked is not None:
            raise ConfigError(
                f"setting library: the account {account.pw_name} cannot read {blocked} "
                f"(the library must be readable by uid {account.pw_uid})"
            )
    return library


def _unreadable_for(library: Path, pw: pwd.struct_passwd, last: int = 0o5) -> Path | None:
    """The first folder on the way to ``library`` that ``pw`` cannot enter, or ``library`` itself when
    ``pw`` lacks the ``last`` permission bits on it (r-x: list a folder; r--: read a file)."""
    groups = {pw.pw_gid} | {g for g in os.getgrouplist(pw.pw_name, pw.pw_gid)}
    for path in [*reversed(library.parents), library]:
        st = path.stat()
        need = last if path == library else 0o1  # --x on the way
        if st.st_uid == pw.pw_uid:
            bits = (st.st_mode >> 6) & 7
        elif st.st_gid in groups:
            bits = (st.st_mode >> 3) & 7
        else:
            bits = st.st_mode & 7
        if bits & need != need:
            return path
    return None


def _check_path_text(path: Path, setting: str) -> None:
    """A path that goes into sshd's files must not hold a newline or another control character."""
    try:
        check_line_safe(str(path), "path")
    except ValueError as exc:
        raise ConfigError(f"setting {setting}: the {exc} (sshd's files are line-based)") from None


def check_port_free(host: str, port: int) -> None:
    """ConfigError naming host:port when something already listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"setting ssh_port: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "is another server using it?"
            ) from None


def check_secure_parents(path: Path) -> None:
    """sshd's StrictModes: every folder above ``path`` must not be group/world-writable."""
    for folder in path.parents:
        st = folder.stat()
        if st.st_mode & 0o022:
            raise ConfigError(
                f"setting state_dir: folder {folder} is group/world-writable "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); sshd refuses authorized_keys below it"
            )



def sshd_env() -> dict[str, str]:
    """sshd's environment: the secret-free child environment, cut to what sshd needs."""
    return {k: v for k, v in child_environ().items() if k in ("PATH", "TZ", "LANG", "LC_ALL")}


def prepare_state_dir(state_dir: Path) -> Path:
    """The state folder, created (0755) if missing; ConfigError if it cannot be or is writable by others."""
    state_dir = state_dir.absolute()
    _check_path_text(state_dir, "state_dir")
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as exc:
        raise ConfigError(f"setting state_dir: cannot create folder {state_dir} ({exc.strerror})") from None
    if state_dir.stat().st_mode & 0o022:
        raise ConfigError(
            f"setting state_dir: folder {state_dir} is group/world-writable: run chmod go-w {state_dir}"
        )
    return state_dir


def host_key_line(settings: Settings, *, relay: bool = False) -> str:
    """The ed25519 host key line clients pin (host keys generated if missing); ``relay``: of a relay's
    sshd, whose files are in ``STATE/relay``."""
    keygen = keymod.find_tool("ssh-keygen", "openssh-client")
    state_dir = prepare_state_dir(settings.resolved_state_dir())
    if relay:
        state_dir = prepare_state_dir(state_dir / "relay")
    return keymod.host_key_line(keymod.ensure_host_keys(state_dir, keygen)[0])


def prepare(settings: Settings, *, relay: bool = False) -> ServerPlan:
    """Run every start-up check and write the sshd files; ConfigError (exit 2) on the first problem.

    ``relay``: the sshd of a relay site, which exports the generation it publishes in its library
    folder to the site keys of ``relay_keys_dir`` (its files in ``STATE/relay``).
    """
    tools = find_tools()
    check_rsync_version(tools.rsync, settings.allow_old_rsync)
    root_mode = os.geteuid() == 0 and not settings.unprivileged
    library = check_library(settings.library)
    keys_dir = settings.require_relay_keys() if relay else settings.keys_dir
    scan = keymod.load_site_keys(keys_dir, tools.keygen, setting="relay_keys_dir" if relay else "keys_dir")
    for line in scan.skipped:
        log.warning("%s", line)
    keys = scan.keys
    for site in keymod.unknown_sites(keys, keymod.load_sites_config(keys_dir)):
        log.warning("keys config names site %s, which has no key file %s.pub", site, site)
    check_port_free(settings.ssh_host, settings.ssh_port)
    state_dir = prepare_state_dir(settings.resolved_state_dir())
    if relay:
        state_dir = prepare_state_dir(state_dir / "relay")
    authorized = state_dir / "authorized_keys"
    if root_mode:
        check_secure_parents(authorized)
        account = ensure_account(settings.syncer_user, settings.syncer_uid)
        check_library(library, account)
        user, uid = account.pw_name, account.pw_uid
    else:
        user, uid = pwd.getpwuid(os.geteuid()).pw_name, os.geteuid()
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation needs it as root
    host_keys = keymod.ensure_host_keys(state_dir, tools.keygen)
    python, script = install_dispatcher(state_dir, tools.rrsync)
    reports, keys_map = prepare_reports(state_dir, keys, uid if root_mode else None)
    if root_mode and (blocked := _unreadable_for(script, account, last=0o4)) is not None:
        raise ConfigError(f"setting state_dir: the account {user} cannot open {blocked}, so it cannot run the "
                          f"forced command {script} (uid {uid} needs x on its folders)")
    if relay:
        command = forced_command(tools.rrsync, python=python, script=script, published=library,
                                 reports=reports, keys=keys_map)
    else:
        command = forced_command(tools.rrsync, python=python, script=script, library=library,
                                 origin=state_dir / ORIGIN_FILE, reports=reports, keys=keys_map)
    setup = SshdSetup(
        listen_host=settings.ssh_host, port=settings.ssh_port, host_keys=tuple(host_keys),
        authorized_keys=authorized, user=user, command=command,
        root_login=(user == "root"), strict_modes=root_mode, marker=session_marker(authorized),
    )
    config_file = state_dir / "sshd_config"
    try:
        authorized_text, config_text = render_authorized_keys(keys, command), render_sshd_config(setup)
    except ValueError as exc:
        raise ConfigError(f"cannot write sshd's files: {exc}") from None
    atomic_write(authorized, authorized_text.encode())
    atomic_write(config_file, config_text.encode())
    test = subprocess.run([tools.sshd, "-t", "-f", str(config_file)], capture_output=True, text=True,
                          env=sshd_env())
    if test.returncode != 0:
        raise ConfigError(f"sshd rejects the configuration {config_file}: {test.stderr.strip()}")
    return ServerPlan(tools, settings, state_dir, setup, config_file, keys, uid, {k.key: k.site for k in keys},
                      keys_dir)


REPORTS_DIR = "reports"
KEYS_MAP_FILE = "site-keys.json"


def prepare_reports(state_dir: Path, keys: list[keymod.SiteKey], uid: int | None) -> tuple[Path, Path]:
    """The folder the dispatcher stores site reports in (owned by the login account ``uid`` in root
    mode) and the key -> site map it identifies sites by (rewritten at every reload)."""
    folder = state_dir / REPORTS_DIR
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        if uid is not None:
            os.chown(folder, uid, -1)
    except OSError as exc:
        raise ConfigError(f"setting state_dir: cannot prepare {folder} ({exc.strerror})") from None
    write_keys_map(state_dir, keys)
    return folder, state_dir / KEYS_MAP_FILE


def write_keys_map(state_dir: Path, keys: list[keymod.SiteKey]) -> None:
    """``STATE/site-keys.json``: each authorized key (``TYPE BASE64``) and its site."""
    atomic_write(state_dir / KEYS_MAP_FILE, json.dumps({k.key: k.site for k in keys}, sort_keys=True).encode())


def install_dispatcher(state_dir: Path, rrsync: str) -> tuple[str, Path]:
    """Copy the dispatcher (standard library only) into the state folder, readable by the login
    account; it runs with the interpreter rrsync itself runs with, which that account can run."""
    script = state_dir / DISPATCHER_FILE
    atomic_write(script, Path(dispatch.__file__).read_bytes(), 0o644)
    try:
        with open(rrsync, "rb") as fh:
            first = fh.readline(200).decode(errors="replace")
    except OSError:
        first = ""
    fields = first[2:].split() if first.startswith("#!") else []
    if fields and Path(fields[0]).name.startswith("python") and os.access(fields[0], os.X_OK):
        return fields[0], script
    if fields[:1] == ["/usr/bin/env"] and len(fields) == 2 and fields[1].startswith("python"):
        found = shutil.which(fields[1], path="/usr/bin:/bin")
        if found:
            return found, script
    return sys.executable, script
