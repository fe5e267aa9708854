"""The plain-VM install of deploy/README.md under a real systemd (``systemd-nspawn --boot``).

One machine holds both roles (each has its own state and library folders): the README's steps
install the package and both units, the client syncs from the server over ssh on loopback and
publishes lib.json; ``systemctl reload`` re-reads the site keys; ``kill -9`` of each main
process is followed by a restart; ``systemctl stop`` ends both cleanly; the sandbox stays as
strict as ``systemd-analyze security`` measured when it was set.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import cli, free_port, wait_until

from library_syncer.sample import make_sample_library

from .test_images import same_files
from .vm import Machine, exposure_level, prepare_tree, wait_state

SERVER, CLIENT = "library-syncer-server", "library-syncer-client"
FETCH = Path(__file__).with_name("fetch_library.py")
# systemd-analyze security of the units running here (lower is stricter); raise only with a reason
MAX_EXPOSURE = {SERVER: 4.0, CLIENT: 1.7}

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
cp /root/keys/site-a.pub /etc/library-syncer/sites/
printf 'SYNCER_SSH_HOST=127.0.0.1\\nSYNCER_SSH_PORT={ssh_port}\\nTZ=Europe/Berlin\\n' > /etc/library-syncer/server.env
cp /root/library-syncer/deploy/systemd/library-syncer-server.service /etc/systemd/system/
systemctl daemon-reload && systemctl enable --now library-syncer-server
"""

CLIENT_SETUP = """
set -e
useradd --system --home-dir /var/lib/library-syncer/client --shell /usr/sbin/nologin library-syncer
install -d -o library-syncer -g library-syncer -m 0750 /srv/library-syncer/mirror /etc/library-syncer/certs
install -d -o root -g library-syncer -m 0750 /etc/library-syncer/ssh
install -o library-syncer -g library-syncer -m 0600 /root/keys/site-a /etc/library-syncer/ssh/id_ed25519
cat > /etc/library-syncer/client.env <<'EOF'
SYNC_PEER=127.0.0.1
SYNC_PORT={ssh_port}
SYNC_HOST_KEY={host_key}
SYNCER_HTTP_HOST=127.0.0.1
SYNCER_HTTP_PORT={http_port}
LIBRARY_NAME=Templates
EOF
chmod 0640 /etc/library-syncer/client.env && chgrp library-syncer /etc/library-syncer/client.env
cp /root/library-syncer/deploy/systemd/library-syncer-client.service /etc/systemd/system/
systemctl daemon-reload && systemctl enable --now library-syncer-client
"""


