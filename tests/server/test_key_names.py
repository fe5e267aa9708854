"""Nothing from the keys folder can add a line or an option to ``authorized_keys``.

A key file's name is the site's name (the comment of its line): a name outside
the safe set is skipped with one warning naming the file, never written.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from library_syncer.errors import ConfigError
from library_syncer.transport.keys import SiteKey, load_sites_config, scan_site_keys, site_name_ok
from library_syncer.transport.sshd import authorized_keys_line, render_authorized_keys
from inprocess import run_cli
from server_fixture import make_site_key, running_server
from support import cli_popen, free_port, require_tool, stop_process, wait_until

from .helpers import make_library, rsync

KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIBIkcQS98lcMwjbePH21l+xR802oq0eQNnRim5+kOeK6"
COMMAND = "/usr/bin/rrsync -ro /syncer/library"


def attacker_key(folder: Path) -> tuple[Path, str]:
    """An ed25519 keypair whose public blob has no '/' (so it fits in a file name): (private key, 'TYPE BLOB')."""
    keygen = require_tool("ssh-keygen", "openssh-client")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(40):  # about half of all keys qualify
        key = folder / f"attacker{i}"
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "x", "-f", str(key)], check=True)
        line = " ".join(Path(f"{key}.pub").read_text().split()[:2])
        if "/" not in line:
            return key, line
    pytest.fail("no ed25519 key without '/' in 40 tries")


def plant(keys_dir: Path, good_pub: Path, attacker_line: str) -> Path:
    """A key file holding a good key whose name carries a newline and the attacker's key line."""
    crafted = keys_dir / f"x\n{attacker_line} attacker.pub"
    shutil.copy(good_pub, crafted)
    crafted.chmod(0o644)
    return crafted


def test_the_one_site_name_rule():
    for good in ("branch-paris.01", "a", "site_2@dc", "A" * 64):
        assert site_name_ok(good), good
    for bad in ("", "../x", "a b", "a\nb", "a\n", "a\r", 'a"b', "a'b", "a,b", "-x", ".hidden", "A" * 65,
                "x.pub", "caf\u00e9", "a\u2028b", "a\0b", "a\tb"):
        assert not site_name_ok(bad), repr(bad)


def test_authorized_keys_line_refuses_anything_that_ends_a_line_or_an_option():
    for site in ("x\nssh-ed25519 AAAA attacker", 'x" ssh-ed25519', "a b"):
        with pytest.raises(ValueError, match="not a site name"):
            authorized_keys_line(SiteKey(site, Path("x.pub"), "ssh-ed25519", KEY), COMMAND)
    for kind, blob in (("ssh-ed25519", KEY + "\nssh-ed25519 " + KEY), ("ssh-ed25519", KEY + '"'),
                       ('command="sh" ssh-ed25519', KEY)):
        with pytest.raises(ValueError, match="not 'TYPE BASE64'"):
            authorized_keys_line(SiteKey("s", Path("s.pub"), kind, blob), COMMAND)
    for pattern in ("10.0.0.1\n", '10.0.0.1",command="sh', "10.0.0.1 x", "a,b"):
        with pytest.raises(ValueError, match="not an address pattern"):
            authorized_keys_line(SiteKey("s", Path("s.pub"), "ssh-ed25519", KEY, "", (pattern,)), COMMAND)
    for command in ("/usr/bin/rrsync -ro '/lib\nssh-ed25519 X'", "rrsync -ro /lib\r", "rrsync -ro /lib\\"):
        with pytest.raises(ValueError, match="control character|backslash"):
            authorized_keys_line(SiteKey("s", Path("s.pub"), "ssh-ed25519", KEY), command)
    # Quotes in the command are escaped the way sshd reads them back; other backslashes are kept as they are.
    line = authorized_keys_line(SiteKey("s", Path("s.pub"), "ssh-ed25519", KEY), "rrsync -ro '/a\\b \"c\"'")
    assert line == f'restrict,command="rrsync -ro \'/a\\b \\"c\\"\'" ssh-ed25519 {KEY} s\n'


def test_crafted_file_name_is_skipped_and_never_written(tmp_path):
    keys = tmp_path / "keys"
    make_site_key(keys, tmp_path / "private", "site1")
    _, evil = attacker_key(tmp_path / "attacker")
    crafted = plant(keys, keys / "site1.pub", evil)
    (keys / "two-lines.pub").write_text(f"ssh-ed25519 {KEY} a\n{(keys / 'site1.pub').read_text()}")
    (keys / "with-options.pub").write_text(f'command="/bin/sh" ssh-ed25519 {KEY} a\n')
    scan = scan_site_keys(keys)
    assert scan.skipped == [f"key file {str(crafted)!r}: the name is not a site name (letters, digits, '.', '_', "
                            "'-' or '@', starting with a letter or digit, at most 64); skipped"]
    assert len(scan.problems) == 1 and "with-options.pub" in scan.problems[0]
    text = render_authorized_keys(scan.keys, COMMAND)
    assert evil.split()[1] not in text and "attacker" not in text
    lines = text.splitlines()[1:]
    assert len(lines) == 3 and all(ln.startswith('restrict,command="') for ln in lines), text
    assert sorted(ln.rsplit(" ", 1)[1] for ln in lines) == ["site1", "two-lines", "two-lines"]


