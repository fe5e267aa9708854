"""The forced command of every site key: the whole of what a session may do.

sshd runs it for every session (``authorized_keys`` ``command=`` and ``ForceCommand``);
it reads the command the site asked for from ``SSH_ORIGINAL_COMMAND`` and allows
exactly these forms, nothing else (one line on stderr, exit 1):

``rsync --server --sender …``
    the sender side of a pull: handed unchanged to ``rrsync -ro ROOT``, which checks
    the options itself (read-only, no ``--protect-args``, paths under ROOT);
``library-syncer origin``
    the origin manifest (JSON) the site compares versions with.

ROOT is the library folder (``--library``, the primary) or, for a relay (``--published
L``), the generation ``L/current`` points to when the session starts: resolved once and
leased for the whole session (a shared ``flock`` on its lease file, inherited by rsync),
so the relay's pruning leaves it alone until the session ends.

Kept to the standard library and a few system calls: it runs once per session, as the
login account, before anything else.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys

RSYNC_PREFIX = "rsync --server --sender "
ORIGIN_COMMAND = "library-syncer origin"
ALLOWED = f"'{RSYNC_PREFIX.strip()} ...' (a read-only rsync) or '{ORIGIN_COMMAND}'"
META = ".library-syncer"
_DIGITS = 6


def _refuse(why: str) -> int:
    sys.stderr.write(f"library-syncer: refused: {why}; this account allows only {ALLOWED}\n")
    return 1


def _generation(published: str) -> tuple[str, str] | None:
    """(generation folder, its number as text) that ``published/current`` points to, or None."""
    try:
        target = os.readlink(os.path.join(published, "current"))
    except OSError:
        return None
    parent, name = os.path.split(target)
    if parent != f"{META}/generations" or not (name.isdigit() and len(name) == _DIGITS):
        return None
    return os.path.join(published, target), name


def _lease(published: str, number: str) -> None:
    """Hold a shared lock on the generation's lease file for as long as this session (and the rsync it
    becomes) runs; best effort when the file cannot be opened."""
    path = os.path.join(published, META, "leases", number)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
    fcntl.flock(fd, fcntl.LOCK_SH)
    os.set_inheritable(fd, True)


def _resolve(args: argparse.Namespace) -> tuple[str, str | None] | None:
    """(root to export, origin document path) for this session; None when nothing is published."""
    if args.library:
        return args.library, args.origin
    for _ in range(3):  # a publication between reading the link and locking: read it again
        found = _generation(args.published)
        if found is None:
            return None
        root, number = found
        _lease(args.published, number)
        if os.path.isdir(root):
            return root, os.path.join(args.published, META, "origin", f"{number}.json")
    return None


def _send(path: str | None) -> int:
    try:
        with open(path or "", "rb") as fh:
            data = fh.read()
    except OSError:
        sys.stderr.write("library-syncer: no origin manifest yet (the server is still reading the library)\n")
        return 3
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the allowed form of ``SSH_ORIGINAL_COMMAND`` (exec rrsync for rsync) or refuse it."""
    parser = argparse.ArgumentParser(prog="library-syncer-dispatch")
    parser.add_argument("--rrsync", required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--library")
    where.add_argument("--published")
    parser.add_argument("--origin")
    args = parser.parse_args(argv)
    asked = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    if not asked.strip():
        return _refuse("no command given (interactive logins are not allowed)")
    if any(c in asked for c in "\n\r\0"):
        return _refuse("the command holds a control character")
    if asked.startswith(RSYNC_PREFIX) or asked == ORIGIN_COMMAND:
        resolved = _resolve(args)
        if resolved is None:
            sys.stderr.write("library-syncer: nothing is published yet at this relay\n")
            return 3
        root, origin = resolved
        if asked == ORIGIN_COMMAND:
            return _send(origin)
        sys.stdout.flush()
        os.execv(args.rrsync, [args.rrsync, "-ro", root])
    shown = asked if len(asked) <= 80 else asked[:80] + "..."
    return _refuse(f"command {shown!r} is not allowed")


if __name__ == "__main__":
    raise SystemExit(main())
