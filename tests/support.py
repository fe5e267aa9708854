"""Test utilities: free ports, bounded waits, required tools, running the CLI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(cond: Callable[[], object], timeout: float = 30.0, what: str = "condition", interval: float = 0.05):
    """Poll ``cond`` until it returns a truthy value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Wait until something accepts TCP connections on host:port."""

    def ok() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    wait_until(ok, timeout, f"{host}:{port} to accept connections")


def require_tool(name: str, package: str) -> str:
    """Path of a required executable; a missing one fails the test loudly (never skips)."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if not path:
        pytest.fail(f"required tool {name!r} is missing: install the Debian package {package!r} (scripts/setup.sh does)")
    return path


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM ``proc`` if it runs, wait up to ``timeout`` seconds, then kill it."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def cli(*args: str | os.PathLike, env: dict | None = None, timeout: float = 120, input: str | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``library-syncer ARGS`` as a real subprocess; returns the completed process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "SYNCER_", "LIBRARY_", "TLS_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "library_syncer", *map(str, args)],
        env=full_env, capture_output=True, text=True, timeout=timeout, input=input, cwd=cwd,
    )


def cli_popen(*args: str | os.PathLike, env: dict | None = None, **kw) -> subprocess.Popen:
    """Start ``library-syncer ARGS`` in the background (caller terminates it)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "SYNCER_", "LIBRARY_", "TLS_"))}
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "library_syncer", *map(str, args)], env=full_env, **kw)


def port_refused(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True


def processes(marker: str) -> dict[int, tuple[int, str, list[str]]]:
    """pid -> (ppid, state, argv) of the live processes whose argv mentions ``marker`` (zombies left out)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        words = [a.decode(errors="replace") for a in argv if a]
        if fields[0] != "Z" and any(marker in w for w in words):
            found[int(entry)] = (int(fields[1]), fields[0], words)
    return found
