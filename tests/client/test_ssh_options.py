"""ssh client options: host-key pinning, key file checks, bounded waits (pure parts and files)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from library_syncer.errors import ConfigError
from library_syncer.transport import ssh
from support import free_port, require_tool

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPJjklzbfeP3oFW3kbOHdeT96tMT8qJVeVhO6Ck0Dkgs"


def test_parse_host_keys_accepts_common_forms():
    b64 = KEY.split()[1]
    assert ssh.parse_host_keys(KEY) == [("ssh-ed25519", b64)]
    assert ssh.parse_host_keys(f"[10.0.0.1]:2222 {KEY} root@primary") == [("ssh-ed25519", b64)]
    assert len(ssh.parse_host_keys(f"{KEY}\\n{KEY}")) == 2


@pytest.mark.parametrize("bad, why", [
    ("", "no key"),
    ("ssh-ed25519", "KEYTYPE BASE64"),
    ("ssh-ed25519 not-base64!!", "base64"),
    ("ssh-rsa " + KEY.split()[1], "not a ssh-rsa key"),
])
def test_parse_host_keys_rejects(bad, why):
    with pytest.raises(ValueError, match=why):
        ssh.parse_host_keys(bad)


def test_pin_from_host_key_writes_known_hosts(tmp_path):
    pin = ssh.pin_host_key("127.0.0.1", 2222, tmp_path / "state", host_key=KEY)
    assert pin.strict == "yes" and pin.source == "sync_host_key"
    assert pin.known_hosts.read_text() == f"[127.0.0.1]:2222 {KEY}\n"
    assert "SYNC_HOST_KEY" in pin.remedy()
    with pytest.raises(ConfigError, match="sync_host_key"):
        ssh.pin_host_key("127.0.0.1", 2222, tmp_path / "state", host_key="nonsense")


def test_pin_known_hosts_file_and_tofu(tmp_path):
    with pytest.raises(ConfigError, match=r"sync_known_hosts: file .*missing does not exist"):
        ssh.pin_host_key("h", 22, tmp_path, known_hosts=tmp_path / "missing")
    kh = tmp_path / "kh"
    kh.write_text(f"h {KEY}\n")
    assert ssh.pin_host_key("h", 22, tmp_path, known_hosts=kh).strict == "yes"
    tofu = ssh.pin_host_key("h", 22, tmp_path / "st")
    assert tofu.strict == "accept-new" and tofu.known_hosts == tmp_path / "st" / "known_hosts"
    assert str(tofu.known_hosts) in tofu.remedy()
    assert ssh.host_pattern("h", 22) == "h" and ssh.host_pattern("h", 2222) == "[h]:2222"


def test_private_key_checks(tmp_path):
    require_tool("ssh-keygen", "openssh-client")
    key = tmp_path / "id_ed25519"
    with pytest.raises(ConfigError, match=r"sync_key: private key file .*id_ed25519 does not exist"):
        ssh.check_private_key(key)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ssh.check_private_key(key)
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"permissions 0644.*chmod 600"):
        ssh.check_private_key(key)
    pub = Path(str(key) + ".pub")
    pub.chmod(0o600)
    with pytest.raises(ConfigError, match="public key"):
        ssh.check_private_key(pub)
    with pytest.raises(ConfigError, match="not a regular file"):
        ssh.check_private_key(tmp_path)


def test_a_key_readable_by_others_is_used_through_a_private_copy(tmp_path):
    require_tool("ssh-keygen", "openssh-client")
    key = tmp_path / "mounted" / "id_syncer"
    key.parent.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert ssh.usable_private_key(key, tmp_path / "state") == key  # 0600: used as it is
    key.chmod(0o644)  # as a bind mount often is
    copy = ssh.usable_private_key(key, tmp_path / "state")
    assert copy == tmp_path / "state" / "sync_key" and copy.read_bytes() == key.read_bytes()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and stat.S_IMODE(key.stat().st_mode) == 0o644
    ssh.check_private_key(copy)
    pub = Path(str(key) + ".pub")
    pub.chmod(0o644)
    with pytest.raises(ConfigError, match="public key"):
        ssh.usable_private_key(pub, tmp_path / "state")


def test_ssh_command_options(tmp_path):
    pin = ssh.HostKeyPin(tmp_path / "kh", "yes", "sync_host_key")
    cmd = ssh.ssh_command(port=2022, key=tmp_path / "k", pin=pin, connect_timeout=7, timeout=120)
    joined = " ".join(cmd)
    assert cmd[:3] == ["ssh", "-F", "/dev/null"]
    for opt in ("BatchMode=yes", "IdentitiesOnly=yes", "StrictHostKeyChecking=yes", "ConnectTimeout=7",
                "ServerAliveInterval=30", "ServerAliveCountMax=3", f"UserKnownHostsFile={tmp_path / 'kh'}"):
        assert f"-o {opt}" in joined
    assert ssh.alive_interval(10) == 2 and 4 * ssh.alive_interval(300) <= 300 and ssh.alive_interval(10000) == 60
    assert ssh.rsh_string(["ssh", "-i", "/a b/k"]) == "ssh -i '/a b/k'"


def test_known_hosts_checks(tmp_path):
    require_tool("ssh-keygen", "openssh-client")
    kh = tmp_path / "kh"
    kh.write_text(f"[10.0.0.1]:2222 {KEY}\n")
    assert ssh.has_host_key(kh, "10.0.0.1", 2222) and not ssh.has_host_key(kh, "10.0.0.1", 22)
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)  # hashed names
    assert "10.0.0.1" not in kh.read_text() and ssh.has_host_key(kh, "10.0.0.1", 2222)
    assert ssh.pin_host_key("10.0.0.1", 2222, tmp_path, known_hosts=kh).strict == "yes"
    kh.write_bytes(b"# comment\n\xc3\x28 bad\n")
    with pytest.raises(ConfigError, match=r"sync_known_hosts: file .*kh is not a known_hosts file: not UTF-8 "
                                          r"text \(byte 0xc3 on line 2\)"):
        ssh.pin_host_key("10.0.0.1", 2222, tmp_path, known_hosts=kh)
    assert ssh.fingerprints(f"h {KEY}\n")[0].startswith("SHA256:") and ssh.fingerprints(KEY)[0].endswith("(ED25519)")


def test_first_use_with_the_server_unreachable_writes_nothing(tmp_path, caplog):
    require_tool("ssh-keyscan", "openssh-client")
    port = free_port()  # nothing listens there
    pin = ssh.pin_host_key("127.0.0.1", port, tmp_path)
    assert pin.source == ssh.TOFU and pin.strict == "accept-new"
    with caplog.at_level("WARNING"):
        ssh.first_use(pin, "127.0.0.1", port, timeout=2)
    assert not pin.known_hosts.exists()
    assert "could not read the host key" in caplog.text
