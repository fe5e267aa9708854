"""What an authorized site key cannot do: write, escape the library, run commands, forward, use passwords."""

from __future__ import annotations

import json
import socket
import subprocess
import threading

import pytest

from server_fixture import make_site_key, running_server
from support import free_port, wait_until

from .helpers import client_env, make_library, rsync, tree_digest


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    lib = make_library(root)
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret\n")
    (lib / "escape").symlink_to(outside)
    (lib / "escape-file").symlink_to(outside / "secret.txt")
    with running_server(root, lib, args=("--origin-refresh-seconds", "1")) as server:
        yield server, root, lib


def ssh(server, *command: str, opts: tuple[str, ...] = (), timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*server.ssh_args(), *opts, server.destination(), *command], capture_output=True, text=True, timeout=timeout,
                          env=client_env(), stdin=subprocess.DEVNULL)


def test_push_delete_and_change_are_refused(served, tmp_path):
    server, _, lib = served
    before = tree_digest(lib)
    src = tmp_path / "src"
    (src / "item-a").mkdir(parents=True)
    (src / "item-a" / "vm.ovf").write_text("<Evil/>")
    (src / "new.txt").write_text("planted")
    e = ["-e", server.ssh_command()]
    attempts = [
        rsync("-a", *e, f"{src}/", server.remote("/")),  # push
        rsync("-a", "--delete", *e, f"{tmp_path / 'empty'}/", server.remote("/")),  # wipe
        rsync("-a", *e, f"{src}/new.txt", server.remote("/item-a/")),
    ]
    (tmp_path / "empty").mkdir()
    attempts.append(rsync("-a", "--delete", *e, f"{tmp_path / 'empty'}/", server.remote("/item-a/")))
    for r in attempts:
        assert r.returncode != 0
        assert "not allowed" in r.stderr or "rrsync" in r.stderr, r.stderr
    # A pull that would delete its sources on the server is refused too.
    r = rsync("-a", "--remove-source-files", *e, server.remote("/iso/"), f"{tmp_path / 'x'}/")
    assert r.returncode != 0
    assert tree_digest(lib) == before


def test_cannot_read_outside_the_library(served, tmp_path):
    server, root, lib = served
    e = ["-e", server.ssh_command()]
    dest = tmp_path / "dest"
    # The whole library: symlinks are copied as links, never followed out of the library.
    r = rsync("-a", *e, server.remote("/"), f"{dest}/")
    assert r.returncode == 0, r.stderr
    assert (dest / "escape").is_symlink() and (dest / "escape-file").is_symlink()
    for attempt in (
        rsync("-a", *e, server.remote("../"), f"{tmp_path / 'up'}/"),
        rsync("-a", *e, server.remote("/../outside/"), f"{tmp_path / 'up2'}/"),
        rsync("-a", *e, server.remote(str(root / "outside") + "/"), f"{tmp_path / 'abs'}/"),
        rsync("-a", *e, server.remote("/etc/passwd"), f"{tmp_path / 'passwd'}"),
        rsync("-a", *e, server.remote("escape/"), f"{tmp_path / 'via-link'}/"),
        rsync("-aL", *e, server.remote("/"), f"{tmp_path / 'copy-links'}/"),
        rsync("-a", "--copy-unsafe-links", *e, server.remote("/"), f"{tmp_path / 'unsafe'}/"),
    ):
        got = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink())
        assert "top secret" not in got, attempt.stderr
        assert "root:x:0:0" not in got
    assert not (tmp_path / "passwd").exists()


REFUSED = "library-syncer: refused:"


def test_no_shell_or_other_command(served):
    server, _, _ = served
    for cmd in (["id"], ["/bin/sh", "-c", "echo pwned"], ["cat", "/etc/passwd"],
                ["library-syncer", "origin;", "id"], ["library-syncer", "origin", "&&", "id"],
                ["library-syncer", "origin", "--all"], ["rsync", "--server", "-logDtpre.iLsfxC", ".", "/"],
                ["rsync --server --sender -logDtpre.iLsfxC . /\nid"]):
        r = ssh(server, *cmd)
        assert r.returncode != 0, r.stdout
        assert "uid=" not in r.stdout and "pwned" not in r.stdout and "root:x:0:0" not in r.stdout
        assert r.stderr.startswith(REFUSED) and r.stderr.count("\n") == 1, r.stderr  # the dispatcher, one line
    # The sender form goes to rrsync, which refuses a path outside the library.
    r = ssh(server, "rsync", "--server", "--sender", "-logDtpre.iLsfxC", ".", "/etc/passwd")
    assert r.returncode != 0 and "root:x:0:0" not in r.stdout
    assert "rrsync error" in r.stderr, r.stderr
    r = ssh(server, "sh", opts=("-tt",))  # an interactive shell with a terminal
    assert r.returncode != 0
    assert "PTY allocation request failed" in r.stderr or REFUSED in r.stderr, r.stderr
    r = ssh(server)  # no command at all: the forced command refuses
    assert r.returncode != 0 and REFUSED in r.stderr, r.stderr


