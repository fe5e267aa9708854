"""Logging set-up: readable lines or JSON lines, each line of a sync tagged with its run id.

The run id lives in a context variable: :func:`run_context` sets it around a
sync (``asyncio.to_thread`` and :func:`in_context` carry it into worker threads).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
from typing import Callable, Iterator

from pythonjsonlogger.json import JsonFormatter

_current_format = "text"  # what configure() last set
RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s:%(run)s %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _RunIdFilter(logging.Filter):
    """Adds ``run_id`` (or None) and ``run`` (" [run ID]" or "") to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = RUN_ID.get()
        record.run_id = run_id
        record.run = f" [run {run_id}]" if run_id else ""
        return True


class _JsonLines(JsonFormatter):
    def process_log_record(self, log_record: dict) -> dict:
        log_record.pop("run", None)
        if log_record.get("run_id") is None:
            log_record.pop("run_id", None)
        return log_record


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each line (never to a closed stand-in)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(fmt: str = "text", *, verbose: bool = False) -> None:
    """Send log lines to stderr as ``text`` or ``json`` (one object per line); may be called again."""
    handler = _Stderr()
    handler.addFilter(_RunIdFilter())
    if fmt == "json":
        handler.setFormatter(_JsonLines(
            JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=_STANDARD_ATTRS, datefmt="%Y-%m-%dT%H:%M:%S%z",
        ))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    if verbose:
        root.setLevel(logging.DEBUG)
    elif root.level in (logging.NOTSET, logging.WARNING):
        root.setLevel(logging.INFO)
    global _current_format
    _current_format = fmt


def current_format() -> str:
    """The format the last :func:`configure` set."""
    return _current_format


_STANDARD_ATTRS = [
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName", "levelname", "levelno",
    "lineno", "module", "msecs", "message", "msg", "name", "pathname", "process", "processName",
    "relativeCreated", "stack_info", "thread", "threadName", "taskName", "run",
]


@contextlib.contextmanager
def run_context(run_id: str) -> Iterator[None]:
    """Tag every log line in this context (and threads started with :func:`in_context`) with ``run_id``."""
    token = RUN_ID.set(run_id)
    try:
        yield
    finally:
        RUN_ID.reset(token)


def in_context(target: Callable, *args, **kwargs) -> threading.Thread:
    """A thread running ``target`` in a copy of the current context (so it keeps the run id)."""
    ctx = contextvars.copy_context()
    return threading.Thread(target=ctx.run, args=(target, *args), kwargs=kwargs, daemon=True)
