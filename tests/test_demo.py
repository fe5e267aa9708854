"""`library-syncer demo`: free ports by default, reports only its own client's library, SIGTERM stops all of it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from support import cli, cli_popen, free_port, wait_until


def _children(pid: int) -> dict[int, tuple[str, str]]:
    """Every descendant of ``pid``: pid -> (command name, start time)."""
    parents: dict[int, int] = {}
    info: dict[int, tuple[str, str]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        parents[int(entry)] = int(fields[1])
        info[int(entry)] = (name, fields[19])
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = info[child]
                todo.append(child)
    return found


def _running(pid: int, start: str) -> bool:
    """``pid`` is still the same live process (not gone, not a zombie, not a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0] != "Z" and fields[19] == start


def test_demo_uses_free_ports_and_sigterm_stops_server_client_and_sshd(tmp_path):
    proc = cli_popen("demo", "--workdir", tmp_path / "demo", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                     text=True)
    lines: list[str] = []
    children: dict[int, tuple[str, str]] = {}
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any(ln.startswith("Status page:") for ln in lines) or proc.poll() is not None, 180,
                   "the demo to publish")
        out = "".join(lines)
        assert proc.poll() is None, out
        url = re.search(r"Subscription URL: (\S+)", out).group(1)
        assert not url.startswith("http://127.0.0.1:8080/"), url  # a free port, not a fixed one
        with urllib.request.urlopen(url, timeout=5) as r:
            assert json.load(r)["name"] == "Demo Library"
        children.update(_children(proc.pid))
        names = sorted(name for name, _ in children.values())
        assert "sshd" in names and len(children) >= 3, names  # server, client, the server's sshd
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        wait_until(lambda: not [p for p, (_, start) in children.items() if _running(p, start)], 30,
                   "every process of the demo to end")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid, (_, start) in {**children, **_children(proc.pid)}.items():  # none left behind, even on failure
            if _running(pid, start):
                os.kill(pid, signal.SIGKILL)


class _Foreign(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"name": "Someone Else's Library", "id": "urn:uuid:foreign", "version": "9",
                           "items": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_demo_on_a_busy_port_never_reports_another_programs_library(tmp_path):
    port = free_port()
    foreign = ThreadingHTTPServer(("127.0.0.1", port), _Foreign)
    threading.Thread(target=foreign.serve_forever, daemon=True).start()
    try:
        r = cli("demo", "--workdir", tmp_path / "demo", "--http-port", str(port), "--once", timeout=180)
    finally:
        foreign.shutdown()
        foreign.server_close()
    assert r.returncode != 0, r.stdout
    assert "Someone Else" not in r.stdout and "Subscription URL" not in r.stdout, r.stdout
    assert f"setting http_port: cannot listen on 127.0.0.1 port {port}" in r.stderr, r.stderr
    assert "library-syncer: error: the client exited early with code 2" in r.stderr, r.stderr
