"""One sync run of a site: peers in order, guard, rsync into staging (with retries), then publishing.

The peers of SYNC_PEER are tried in order; each attempt opens one SSH connection
(:mod:`~library_syncer.transport.connection`) for all its commands: the origin query,
the listing, the transfer and the origin query again.  A peer that is unreachable,
refuses, fails mid-transfer or lags behind the published origin version
(:func:`~library_syncer.vcsp.origin.peer_verdict`) hands over to the next one, and the
partial files in staging are reused; when every peer failed, the next round waits
with backoff.  The steps after the transfer are :mod:`.publishing`'s.

:func:`run_sync` blocks; the daemon runs it in a worker thread.  What is served
(``L/current``) only changes in the final atomic switch, so a failed, refused or
interrupted run leaves it untouched, and the staging tree (with rsync's partial
files) is kept so the next run resumes.  One run at a time per library folder
(``flock`` on ``L/.library-syncer/sync.lock``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from ..config import Settings
from ..errors import UserError
from ..publish import generations
from ..transport import rsync as rs
from ..transport.connection import Connection
from ..transport.dispatch import ORIGIN_COMMAND
from ..transport.exitcodes import Outcome, classify
from ..util.proc import Proc, RunLock, run as run_child
from ..vcsp.origin import Origin, parse_origin, peer_verdict
from .bwslots import transfer_in_slots, wait_out_pause
from .guard import delete_guard
from .origin_state import read_site_origin, site_id
from .publishing import PublishSteps, os_reason
from .plan import PeerPlan, SyncPlan, prepare, source_items
from .result import AttemptStarted, Event, Phase, RetryScheduled, SyncResult
from .schedule import next_retry_delay, zone
from .selection import rsync_filters
from .timetable import Timetable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """How one attempt at one peer ended: ok, stopped, retry (try later or another peer), fatal, guard."""

    kind: str
    reason: str = ""

RETRY_BASE_SECONDS = 10.0
RETRY_CAP_SECONDS = 600.0


def _run(cmd: list[str], *, on_line: Callable[[str], None] | None, stop_event: threading.Event | None) -> Proc:
    """rsync (or ssh) through the child-process runner: rsync's environment and line cutting, no progress kept."""
    return run_child(cmd, on_line=on_line, stop_event=stop_event, env=rs.child_env(), splitter=rs.LineSplitter,
                     keep=lambda line: rs.parse_progress(line) is None)


