"""File-system primitives: atomic replacement of a file, durable renames, a writer lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from ..errors import OperationFailed


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``) so that readers see the old or the new
    bytes, never a mix.

    Writes a hidden temporary file in the same folder, fsyncs it and renames it
    over ``path``; on failure (a full disk) the temporary file is removed and
    the previous file is left intact.
    """
    # The thread too: two threads of one process may write the same file at once (the last rename wins).
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_native_id()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OperationFailed(f"cannot write {path}: {exc.strerror or exc}") from None


def fsync_dir(path: Path) -> None:
    """Make renames inside folder ``path`` durable (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def writer_lock(lock_path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_path``; wait up to ``timeout`` seconds for another writer."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise OperationFailed(f"cannot open lock file {lock_path}: {exc.strerror or exc}") from None
    try:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise OperationFailed(f"cannot lock {lock_path}: {exc.strerror}") from None
                if time.monotonic() >= deadline:
                    raise OperationFailed(
                        f"another manifest update holds {lock_path} (waited {timeout:g}s)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        yield
    finally:
        os.close(fd)
