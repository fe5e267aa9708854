"""The forced command of every site key: the whole of what a session may do.

sshd runs it for every session (``authorized_keys`` ``command=`` and ``ForceCommand``);
it reads the command the site asked for from ``SSH_ORIGINAL_COMMAND`` and allows
exactly these forms, nothing else (one line on stderr, exit 1):

``rsync --server --sender …``
    the sender side of a pull: handed unchanged to ``rrsync -ro ROOT``, which checks
    the options itself (read-only, no ``--protect-args``, paths under ROOT);
``library-syncer origin``
    the origin manifest (JSON) the site compares versions with;
``library-syncer report``
    the site's report after a sync: at most :data:`MAX_REPORT` bytes of JSON on stdin, checked
    by :func:`report_problem`, stored as ``REPORTS/SITE.json`` (atomically), where SITE is the
    site of the key that logged in (``SSH_USER_AUTH``, looked up in ``--keys``), never a name
    the report gives; a report that is too big, not JSON, fails the checks or names another
    site is refused with one line and changes nothing;
``library-syncer relayed-reports``
    a relay's copies of the latest reports of the sites behind it (what its own dispatcher
    stored, and what the relays behind it forwarded): JSON lines on stdin, at most
    :data:`MAX_RELAYED` lines of at most :data:`MAX_REPORT` bytes each (:data:`MAX_RELAYED_BYTES`
    in all), each a report (the same checks) with its ``site`` and its ``via`` (the relays it
    came through, nearest to this server first).  The whole batch replaces ``REPORTS/relayed/RELAY.json`` (RELAY: the
    site of the key that logged in, put first in each ``via``), so a relay never writes over
    a site's own report nor over another relay's copies; a line naming the relay itself, or
    whose ``via`` holds it already (a loop), is left out and counted in the answer; a line too
    big, not JSON or failing the checks refuses the batch with one line and changes nothing.

ROOT is the library folder (``--library``, the primary) or, for a relay (``--published
L``), the generation ``L/current`` points to when the session starts: resolved once and
leased for the whole session (a shared ``flock`` on its lease file, inherited by rsync),
so the relay's pruning leaves it alone until the session ends.

Kept to the standard library and a few system calls: it runs once per session, as the
login account, before anything else.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from typing import Any

RSYNC_PREFIX = "rsync --server --sender "
ORIGIN_COMMAND = "library-syncer origin"
REPORT_COMMAND = "library-syncer report"
RELAYED_COMMAND = "library-syncer relayed-reports"
ALLOWED = (f"'{RSYNC_PREFIX.strip()} ...' (a read-only rsync), '{ORIGIN_COMMAND}', '{REPORT_COMMAND}' or "
           f"'{RELAYED_COMMAND}'")
REPORT_FORMAT = "library-syncer-report/1"
MAX_REPORT = 1024 * 1024
MAX_RELAYED = 1000  # reports in one relayed batch, each at most MAX_REPORT bytes,
MAX_RELAYED_BYTES = 128 * 1024 * 1024  # and all together at most this
MAX_VIA = 16  # relays a report may have come through
RELAYED_DIR = "relayed"
_RESULT_KINDS = {"ok", "degraded", "config", "busy", "guard", "fatal", "gave-up", "stopped", "error", "start"}
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


def _resolve(args: _Args) -> tuple[str, str | None] | None:
    """(root to export, origin document path) for this session; None when nothing is published."""
    if args.library:
        return args.library, args.origin
    published = args.published or ""
    for _ in range(3):  # a publication between reading the link and locking: read it again
        found = _generation(published)
        if found is None:
            return None
        root, number = found
        _lease(published, number)
        if os.path.isdir(root):
            return root, os.path.join(published, META, "origin", f"{number}.json")
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


def report_problem(doc: object) -> str | None:
    """Why ``doc`` is not a site report (None when it is one); the one schema of reports."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    if doc.get("format") != REPORT_FORMAT:
        return f"format is not {REPORT_FORMAT}"
    for key, kinds in (("site", (str, type(None))), ("tool_version", (str,)), ("at", (str,)),
                       ("origin_id", (str, type(None))), ("origin_version", (int, type(None))),
                       ("generation", (int, type(None))), ("items", (dict,)), ("held_back", (dict,)),
                       ("result", (dict,)), ("next_run", (str, type(None)))):
        value = doc.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            return f"{key} is missing or not {' or '.join(k.__name__ for k in kinds)}"
    for name, item in doc["items"].items():
        if not (isinstance(item, dict) and isinstance(item.get("version"), int)
                and isinstance(item.get("files", {}), dict) and len(name) <= 255):
            return f"items[{name[:40]!r}] is not {{version, files}}"
    if not all(isinstance(v, str) for v in doc["held_back"].values()):
        return "held_back is not {item: reason}"
    result = doc["result"]
    if result.get("kind") not in _RESULT_KINDS or not isinstance(result.get("reason", ""), str):
        return "result is not {kind, reason}"
    for key in ("wire_bytes", "duration_seconds"):
        if not isinstance(result.get(key, 0), (int, float)):
            return f"result.{key} is not a number"
    return None


def _login_site(keys_file: str) -> str | None:
    """The site of the key this session logged in with (sshd's ExposeAuthInfo file), or None."""
    try:
        with open(os.environ.get("SSH_USER_AUTH", ""), encoding="utf-8") as fh:
            used = [" ".join(line.split()[1:3]) for line in fh if line.startswith("publickey ")]
        with open(keys_file, encoding="utf-8") as fh:
            sites = json.load(fh)
    except (OSError, ValueError):
        return None
    found = {sites.get(k) for k in used} - {None}
    return found.pop() if len(found) == 1 else None


