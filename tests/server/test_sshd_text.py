"""Pure parts of the server: sshd_config and authorized_keys text, log folding, key and version parsing."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from library_syncer.roles.server import parse_rsync_version
from library_syncer.errors import ConfigError
from library_syncer.transport.keys import SiteKey, load_sites_config, parse_public_key_file, site_name_ok
from library_syncer.transport.sshd import (
    SESSION_MARKER_VAR, LogFolder, SshdSetup, authorized_keys_line, forced_command, render_sshd_config,
    session_marker,
)
from support import require_tool

KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIBIkcQS98lcMwjbePH21l+xR802oq0eQNnRim5+kOeK6"


PY, SCRIPT = "/usr/bin/python3", Path("/state/dispatch.py")


def dispatcher(library: Path, origin: str = "/state/origin.json") -> str:
    return forced_command("/usr/bin/rrsync", python=PY, script=SCRIPT, library=library, origin=Path(origin))


def setup_for(tmp_path: Path, library: Path) -> SshdSetup:
    return SshdSetup("127.0.0.1", 2222, (tmp_path / "hk",), tmp_path / "authorized_keys", "syncer",
                     dispatcher(library))


def test_sshd_config_is_hardened(tmp_path):
    text = render_sshd_config(setup_for(tmp_path, Path("/syncer/library")))
    lines = {ln.split()[0]: ln.split(None, 1)[1] for ln in text.splitlines() if ln and not ln.startswith("#")}
    assert lines["AllowUsers"] == "syncer"
    assert lines["ForceCommand"] == ("/usr/bin/python3 -I /state/dispatch.py --rrsync /usr/bin/rrsync "
                                     "--library /syncer/library --origin /state/origin.json")
    for name, value in {
        "PasswordAuthentication": "no", "KbdInteractiveAuthentication": "no", "AuthenticationMethods": "publickey",
        "PermitRootLogin": "no", "AllowAgentForwarding": "no", "AllowTcpForwarding": "no", "X11Forwarding": "no",
        "PermitTunnel": "no", "PermitTTY": "no", "PermitUserRC": "no", "PermitUserEnvironment": "no",
        "DisableForwarding": "yes", "StrictModes": "yes", "MaxStartups": "100:30:300",
    }.items():
        assert lines[name] == value, name


def test_sshd_accepts_config_with_awkward_library_path(tmp_path):
    sshd = require_tool("sshd", "openssh-server")
    keygen = require_tool("ssh-keygen", "openssh-client")
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hk")], check=True)
    library = tmp_path / "it's a \"library\""
    setup = setup_for(tmp_path, library)
    (tmp_path / "sshd_config").write_text(render_sshd_config(setup))
    r = subprocess.run([sshd, "-T", "-f", str(tmp_path / "sshd_config")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    forced = next(ln for ln in r.stdout.splitlines() if ln.startswith("forcecommand "))
    # What sshd hands to the shell splits back into exactly the dispatcher's arguments, the library path whole.
    import shlex
    assert shlex.split(forced.split(" ", 1)[1]) == [PY, "-I", str(SCRIPT), "--rrsync", "/usr/bin/rrsync",
                                                   "--library", str(library), "--origin", "/state/origin.json"]


def test_authorized_keys_line():
    key = SiteKey("paris", Path("paris.pub"), "ssh-ed25519", KEY, "SHA256:x", ("10.1.0.0/16", "192.0.2.7"))
    line = authorized_keys_line(key, dispatcher(Path('/lib "x"')))
    assert line == (
        'restrict,command="/usr/bin/python3 -I /state/dispatch.py --rrsync /usr/bin/rrsync --library '
        '\'/lib \\"x\\"\' --origin /state/origin.json",from="10.1.0.0/16,192.0.2.7" '
        f"ssh-ed25519 {KEY} paris\n"
    )
    plain = SiteKey("rome", Path("rome.pub"), "ssh-ed25519", KEY)
    assert authorized_keys_line(plain, "/usr/bin/rrsync -ro /l").startswith('restrict,command="/usr/bin/rrsync -ro /l" ')


def test_log_folder_names_sites():
    folder = LogFolder({"SHA256:abc": "paris"})
    assert folder.fold("Accepted publickey for syncer from 10.0.0.5 port 4242 ssh2: ED25519 SHA256:abc\r\n") == (
        "site paris: session from 10.0.0.5 port 4242 (ED25519 SHA256:abc)"
    )
    assert folder.fold("Disconnected from user syncer 10.0.0.5 port 4242") == (
        "site paris: Disconnected from user syncer 10.0.0.5 port 4242"
    )
    assert folder.fold("Received disconnect from 10.0.0.5 port 4242:11: bye") == (
        "Received disconnect from 10.0.0.5 port 4242:11: bye"  # session over: no longer attributed
    )
    assert folder.fold("Failed publickey for syncer from 10.0.0.9 port 1 ssh2: ED25519 SHA256:abc").startswith(
        "site paris: Failed publickey"
    )
    assert folder.fold("Accepted publickey for syncer from ::1 port 7 ssh2: RSA SHA256:zzz").startswith(
        "site unknown key:"
    )
    # a killed transfer ends with "Connection closed by ADDR port P": the session is forgotten
    folder.fold("Accepted publickey for syncer from 10.0.0.6 port 9 ssh2: ED25519 SHA256:abc")
    assert folder.fold("Connection closed by 10.0.0.6 port 9").startswith("site paris:")
    assert ("10.0.0.6", "9") not in folder.sessions


def test_public_key_parsing():
    assert parse_public_key_file(f"# comment\nssh-ed25519 {KEY} site@host\n") == [("ssh-ed25519", KEY)]
    for bad in ("", "hello world", f'from="1.2.3.4" ssh-ed25519 {KEY}', "ssh-ed25519 AAAA", f"ssh-rsa {KEY}"):
        with pytest.raises(ValueError):
            parse_public_key_file(bad)
    assert site_name_ok("branch-paris.01") and not site_name_ok("../x") and not site_name_ok("a b")


def test_sites_config(tmp_path):
    assert load_sites_config(tmp_path) == {}
    (tmp_path / "sites.toml").write_text('[paris]\nfrom = ["10.1.0.0/16", "192.0.2.*", "!10.1.2.3"]\n')
    assert load_sites_config(tmp_path) == {"paris": ("10.1.0.0/16", "192.0.2.*", "!10.1.2.3")}
    for text, msg in (('[paris]\nform = ["1.2.3.4"]\n', "unknown setting 'form'"),
                      ('[paris]\nfrom = []\n', "non-empty list"),
                      ('[paris]\nfrom = ["1.2.3.4,5.6.7.8"]\n', "is not an address"),
                      ('paris = 1\n', "must be a table"),
                      ('[paris\n', "not valid TOML")):
        (tmp_path / "sites.toml").write_text(text)
        with pytest.raises(ConfigError, match=msg):
            load_sites_config(tmp_path)


def test_rsync_version():
    assert parse_rsync_version("rsync  version 3.5.0  protocol version 32\n") == (3, 5, 0)
    assert parse_rsync_version("rsync  version v3.2.7  protocol version 31") == (3, 2, 7)
    assert parse_rsync_version("openrsync: protocol version 29") is None


def test_sessions_carry_the_server_mark_and_the_key_they_used(tmp_path):
    sshd = require_tool("sshd", "openssh-server")
    keygen = require_tool("ssh-keygen", "openssh-client")
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hk")], check=True)
    marker = session_marker(tmp_path / "authorized_keys")
    assert len(marker) == 16 and marker == session_marker(tmp_path / "authorized_keys")
    assert marker != session_marker(tmp_path / "other" / "authorized_keys")
    setup = replace(setup_for(tmp_path, Path("/syncer/library")), marker=marker)
    (tmp_path / "sshd_config").write_text(render_sshd_config(setup))
    r = subprocess.run([sshd, "-T", "-f", str(tmp_path / "sshd_config")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"setenv {SESSION_MARKER_VAR}={marker}" in r.stdout and "exposeauthinfo yes" in r.stdout


def test_sshd_config_refuses_values_that_would_break_a_line(tmp_path):
    for change in ({"command": "/usr/bin/rrsync -ro '/lib\nPermitTTY yes'"},
                   {"authorized_keys": tmp_path / "a\rb"}, {"host_keys": (tmp_path / "k\0",)},
                   {"marker": "x y"}):
        with pytest.raises(ValueError):
            render_sshd_config(replace(setup_for(tmp_path, Path("/l")), **change))
