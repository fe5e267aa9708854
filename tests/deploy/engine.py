"""A private container engine for the deployment tests.

Everything lives under one folder of the test session: podman's storage and configuration
(``CONTAINERS_STORAGE_CONF``/``CONTAINERS_CONF``), and a network namespace of its own, so
published ports (the compose files' 2222, 8080, 80, 443) and netavark's firewall rules never
touch the host's.  The ``debian:bookworm-slim`` base is made locally with debootstrap from
the mirror the host's own apt configuration uses; the images are built from deploy/Dockerfile
the way a user builds them, with the host's CA bundle given to pip (a proxy may sit in between).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from support import require_tool

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY = "http://deb.debian.org/debian-security"
BASE_IMAGE = "debian:bookworm-slim"
IMAGES = {"server": "library-syncer-server", "client": "library-syncer-client"}


# --- pure logic ---------------------------------------------------------------------------

def apt_entries(text: str) -> list[tuple[str, list[str]]]:
    """(URI, suites) of every enabled source in an apt sources text (one-line or deb822 format)."""
    entries = []
    for line in text.splitlines():
        m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
        if m:
            entries.append((m.group(1), [m.group(2)]))
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"(?im)^(\w[\w-]*):\s*(.*)$", stanza))
        fields = {k.lower(): v for k, v in fields.items()}
        if "uris" in fields and "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            for uri in fields["uris"].split():
                entries.append((uri, fields.get("suites", "").split()))
    return entries


def host_mirrors(texts: list[str]) -> tuple[str, str]:
    """(Debian mirror, security mirror) for bookworm from the host's apt sources, else deb.debian.org."""
    debian = security = None
    for text in texts:
        for uri, suites in apt_entries(text):
            if any(s == "bookworm-security" for s in suites):
                security = security or uri
            elif any(s in ("bookworm", "bookworm-updates", "stable") for s in suites):
                debian = debian or uri
    return (debian or DEFAULT_MIRROR).rstrip("/"), (security or DEFAULT_SECURITY).rstrip("/")


def base_sources_list(debian: str, security: str) -> str:
    """sources.list of the base image: bookworm, its updates and its security updates (rsync 3.5)."""
    return (f"deb {debian} bookworm main\n"
            f"deb {debian} bookworm-updates main\n"
            f"deb {security} bookworm-security main\n")


def engine_config(root: Path, nofile: int, nproc: int) -> tuple[str, str]:
    """(storage.conf, containers.conf) of a podman kept under ``root``.

    runc (crun fails on hybrid cgroups), cgroupfs and file events (no systemd as PID 1), and
    ulimits no higher than the engine's own (raising them needs CAP_SYS_RESOURCE).
    """
    storage = (f'[storage]\ndriver = "overlay"\ngraphroot = "{root}/storage"\n'
               f'runroot = "{root}/run"\n')
    containers = (
        f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'events_logfile_path = "{root}/events.log"\nruntime = "runc"\ntmp_dir = "{root}/tmp"\n'
        f'[network]\nnetwork_config_dir = "{root}/networks"\n'
    )
    return storage, containers


# --- the world ----------------------------------------------------------------------------

def host_ca_bundle() -> Path:
    """The host's CA bundle (pip inside a build trusts what the host trusts, a proxy's CA included)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise AssertionError("no CA bundle on this host: install the Debian package 'ca-certificates'")


def read_host_sources() -> list[str]:
    """Texts of the host's apt sources (sources.list and sources.list.d/*.list, *.sources)."""
    files = [Path("/etc/apt/sources.list")]
    folder = Path("/etc/apt/sources.list.d")
    if folder.is_dir():
        files += sorted(p for p in folder.iterdir() if p.suffix in (".list", ".sources"))
    return [p.read_text() for p in files if p.is_file()]


def make_base_tree(dest: Path) -> Path:
    """A Debian bookworm minbase tree in ``dest`` (debootstrap), sources with updates and security."""
    debootstrap = require_tool("debootstrap", "debootstrap")
    debian, security = host_mirrors(read_host_sources())
    run([debootstrap, "--variant=minbase", "bookworm", str(dest), debian], timeout=900)
    (dest / "etc/apt/sources.list").write_text(base_sources_list(debian, security))
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (dest / junk).glob("*"):
            if p.is_file():
                p.unlink()
    return dest


