"""Telling the site's vCenter to sync its subscribed library after a publication that changed something.

Optional (``vcenter_url``; off by default).  It runs in the background of the client daemon,
after the publication is done: a failure is retried a few times with a growing pause, then
reported on the status document, the metrics and the webhook (``vcenter_sync_failed``, and
``vcenter_sync_recovered`` at the next success).  It never fails or undoes the publication:
vCenter still picks the new version up at its own next sync.  Publications that come while
a request runs are folded into one more request for the newest generation.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from ..config import Settings
from ..util.fmt import iso_utc
from ..vcenter.api import SyncAccepted, Target, VcenterError, request_sync
from ..vcenter.trust import describe_trust, tls_trust
from .site_metrics import ClientMetrics

log = logging.getLogger(__name__)

TRIES = 4
FIRST_PAUSE = 2.0  # seconds before the second try; doubled before each next one
REQUEST_TIMEOUT = 30.0

Webhook = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class VcenterRequest:
    """The latest request to vCenter: for which generation, how it went."""

    generation: int
    started: datetime
    state: str = "running"  # running, ok, failed
    tries: int = 0
    ended: datetime | None = None
    error: str | None = None
    api: str | None = None  # which REST form answered: "api" or "rest"
    library_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"started": iso_utc(self.started), "ended": iso_utc(self.ended)}


def target_of(settings: Settings) -> Target:
    """The request target from the settings (reads the password file; ConfigError when unusable)."""
    s = settings
    assert s.vcenter_url and s.vcenter_user and s.vcenter_library  # require_vcenter() checked them
    return Target(s.vcenter_url, s.vcenter_user, s.vcenter_password_value(), s.vcenter_library,
                  tls_trust(s.vcenter_ca_file, s.vcenter_thumbprint))


class VcenterNotifier:
    """Asks vCenter to sync after each publication; keeps the latest request for the status page."""

    def __init__(self, settings: Settings, metrics: ClientMetrics, stop: asyncio.Event,
                 webhook: Webhook | None = None) -> None:
        self.settings, self.metrics, self.stop, self.webhook = settings, metrics, stop, webhook
        self.target = target_of(settings)
        self.last: VcenterRequest | None = None
        self._wanted: int | None = None
        self._active = False

    def published(self, generation: int) -> Awaitable[None] | None:
        """Note a new generation; the coroutine to run in the background, or None when one runs already."""
        self._wanted = generation
        if self._active:
            return None
        self._active = True
        return self._run()

    async def _run(self) -> None:
        try:
            while self._wanted is not None and not self.stop.is_set():
                generation, self._wanted = self._wanted, None
                await self._request(generation)
        finally:
            self._active = False

    async def _request(self, generation: int) -> None:
        previous = self.last
        req = self.last = VcenterRequest(generation, datetime.now(timezone.utc))
        library = self.settings.vcenter_library
        accepted: SyncAccepted | None = None
        for attempt in range(1, TRIES + 1):
            req.tries = attempt
            try:
                accepted = await request_sync(self.target, timeout=REQUEST_TIMEOUT)
                break
            except Exception as exc:  # noqa: BLE001 (a bug here must not end the daemon's loop: reported)
                if not isinstance(exc, VcenterError):
                    log.exception("vCenter: unexpected error")
                    exc = VcenterError(f"internal error: {exc}", retryable=False)
                req.error = str(exc)
                last = not exc.retryable or attempt == TRIES
                log.warning("vCenter: sync of library %r not requested (try %d of %d%s): %s", library, attempt,
                            TRIES, ", not retried" if last and attempt < TRIES else "", exc)
                if last or await self._stopped_within(FIRST_PAUSE * 2 ** (attempt - 1)):
                    break
        req.ended = datetime.now(timezone.utc)
        self.metrics.vcenter_last.set(req.ended.timestamp())
        if accepted is not None:
            req.state, req.error, req.api, req.library_id = "ok", None, accepted.api, accepted.library_id
            self.metrics.vcenter_requests.labels("ok").inc()
            self.metrics.vcenter_last_ok.set(1)
            log.info("vCenter: sync of library %r (id %s) requested for generation %d (%s API, %d tr%s)",
                     library, accepted.library_id, generation, accepted.api, attempt, "y" if attempt == 1 else "ies")
            if previous is not None and previous.state == "failed":
                await self._report("vcenter_sync_recovered", req)
            return
        req.state = "failed"
        self.metrics.vcenter_requests.labels("failed").inc()
        self.metrics.vcenter_last_ok.set(0)
        log.error("vCenter: sync of library %r for generation %d not requested after %d tr%s: %s (the generation "
                  "stays published; vCenter picks it up at its own next sync)", library, generation, req.tries,
                  "y" if req.tries == 1 else "ies", req.error)
        await self._report("vcenter_sync_failed", req)

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def _report(self, event: str, req: VcenterRequest) -> None:
        if self.webhook is not None:
            s = self.settings
            await self.webhook(event, {"vcenter": s.vcenter_url, "library": s.vcenter_library, **req.to_dict()})

    def document(self) -> dict[str, Any]:
        """The vCenter part of the status document: the settings (no password) and the latest request."""
        s = self.settings
        return {"url": s.vcenter_url, "user": s.vcenter_user, "library": s.vcenter_library,
                "trust": describe_trust(s.vcenter_ca_file, s.vcenter_thumbprint),
                "last_request": self.last.to_dict() if self.last else None}
