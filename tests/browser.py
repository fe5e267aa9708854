"""Real headless Chromium for tests: screenshots of a page and its DOM after load.

Usage::

    from browser import screenshot, dump_dom, visible_text

    png = screenshot("http://127.0.0.1:8080/", "fleet-phone.png", width=390, height=844)
    text = visible_text(dump_dom("http://127.0.0.1:8080/"))
    assert "NEVER SEEN" in text

- ``screenshot(url, name, width, height)`` -> the PNG's Path. A relative ``name``
  goes under :func:`artifacts_dir` (kept after the run for people to look at).
- ``dump_dom(url)`` -> the serialized DOM once the page has loaded.
- ``visible_text(html)`` -> the text a person sees (no tags, styles or scripts,
  whitespace collapsed), for assertions.
- Basic credentials can go in the URL (``http://user:TOKEN@host:port/``).

Artifacts go to ``$SYNCER_TEST_ARTIFACTS`` or ``tests/artifacts/`` (gitignored).
Every run has a bounded timeout and its own throw-away profile; a missing
``chromium`` fails the test (Debian package ``chromium``), it never skips.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from support import require_tool

DEFAULT_TIMEOUT = 60.0
_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
    "--no-default-browser-check", "--disable-extensions", "--disable-sync", "--disable-background-networking",
    "--disable-component-update", "--disable-default-apps", "--mute-audio", "--password-store=basic",
    "--run-all-compositor-stages-before-draw",
]


def artifacts_dir() -> Path:
    """Where screenshots are kept: ``$SYNCER_TEST_ARTIFACTS`` or ``tests/artifacts/`` (created)."""
    folder = Path(os.environ.get("SYNCER_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    chromium = require_tool("chromium", "chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        proc = subprocess.Popen(
            [chromium, *_FLAGS, f"--user-data-dir={profile}", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"chromium did not finish within {timeout}s: {' '.join(args)}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(errors="replace"),
                                         err.decode(errors="replace"))
    if result.returncode != 0:
        pytest.fail(f"chromium exited with {result.returncode}: {result.stderr[-2000:]}")
    return result


def screenshot(url: str, name: str | os.PathLike, width: int = 1280, height: int = 800,
               timeout: float = DEFAULT_TIMEOUT) -> Path:
    """A PNG of ``url`` in a ``width`` x ``height`` window; returns its path (under the artifacts folder
    when ``name`` is relative)."""
    path = Path(name)
    if not path.is_absolute():
        path = artifacts_dir() / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    _run([f"--window-size={width},{height}", f"--screenshot={path}", url], timeout)
    if not path.is_file() or path.stat().st_size == 0:
        pytest.fail(f"chromium wrote no screenshot of {url} to {path}")
    return path


def dump_dom(url: str, width: int = 1280, height: int = 800, timeout: float = DEFAULT_TIMEOUT) -> str:
    """The DOM of ``url`` (serialized HTML) after the page has loaded."""
    return _run([f"--window-size={width},{height}", "--dump-dom", url], timeout).stdout


class _Text(HTMLParser):
    HIDDEN = {"style", "script", "head", "title", "template", "noscript"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN and self.hidden:
            self.hidden -= 1
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def visible_text(html: str) -> str:
    """The text of a page as a person reads it: tags, styles and scripts dropped, whitespace collapsed."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    return " ".join("".join(parser.parts).split())