class _Run(PublishSteps):
    """State of one run (kept small: the steps are methods of this object)."""

    def __init__(self, settings: Settings, plan: SyncPlan, on_event: Callable[[Event], None] | None,
                 stop_event: threading.Event | None, rng: random.Random, retry_base: float) -> None:
        self.s, self.plan, self.stop = settings, plan, stop_event
        self.emit = on_event or (lambda e: None)
        self.rng, self.retry_base = rng, retry_base
        self.result = SyncResult(ok=False, reason="", started=datetime.now(timezone.utc),
                                 ended=datetime.now(timezone.utc))
        self.changed: set[str] = set()
        self.deleted: set[str] = set()
        self.any_change = False
        self.source: str = ""  # of the peer being tried
        self.rsh: str | None = None
        self.site_id = site_id(settings.resolved_state_dir())
        self.origin_before: Origin | None = None  # what the site publishes now
        self.origin_after: Origin | None = None  # what the serving peer offered after the transfer
        self.rsync_sums: dict[str, tuple[int, str]] = {}  # path -> (size, digest) rsync verified, last good rsync
        self._run_sums: dict[str, tuple[int, str]] = {}  # the same, of the rsync running now

    def finish(self, ok: bool, kind: str, reason: str) -> SyncResult:
        r = self.result
        r.ok, r.kind, r.reason = ok, kind, reason
        r.files_changed, r.files_deleted = len(self.changed), len(self.deleted)
        r.ended = datetime.now(timezone.utc)
        return r

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def explain(self, outcome: Outcome, peer: PeerPlan) -> str:
        if outcome.kind == "host-key" and self.plan.pin is not None:
            return f"{outcome.message} for {peer.name}; refusing to sync: {self.plan.pin.remedy()}"
        return outcome.message

    def on_line(self, line: str) -> None:
        change = rs.parse_change(line)
        if change is not None:
            if change.action == "delete":
                self.deleted.add(change.path)
            elif change.type == "f" and change.action == "transfer":
                self.changed.add(change.path)
                if change.digest:
                    self._run_sums[change.path] = (change.size, change.digest)
            if change.action == "delete" or (change.type != "d" and change.action != "attrs"):
                self.any_change = True  # folder times and attributes changed in place need no new generation
            self.emit(change)
            return
        progress = rs.parse_progress(line)
        if progress is not None:
            self.emit(progress)

    def list_source(self) -> tuple[Outcome | None, set[str] | None, bool]:
        cmd = rs.list_command(self.source, rsh=self.rsh, timeout=self.plan.timeout)
        proc = _run(cmd, on_line=None, stop_event=self.stop)
        if proc.stopped:
            return None, None, True
        outcome = classify(proc.code, proc.stderr)
        if not outcome.ok:
            return outcome, None, False
        return outcome, source_items(rs.parse_listing(proc.stdout)), False

    def transfer(self) -> tuple[Outcome | None, bool]:
        """rsync into staging, restarted at each rate change of the bandwidth timetable (:mod:`.bwslots`)."""
        proc = transfer_in_slots(Timetable.parse(self.plan.max_bw), zone(self.s.tz), self.stop, self.rsync, self.emit)
        if proc.stopped:
            return None, True
        return classify(proc.code, proc.stderr), False

    def rsync(self, max_bw: str, stop: threading.Event) -> Proc:
        """One rsync into staging at ``max_bw``; its statistics are added to the result."""
        cmd = rs.sync_command(self.source, self.plan.layout.staging, rsh=self.rsh,
                              timeout=self.plan.timeout, max_bw=max_bw, compress=self.s.sync_compress,
                              checksum=self.s.sync_checksum,
                              extra=rsync_filters(self.s.sync_include, self.s.sync_exclude))
        self.rsync_sums, self._run_sums = {}, {}
        proc = _run(cmd, on_line=self.on_line, stop_event=stop)
        if not proc.stopped and classify(proc.code, proc.stderr).ok:
            # Only a complete rsync: a stopped one may have reported a file whose check then failed.
            self.rsync_sums = self._run_sums
        stats = rs.parse_stats(proc.stdout)
        r = self.result
        r.bytes_sent += stats.bytes_sent
        r.bytes_received += stats.bytes_received
        r.literal_bytes += stats.literal_bytes
        r.matched_bytes += stats.matched_bytes
        if stats.bytes_received or stats.bytes_sent:
            self.emit(stats)
        return proc

    def run(self) -> SyncResult:
        """Rounds over the peers in order until one serves a complete transfer, with backoff between rounds."""
        s, lay = self.s, self.plan.layout
        self.published = generations.published_items(lay.library)
        self.origin_before = read_site_origin(lay.library)
        generations.seed_staging(lay.library)
        lay.staging.mkdir(parents=True, exist_ok=True)
        clock = time.monotonic()
        self.cleaned_up = False
        rounds = 0
        while True:
            rounds += 1
            failures: list[tuple[str, Attempt]] = []
            for peer in self.plan.peers:
                if self.stopped():
                    break
                attempt = self.try_peer(peer)
                if attempt.kind == "ok":
                    self.result.peer = None if peer.ssh_argv is None else peer.name
                    return self.complete()
                if attempt.kind == "stopped":
                    break
                failures.append((peer.name, attempt))
                if attempt.kind != "retry" or len(self.plan.peers) > 1:
                    log.warning("peer %s: %s%s", peer.name, attempt.reason,
                                "; trying the next peer" if peer != self.plan.peers[-1] else "")
                if len(self.plan.peers) > 1:
                    self.result.peers_skipped[peer.name] = attempt.reason
            if self.stopped():
                return self.finish(False, "stopped", "sync stopped before it finished; the next run resumes")
            reason = failures[0][1].reason if len(failures) == 1 else "; ".join(
                f"peer {name}: {a.reason}" for name, a in failures)
            if not any(a.kind == "retry" for _, a in failures):
                return self.finish(False, failures[0][1].kind, reason)
            delay = next_retry_delay(rounds, time.monotonic() - clock, s.sync_retry_deadline,
                                     self.retry_base, RETRY_CAP_SECONDS, self.rng)
            if delay is None:
                return self.finish(False, "gave-up", f"gave up after {self.result.attempts} attempt(s) "
                                   f"(setting sync_retry_deadline {s.sync_retry_deadline}s): {reason}")
            log.warning("attempt %d failed (%s); retrying in %.0fs", self.result.attempts, reason, delay)
            self.emit(RetryScheduled(self.result.attempts, delay, reason))
            if self.stop is not None:
                self.stop.wait(delay)
            else:
                time.sleep(delay)

    def try_peer(self, peer: PeerPlan) -> Attempt:
        """One attempt at one peer: connect once, compare origin versions, list and guard, transfer."""
        self.result.attempts += 1
        self.emit(AttemptStarted(self.result.attempts))
        self.source, self.rsh = peer.source, None
        conn = None
        if peer.ssh_argv is not None and not wait_out_pause(Timetable.parse(self.plan.max_bw), zone(self.s.tz),
                                                            self.stop, self.emit):
            return Attempt("stopped")
        if peer.ssh_argv is not None:
            self.emit(Phase("connect", peer.name))
            conn = Connection(list(peer.ssh_argv), peer.destination, connect_timeout=self.plan.connect_timeout,
                              env=rs.child_env())
            code, err = conn.open(self.stop)
            if self.stopped():
                conn.close()
                return Attempt("stopped")
            if code != 0:
                conn.close()
                return self.failed(classify(code, err), peer)
            self.rsh = conn.rsh()
        try:
            offered = self.ask_origin(conn, peer)
            refusal = peer_verdict(self.origin_before, offered, self.site_id)
            before = self.origin_before
            if refusal is None and offered is not None and before is not None and before.origin_id != offered.origin_id:
                log.warning("peer %s serves another origin (%s) than the published one (%s): versions cannot be "
                            "compared; the delete guard still applies", peer.name, offered.origin_id, before.origin_id)
            if refusal is not None:
                return Attempt("retry" if refusal.lagging else "fatal", f"not used: {refusal.reason}")
            self.emit(Phase("listing", peer.source))
            outcome, items, stopped = self.list_source()
            if stopped:
                return Attempt("stopped")
            if items is None:
                assert outcome is not None  # only a stopped command has none
                return self.failed(outcome, peer)
            guard = delete_guard(self.published, items, self.s.sync_delete_guard, self.s.sync_allow_mass_delete)
            if guard:
                return Attempt("guard", guard)
            while True:
                self.emit(Phase("transfer", peer.source))
                outcome, stopped = self.transfer()
                if stopped:
                    return Attempt("stopped")
                assert outcome is not None  # only a stopped command has none
                if outcome.ok:
                    break
                if outcome.kind != "disk-full" or self.cleaned_up:
                    return self.failed(outcome, peer)
                # Free what can go (old generations no reader holds), then try once more at once.
                self.cleaned_up = True
                freed = self.free_space()
                log.warning("attempt %d: %s; removed old generations %s, retrying once",
                            self.result.attempts, outcome.message, freed or "(none to remove)")
                self.emit(RetryScheduled(self.result.attempts, 0.0, outcome.message))
                self.result.attempts += 1
                self.emit(AttemptStarted(self.result.attempts))
            # The content is at least what the peer offered before; what it offers after bounds it (when
            # rsync changed nothing, staging is what it offered: no second query).
            changed = offered is not None and (self.any_change or self.changed or self.deleted)
            self.origin_after = (self.ask_origin(conn, peer) or offered) if changed else offered
            return Attempt("ok")
        finally:
            if conn is not None:
                conn.close()

    def failed(self, outcome: Outcome, peer: PeerPlan) -> Attempt:
        if outcome.retryable:
            return Attempt("retry", outcome.message)
        return Attempt("fatal", self.explain(outcome, peer))

    def ask_origin(self, conn: Connection | None, peer: PeerPlan) -> Origin | None:
        """The peer's origin manifest, or None (a local source, an older server, not ready yet)."""
        if conn is None:
            return None
        code, out, err = conn.run(ORIGIN_COMMAND, timeout=max(60, self.plan.timeout))
        if code != 0:
            log.info("peer %s has no origin manifest (%s)", peer.name, (err.strip().splitlines() or ["-"])[-1])
            return None
        try:
            return parse_origin(out)
        except ValueError as exc:
            log.warning("peer %s: %s; not used to compare versions", peer.name, exc)
            return None


