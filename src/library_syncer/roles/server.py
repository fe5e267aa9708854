"""The primary site's server: start-up checks, then a supervised OpenSSH sshd.

:func:`prepare` checks everything a start needs (tools, rsync version,
library, keys, port, account) and writes the host keys, ``sshd_config`` and
``authorized_keys`` into the state folder; :func:`run` runs sshd in the
foreground, folds its log into ours with the site name of every session,
reloads the keys on SIGHUP and stops on SIGTERM/SIGINT.

Reloading rewrites ``authorized_keys`` (atomically): sshd reads it at every
authentication, so a site is added or revoked without restarting sshd.  The
running sessions of a revoked key are then ended (:mod:`.sessions`), at the
reload and at every upkeep tick after it, while other sites' sessions go on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..util.childenv import child_environ
from ..config import Settings
from ..errors import ConfigError, OperationFailed
from ..transport import keys as keymod
from ..transport.sshd import (
    LogFolder,
    SshdSetup,
    check_line_safe,
    forced_command,
    render_authorized_keys,
    render_sshd_config,
    session_marker,
)
from ..transport import sessions
from ..web.fleet_app import make_fleet_app, start_fleet_server
from ..web.rules import is_loopback
from ..fleet.model import Fleet
from ..fleet.peers import ssh_peers
from ..fleet.store import load_fleet, save_fleet
from ..util.proc import guarded

log = logging.getLogger("library_syncer.server")
sshd_log = logging.getLogger("library_syncer.sshd")

MIN_RSYNC = (3, 5, 0)
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


def _unreadable_for(library: Path, pw: pwd.struct_passwd) -> Path | None:
    """The first folder on the way to ``library`` that ``pw`` cannot enter (or list, for the library)."""
    groups = {pw.pw_gid} | {g for g in os.getgrouplist(pw.pw_name, pw.pw_gid)}
    for path in [*reversed(library.parents), library]:
        st = path.stat()
        need = 0o5 if path == library else 0o1  # r-x for the library, --x on the way
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


# --- accounts ---------------------------------------------------------------------------

def ensure_account(name: str, uid: int) -> pwd.struct_passwd:
    """The login account for root mode, created (locked password, /bin/sh) when missing."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        try:
            other = pwd.getpwuid(uid)
            raise ConfigError(f"setting syncer_uid: uid {uid} already belongs to the account {other.pw_name}")
        except KeyError:
            pass
        useradd = keymod.find_tool("useradd", "passwd")
        proc = subprocess.run(
            [useradd, "--uid", str(uid), "--user-group", "--no-create-home", "--home-dir", "/",
             "--shell", "/bin/sh", "--password", "*", "--comment", "library-syncer", name],
            capture_output=True, text=True, env=child_environ(),
        )
        if proc.returncode != 0:
            raise OperationFailed(f"cannot create the account {name}: {proc.stderr.strip()}")
        log.info("created the account %s (uid %d)", name, uid)
        pw = pwd.getpwnam(name)
    if pw.pw_uid != uid:
        raise ConfigError(
            f"setting syncer_uid: the account {name} already exists with uid {pw.pw_uid}, not {uid}"
        )
    if not os.access(pw.pw_shell or "/bin/sh", os.X_OK) or Path(pw.pw_shell).name in ("nologin", "false"):
        raise ConfigError(
            f"the account {name} has the shell {pw.pw_shell!r}, which cannot run the forced command: "
            f"run usermod -s /bin/sh {name}"
        )
    if _password_field(name).startswith("!"):
        # sshd (without PAM) refuses a locked account even for key logins; '*' keeps passwords unusable.
        subprocess.run([keymod.find_tool("usermod", "passwd"), "-p", "*", name], check=True, capture_output=True,
                       env=child_environ())
        log.info("account %s: locked password replaced by '*' (no password can match)", name)
    return pw


def _password_field(name: str) -> str:
    try:
        for line in Path("/etc/shadow").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name and len(fields) > 1:
                return fields[1]
    except OSError:
        pass
    return ""


# --- files ------------------------------------------------------------------------------

