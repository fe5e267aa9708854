"""`library-syncer client` start-up: every bad input is one line naming the setting, before anything starts
(the CLI in-process; a read-only bind mount in a real process); trust on first use logs the pinned key's
fingerprint once (real CLI, real sshd on loopback)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from library_syncer.transport import ssh
from inprocess import run_cli
from server_fixture import running_server
from support import cli, free_port, require_tool

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPJjklzbfeP3oFW3kbOHdeT96tMT8qJVeVhO6Ck0Dkgs"


def _site_env(tmp_path: Path, **extra: str) -> dict:
    key = tmp_path / "id_ed25519"
    if not key.exists():
        subprocess.run([require_tool("ssh-keygen", "openssh-client"), "-q", "-t", "ed25519", "-N", "", "-f",
                        str(key)], check=True)
    env = {"SYNC_PEER": "127.0.0.1", "SYNC_PORT": str(free_port()), "SYNC_KEY": str(key), "SYNC_HOST_KEY": KEY,
           "SYNCER_LIBRARY": str(tmp_path / "L"), "SYNCER_STATE_DIR": str(tmp_path / "state"),
           "SYNCER_HTTP_HOST": "127.0.0.1", "SYNCER_HTTP_PORT": str(free_port())}
    env.update(extra)
    return env


def _one_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    """The run failed with exit 2 and exactly one stderr line, the error, holding every needle."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("library-syncer: error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_a_library_that_is_a_file(tmp_path):
    (tmp_path / "libfile").write_text("not a folder")
    r = run_cli("client", env=_site_env(tmp_path, SYNCER_LIBRARY=str(tmp_path / "libfile")))
    _one_line(r, "setting library:", "libfile is not a folder")


def test_a_read_only_library(tmp_path):
    """A read-only bind mount (root ignores mode bits, not a read-only mount)."""
    assert os.geteuid() == 0, "this test needs root (a read-only bind mount in a private mount namespace)"
    unshare = require_tool("unshare", "util-linux")
    require_tool("mount", "mount")
    library = tmp_path / "ro-library"
    library.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "SYNCER_", "LIBRARY_", "TLS_"))}
    env.update(_site_env(tmp_path, SYNCER_LIBRARY=str(library)))
    script = 'mount --bind -o ro "$1" "$1" && exec "$2" -m library_syncer client'
    r = subprocess.run([unshare, "-m", "--propagation", "private", "sh", "-c", script, "sh", str(library),
                        sys.executable], env=env, capture_output=True, text=True)
    _one_line(r, f"setting library: folder {library} is not writable (read-only file system)")
    assert not (library / ".library-syncer").exists()


@pytest.mark.parametrize("content", [b"\xff\xfe not text\n", "[127.0.0.1]:22 ssh-ed25519 caf\xe9\n".encode("latin-1")])
def test_a_known_hosts_file_that_is_not_utf8(tmp_path, content):
    kh = tmp_path / "known_hosts"
    kh.write_bytes(content)
    env = _site_env(tmp_path, SYNC_KNOWN_HOSTS=str(kh))
    del env["SYNC_HOST_KEY"]
    r = run_cli("client", env=env)
    _one_line(r, f"setting sync_known_hosts: file {kh} is not a known_hosts file: not UTF-8 text", "line 1")