def run_sync(
    settings: Settings,
    *,
    on_event: Callable[[Event], None] | None = None,
    stop_event: threading.Event | None = None,
    source: str | None = None,
    rng: random.Random | None = None,
    retry_base: float = RETRY_BASE_SECONDS,
) -> SyncResult:
    """Run one sync (blocking) and return its result; never raises for expected failures.

    ``on_event`` receives :class:`Phase`, :class:`AttemptStarted`, :class:`RetryScheduled`
    and rsync's :class:`FileChange`, :class:`Progress` and :class:`RsyncStats`.
    Setting ``stop_event`` ends rsync promptly (partial files kept) and returns a
    not-ok result.  ``source`` pulls from a local folder instead of SYNC_PEER.
    """
    started = datetime.now(timezone.utc)
    try:
        plan = prepare(settings, source=source)
    except UserError as exc:
        return SyncResult(ok=False, reason=str(exc), started=started, ended=datetime.now(timezone.utc), kind="config")
    lock = RunLock(plan.layout.lock)  # children inherit it: held while any of them runs
    try:
        if not lock.acquire():
            return SyncResult(ok=False, reason=f"another sync of {plan.layout.library} is already running "
                              f"(lock {plan.layout.lock})", started=started,
                              ended=datetime.now(timezone.utc), kind="busy")
    except OSError as exc:
        return SyncResult(ok=False, reason=os_reason("cannot lock the library", exc), started=started,
                          ended=datetime.now(timezone.utc), kind="config")
    try:
        run = _Run(settings, plan, on_event, stop_event, rng or random.Random(), retry_base)
        run.result.started = started
        try:
            return run.run()
        except OSError as exc:
            return run.finish(False, "fatal", os_reason("sync failed", exc))
    finally:
        lock.release()