class Vm:
    def __init__(self, machine: Machine, root: Path, ssh_port: int, http_port: int, keys: Path) -> None:
        self.machine, self.root, self.ssh_port, self.http_port, self.keys = machine, root, ssh_port, http_port, keys
        self.library = machine.tree / "srv/library-syncer/library"

    def rsync_list(self, key: Path):
        ssh = (f"ssh -F /dev/null -p {self.ssh_port} -i {key} -o BatchMode=yes -o IdentitiesOnly=yes "
               f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10")
        return subprocess.run(["rsync", "--list-only", "-e", ssh, "syncer@127.0.0.1:./"], capture_output=True,
                              text=True, timeout=60)

    def fetch(self, out: Path) -> list[str]:
        r = subprocess.run([sys.executable, str(FETCH), f"127.0.0.1:{self.http_port}", str(out)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)

    def journal(self, unit: str) -> str:
        return self.machine.sh(f"journalctl -q --no-pager -o cat -u {unit}", check=False).stdout


@pytest.fixture(scope="module")
def vm(base_tree, tmp_path_factory):
    root = tmp_path_factory.mktemp("vm")
    start = time.monotonic()
    tree = prepare_tree(base_tree, root / "tree")
    keys = tree / "root/keys"
    for site in ("site-a", "site-b"):
        r = cli("keys", "new", site, "--out", keys)
        assert r.returncode == 0, r.stderr
    make_sample_library(tree / "srv/library-syncer/library", disk_size=2 * 1024 * 1024 + 5)
    machine = Machine(tree, root / "console.log")
    try:
        machine.sh(INSTALL, timeout=900)
        ssh_port, http_port = free_port(), free_port()
        machine.sh(SERVER_SETUP.format(ssh_port=ssh_port), timeout=120)
        # right after the unit's start, as the README does: the keys are made once, whichever is first
        host_key = machine.sh("SYNCER_STATE_DIR=/var/lib/library-syncer/server "
                              "/opt/library-syncer/bin/library-syncer server --print-host-key").stdout.strip()
        assert host_key.startswith("ssh-ed25519 "), host_key
        machine.sh(CLIENT_SETUP.format(ssh_port=ssh_port, http_port=http_port, host_key=host_key), timeout=120)
        v = Vm(machine, root, ssh_port, http_port, keys)
        v.setup_seconds = time.monotonic() - start
        yield v
    finally:
        machine.close()


def test_client_unit_syncs_from_the_server_unit_and_publishes(vm, tmp_path):
    published = vm.machine.tree / "srv/library-syncer/mirror/current/lib.json"
    deadline = time.monotonic() + 120
    while not published.exists():
        if time.monotonic() > deadline:
            pytest.fail("the client unit published no lib.json in 120 s; journals:\n"
                        + vm.journal(CLIENT)[-1500:] + "\n" + vm.journal(SERVER)[-1500:])
        time.sleep(0.2)
    read = vm.fetch(tmp_path)
    assert read[0] == "/lib.json" and len(read) > 8
    same_files(vm.library, tmp_path)
    assert "sync" in vm.journal(CLIENT) and "succeeded" in vm.journal(CLIENT)
    # each role its own state folder: the server's host keys are root's, the client's pin is its user's
    tree = vm.machine.tree
    assert (tree / "var/lib/library-syncer/server/host_keys/ssh_host_ed25519_key").stat().st_uid == 0
    assert oct((tree / "var/lib/library-syncer/server").stat().st_mode & 0o777) == "0o711"
    assert (tree / "var/lib/library-syncer/client").stat().st_uid != 0


def test_reload_rereads_the_site_keys(vm):
    assert vm.rsync_list(vm.keys / "site-a").returncode == 0
    assert vm.rsync_list(vm.keys / "site-b").returncode != 0
    pid = vm.machine.unit_value(SERVER, "MainPID")
    vm.machine.sh("cp /root/keys/site-b.pub /etc/library-syncer/sites/ && systemctl reload library-syncer-server")
    wait_until(lambda: "reloaded keys: 2 site(s)" in vm.journal(SERVER), 30, "the reload to be logged")
    assert vm.rsync_list(vm.keys / "site-b").returncode == 0
    assert vm.machine.unit_value(SERVER, "MainPID") == pid  # re-read, not restarted


@pytest.mark.parametrize("unit", [SERVER, CLIENT])
def test_kill_9_of_the_main_process_restarts_the_unit(vm, unit, tmp_path):
    pid = vm.machine.unit_value(unit, "MainPID")
    restarts = int(vm.machine.unit_value(unit, "NRestarts"))
    vm.machine.sh(f"kill -9 {pid}")
    wait_until(lambda: int(vm.machine.unit_value(unit, "NRestarts")) > restarts, 60, f"{unit} restarted",
               interval=0.3)
    wait_state(vm.machine, unit, "active")
    assert vm.machine.unit_value(unit, "MainPID") not in ("0", pid)
    if unit == SERVER:
        wait_until(lambda: vm.rsync_list(vm.keys / "site-a").returncode == 0, 30, "sshd back", interval=0.3)
    else:
        wait_until(lambda: vm.fetch(tmp_path) if _listening(vm.http_port) else None, 30, "the client serving again")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("unit", [SERVER, CLIENT])
def test_sandbox_stays_as_strict_as_measured(vm, unit):
    out = vm.machine.sh(f"systemd-analyze security --no-pager {unit}.service", check=False).stdout
    level = exposure_level(out, f"{unit}.service")
    print(f"{unit}: systemd-analyze security {level}")
    assert level <= MAX_EXPOSURE[unit], out[-1500:]
    text = (vm.machine.tree / f"etc/systemd/system/{unit}.service").read_text()
    if unit == SERVER:  # only chroot added to the system-service set, for sshd's pre-auth child
        assert "\nSystemCallFilter=@system-service chroot\n" in text


def test_systemctl_stop_ends_both_cleanly(vm):
    for unit in (CLIENT, SERVER):
        start = time.monotonic()
        vm.machine.sh(f"systemctl stop {unit}", timeout=120)
        assert time.monotonic() - start < 30, f"{unit} needed {time.monotonic() - start:.0f}s to stop"
        assert vm.machine.unit_value(unit, "ActiveState") == "inactive"
        assert vm.machine.unit_value(unit, "Result") == "success", vm.journal(unit)[-2000:]
    print(f"VM install and start: {vm.setup_seconds:.0f}s")