def test_a_known_hosts_file_without_the_servers_key(tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[10.9.9.9]:2222 {KEY}\n")
    env = _site_env(tmp_path, SYNC_KNOWN_HOSTS=str(kh))
    del env["SYNC_HOST_KEY"]
    r = run_cli("client", env=env)
    _one_line(r, f"setting sync_known_hosts: file {kh} has no host key for [127.0.0.1]:{env['SYNC_PORT']}")


def test_a_recorded_trust_on_first_use_file_that_is_not_utf8(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "known_hosts").write_bytes(b"\x80garbage\n")
    env = _site_env(tmp_path)
    del env["SYNC_HOST_KEY"]
    r = run_cli("client", env=env)
    _one_line(r, "setting state_dir: trust-on-first-use file", "not UTF-8 text", "remove it")


def test_a_pinned_key_file_that_is_not_utf8_is_rewritten(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "known_hosts.pinned").write_bytes(b"\xff\xff\n")
    pin = ssh.pin_host_key("127.0.0.1", 2222, state, host_key=KEY)
    assert pin.known_hosts.read_text() == f"[127.0.0.1]:2222 {KEY}\n"


def _listening_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.mark.parametrize("setting", ["http_port", "status_port"])
def test_a_web_port_in_use_is_the_one_error_and_no_sync_starts(tmp_path, setting):
    env = _site_env(tmp_path, SYNCER_STATUS_PORT=str(free_port()))
    busy = int(env["SYNCER_HTTP_PORT"] if setting == "http_port" else env["SYNCER_STATUS_PORT"])
    with _listening_socket(busy):
        r = run_cli("client", env=env)
    _one_line(r, f"setting {setting}: cannot listen on 127.0.0.1 port {busy}", "in use")
    assert "sync" not in r.stdout and not (tmp_path / "L" / ".library-syncer" / "staging").exists()


def test_trust_on_first_use_logs_the_fingerprint_once_when_pinned(tmp_path):
    keygen = require_tool("ssh-keygen", "openssh-client")
    require_tool("ssh-keyscan", "openssh-client")
    source = tmp_path / "primary"
    (source / "Alpha").mkdir(parents=True)
    (source / "Alpha" / "a.iso").write_bytes(b"a" * 1000)
    with running_server(tmp_path, source) as srv:
        expected = subprocess.run([keygen, "-lf", "-"], input=srv.host_key_line, capture_output=True, text=True,
                                  check=True).stdout.split()[1]
        assert expected.startswith("SHA256:")
        env = {"SYNC_PEER": srv.host, "SYNC_PORT": str(srv.port), "SYNC_USER": srv.user, "SYNC_KEY": str(srv.key),
               "SYNCER_LIBRARY": str(tmp_path / "L"), "SYNCER_STATE_DIR": str(tmp_path / "state")}
        first = cli("sync", env=env)
        assert first.returncode == 0, first.stderr
        pinned = [ln for ln in first.stderr.splitlines() if "trust on first use: pinned" in ln]
        assert len(pinned) == 1, first.stderr
        assert f"[{srv.host}]:{srv.port}" in pinned[0] and f"{expected} (ED25519)" in pinned[0]
        known = (tmp_path / "state" / "known_hosts").read_text()
        assert f"[{srv.host}]:{srv.port} {srv.host_key_line}" in known
        (source / "Beta").mkdir()
        (source / "Beta" / "b.iso").write_bytes(b"b")
        second = cli("sync", env=env)
        assert second.returncode == 0, second.stderr
        assert "trust on first use" not in second.stderr  # once, when pinned
        assert (tmp_path / "state" / "known_hosts").read_text() == known


def test_a_web_address_that_is_not_this_hosts(tmp_path):
    r = run_cli("client", env=_site_env(tmp_path, SYNCER_HTTP_HOST="192.0.2.1"))  # TEST-NET-1: bind only
    _one_line(r, "setting http_host: cannot listen on 192.0.2.1, not an address of this host")


def test_a_state_folder_that_is_a_file(tmp_path):
    (tmp_path / "statefile").write_text("")
    r = run_cli("client", env=_site_env(tmp_path, SYNCER_STATE_DIR=str(tmp_path / "statefile")))
    _one_line(r, "setting state_dir: cannot create folder", "statefile")


def test_https_with_certificate_files_through_caddy_needs_caddy(tmp_path):
    (tmp_path / "bin").mkdir()
    env = _site_env(tmp_path, TLS_CUSTOM_CERT="true", SYNCER_CERTS_DIR=str(tmp_path), PATH=str(tmp_path / "bin"))
    r = run_cli("client", env=env)
    _one_line(r, "setting tls_front (SYNCER_TLS_FRONT=caddy):", "install the Debian package 'caddy'",
              "SYNCER_TLS_FRONT=python")
    r = run_cli("client", env={**env, "SYNCER_TLS_FRONT": "nginx"})
    _one_line(r, "tls_front")
