"""The fleet of sites as the server sees it, built from sshd's log (pure logic, no I/O).

The lines are parsed by :mod:`.sshd_log`. The site of a session is the name of
the key file whose fingerprint was accepted (or refused, for a site whose
``from=`` limit did not match).  The result of a session is ``ok`` when the
client ended it itself (SSH disconnect reason 11, what rsync's ssh sends when it
is done), ``error`` for another disconnect reason, ``lost`` when the connection
broke (killed transfer, dead link) and ``refused`` when the site's key was not
allowed in.  sshd does not see rsync's own exit code: the site's status page
knows that.

sshd does not log every end: a client killed right after login leaves only
``ssh_packet_send_debug: send DEBUG: Broken pipe``.  So the server also passes
the established TCP connections to its ssh port (:func:`.peers.ssh_peers`) to
:meth:`Fleet.reap`, which ends, as ``lost``, sessions whose connection was
missing at two checks in a row.

Times are wall-clock seconds from the ``clock`` given to :class:`Fleet`; :meth:`Fleet.to_json` and
:meth:`Fleet.from_json` keep the history across restarts (:mod:`.store`). All methods are thread-safe.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..util.fmt import iso_utc as iso
from .peers import established_peers
from .sshd_log import DISCONNECT_BY_APPLICATION, LogEvent, parse_line

__all__ = ["Fleet", "SiteRecord", "RESULTS", "STATES", "established_peers", "parse_line", "iso"]

RESULTS = ("ok", "error", "lost", "refused")
STATES = ("never seen", "silent", "failing", "syncing", "ok", "key removed")  # in the fleet view's order
STATE_VERSION = 1
MAX_OPEN = 10_000  # connections tracked at once (older ones are forgotten first)
PREAUTH_TTL = 3600.0  # an unauthenticated connection is forgotten after this long


@dataclass
class SiteRecord:
    """What is known of one site (kept across restarts)."""

    site: str
    last_start: float | None = None  # when its latest connection began
    last_end: float | None = None  # when its latest finished session ended
    address: str | None = None  # client address of its latest connection
    last_duration: float | None = None  # seconds, of its latest finished session
    last_result: str | None = None  # one of RESULTS
    sessions: dict[str, int] = field(default_factory=dict)  # result -> count

    @property
    def last_seen(self) -> float | None:
        times = [t for t in (self.last_start, self.last_end) if t is not None]
        return max(times) if times else None


@dataclass
class _Conn:
    addr: str
    port: int
    started: float
    site: str | None = None
    authenticated: bool = False
    refused_site: str | None = None  # a known site's key that was refused on this connection
    unknown_key: str | None = None  # a fingerprint of no site that was refused
    result: str | None = None  # from the client's disconnect message
    missing: bool = False  # its TCP connection was not there at the last reap()


class Fleet:
    """Sites and their sessions, fed with sshd log lines.

    ``keys`` maps key fingerprints to site names (the keys folder); sites with a
    key are listed even before they first connect.
    """

    def __init__(self, keys: dict[str, str], *, silent_after: float, clock: Callable[[], float] = time.time,
                 since: float | None = None) -> None:
        self.clock = clock
        self.silent_after = silent_after
        self.since = since if since is not None else clock()  # when the history began
        self.started = clock()  # when this process began
        self.records: dict[str, SiteRecord] = {}
        self.keys: dict[str, str] = {}
        self.unknown_attempts = 0
        self.last_unknown: dict[str, Any] | None = None  # {"at", "address", "fingerprint"}
        self.sshd_up = False
        self.sshd_restarts = 0
        self.dirty = False  # the persisted part changed since the last to_json()
        self._open: dict[tuple[str, int], _Conn] = {}
        self._lock = threading.RLock()
        self.set_keys(keys)

    # --- inputs ---------------------------------------------------------------------------

    def set_keys(self, keys: dict[str, str]) -> None:
        """The current keys folder (fingerprint -> site), at start and on every reload."""
        with self._lock:
            self.keys = dict(keys)

    def sshd_started(self) -> None:
        """sshd was (re)started; it is up once it logs that it listens."""
        with self._lock:
            self.sshd_up = False

    def sshd_exited(self, unexpected: bool) -> None:
        """sshd stopped; ``unexpected`` counts a restart."""
        with self._lock:
            self.sshd_up = False
            if unexpected:
                self.sshd_restarts += 1

    def feed(self, line: str) -> LogEvent | None:
        """Take one raw sshd log line into account; returns its event (None if ignored)."""
        event = parse_line(line)
        if event is not None:
            with self._lock:
                self._apply(event, self.clock())
        return event

    def _apply(self, e: LogEvent, now: float) -> None:
        if e.kind == "listening":
            self.sshd_up = True
            return
        key = (e.addr, e.port)
        conn = self._open.get(key)
        if e.kind == "connect":
            self._forget_old(now)
            self._open[key] = _Conn(e.addr, e.port, now)
            return
        if e.kind in ("accepted", "failed") and conn is None:
            conn = self._open[key] = _Conn(e.addr, e.port, now)  # its connect line was not seen
        if conn is None:
            return
        site = self.keys.get(e.fingerprint)
        if e.kind == "accepted":
            conn.site = site or None
            conn.authenticated = True
            if site is not None:
                rec = self._record(site)
                rec.last_start, rec.address = conn.started, conn.addr
                self.dirty = True
        elif e.kind == "failed":
            if site is not None:
                conn.refused_site = site
            else:
                conn.unknown_key = e.fingerprint
        elif e.kind == "goodbye":
            conn.result = "ok" if e.code == DISCONNECT_BY_APPLICATION else "error"
        elif e.kind == "ended":
            self._close(conn, conn.result or "ok", now)
        elif e.kind in ("lost", "closing"):
            self._close(conn, "lost", now)

    def reap(self, live: set[tuple[str, int]]) -> None:
        """End, as lost, connections not in ``live`` (client address, port) at this call and the previous one."""
        with self._lock:
            now = self.clock()
            for key, conn in list(self._open.items()):
                if (key[0].split("%")[0], key[1]) in live:  # sshd may add a scope: fe80::1%eth0
                    conn.missing = False
                elif conn.missing:
                    self._close(conn, "lost", now)
                else:
                    conn.missing = True

    def _close(self, conn: _Conn, result: str, now: float) -> None:
        self._open.pop((conn.addr, conn.port), None)
        if conn.authenticated and conn.site is not None:
            site = conn.site
        elif not conn.authenticated and conn.refused_site is not None:
            site, result = conn.refused_site, "refused"
        else:
            if not conn.authenticated and conn.unknown_key is not None:
                self.unknown_attempts += 1
                self.last_unknown = {"at": now, "address": conn.addr, "fingerprint": conn.unknown_key}
                self.dirty = True
            return
        rec = self._record(site)
        rec.last_start, rec.last_end, rec.address = conn.started, now, conn.addr
        rec.last_duration = max(0.0, now - conn.started)
        rec.last_result = result
        rec.sessions[result] = rec.sessions.get(result, 0) + 1
        self.dirty = True

    def _record(self, site: str) -> SiteRecord:
        rec = self.records.get(site)
        if rec is None:
            rec = self.records[site] = SiteRecord(site)
        return rec

    def _forget_old(self, now: float) -> None:
        for key, c in list(self._open.items()):
            if not c.authenticated and now - c.started > PREAUTH_TTL:
                del self._open[key]
        while len(self._open) >= MAX_OPEN:
            del self._open[next(iter(self._open))]

    # --- outputs --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The fleet as a JSON-able document (what ``/_syncer/api/fleet`` returns)."""
        with self._lock:
            now = self.clock()
            running: dict[str, list[_Conn]] = {}
            for c in self._open.values():
                if c.authenticated and c.site is not None:
                    running.setdefault(c.site, []).append(c)
            with_key = set(self.keys.values())
            names = with_key | set(self.records)
            sites = [self._site_doc(n, n in with_key, running.get(n, []), now) for n in names]
            sites.sort(key=lambda s: (STATES.index(s["state"]), s["site"]))
            counts = {state: sum(1 for s in sites if s["state"] == state) for state in STATES}
            last_unknown = dict(self.last_unknown) if self.last_unknown else None
            if last_unknown:
                last_unknown["at"] = iso(last_unknown["at"])
            return {
                "generated_at": iso(now),
                "history_since": iso(self.since),
                "server_started": iso(self.started),
                "silent_after_seconds": self.silent_after,
                "sshd": {"up": self.sshd_up, "restarts": self.sshd_restarts},
                "summary": {  # silent: flagged sites (never seen ones included)
                    **{state.replace(" ", "_"): n for state, n in counts.items()},
                    "sites": len(with_key),
                    "silent": sum(1 for s in sites if s["silent"]),
                },
                "unknown_keys": {"attempts": self.unknown_attempts, "last": last_unknown},
                "sites": sites,
            }

    def _site_doc(self, name: str, has_key: bool, running: list[_Conn], now: float) -> dict[str, Any]:
        rec = self.records.get(name) or SiteRecord(name)
        seen = max([t for t in [rec.last_seen, *(c.started for c in running)] if t is not None], default=None)
        silent = has_key and not running and (seen is None or now - seen > self.silent_after)
        if not has_key:
            state = "key removed"
        elif running:
            state = "syncing"
        elif seen is None:
            state = "never seen"
        elif silent:
            state = "silent"
        elif rec.last_result not in (None, "ok"):
            state = "failing"
        else:
            state = "ok"
        last_sync = None
        if rec.last_result is not None:
            last_sync = {"started": iso(rec.last_start if rec.last_end else None), "ended": iso(rec.last_end),
                         "duration_seconds": rec.last_duration, "result": rec.last_result}
        return {
            "site": name,
            "key": has_key,
            "state": state,
            "silent": silent,
            "last_seen": iso(seen),
            "last_seen_timestamp": seen,
            "seconds_since_seen": None if seen is None else max(0.0, now - seen),
            "address": running[-1].addr if running else rec.address,
            "syncing_since": iso(min(c.started for c in running)) if running else None,
            "last_sync": last_sync,
            "sessions": {r: rec.sessions.get(r, 0) for r in RESULTS},
        }

    # --- persistence ----------------------------------------------------------------------

    def to_json(self) -> str:
        """The history to keep across restarts (clears ``dirty``)."""
        with self._lock:
            self.dirty = False
            return json.dumps({
                "version": STATE_VERSION,
                "since": self.since,
                "unknown_attempts": self.unknown_attempts,
                "last_unknown": self.last_unknown,
                "sites": [asdict(r) for r in sorted(self.records.values(), key=lambda r: r.site)],
            }, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, keys: dict[str, str], *, silent_after: float,
                  clock: Callable[[], float] = time.time) -> "Fleet":
        """A fleet with the history of :meth:`to_json`; ValueError when ``text`` is not such a document."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                raise ValueError(f"not a version {STATE_VERSION} fleet document")
            fleet = cls(keys, silent_after=silent_after, clock=clock, since=float(data["since"]))
            fleet.unknown_attempts = int(data.get("unknown_attempts", 0))
            fleet.last_unknown = data.get("last_unknown")
            for item in data.get("sites", []):
                rec = SiteRecord(**item)
                rec.sessions = {r: int(n) for r, n in rec.sessions.items() if r in RESULTS}
                fleet.records[rec.site] = rec
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"fleet state is not readable: {exc}") from None
        return fleet
