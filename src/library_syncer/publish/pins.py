"""Generation pinning: one subscriber's multi-request read sees one generation.

vCenter reads a library in many requests: ``lib.json``, ``items.json``, each
``item.json``, then the files.  If a sync switches ``L/current`` between two of
them, the files no longer match the manifest it read (a 404 for a removed item, a
different size for a changed file).  So each subscriber (its address) is pinned
to the generation it was served when it fetched ``lib.json`` (or its first
request); its later requests are answered from that generation until it fetches
``lib.json`` again, stays idle for ``ttl`` seconds, or the generation is gone.

A pinned generation is kept from pruning by a lease file
``L/.library-syncer/leases/NNNNNN`` whose mtime the web server refreshes while
the pin is used; this works when the web server and the sync run in separate
processes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .generations import Layout, current_generation, lease_path

log = logging.getLogger(__name__)

ENTRY_POINT = ("lib.json",)


@dataclass
class Pin:
    """The generation a subscriber reads, and when it last asked for something."""

    generation: int
    seen: float


def choose_generation(pin: Pin | None, current: int, parts: tuple[str, ...], now: float, ttl: float,
                      exists: Callable[[int], bool]) -> int:
    """The generation to answer a request from (pure rule; ``exists`` tells if a generation is still there)."""
    if pin is None or parts == ENTRY_POINT or now - pin.seen > ttl or pin.generation > current:
        return current
    return pin.generation if exists(pin.generation) else current


class GenerationPins:
    """Root provider for the web app over a client library layout, with per-subscriber pins.

    Called as ``pins(client, parts)`` from worker threads; returns the folder to
    serve ``parts`` from, or ``fallback`` when nothing is published yet.
    """

    def __init__(self, library: Path, ttl: float, fallback: Path, *, max_clients: int = 4096,
                 clock: Callable[[], float] = time.time) -> None:
        self.layout = Layout(library)
        self.ttl = ttl
        self.fallback = fallback
        self.max_clients = max_clients
        self.clock = clock
        self._pins: OrderedDict[str, Pin] = OrderedDict()
        self._leased: dict[int, float] = {}
        self._lock = threading.Lock()
        self._lease_warned = False

    def __call__(self, client: str, parts: tuple[str, ...]) -> Path:
        current = current_generation(self.layout.library)
        if current is None:
            return self.fallback
        now = self.clock()
        with self._lock:
            pin = self._pins.get(client)
            number = choose_generation(pin, current, parts, now, self.ttl,
                                       lambda n: self.layout.generation(n).is_dir())
            if pin is not None and pin.generation != number:
                log.debug("subscriber %s moves from generation %d to %d", client, pin.generation, number)
            self._pins[client] = Pin(number, now)
            self._pins.move_to_end(client)
            while len(self._pins) > self.max_clients:
                self._pins.popitem(last=False)
            self._renew_lease(number, now)
        return self.layout.generation(number)

    def pinned(self, client: str) -> int | None:
        """The generation ``client`` is pinned to (for status and tests)."""
        with self._lock:
            pin = self._pins.get(client)
        return pin.generation if pin else None

    def _renew_lease(self, number: int, now: float) -> None:
        # At most every few seconds per generation: cheap, and far finer than the grace period.
        if now - self._leased.get(number, float("-inf")) < min(30.0, self.ttl / 4):
            return
        self._leased[number] = now
        path = lease_path(self.layout.library, number)
        try:
            path.parent.mkdir(exist_ok=True)
            path.touch()
            os.utime(path, (now, now))
        except OSError as exc:
            if not self._lease_warned:  # a read-only library still serves; old generations may go sooner
                log.warning("cannot record generation use in %s: %s", path.parent, exc)
                self._lease_warned = True