def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` in one rename (readers see the old or the new file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        os.fchmod(fh.fileno(), mode)
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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


def host_key_line(settings: Settings) -> str:
    """The ed25519 host key line clients pin (host keys generated if missing)."""
    keygen = keymod.find_tool("ssh-keygen", "openssh-client")
    state_dir = prepare_state_dir(settings.resolved_state_dir())
    return keymod.host_key_line(keymod.ensure_host_keys(state_dir, keygen)[0])


def prepare(settings: Settings) -> ServerPlan:
    """Run every start-up check and write the sshd files; ConfigError (exit 2) on the first problem."""
    tools = find_tools()
    check_rsync_version(tools.rsync, settings.allow_old_rsync)
    root_mode = os.geteuid() == 0 and not settings.unprivileged
    library = check_library(settings.library)
    scan = keymod.load_site_keys(settings.keys_dir, tools.keygen)
    for line in scan.skipped:
        log.warning("%s", line)
    keys = scan.keys
    for site in keymod.unknown_sites(keys, keymod.load_sites_config(settings.keys_dir)):
        log.warning("keys config names site %s, which has no key file %s.pub", site, site)
    check_port_free(settings.ssh_host, settings.ssh_port)
    state_dir = prepare_state_dir(settings.resolved_state_dir())
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
    command = forced_command(tools.rrsync, library)
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
    write_atomic(authorized, authorized_text)
    write_atomic(config_file, config_text)
    test = subprocess.run([tools.sshd, "-t", "-f", str(config_file)], capture_output=True, text=True,
                          env=_sshd_env())
    if test.returncode != 0:
        raise ConfigError(f"sshd rejects the configuration {config_file}: {test.stderr.strip()}")
    return ServerPlan(tools, settings, state_dir, setup, config_file, keys, uid, {k.key: k.site for k in keys})


def reload_keys(plan: ServerPlan) -> list[keymod.SiteKey]:
    """Re-read the keys folder and rewrite authorized_keys; files that cannot be used are left out.

    A folder-level problem (missing folder, bad sites.toml) keeps the previous keys.
    """
    try:
        scan = keymod.scan_site_keys(plan.settings.keys_dir, plan.tools.keygen)
    except ConfigError as exc:
        log.error("reload: %s; keeping the previous keys", exc)
        return plan.keys
    for line in scan.skipped:
        log.warning("reload: %s", line)
    for problem in scan.problems:
        log.error("reload: %s; that key is not authorized", problem)
    keys = scan.keys
    try:
        text = render_authorized_keys(keys, plan.setup.command)
    except ValueError as exc:
        log.error("reload: %s; keeping the previous keys", exc)
        return plan.keys
    write_atomic(plan.setup.authorized_keys, text)
    before = {k.fingerprint: k.site for k in plan.keys}
    after = {k.fingerprint: k.site for k in keys}
    added = sorted({after[f] for f in after.keys() - before.keys()})
    removed = sorted({before[f] for f in before.keys() - after.keys()})
    log.info("reloaded keys: %d site(s) authorized%s%s", len({k.site for k in keys}),
             f"; added: {', '.join(added)}" if added else "",
             f"; revoked: {', '.join(removed)}" if removed else "")
    if not keys:
        log.warning("no site keys in %s: every site is refused", plan.settings.keys_dir)
    plan.keys = keys
    plan.key_sites.update({k.key: k.site for k in keys})
    end_revoked_sessions(plan)
    return keys


def end_revoked_sessions(plan: ServerPlan) -> int:
    """End the running sessions whose key is no longer authorized; each one is logged. How many."""
    try:
        ended = sessions.end_unauthorized(plan.setup.marker, plan.uid, {k.key for k in plan.keys})
    except (OSError, ValueError) as exc:  # /proc unreadable or not as expected: try again at the next tick
        log.error("cannot look for sessions of revoked keys: %s", getattr(exc, "strerror", None) or exc)
        return 0
    for s in ended:
        site = ", ".join(sorted({plan.key_sites.get(k, "unknown key") for k in s.keys}))
        log.warning("site %s: ended the session from %s: its key is no longer authorized", site, s.client)
    return len(ended)


# --- supervision ------------------------------------------------------------------------

def run(plan: ServerPlan) -> int:
    """Run sshd until SIGTERM/SIGINT (exit code 0); OperationFailed if it keeps failing."""
    return asyncio.run(_supervise(plan))


def _sshd_env() -> dict[str, str]:
    return {k: v for k, v in child_environ().items() if k in ("PATH", "TZ", "LANG", "LC_ALL")}


async def _supervise(plan: ServerPlan) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reload = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    fleet = load_fleet(plan.state_dir, {k.fingerprint: k.site for k in plan.keys},
                       silent_after=plan.settings.site_silent_after_seconds)
    web_runner = None
    if plan.settings.fleet_port is not None:
        token = plan.settings.admin_token_value()
        web_runner = await start_fleet_server(make_fleet_app(fleet, token=token), plan.settings.fleet_host,
                                              plan.settings.fleet_port)
        if not token and not is_loopback(plan.settings.fleet_host):
            log.warning("the fleet view is open to anyone who can reach it: set admin_token_file or "
                        "SYNCER_ADMIN_TOKEN to require a token")
    upkeep = asyncio.ensure_future(_fleet_upkeep(plan, fleet, FLEET_UPKEEP_SECONDS))
    try:
        return await _run_sshd(plan, fleet, stop, reload)
    finally:
        upkeep.cancel()
        if web_runner is not None:
            await web_runner.cleanup()
        save_fleet(plan.state_dir, fleet)


async def _run_sshd(plan: ServerPlan, fleet: Fleet, stop: asyncio.Event, reload: asyncio.Event) -> int:
    folder = LogFolder({k.fingerprint: k.site for k in plan.keys})
    sites = sorted({k.site for k in plan.keys})
    log.info("serving %s read-only to %d site(s) (%s) as %s on %s:%d",
             plan.settings.library.absolute(), len(sites), ", ".join(sites), plan.setup.user,
             plan.setup.listen_host, plan.setup.port)
    failures: list[float] = []
    while True:
        started = time.monotonic()
        fleet.sshd_started()
        proc = subprocess.Popen(  # killed if this process is (kill -9): a restart finds the port free
            guarded([plan.tools.sshd, "-D", "-e", "-f", str(plan.config_file)]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_sshd_env(),
        )
        # Sessions inherit sshd's stderr, so the pipe may outlive sshd: a thread folds its
        # lines until every writer is gone, and exit is awaited on the process alone.
        reader = threading.Thread(target=_fold_log, args=(proc.stderr, folder, fleet), daemon=True)
        reader.start()
        exited = asyncio.ensure_future(asyncio.to_thread(proc.wait))
        while not exited.done():
            waiters = [exited, asyncio.ensure_future(stop.wait()), asyncio.ensure_future(reload.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters[1:]:
                w.cancel()
            if stop.is_set():
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        await asyncio.wait_for(asyncio.shield(exited), 20)
                    except asyncio.TimeoutError:
                        proc.kill()
                        await exited
                reader.join(1.0)
                log.info("stopped")
                return 0
            if reload.is_set():
                reload.clear()
                keys = reload_keys(plan)
                folder.sites = {k.fingerprint: k.site for k in keys}
                fleet.set_keys(folder.sites)
        code = proc.returncode
        fleet.sshd_exited(unexpected=True)
        now = time.monotonic()
        failures = [t for t in failures if now - t < 60] + [now]
        if now - started > 60:
            failures = [now]
        if len(failures) >= 3:
            raise OperationFailed(f"sshd keeps exiting (last exit code {code}); see its log above")
        delay = 2 ** (len(failures) - 1)
        log.error("sshd exited unexpectedly with code %s; restarting in %ds", code, delay)
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return 0
        except asyncio.TimeoutError:
            pass


def _fold_log(stream, folder: LogFolder, fleet: Fleet) -> None:
    for raw in stream:
        line = raw.decode(errors="replace").strip()
        if line:
            fleet.feed(line)
            sshd_log.info("%s", folder.fold(line))


# --- fleet upkeep (the history file: fleet/store.py) ------------------------------------

FLEET_UPKEEP_SECONDS = 5.0


async def _fleet_upkeep(plan: ServerPlan, fleet: Fleet, seconds: float) -> None:
    """Every few seconds: end sessions whose connection is gone or whose key was revoked (one that got in
    while the keys were reloaded), save the history if it changed."""
    while True:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(end_revoked_sessions, plan)
        peers = await asyncio.to_thread(ssh_peers, plan.setup.port)
        if peers is not None:
            fleet.reap(peers)
        if fleet.dirty:
            await asyncio.to_thread(save_fleet, plan.state_dir, fleet)
