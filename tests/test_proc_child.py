"""util/proc.Child, the runner of long-running children (sshd, Caddy): lines, exit, stop with a grace then kill."""

from __future__ import annotations

import asyncio
import signal
import time

from library_syncer.util.childenv import child_environ
from library_syncer.util.proc import Child, LineSplitter

from support import require_tool


def test_exit_is_the_process_alone_and_lines_come_until_the_last_writer_is_gone():
    lines: list[str] = []

    async def main() -> tuple[int, list[str]]:
        # the background subshell keeps the pipe open after sh has exited (as sshd's sessions do)
        child = Child(["sh", "-c", "(sleep 1; echo late >&2) & echo early >&2"], env=child_environ(),
                      on_line=lines.append)
        code = await asyncio.wait_for(child.wait(), 10)
        seen_at_exit = list(lines)
        await child.lines_done(10)
        return code, seen_at_exit

    code, seen_at_exit = asyncio.run(main())
    assert code == 0
    assert "late\n" not in seen_at_exit
    assert lines == ["early\n", "late\n"]


def test_stop_sends_sigterm_then_kills_after_the_grace():
    killed: list[bool] = []

    async def main(script: str) -> tuple[int, float]:
        lines: list[str] = []
        child = Child(["sh", "-c", script], env=child_environ(), on_line=lines.append, merge_output=True)
        deadline = time.monotonic() + 10
        while not lines and time.monotonic() < deadline:  # the trap is set once it has spoken
            await asyncio.sleep(0.01)
        started = time.monotonic()
        code = await asyncio.wait_for(child.stop(0.5, on_kill=lambda: killed.append(True)), 10)
        return code, time.monotonic() - started

    code, took = asyncio.run(main("echo up; exec sleep 30"))
    assert code == -signal.SIGTERM and not killed and took < 5
    code, took = asyncio.run(main("trap '' TERM; echo up; while :; do sleep 0.05; done"))
    assert code == -signal.SIGKILL and killed == [True] and 0.5 <= took < 5


def test_a_guarded_child_runs_under_the_parent_death_signal():
    require_tool("setpriv", "util-linux")

    async def main() -> list[str]:
        child = Child(["true"], env=child_environ(), on_line=lambda line: None, guard=True)
        await asyncio.wait_for(child.wait(), 10)
        return list(child.proc.args)

    assert asyncio.run(main())[:3] == ["setpriv", "--pdeathsig", "KILL"]


def test_lines_are_cut_at_cr_and_lf():
    s = LineSplitter()
    assert s.feed("a\r\nb\rc") == ["a", "b"]
    assert s.feed("d\n\n") == ["cd"]
    assert s.close() == []
    s.feed("tail")
    assert s.close() == ["tail"]
