"""A relay site: a client that also serves the generation it publishes to the sites behind it.

It syncs from its upstream peers and publishes for its own vCenter exactly as a client
does (:class:`~.client.ClientDaemon`), and runs a hardened sshd of its own
(:mod:`.server_setup` with ``relay=True``) whose forced command exports the generation
``L/current`` points to when a session starts, leased for that session, with the origin
manifest the relay received for it (:mod:`~library_syncer.transport.dispatch`).  The
sites it serves are the keys in ``relay_keys_dir``; SIGHUP re-reads them.  Staging and
the relay's state are never exported.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any, Callable, Coroutine

from ..config import Settings
from .client import ClientDaemon
from .server import serve_sites
from .server_setup import ServerPlan


class RelayDaemon(ClientDaemon):
    """Client daemon + the relay's sshd, stopped together."""

    def __init__(self, settings: Settings, plan: ServerPlan, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.plan = plan
        self._reload = asyncio.Event()

    def more_signals(self) -> dict[signal.Signals, Callable[[signal.Signals], None]]:
        return {signal.SIGHUP: lambda _: self._reload.set()}

    def more_services(self) -> list[Coroutine[Any, Any, Any]]:
        return [serve_sites(self.plan, self.stop, self._reload)]