def test_origin_query_is_the_one_other_form(served):
    server, _, lib = served
    def settled():  # files written less than a refresh period ago are read at the next one
        p = ssh(server, "library-syncer", "origin")
        return p.returncode == 0 and len(json.loads(p.stdout)["items"]) == 2 and p

    doc = json.loads(wait_until(settled, timeout=60, what="the origin manifest with both items").stdout)
    assert doc["format"] == "library-syncer-origin/1" and doc["version"] >= 1
    assert set(doc["items"]) == {p.name for p in lib.iterdir() if p.is_dir() and not p.is_symlink()}


def _target_server():
    """A loopback TCP server that greets each connection; returns (port, accepted count list, socket)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    accepted: list[int] = []

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            accepted.append(1)
            conn.sendall(b"HELLO\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1], accepted, sock


def test_no_port_forwarding(served):
    server, _, _ = served
    target_port, accepted, target = _target_server()
    try:
        # Local forward: ssh listens locally, but the server refuses to open the channel.
        local = free_port()
        proc = subprocess.Popen([*server.ssh_args(), "-N", "-o", "ExitOnForwardFailure=yes",
                                 "-L", f"127.0.0.1:{local}:127.0.0.1:{target_port}", server.destination()],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=client_env())
        try:
            def forwarded_port_open():
                assert proc.poll() is None, proc.stderr.read()
                try:
                    return socket.create_connection(("127.0.0.1", local), timeout=2)
                except OSError:
                    return None

            conn = wait_until(forwarded_port_open, 20, "ssh -L to listen")
            conn.settimeout(10)
            with conn:
                assert conn.recv(100) == b""  # closed without reaching the target
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=10)
        assert "prohibited" in err or "open failed" in err, err
        # Remote forward: refused by the server, so ssh gives up.
        remote_port = free_port()
        r = ssh(server, opts=("-N", "-o", "ExitOnForwardFailure=yes",
                              "-R", f"127.0.0.1:{remote_port}:127.0.0.1:{target_port}"))
        assert r.returncode == 255
        assert "remote port forwarding failed" in r.stderr, r.stderr
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", remote_port), timeout=2).close()
        assert accepted == []
    finally:
        target.close()


def test_passwords_and_unknown_keys_are_refused(served, tmp_path):
    server, _, _ = served
    dest = server.destination()
    # Only public keys are offered: a password (or keyboard-interactive) login cannot even start.
    askpass = tmp_path / "askpass"
    askpass.write_text("#!/bin/sh\necho password\n")
    askpass.chmod(0o755)
    env = dict(client_env(), SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
    base = ["ssh", "-F", "/dev/null", "-p", str(server.port), "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={server.known_hosts}"]
    r = subprocess.run([*base, "-o", "BatchMode=no", "-o", "PubkeyAuthentication=no",
                        "-o", "PreferredAuthentications=password,keyboard-interactive",
                        "-o", "NumberOfPasswordPrompts=1", dest, "true"],
                       capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 255
    assert "Permission denied (publickey)" in r.stderr, r.stderr
    # A key that is not in the keys folder.
    stranger = make_site_key(tmp_path / "k", tmp_path / "p", "stranger")
    args = server.ssh_args()
    args[args.index("-i") + 1] = str(stranger)
    r = subprocess.run([*args, dest, "true"], capture_output=True, text=True, timeout=30,
                       env=client_env(), stdin=subprocess.DEVNULL)
    assert r.returncode == 255
    assert "Permission denied" in r.stderr
    r = rsync("-a", "-e", " ".join(args), server.remote("/"), f"{tmp_path / 'd'}/")
    assert r.returncode != 0 and not (tmp_path / "d").exists()
