"""The plain-VM install of deploy/README.md under a real systemd (``systemd-nspawn --boot``).

One machine holds the three roles (each has its own state and library folders): the README's
steps install the package and the units, the relay syncs from the server over ssh on loopback,
the client lists the relay first and the server after it and publishes lib.json through the
relay; ``systemctl reload`` re-reads the site keys of the server and of the relay; ``kill -9``
of each main process is followed by a restart; ``systemctl stop`` ends all three cleanly; the
sandbox stays as strict as ``systemd-analyze security`` measured when it was set.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import cli, free_port, wait_until

from library_syncer.sample import make_sample_library

from .test_images import same_files
from .vm import Machine, exposure_level, prepare_tree, wait_state

SERVER, RELAY, CLIENT = "library-syncer-server", "library-syncer-relay", "library-syncer-client"
FETCH = Path(__file__).with_name("fetch_library.py")
# systemd-analyze security of the units running here (lower is stricter); raise only with a reason
MAX_EXPOSURE = {SERVER: 4.0, RELAY: 4.0, CLIENT: 1.7}
SITES_DIR = {SERVER: "/etc/library-syncer/sites", RELAY: "/etc/library-syncer/relay/sites"}

INSTALL = """
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-venv rsync openssh-client openssh-server >/dev/null
python3 -m venv /opt/library-syncer
/opt/library-syncer/bin/pip install -q --disable-pip-version-check /root/library-syncer
install -d -m 0755 /opt/library-syncer/share && cp /root/library-syncer/README.md /opt/library-syncer/share/
"""

SERVER_SETUP = """
set -e
useradd --uid 31337 --user-group --no-create-home --home-dir / --shell /bin/sh --password '*' syncer
install -d -m 0755 /etc/library-syncer/sites
cp /root/keys/site-a.pub /root/keys/relay.pub /etc/library-syncer/sites/
printf 'SYNCER_SSH_HOST=127.0.0.1\\nSYNCER_SSH_PORT={ssh_port}\\nTZ=Europe/Berlin\\n' > /etc/library-syncer/server.env
cp /root/library-syncer/deploy/systemd/library-syncer-server.service /etc/systemd/system/
systemctl daemon-reload && systemctl enable --now library-syncer-server
"""

# the syncer account exists already (the server's); a relay host creates it as the server's steps do
RELAY_SETUP = """
set -e
install -d -m 0755 /etc/library-syncer/relay /etc/library-syncer/relay/sites /srv/library-syncer/relay-mirror
install -d -m 0700 /etc/library-syncer/relay/ssh /etc/library-syncer/relay/certs
install -m 0600 /root/keys/relay /etc/library-syncer/relay/ssh/id_ed25519
cp /root/keys/site-a.pub /etc/library-syncer/relay/sites/
cat > /etc/library-syncer/relay.env <<'EOF'
SYNC_PEER=127.0.0.1
SYNC_PORT={ssh_port}
SYNC_HOST_KEY={host_key}
SYNCER_SSH_HOST=127.0.0.1
SYNCER_SSH_PORT={relay_port}
SYNCER_HTTP_HOST=127.0.0.1
SYNCER_HTTP_PORT={relay_http_port}
LIBRARY_NAME=Templates
EOF
chmod 0600 /etc/library-syncer/relay.env
cp /root/library-syncer/deploy/systemd/library-syncer-relay.service /etc/systemd/system/
systemctl daemon-reload && systemctl enable --now library-syncer-relay
"""

CLIENT_SETUP = """
set -e
useradd --system --home-dir /var/lib/library-syncer/client --shell /usr/sbin/nologin library-syncer
install -d -o library-syncer -g library-syncer -m 0750 /srv/library-syncer/mirror /etc/library-syncer/certs
install -d -o root -g library-syncer -m 0750 /etc/library-syncer/ssh
install -o library-syncer -g library-syncer -m 0600 /root/keys/site-a /etc/library-syncer/ssh/id_ed25519
cat > /etc/library-syncer/ssh/known_hosts <<'EOF'
[127.0.0.1]:{relay_port} {relay_key}
[127.0.0.1]:{ssh_port} {host_key}
EOF
cat > /etc/library-syncer/client.env <<'EOF'
SYNC_PEER=127.0.0.1:{relay_port},127.0.0.1:{ssh_port}
SYNC_KNOWN_HOSTS=/etc/library-syncer/ssh/known_hosts
SYNCER_HTTP_HOST=127.0.0.1
SYNCER_HTTP_PORT={http_port}
LIBRARY_NAME=Templates
EOF
chmod 0640 /etc/library-syncer/client.env /etc/library-syncer/ssh/known_hosts
chgrp library-syncer /etc/library-syncer/client.env /etc/library-syncer/ssh/known_hosts
cp /root/library-syncer/deploy/systemd/library-syncer-client.service /etc/systemd/system/
systemctl daemon-reload && systemctl enable --now library-syncer-client
"""

PRINT_HOST_KEY = "SYNCER_STATE_DIR={} /opt/library-syncer/bin/library-syncer {} --print-host-key"


class Vm:
    def __init__(self, machine: Machine, root: Path, keys: Path) -> None:
        self.machine, self.root, self.keys = machine, root, keys
        self.library = machine.tree / "srv/library-syncer/library"
        ports: list[int] = []
        while len(ports) < 4:
            ports += [p for p in [free_port()] if p not in ports]
        self.ssh_port, self.relay_port, self.relay_http_port, self.http_port = ports
        self.ports = {SERVER: self.ssh_port, RELAY: self.relay_port}

    def rsync_list(self, key: Path, port: int | None = None):
        ssh = (f"ssh -F /dev/null -p {port or self.ssh_port} -i {key} -o BatchMode=yes -o IdentitiesOnly=yes "
               f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10")
        return subprocess.run(["rsync", "--list-only", "-e", ssh, "syncer@127.0.0.1:./"], capture_output=True,
                              text=True, timeout=60)

    def fetch(self, out: Path, port: int | None = None) -> list[str]:
        r = subprocess.run([sys.executable, str(FETCH), f"127.0.0.1:{port or self.http_port}", str(out)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)

    def status(self, port: int) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_syncer/api/status", timeout=30) as r:
            return json.load(r)

    def journal(self, unit: str) -> str:
        return self.machine.sh(f"journalctl -q --no-pager -o cat -u {unit}", check=False).stdout

    def wait_published(self, mirror: str, *units: str) -> None:
        published = self.machine.tree / mirror / "current/lib.json"
        deadline = time.monotonic() + 120
        while not published.exists():
            if time.monotonic() > deadline:
                pytest.fail(f"no {mirror}/current/lib.json in 120 s; journals:\n"
                            + "\n".join(self.journal(u)[-1500:] for u in units))
            time.sleep(0.2)


@pytest.fixture(scope="module")
def vm(base_tree, tmp_path_factory):
    root = tmp_path_factory.mktemp("vm")
    start = time.monotonic()
    tree = prepare_tree(base_tree, root / "tree")
    keys = tree / "root/keys"
    for site in ("site-a", "site-b", "relay"):
        r = cli("keys", "new", site, "--out", keys)
        assert r.returncode == 0, r.stderr
    make_sample_library(tree / "srv/library-syncer/library", disk_size=2 * 1024 * 1024 + 5)
    machine = Machine(tree, root / "console.log")
    try:
        machine.sh(INSTALL, timeout=900)
        v = Vm(machine, root, keys)
        machine.sh(SERVER_SETUP.format(ssh_port=v.ssh_port), timeout=120)
        # right after the unit's start, as the README does: the keys are made once, whichever is first
        host_key = machine.sh(PRINT_HOST_KEY.format("/var/lib/library-syncer/server", "server")).stdout.strip()
        assert host_key.startswith("ssh-ed25519 "), host_key
        machine.sh(RELAY_SETUP.format(ssh_port=v.ssh_port, host_key=host_key, relay_port=v.relay_port,
                                      relay_http_port=v.relay_http_port), timeout=120)
        relay_key = machine.sh(PRINT_HOST_KEY.format("/var/lib/library-syncer/relay", "relay")).stdout.strip()
        assert relay_key.startswith("ssh-ed25519 ") and relay_key != host_key, relay_key
        v.wait_published("srv/library-syncer/relay-mirror", RELAY, SERVER)  # else the client takes the server
        machine.sh(CLIENT_SETUP.format(ssh_port=v.ssh_port, host_key=host_key, relay_port=v.relay_port,
                                       relay_key=relay_key, http_port=v.http_port), timeout=120)
        v.setup_seconds = time.monotonic() - start
        yield v
    finally:
        machine.close()


def test_client_unit_syncs_through_the_relay_unit_and_publishes(vm, tmp_path):
    vm.wait_published("srv/library-syncer/mirror", CLIENT, RELAY, SERVER)
    read = vm.fetch(tmp_path / "client")
    assert read[0] == "/lib.json" and len(read) > 8
    same_files(vm.library, tmp_path / "client")
    assert "sync" in vm.journal(CLIENT) and "succeeded" in vm.journal(CLIENT)
    # the client was served by the relay (listed first), the relay by the server
    assert vm.status(vm.http_port)["upstream"]["served_by"] == f"127.0.0.1:{vm.relay_port}"
    assert vm.status(vm.relay_http_port)["upstream"]["served_by"] == f"127.0.0.1:{vm.ssh_port}"
    assert "site site-a: session from 127.0.0.1" in vm.journal(RELAY)
    vm.fetch(tmp_path / "relay", vm.relay_http_port)  # the relay publishes for its own vCenter too
    same_files(vm.library, tmp_path / "relay")
    # each role its own state folder: host keys are root's, the client's pin is its user's;
    # the relay's is traversable (not listable) by the login account, as its sshd needs
    tree = vm.machine.tree
    assert (tree / "var/lib/library-syncer/server/host_keys/ssh_host_ed25519_key").stat().st_uid == 0
    assert oct((tree / "var/lib/library-syncer/server").stat().st_mode & 0o777) == "0o711"
    assert oct((tree / "var/lib/library-syncer/relay").stat().st_mode & 0o777) == "0o711"
    assert (tree / "var/lib/library-syncer/relay/relay/host_keys/ssh_host_ed25519_key").stat().st_uid == 0
    assert (tree / "var/lib/library-syncer/client").stat().st_uid != 0


@pytest.mark.parametrize("unit", [SERVER, RELAY])
def test_reload_rereads_the_site_keys(vm, unit):
    port = vm.ports[unit]
    assert vm.rsync_list(vm.keys / "site-a", port).returncode == 0
    assert vm.rsync_list(vm.keys / "site-b", port).returncode != 0
    pid = vm.machine.unit_value(unit, "MainPID")
    vm.machine.sh(f"cp /root/keys/site-b.pub {SITES_DIR[unit]}/ && systemctl reload {unit}")
    wait_until(lambda: "reloaded keys:" in vm.journal(unit) and "added: site-b" in vm.journal(unit), 30,
               f"the reload of {unit} to be logged")
    assert vm.rsync_list(vm.keys / "site-b", port).returncode == 0
    assert vm.machine.unit_value(unit, "MainPID") == pid  # re-read, not restarted


@pytest.mark.parametrize("unit", [SERVER, RELAY, CLIENT])
def test_kill_9_of_the_main_process_restarts_the_unit(vm, unit, tmp_path):
    pid = vm.machine.unit_value(unit, "MainPID")
    restarts = int(vm.machine.unit_value(unit, "NRestarts"))
    vm.machine.sh(f"kill -9 {pid}")
    wait_until(lambda: int(vm.machine.unit_value(unit, "NRestarts")) > restarts, 60, f"{unit} restarted",
               interval=0.3)
    wait_state(vm.machine, unit, "active")
    assert vm.machine.unit_value(unit, "MainPID") not in ("0", pid)
    if unit in vm.ports:  # its sshd back (none left behind holding the port)
        wait_until(lambda: vm.rsync_list(vm.keys / "site-a", vm.ports[unit]).returncode == 0, 60,
                   f"{unit}'s sshd back", interval=0.3)
    port = {RELAY: vm.relay_http_port, CLIENT: vm.http_port}.get(unit)
    if port:
        wait_until(lambda: vm.fetch(tmp_path, port) if _listening(port) else None, 60, f"{unit} serving again")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("unit", [SERVER, RELAY, CLIENT])
def test_sandbox_stays_as_strict_as_measured(vm, unit):
    out = vm.machine.sh(f"systemd-analyze security --no-pager {unit}.service", check=False).stdout
    level = exposure_level(out, f"{unit}.service")
    print(f"{unit}: systemd-analyze security {level}")
    assert level <= MAX_EXPOSURE[unit], out[-1500:]
    text = (vm.machine.tree / f"etc/systemd/system/{unit}.service").read_text()
    if unit in (SERVER, RELAY):  # only chroot added to the system-service set, for sshd's pre-auth child
        assert "\nSystemCallFilter=@system-service chroot\n" in text


def test_systemctl_stop_ends_all_three_cleanly(vm):
    for unit in (CLIENT, RELAY, SERVER):
        start = time.monotonic()
        vm.machine.sh(f"systemctl stop {unit}", timeout=120)
        assert time.monotonic() - start < 30, f"{unit} needed {time.monotonic() - start:.0f}s to stop"
        assert vm.machine.unit_value(unit, "ActiveState") == "inactive"
        assert vm.machine.unit_value(unit, "Result") == "success", vm.journal(unit)[-2000:]
    print(f"VM install and start: {vm.setup_seconds:.0f}s")
