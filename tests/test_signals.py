"""The one owner of the stop signals: first graceful, second forced, SIGHUP at every arrival, handlers restored."""

from __future__ import annotations

import asyncio
import os
import signal

from library_syncer.util.signals import capture_signals


async def _until(predicate, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def test_first_signal_graceful_second_forced_and_handlers_restored():
    calls: list[tuple[str, str]] = []

    def previous(signum, frame):  # pragma: no cover - never called
        raise AssertionError("the previous handler ran while captured")

    old_term = signal.signal(signal.SIGTERM, previous)
    try:
        async def main() -> None:
            with capture_signals(lambda s: calls.append(("graceful", s.name)),
                                 lambda s: calls.append(("forced", s.name))):
                os.kill(os.getpid(), signal.SIGTERM)
                await _until(lambda: len(calls) == 1)
                os.kill(os.getpid(), signal.SIGINT)
                await _until(lambda: len(calls) == 2)
                os.kill(os.getpid(), signal.SIGTERM)
                await _until(lambda: len(calls) == 3)

        asyncio.run(main())
        assert calls == [("graceful", "SIGTERM"), ("forced", "SIGINT"), ("forced", "SIGTERM")]
        assert signal.getsignal(signal.SIGTERM) is previous
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, old_term)


def test_already_stopping_makes_the_first_signal_forced():
    calls: list[str] = []
    stopping = asyncio.Event()

    async def main() -> None:
        with capture_signals(lambda s: calls.append("graceful"), lambda s: calls.append("forced"),
                             stopping=stopping.is_set):
            stopping.set()  # the process stops on its own (e.g. a server failed)
            os.kill(os.getpid(), signal.SIGTERM)
            await _until(lambda: calls)

    asyncio.run(main())
    assert calls == ["forced"]


def test_without_forced_a_second_signal_is_ignored_and_sighup_runs_each_time():
    calls: list[str] = []
    before_hup = signal.getsignal(signal.SIGHUP)  # SIG_IGN under nohup, else SIG_DFL

    async def main() -> None:
        with capture_signals(lambda s: calls.append("stop"), also={signal.SIGHUP: lambda s: calls.append("reload")}):
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGTERM, signal.SIGHUP):
                before = len(calls)
                os.kill(os.getpid(), sig)
                if sig == signal.SIGTERM and before == 2:  # the ignored one: wait for the next to land
                    continue
                await _until(lambda: len(calls) > before)

    asyncio.run(main())
    assert calls == ["reload", "stop", "reload"]
    assert signal.getsignal(signal.SIGHUP) is before_hup  # restored
