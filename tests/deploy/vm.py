"""A plain Debian VM for the unit tests: a copy of the debootstrap base booted with
``systemd-nspawn --boot`` (a real systemd as its PID 1), commands run in it with ``nsenter``.

It shares the host's network (its services listen on loopback ports the test picks) and is
powered off, then killed if need be, when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from support import require_tool, wait_until

from .engine import REPO, host_ca_bundle, run

NSENTER_NS = ["-m", "-u", "-i", "-n", "-p"]


def exposure_level(analyze_output: str, unit: str) -> float:
    """The overall exposure level ``systemd-analyze security UNIT`` printed."""
    m = re.search(rf"Overall exposure level for {re.escape(unit)}: ([\d.]+)", analyze_output)
    if not m:
        raise AssertionError(f"no exposure level for {unit} in:\n{analyze_output[-800:]}")
    return float(m.group(1))


def prepare_tree(base: Path, dest: Path) -> Path:
    """A bootable copy of ``base``: systemd installed, the host's CA bundle for pip (a proxy may
    sit between the machine and PyPI), a checkout of the package in /root/library-syncer."""
    nspawn = require_tool("systemd-nspawn", "systemd-container")
    run(["cp", "-a", "--reflink=auto", str(base), str(dest)], timeout=300)
    run([nspawn, "-q", "--register=no", "--keep-unit", "-D", str(dest), "--pipe", "-E", "DEBIAN_FRONTEND=noninteractive", "--",
         "sh", "-c", "apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd systemd-sysv"
         " >/dev/null"], timeout=600)
    (dest / "etc/ssl").mkdir(exist_ok=True)
    shutil.copy(host_ca_bundle(), dest / "etc/ssl/host-ca.pem")
    (dest / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/host-ca.pem\n")
    checkout = dest / "root/library-syncer"
    checkout.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, checkout / name)
    shutil.copytree(REPO / "src", checkout / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "deploy", checkout / "deploy", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "etc/hostname").write_text("vm\n")
    return dest


class Machine:
    """A booted tree; :meth:`sh` runs a shell command in it as root."""

    def __init__(self, tree: Path, log: Path) -> None:
        nspawn = require_tool("systemd-nspawn", "systemd-container")
        require_tool("nsenter", "util-linux")
        self.tree = tree
        self.log = log
        self.console = open(log, "wb")
        self.proc = subprocess.Popen(
            [nspawn, "-q", "--boot", "-D", str(tree), f"--machine=vm{os.getpid()}", "--register=no", "--keep-unit",
             "--link-journal=no", "--resolv-conf=copy-host", "--timezone=off", "--console=passive"],
            stdin=subprocess.DEVNULL, stdout=self.console, stderr=subprocess.STDOUT)
        self.leader = wait_until(self._find_init, 30, "the machine's systemd to start")
        self.pid_ns = os.readlink(f"/proc/{self.leader}/ns/pid")
        wait_until(self._booted, 90, "the machine to finish booting", interval=0.2)

    def _find_init(self) -> int | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return pid
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
        return None

    def _booted(self) -> bool:
        state = self.sh("systemctl is-system-running", check=False).stdout.strip()
        return state in ("running", "degraded")

    def sh(self, command: str, *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``command`` with /bin/sh in the machine (all its namespaces), a clean root environment."""
        return run(["nsenter", "-t", str(self.leader), *NSENTER_NS, "--", "/usr/bin/env", "-i",
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
                    "LANG=C.UTF-8", "/bin/sh", "-c", command], timeout=timeout, check=check)

    def unit_value(self, unit: str, prop: str) -> str:
        return self.sh(f"systemctl show -p {prop} --value {unit}").stdout.strip()

    def close(self) -> None:
        """Power off (SIGTERM to nspawn: it asks the machine's systemd), bounded; then kill its PID 1,
        which ends every process of the machine."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(OSError):  # only if that PID is still this machine's init
            if os.readlink(f"/proc/{self.leader}/ns/pid") == self.pid_ns:
                os.kill(self.leader, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.console.close()


def wait_state(machine: Machine, unit: str, state: str, timeout: float = 60) -> None:
    wait_until(lambda: machine.unit_value(unit, "ActiveState") == state, timeout, f"{unit} {state}", interval=0.3)


def elapsed(start: float) -> float:
    return time.monotonic() - start
