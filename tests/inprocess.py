"""In-process test clients: the real CLI through click's CliRunner, a real aiohttp app through aiohttp's
TestServer/TestClient on a loop thread of its own.

Use them where the subject is argument handling, routes, auth or rendering; a real process (support.cli,
server_fixture, client_fixture) stays where the process, a socket or a tool is what is tested.

Usage::

    r = run_cli("serve", tmp_path / "nope")          # like support.cli: returncode, stdout, stderr
    with AppClient(create_app(library)) as web:
        assert web.get("/lib.json").status == 200
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from library_syncer import logs
from library_syncer.cli import main

_SETTING_PREFIXES = ("SYNC_", "SYNCER_", "LIBRARY_", "TLS_")


@contextlib.contextmanager
def _fresh_logging():
    """The root logger as a new process has it; the test run's own handlers and level come back after."""
    root = logging.getLogger()
    handlers, level, fmt = list(root.handlers), root.level, logs.current_format()
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logs._current_format = fmt  # noqa: SLF001 (what configure() records)


def run_cli(*args: str | os.PathLike, env: dict | None = None, input: str | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``library-syncer ARGS`` in this process with the environment :func:`support.cli` gives a child
    (no setting variables of the test run, ``env`` on top); returns returncode, stdout and stderr.

    An exception the CLI does not handle is exit code 1 with its traceback on stderr, as in a process.
    """
    cleared: dict[str, str | None] = {k: None for k in os.environ if k.startswith(_SETTING_PREFIXES)}
    cleared.update(env or {})
    argv = [str(a) for a in args]
    old_cwd = Path.cwd()
    with _fresh_logging():
        if cwd is not None:
            os.chdir(cwd)
        try:
            result = CliRunner().invoke(main, argv, env=cleared, input=input, prog_name="library-syncer")
        finally:
            os.chdir(old_cwd)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["library-syncer", *argv], result.exit_code, result.stdout, stderr)


@dataclass
class Answer:
    """One HTTP response, read whole."""

    status: int
    headers: Any  # case-insensitive multidict
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class AppClient:
    """A real aiohttp app served by aiohttp's TestServer (127.0.0.1, a free port) on a loop in its own
    thread; blocking ``get``/``post``/``request`` calls for synchronous tests. A context manager."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._client: TestClient | None = None

    def _call(self, coro, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> "AppClient":
        self._thread.start()

        async def start() -> TestClient:
            client = TestClient(TestServer(self.app))
            await client.start_server()
            return client

        self._client = self._call(start())
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._client is not None:
                self._call(self._client.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self.loop.close()

    @property
    def port(self) -> int:
        assert self._client is not None and self._client.port is not None
        return self._client.port

    def request(self, method: str, path: str, **kwargs) -> Answer:
        """``method path`` (aiohttp client keywords: headers, auth, data, allow_redirects …)."""
        assert self._client is not None, "use AppClient as a context manager"
        client = self._client

        async def ask() -> Answer:
            async with client.request(method, path, **kwargs) as resp:
                return Answer(resp.status, resp.headers, await resp.read())

        return self._call(ask())

    def get(self, path: str, **kwargs) -> Answer:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> Answer:
        return self.request("POST", path, **kwargs)