def test_sites_config_names_and_patterns_cannot_break_a_line(tmp_path):
    for text, msg in (('[site1]\nfrom = ["10.0.0.1\\n"]\n', "is not an address"),
                      ('[site1]\nfrom = ["10.0.0.1\\" x"]\n', "is not an address"),
                      ('["a\\nb"]\nfrom = ["10.0.0.1"]\n', "is not a site name")):
        (tmp_path / "sites.toml").write_text(text)
        with pytest.raises(ConfigError, match=msg) as exc:
            load_sites_config(tmp_path)
        assert "\n" not in str(exc.value)


def test_server_starts_without_the_crafted_file_and_its_key_cannot_log_in(tmp_path):
    lib = make_library(tmp_path)
    keys, state = tmp_path / "keys", tmp_path / "state"
    site_key = make_site_key(keys, tmp_path / "private", "site1")
    attacker, evil = attacker_key(tmp_path / "attacker")
    crafted = plant(keys, keys / "site1.pub", evil)
    port = free_port()
    args = ["server", "--unprivileged", "--library", lib, "--keys", keys, "--state-dir", state,
            "--ssh-host", "127.0.0.1", "--port", str(port)]
    r = run_cli(*args, "--print-host-key")
    assert r.returncode == 0, r.stderr
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {r.stdout.strip()}\n")
    log = tmp_path / "server.log"
    with open(log, "wb") as fh:
        proc = cli_popen(*args, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is None and "Server listening on" in log.read_text(), 30, "the server")
        warnings = [ln for ln in log.read_text().splitlines() if "not a site name" in ln]
        assert len(warnings) == 1 and repr(str(crafted)) in warnings[0], log.read_text()
        assert "WARNING" in warnings[0]
        assert evil.split()[1] not in (state / "authorized_keys").read_text()

        def pull(key: Path, dest: str) -> subprocess.CompletedProcess:
            ssh = (f"ssh -F /dev/null -p {port} -i {key} -o BatchMode=yes -o IdentitiesOnly=yes "
                   f"-o IdentityAgent=none -o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes")
            import getpass
            return rsync("-a", "-e", ssh, f"{getpass.getuser()}@127.0.0.1:/iso/", f"{tmp_path / dest}/")

        assert pull(site_key, "ok").returncode == 0  # the other sites keep being served
        r = pull(attacker, "evil")
        assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
    finally:
        stop_process(proc, 20)


def test_reload_skips_a_crafted_file_with_one_warning(tmp_path):
    lib = make_library(tmp_path)
    with running_server(tmp_path, lib) as server:
        attacker, evil = attacker_key(tmp_path / "attacker")
        crafted = plant(server.keys_dir, server.keys_dir / "site1.pub", evil)
        server.reload()
        wait_until(lambda: "reloaded keys: 1 site(s)" in server.log_text(), 20, "the reload")
        warnings = [ln for ln in server.log_text().splitlines() if "not a site name" in ln]
        assert len(warnings) == 1 and repr(str(crafted)) in warnings[0]
        assert evil.split()[1] not in (server.state_dir / "authorized_keys").read_text()
        r = rsync("-a", "-e", server.ssh_command(attacker), server.remote("/iso/"), f"{tmp_path / 'evil'}/")
        assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr


def test_only_crafted_files_exits_with_one_line(tmp_path):
    lib = make_library(tmp_path)
    keys = tmp_path / "keys"
    make_site_key(keys, tmp_path / "private", "site1")
    _, evil = attacker_key(tmp_path / "attacker")
    plant(keys, keys / "site1.pub", evil)
    (keys / "site1.pub").unlink()
    r = run_cli("server", "--unprivileged", "--library", lib, "--keys", keys, "--state-dir", tmp_path / "state",
            "--ssh-host", "127.0.0.1", "--port", str(free_port()))
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("library-syncer: error:")]
    assert len(errors) == 1 and "no site keys" in errors[0] and "1 file(s) skipped" in errors[0], r.stderr


def test_library_path_with_a_newline_is_refused_with_one_line(tmp_path):
    lib = make_library(tmp_path / "a\nForceCommand x")
    keys = tmp_path / "keys"
    make_site_key(keys, tmp_path / "private", "site1")
    r = run_cli("server", "--unprivileged", "--library", lib, "--keys", keys, "--state-dir", tmp_path / "state",
            "--ssh-host", "127.0.0.1", "--port", str(free_port()))
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("library-syncer: error:")]
    assert len(errors) == 1 and "setting library" in errors[0] and "control character" in errors[0], r.stderr


def test_keys_list_warns_about_the_crafted_file(tmp_path):
    keys = tmp_path / "keys"
    make_site_key(keys, tmp_path / "private", "site1")
    _, evil = attacker_key(tmp_path / "attacker")
    crafted = plant(keys, keys / "site1.pub", evil)
    r = run_cli("keys", "list", "--keys", keys)
    assert r.returncode == 0, r.stderr
    assert "site1" in r.stdout and "attacker" not in r.stdout
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("library-syncer: warning:")]
    assert len(warnings) == 1 and repr(str(crafted)) in warnings[0], r.stderr
    r = run_cli("keys", "new", "x\nssh-ed25519", "--out", tmp_path / "new")
    assert r.returncode == 2 and "site name" in r.stderr and not (tmp_path / "new").exists()