def run(cmd: list[str], *, timeout: float = 300, check: bool = True, env: dict | None = None,
        cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure (when ``check``) fail with its output."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@dataclass
class Engine:
    """podman with its own storage, configuration and network namespace under ``root``."""

    root: Path
    env: dict = field(default_factory=dict)
    netns: Path | None = None  # /proc/PID/ns/net of the namespace holder
    holder: subprocess.Popen | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path) -> Engine:
        for tool, package in (("podman", "podman"), ("runc", "runc"), ("nsenter", "util-linux"),
                              ("unshare", "util-linux"), ("ip", "iproute2"), ("podman-compose", "podman-compose"),
                              ("iptables", "iptables"), ("curl", "curl")):
            require_tool(tool, package)
        for helper, package in (("netavark", "netavark"), ("aardvark-dns", "aardvark-dns")):
            if not Path(f"/usr/lib/podman/{helper}").exists():
                raise AssertionError(f"/usr/lib/podman/{helper} is missing: install the Debian package {package!r}")
        root.mkdir(parents=True, exist_ok=True)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[0], 4096)
        storage, containers = engine_config(root, nofile, nproc)
        (root / "storage.conf").write_text(storage)
        (root / "containers.conf").write_text(containers)
        env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
               "CONTAINERS_CONF": str(root / "containers.conf")}
        holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        netns = Path(f"/proc/{holder.pid}/ns/net")
        engine = cls(root, env, netns, holder)
        deadline = time.monotonic() + 10
        while os.readlink(netns) == os.readlink("/proc/self/ns/net"):  # unshare has not switched yet
            if time.monotonic() > deadline:
                raise AssertionError("unshare --net did not create a network namespace in 10 s")
            time.sleep(0.02)
        engine.ns("ip", "link", "set", "lo", "up")
        return engine

    def ns(self, *cmd: str, timeout: float = 120, check: bool = True, input: str | None = None,
           cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run ``cmd`` in the engine's network namespace (mounts untouched: the cgroups stay visible)."""
        return run(["nsenter", f"--net={self.netns}", *cmd], timeout=timeout, check=check, env=self.env,
                   input=input, cwd=cwd)

    def podman(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """``podman ARGS`` with this engine's configuration, in its network namespace."""
        return self.ns("podman", *args, timeout=timeout, check=check)

    def import_tree(self, tree: Path, name: str = BASE_IMAGE) -> None:
        """``podman import`` a root file system tree under ``name``."""
        start = time.monotonic()
        tar = subprocess.Popen(["tar", "-C", str(tree), "-c", "."], stdout=subprocess.PIPE)
        r = subprocess.run(["podman", "import", "-", name], stdin=tar.stdout, env=self.env,
                           capture_output=True, text=True, timeout=300)
        tar.stdout.close()
        tar.wait(60)
        if r.returncode != 0 or tar.returncode != 0:
            raise AssertionError(f"podman import of {tree} failed: {r.stderr[-2000:]}")
        self.timings["import base"] = time.monotonic() - start

    def build(self, target: str) -> str:
        """Build ``target`` of deploy/Dockerfile from the repository root, as the README says."""
        pip_conf = self.root / "pip.conf"
        pip_conf.write_text("[global]\ncert = /etc/ssl/host-ca.pem\n")
        tag = IMAGES[target]
        start = time.monotonic()
        # in the host's network (the package registries), not the engine's namespace
        run(["podman", "build", "--pull=never", "--network", "host", "--format", "docker",
             "-v", f"{host_ca_bundle()}:/etc/ssl/host-ca.pem:ro", "-v", f"{pip_conf}:/etc/pip.conf:ro",
             "-f", str(REPO / "deploy/Dockerfile"), "--target", target, "-t", tag, str(REPO)],
            timeout=900, env=self.env)
        self.timings[f"build {target}"] = time.monotonic() - start
        return tag

    def close(self) -> None:
        """Remove every container and network, then the namespace."""
        self.podman("rm", "-f", "-a", "-t", "5", check=False, timeout=120)
        self.podman("network", "prune", "-f", check=False)
        overlay = self.root / "storage/overlay"  # the driver's own mount, if podman left it
        if os.path.ismount(overlay):
            run(["umount", str(overlay)], check=False)
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait(10)
