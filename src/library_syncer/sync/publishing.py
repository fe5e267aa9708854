"""The end of a sync run: clean-up, the second delete guard, manifest, publication, origin record, prune.

:class:`PublishSteps` is the part of a run (``sync/run.py``) after a complete transfer;
it only touches the staging tree and the generations, never the network.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Callable

from ..config import Settings
from ..errors import UserError
from ..publish import generations
from ..vcsp.manifest import update_manifest
from ..vcsp.origin import Origin, vouched_digests
from ..vcsp.published import read_published
from .cleanup import remove_empty_items, remove_unselected
from .guard import publish_guard
from .origin_state import record_origin
from .plan import SyncPlan
from .result import Event, Phase, SyncResult, held_back_text
from .selection import is_selected

log = logging.getLogger(__name__)


class PublishSteps:
    """The publishing steps of a run; the run object provides these attributes."""

    s: Settings
    plan: SyncPlan
    result: SyncResult
    emit: Callable[[Event], None]
    stop: threading.Event | None
    rng: random.Random
    any_change: bool
    site_id: str
    origin_before: Origin | None
    origin_after: Origin | None
    rsync_sums: dict[str, tuple[int, str]]

    def finish(self, ok: bool, kind: str, reason: str) -> SyncResult:
        raise NotImplementedError

    def free_space(self) -> list[int]:
        """Disk full: remove retired generations now (never the current or previous one, nor one a
        subscriber still reads); returns their numbers."""
        try:
            return generations.prune(self.plan.layout.library, 0.0, lease_grace=self.s.generation_grace_seconds)
        except OSError as exc:
            log.warning("%s", os_reason("removing old generations failed", exc))
            return []

    def complete(self) -> SyncResult:
        lay, r, s = self.plan.layout, self.result, self.s
        self.emit(Phase("cleanup"))
        emptied = remove_empty_items(lay.staging)
        if emptied:
            log.info("removed item folders left empty: %s", ", ".join(emptied))
            self.any_change = True
        # Second brake, on what would be published: counts items removed at the source (also
        # while the transfer ran), left out by validation and filtered.
        served = read_published(generations.current_root(lay.library))
        listed = set(served.listed)
        # Items the site filter leaves out are removed on purpose: once, logged, not counted by the guard.
        unselected = {f for f in listed if not is_selected(f, s.sync_include, s.sync_exclude)}
        if remove_unselected(lay.staging, s.sync_include, s.sync_exclude):
            self.any_change = True
        r.filtered_out = sorted(unselected)
        if unselected:
            log.warning("items removed by the site filter (sync_include/sync_exclude): %s",
                        ", ".join(r.filtered_out))

        def approve(draft):
            refusal = publish_guard(listed, draft, s.sync_delete_guard, s.sync_allow_mass_delete,
                                    filtered=unselected)
            return refusal and refusal.replace("delete guard:", "delete guard (after the transfer):", 1)

        self.emit(Phase("manifest"))
        try:
            # Every file rsync wrote is known (never "racy"); those the digests vouch for are not read.
            known: dict[str, tuple[int, dict[str, str]]] = {p: (n, {}) for p, (n, _) in self.rsync_sums.items()}
            known.update(vouched_digests(self.origin_after, self.rsync_sums, s.sync_checksum))
            report = update_manifest(lay.staging, s.library_name, published=served, approve=approve, known=known)
        except UserError as exc:
            return self.finish(False, "fatal", f"manifest: {exc}")
        r.problems = list(report.problems)
        r.manifest_files_read, r.manifest_bytes_read = report.files_hashed, report.bytes_hashed
        r.held_back = dict(report.held_back)
        if report.refused:
            return self.finish(False, "guard", report.refused)
        r.items = len(report.items)
        r.library_bytes = sum(i.size for i in report.items)
        r.library_version = report.library_version
        for problem in report.problems:
            log.warning("item left out of the manifest: %s", problem)
        if self.needs_publish(report.changed or report.files_written > 0):
            self.emit(Phase("publish"))
            try:
                r.generation = generations.publish(lay.library, keep=set(report.held_back))
            except OSError as exc:
                return self.finish(False, "fatal", os_reason("publishing failed", exc))
            except UserError as exc:
                return self.finish(False, "fatal", str(exc))
        self.record_origin()
        self.emit(Phase("prune"))
        try:
            generations.prune(lay.library, s.generation_grace_seconds)
        except OSError as exc:
            log.warning("%s", os_reason("removing old generations failed", exc))
        if r.held_back:
            return self.finish(True, "degraded", f"{len(r.held_back)} item(s) held back at their last good "
                               f"version: {held_back_text(r.held_back)}")
        return self.finish(True, "ok", "")

    def record_origin(self) -> None:
        """Keep the origin version the published generation now holds (also when nothing changed)."""
        offered, lay, r = self.origin_after, self.plan.layout, self.result
        number = r.generation or generations.current_generation(lay.library)
        if offered is None or number is None:
            return
        before = self.origin_before
        if r.generation is None and before is not None and before.origin_id == offered.origin_id \
                and before.version > offered.version:
            return  # nothing published from this peer: the generation keeps its newer record
        try:
            record_origin(lay.library, number, offered, own_id=self.site_id, upstream_version=offered.version,
                          held_back=sorted(r.held_back))
        except (OSError, UserError) as exc:
            log.warning("cannot record the origin version of generation %d: %s", number, exc)
            return
        r.origin_id, r.origin_version = offered.origin_id, offered.version
        if offered.path and offered.upstream_version is not None:
            r.peer_behind = max(0, offered.upstream_version - offered.version)

    def needs_publish(self, manifest_changed: bool) -> bool:
        current = generations.current_root(self.plan.layout.library)
        if current is None or manifest_changed or self.any_change:
            return True
        try:
            return (current / "lib.json").read_bytes() != (self.plan.layout.staging / "lib.json").read_bytes()
        except OSError:
            return True


def os_reason(what: str, exc: OSError) -> str:
    """One line for a failed file-system step (a full disk said as such)."""
    if exc.errno == 28:
        return f"{what}: the disk of the library is full ({exc.filename or ''})"
    return f"{what}: {exc.strerror} ({exc.filename or ''})"
