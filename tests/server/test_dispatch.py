"""The forced command on its own: the allowed forms, refusals, and the generation a relay session leases."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from library_syncer.publish import generations as gen
from library_syncer.transport import dispatch

SCRIPT = Path(dispatch.__file__)


def run(asked: str | None, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"]}
    if asked is not None:
        env["SSH_ORIGINAL_COMMAND"] = asked
    return subprocess.run([sys.executable, "-I", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=30)


def fake_rrsync(tmp_path: Path) -> Path:
    """Stands in for rrsync to show what the dispatcher hands over (and which fds rsync would inherit)."""
    path = tmp_path / "rrsync"
    path.write_text('#!/bin/sh\necho "args: $*"\necho "asked: $SSH_ORIGINAL_COMMAND"\nls /proc/$$/fd | wc -l\n')
    path.chmod(0o755)
    return path


def test_forms_at_the_primary(tmp_path):
    rrsync, origin = fake_rrsync(tmp_path), tmp_path / "origin.json"
    base = ("--rrsync", str(rrsync), "--library", str(tmp_path / "lib"), "--origin", str(origin))
    r = run("rsync --server --sender -logDtpre.iLsfxC . ./", *base)
    assert r.returncode == 0 and f"args: -ro {tmp_path / 'lib'}" in r.stdout, r.stderr
    assert "asked: rsync --server --sender -logDtpre.iLsfxC . ./" in r.stdout  # unchanged, for rrsync to check
    r = run("library-syncer origin", *base)
    assert r.returncode == 3 and "no origin manifest yet" in r.stderr
    origin.write_text('{"version": 1}\n')
    assert run("library-syncer origin", *base).stdout == '{"version": 1}\n'
    for asked in (None, "", "  ", "id", "library-syncer origin\nid", "library-syncer  origin", "rsync --server . /",
                  "rsync --server --senderx", "/usr/bin/rsync --server --sender . ./", "library-syncer report"):
        r = run(asked, *base)
        assert r.returncode == 1 and r.stderr.startswith("library-syncer: refused:") and r.stdout == "", asked
        assert r.stderr.count("\n") == 1, r.stderr


def test_a_relay_session_reads_one_leased_generation(tmp_path):
    lib, rrsync = tmp_path / "L", fake_rrsync(tmp_path)
    base = ("--rrsync", str(rrsync), "--published", str(lib))
    assert run("library-syncer origin", *base).returncode == 3  # nothing published yet
    (lib / ".library-syncer" / "staging" / "A").mkdir(parents=True)
    (lib / ".library-syncer" / "staging" / "A" / "a.iso").write_text("a")
    number = gen.publish(lib)
    gen.origin_path(lib, number).parent.mkdir(parents=True)
    gen.origin_path(lib, number).write_text('{"relayed": true}\n')
    r = run("rsync --server --sender -logDtpre.iLsfxC . ./", *base)
    assert r.returncode == 0 and f"args: -ro {gen.Layout(lib).generation(number)}" in r.stdout.replace("//", "/")
    assert run("library-syncer origin", *base).stdout == '{"relayed": true}\n'

    # While a session holds its generation, pruning leaves it alone, however old it is.
    lease = gen.lease_path(lib, number)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lease)!r}, os.O_RDONLY)\nfcntl.flock(fd, fcntl.LOCK_SH)\n"
        "print('held', flush=True)\nsys.stdin.read()\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    old = os.stat(lease).st_mtime - 10_000
    os.utime(lease, (old, old))
    assert gen.leased(lib, number, 60, os.stat(lease).st_mtime + 10_000)
    holder.stdin.close()
    holder.wait(10)
    assert not gen.leased(lib, number, 60, os.stat(lease).st_mtime + 10_000)
    fd = os.open(lease, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it any more
    finally:
        os.close(fd)
