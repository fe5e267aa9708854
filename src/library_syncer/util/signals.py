"""The one owner of SIGTERM/SIGINT (and SIGHUP where a role reloads): first signal graceful, second forced.

:func:`capture_signals` installs handlers on the running asyncio loop for as long as
its ``with`` block runs and puts the previous handlers back when it ends.  The first
SIGTERM/SIGINT calls ``graceful``; one that arrives while the process is already
stopping calls ``forced`` (nothing when there is none).  "Already stopping" is what
``stopping()`` says when given (e.g. the stop event of a daemon that may also stop on
its own), else whether a stop signal was received before.  ``also`` maps further
signals (SIGHUP) to a callback run at every arrival.  Callbacks receive the signal
and run in the loop's thread; the logging is theirs, so each role words its own lines.
One capture per loop at a time (they do not nest).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Callable, Iterator, Mapping

Handler = Callable[[signal.Signals], None]
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def capture_signals(
    graceful: Handler,
    forced: Handler | None = None,
    *,
    stopping: Callable[[], bool] | None = None,
    also: Mapping[signal.Signals, Handler] | None = None,
) -> Iterator[None]:
    """Route the stop signals (and those in ``also``) to the callbacks while the block runs."""
    loop = asyncio.get_running_loop()
    received = False

    def on_stop(sig: signal.Signals) -> None:
        nonlocal received
        again = stopping() if stopping is not None else received
        received = True
        if not again:
            graceful(sig)
        elif forced is not None:
            forced(sig)

    handlers: dict[signal.Signals, Callable[[signal.Signals], None]] = {sig: on_stop for sig in STOP_SIGNALS}
    handlers.update(also or {})
    previous = {sig: signal.getsignal(sig) for sig in handlers}
    try:
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler, sig)
        yield
    finally:
        for sig, before in previous.items():
            loop.remove_signal_handler(sig)
            if before is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, before)