def _store_report(args: _Args) -> int:
    if not args.reports or not args.keys:
        return _refuse("this server takes no reports")
    site = _login_site(args.keys)
    if site is None:
        return _refuse("report: the key of this session is not a site's key")
    data = sys.stdin.buffer.read(MAX_REPORT + 1)
    if len(data) > MAX_REPORT:
        return _refuse(f"report: larger than {MAX_REPORT} bytes")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return _refuse("report: not JSON")
    problem = report_problem(doc)
    if problem is None and doc.get("site") not in (None, site):
        problem = f"it names the site {doc['site'][:64]!r}, but this key is the site {site!r}"
    if problem:
        return _refuse(f"report: {problem}")
    doc["site"] = site
    doc["received"] = _now()
    _replace(os.path.join(args.reports, f"{site}.json"), [json.dumps(doc)])
    sys.stdout.write("stored\n")
    return 0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _replace(path: str, lines: list[str]) -> None:
    """Write ``lines`` to ``path`` atomically (temporary file, fsync, rename)."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + ("\n" if lines else ""))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def relayed_problem(doc: object) -> str | None:
    """Why ``doc`` is not a relayed report (a report with its ``site`` and ``via``), None when it is one."""
    problem = report_problem(doc)
    if problem is not None or not isinstance(doc, dict):
        return problem
    site, via = doc.get("site"), doc.get("via", [])
    if not isinstance(site, str) or not 0 < len(site) <= 255 or not site.isprintable():
        return "site is not a name"
    if not (isinstance(via, list) and len(via) < MAX_VIA
            and all(isinstance(v, str) and 0 < len(v) <= 255 and v.isprintable() for v in via)):
        return f"via is not a list of fewer than {MAX_VIA} names"
    return None


def _store_relayed(args: _Args) -> int:
    if not args.reports or not args.keys:
        return _refuse("this server takes no reports")
    relay = _login_site(args.keys)
    if relay is None:
        return _refuse("relayed-reports: the key of this session is not a site's key")
    folder = os.path.join(args.reports, RELAYED_DIR)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, f"{relay}.json")
    tmp = os.path.join(folder, f".{relay}.json.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            answer = _copy_relayed(relay, out)
            out.flush()
            os.fsync(out.fileno())
        if answer.startswith("refused: "):
            return _refuse(f"relayed-reports: {answer[9:]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    sys.stdout.write(answer + "\n")
    return 0


def _copy_relayed(relay: str, out: Any) -> str:
    """Check the batch on stdin line by line into ``out``; the answer line (``refused: …`` on a bad one)."""
    count = left_out = total = 0
    now = _now()
    while line := sys.stdin.buffer.readline(MAX_REPORT + 2):
        total += len(line)
        if not line.strip():
            continue
        count += 1
        if count > MAX_RELAYED or total > MAX_RELAYED_BYTES:
            return f"refused: more than {MAX_RELAYED} reports or {MAX_RELAYED_BYTES} bytes"
        if len(line.rstrip(b"\n")) > MAX_REPORT:
            return f"refused: report {count} is larger than {MAX_REPORT} bytes"
        try:
            doc = json.loads(line)
        except (UnicodeDecodeError, ValueError):
            return f"refused: report {count} is not JSON"
        if (problem := relayed_problem(doc)) is not None:
            return f"refused: report {count}: {problem}"
        if doc["site"] == relay or relay in doc.get("via", []):
            left_out += 1  # the relay's own report comes from its own key; a loop is dropped
            continue
        out.write(json.dumps({**doc, "via": [relay, *doc.get("via", [])], "relayed": now}) + "\n")
    return f"stored {count - left_out}" + (f", left out {left_out} naming this relay" if left_out else "")


class _Args:
    """The dispatcher's own options, as the server writes them into the forced command."""

    rrsync: str = ""
    library: str | None = None
    published: str | None = None
    origin: str | None = None
    reports: str | None = None
    keys: str | None = None


def _parse(argv: list[str]) -> _Args:
    """``--name value`` pairs (no argparse: it is most of this program's start-up time); SystemExit(2) on
    anything else, which only a broken server configuration can cause."""
    args = _Args()
    if len(argv) % 2:
        raise SystemExit("library-syncer-dispatch: expected --option value pairs")
    for name, value in zip(argv[::2], argv[1::2]):
        key = name.removeprefix("--")
        if not name.startswith("--") or key not in ("rrsync", "library", "published", "origin", "reports", "keys"):
            raise SystemExit(f"library-syncer-dispatch: unknown option {name}")
        setattr(args, key, value)
    if not args.rrsync or (args.library is None) == (args.published is None):
        raise SystemExit("library-syncer-dispatch: --rrsync and one of --library or --published are required")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the allowed form of ``SSH_ORIGINAL_COMMAND`` (exec rrsync for rsync) or refuse it."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    asked = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    if not asked.strip():
        return _refuse("no command given (interactive logins are not allowed)")
    if any(c in asked for c in "\n\r\0"):
        return _refuse("the command holds a control character")
    if asked == REPORT_COMMAND:
        return _store_report(args)
    if asked == RELAYED_COMMAND:
        return _store_relayed(args)
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
