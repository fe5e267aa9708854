"""A relay site: a client that also serves the generation it publishes to the sites behind it.

It syncs from its upstream peers and publishes for its own vCenter exactly as a client
does (:class:`~.client.ClientDaemon`), and runs a hardened sshd of its own
(:mod:`.server_setup` with ``relay=True``) whose forced command exports the generation
``L/current`` points to when a session starts, leased for that session, with the origin
manifest the relay received for it (:mod:`~library_syncer.transport.dispatch`).  The
sites it serves are the keys in ``relay_keys_dir``; SIGHUP re-reads them.  Their reports
(and those the relays behind it forward) go upstream with the relay's own
(:mod:`.relay_reports`).  Staging and the relay's state are never exported.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any, Callable, Coroutine

from ..config import Settings
from .client import ClientDaemon
from .server import load_site_fleet, serve_sites
from .relay_reports import forward_loop
from .server_setup import REPORTS_DIR, ServerPlan


class RelayDaemon(ClientDaemon):
    """Client daemon + the relay's sshd, stopped together."""

    def __init__(self, settings: Settings, plan: ServerPlan, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.plan = plan
        self._reload = asyncio.Event()

    def more_signals(self) -> dict[signal.Signals, Callable[[signal.Signals], None]]:
        return {signal.SIGHUP: lambda _: self._reload.set()}

    def _upstream_peer(self) -> str | None:
        last = self.state.last
        return last.peer if last is not None else None

    def more_services(self) -> list[Coroutine[Any, Any, Any]]:
        return [serve_sites(self.plan, load_site_fleet(self.plan), self.stop, self._reload),
                forward_loop(self.settings, self.plan.state_dir / REPORTS_DIR, self._upstream_peer, self.stop)]
