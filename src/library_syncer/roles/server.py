"""The primary site's server: a supervised OpenSSH sshd and the reload of the site keys.

:func:`prepare` (:mod:`.server_setup`) checks everything a start needs and writes
sshd's files; :func:`run` runs sshd in the foreground, folds its log into ours with
the site name of every session, reloads the keys on SIGHUP and stops on SIGTERM/SIGINT
(:func:`~library_syncer.util.signals.capture_signals`).

Reloading rewrites ``authorized_keys`` (atomically): sshd reads it at every
authentication, so a site is added or revoked without restarting sshd.  The
running sessions of a revoked key are then ended (:mod:`.sessions`), at the
reload and at every upkeep tick after it, while other sites' sessions go on.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Callable

from ..errors import ConfigError, OperationFailed
from ..transport import keys as keymod
from ..transport.sshd import LogFolder, render_authorized_keys
from ..transport import sessions
from ..web.fleet_app import make_fleet_app, start_fleet_server
from ..web.rules import is_loopback
from ..fleet.model import Fleet
from ..fleet.peers import ssh_peers
from ..fleet.store import load_fleet, save_fleet
from ..util.fmt import iso_utc
from ..util.fs import atomic_write
from ..fleet.reports import Publications
from ..vcsp.origin import ORIGIN_FILE, refresh_origin
from ..util.proc import Child
from ..util.signals import capture_signals
from .server_setup import REPORTS_DIR, ServerPlan, sshd_env, write_keys_map
from .server_setup import host_key_line, parse_rsync_version, prepare  # noqa: F401 (re-exported)

log = logging.getLogger("library_syncer.server")
sshd_log = logging.getLogger("library_syncer.sshd")

SSHD_STOP_GRACE_SECONDS = 20.0


def reload_keys(plan: ServerPlan) -> list[keymod.SiteKey]:
    """Re-read the keys folder and rewrite authorized_keys; files that cannot be used are left out.

    A folder-level problem (missing folder, bad sites.toml) keeps the previous keys.
    """
    try:
        scan = keymod.scan_site_keys(plan.keys_dir, plan.tools.keygen)
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
    atomic_write(plan.setup.authorized_keys, text.encode())
    write_keys_map(plan.state_dir, keys)
    before = {k.fingerprint: k.site for k in plan.keys}
    after = {k.fingerprint: k.site for k in keys}
    added = sorted({after[f] for f in after.keys() - before.keys()})
    removed = sorted({before[f] for f in before.keys() - after.keys()})
    log.info("reloaded keys: %d site(s) authorized%s%s", len({k.site for k in keys}),
             f"; added: {', '.join(added)}" if added else "",
             f"; revoked: {', '.join(removed)}" if removed else "")
    if not keys:
        log.warning("no site keys in %s: every site is refused", plan.keys_dir)
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

def load_site_fleet(plan: ServerPlan) -> Fleet:
    """The history of the sites this sshd serves (its state folder), with the current keys."""
    return load_fleet(plan.state_dir, {k.fingerprint: k.site for k in plan.keys},
                      silent_after=plan.settings.site_silent_after_seconds)


async def serve_sites(plan: ServerPlan, fleet: Fleet, stop: asyncio.Event, reload: asyncio.Event,
                      on_reload: Callable[[], None] = lambda: None) -> int:
    """sshd with the key reload, the end of revoked sessions and the site history (saved at the end);
    returns when ``stop`` is set.  The primary's and a relay's export alike."""
    upkeep = asyncio.ensure_future(_fleet_upkeep(plan, fleet, FLEET_UPKEEP_SECONDS))
    try:
        return await _run_sshd(plan, fleet, stop, reload, on_reload=on_reload)
    finally:
        upkeep.cancel()
        save_fleet(plan.state_dir, fleet)


def run(plan: ServerPlan) -> int:
    """Run sshd until SIGTERM/SIGINT (exit code 0); OperationFailed if it keeps failing."""
    return asyncio.run(_supervise(plan))


async def _supervise(plan: ServerPlan) -> int:
    stop = asyncio.Event()
    reload = asyncio.Event()
    with capture_signals(lambda _: stop.set(), also={signal.SIGHUP: lambda _: reload.set()}):
        fleet = load_site_fleet(plan)
        web_runner = None
        if plan.settings.fleet_port is not None:
            token = plan.settings.admin_token_value()
            publications = Publications(plan.state_dir / REPORTS_DIR, plan.state_dir / ORIGIN_FILE)
            app = make_fleet_app(fleet, token=token, enrich=publications.enrich)
            web_runner = await start_fleet_server(app, plan.settings.fleet_host, plan.settings.fleet_port)
            if not token and not is_loopback(plan.settings.fleet_host):
                log.warning("the fleet view is open to anyone who can reach it: set admin_token_file or "
                            "SYNCER_ADMIN_TOKEN to require a token")
        rescan = asyncio.Event()
        origin = asyncio.ensure_future(origin_upkeep(plan, rescan))
        try:
            return await serve_sites(plan, fleet, stop, reload, on_reload=rescan.set)
        finally:
            origin.cancel()
            if web_runner is not None:
                await web_runner.cleanup()


async def _run_sshd(plan: ServerPlan, fleet: Fleet, stop: asyncio.Event, reload: asyncio.Event,
                    on_reload: Callable[[], None] = lambda: None) -> int:
    folder = LogFolder({k.fingerprint: k.site for k in plan.keys})
    sites = sorted({k.site for k in plan.keys})
    log.info("serving %s read-only to %d site(s) (%s) as %s on %s:%d",
             plan.settings.library.absolute(), len(sites), ", ".join(sites), plan.setup.user,
             plan.setup.listen_host, plan.setup.port)
    failures: list[float] = []
    while True:
        started = time.monotonic()
        fleet.sshd_started()
        # Killed if this process is (kill -9): a restart finds the port free.  Sessions inherit
        # sshd's stderr, so the pipe may outlive sshd: the child's reader folds its lines until
        # every writer is gone, and exit is awaited on the process alone.
        sshd = Child([plan.tools.sshd, "-D", "-e", "-f", str(plan.config_file)], env=sshd_env(),
                     on_line=lambda line: _fold_line(line, folder, fleet), guard=True)
        while not sshd.exited.done():
            waiters = [sshd.exited, asyncio.ensure_future(stop.wait()), asyncio.ensure_future(reload.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters[1:]:
                w.cancel()
            if stop.is_set():
                await sshd.stop(SSHD_STOP_GRACE_SECONDS)
                await sshd.lines_done(1.0)
                log.info("stopped")
                return 0
            if reload.is_set():
                reload.clear()
                keys = reload_keys(plan)
                folder.sites = {k.fingerprint: k.site for k in keys}
                fleet.set_keys(folder.sites)
                on_reload()
        code = sshd.returncode
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


def _fold_line(raw: str, folder: LogFolder, fleet: Fleet) -> None:
    """One line of sshd's log: into the fleet model, and into ours with the site name."""
    line = raw.strip()
    if line:
        fleet.feed(line)
        sshd_log.info("%s", folder.fold(line))


# --- origin manifest (vcsp/origin.py) ---------------------------------------------------

async def origin_upkeep(plan: ServerPlan, rescan: asyncio.Event) -> None:
    """Keep ``STATE/origin.json`` current: at start, every ``origin_refresh_seconds`` and on SIGHUP.

    Files modified within one refresh period are not read yet (an export still being written):
    their item keeps its previous entry until it settles.
    """
    period = plan.settings.origin_refresh_seconds
    while True:
        try:
            doc, changed = await asyncio.to_thread(
                refresh_origin, plan.settings.library.absolute(), plan.state_dir, settle=min(period, 60),
                now_text=iso_utc(time.time()) or "")
            if changed:
                log.info("origin version %d: %d item(s)", doc["version"], len(doc["items"]))
        except (OSError, OperationFailed) as exc:
            log.error("cannot update the origin manifest: %s", getattr(exc, "strerror", None) or exc)
        rescan.clear()
        try:
            await asyncio.wait_for(rescan.wait(), period)
        except asyncio.TimeoutError:
            pass


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

