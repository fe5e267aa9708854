"""Benchmark: download throughput of our web server vs Caddy's plain file_server, same run, loopback.

Both servers publish the same folder of random (incompressible) files, already in the
page cache, over HTTP and over HTTPS (one self-signed ECDSA certificate made with
openssl, TLS 1.3), all listening at once on 127.0.0.1:

* ours:  ``library-syncer serve DIR --host 127.0.0.1 --port P [--cert C --key K]``; its HTTPS
  is terminated by the Caddy child it starts (SYNCER_TLS_FRONT=caddy, the default), which
  sends the files our app names; the CPU counted is that of the whole process tree;
* ours with TLS in our own process (SYNCER_TLS_FRONT=python), HTTPS only, for comparison;
* Caddy: ``caddy file-server --root DIR --listen 127.0.0.1:P``, and for HTTPS a Caddyfile
  with ``tls C K`` + ``file_server``.

The load tool is ``hey`` (HTTP/1.1, compression off): one download of the large file
(``-n 1 -c 1``) and 50 concurrent downloads of a smaller file (``-n 50 -c 50``).  Each
measurement runs ``--repeat`` times, ours and Caddy alternating; the table shows the medians
of MB/s (10^6 bytes per second, hey's total time) and of the server's CPU seconds (from
/proc/PID/stat, utime+stime, before/after), the ratios ours/Caddy, each server's peak RSS,
and the TLS 1.3 cipher each HTTPS server picks for a client offering Go's order (as hey does).

Usage: python benchmarks/serving.py [--quick] [--large-size 2G] [--concurrent-size 32M] [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import benchlib as b

CONCURRENCY = 50
PYTLS = "ours-python-tls"  # our server doing TLS itself (SYNCER_TLS_FRONT=python), the design before
# The TLS 1.3 suites in the order Go's client offers them on a CPU with AES instructions (hey is Go).
GO_CLIENT_SUITES = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"


@dataclass
class Server:
    name: str  # "ours" or "caddy"
    scheme: str
    port: int
    proc: subprocess.Popen
    mbps: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{name}"


def make_cert(work: Path) -> tuple[Path, Path]:
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def start_servers(work: Path, root: Path, cert: Path, key: Path, diagnose: bool) -> list[Server]:
    env = b.clean_env() | {"HOME": str(work / "home"), "XDG_DATA_HOME": str(work / "home"),
                           "XDG_CONFIG_HOME": str(work / "home")}
    servers = []
    variants = [("ours", "http"), ("ours", "https"), ("caddy", "http"), ("caddy", "https")]
    if diagnose:
        variants.append((PYTLS, "https"))
    for name, scheme in variants:
        port = b.free_port()
        if name.startswith("ours"):
            cmd = b.syncer_cmd("serve", root, "--host", "127.0.0.1", "--port", port)
            if scheme == "https":
                cmd += ["--cert", str(cert), "--key", str(key)]
        elif scheme == "http":
            cmd = ["caddy", "file-server", "--root", str(root), "--listen", f"127.0.0.1:{port}"]
        else:
            caddyfile = work / "Caddyfile"
            caddyfile.write_text(
                "{\n\tadmin off\n\tauto_https disable_redirects\n\tskip_install_trust\n\tdefault_sni 127.0.0.1\n}\n"
                f"https://127.0.0.1:{port} {{\n\ttls {cert} {key}\n\troot * {root}\n\tfile_server\n}}\n")
            cmd = ["caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
        log = open(work / f"{name}-{scheme}.log", "wb")
        extra = {"SYNCER_TLS_FRONT": "python"} if name == PYTLS else {}
        proc = subprocess.Popen(cmd, env=env | extra, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        servers.append(Server(name, scheme, port, proc))
    try:
        for s in servers:
            b.wait_for(lambda: s.proc.poll() is not None or b.port_open(s.port), 60, f"{s.name} {s.scheme} server")
            if s.proc.poll() is not None:
                log = (work / f"{s.name}-{s.scheme}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"benchmark: {s.name} {s.scheme} server exited:\n{log}")
    except BaseException:
        for s in servers:
            b.stop(s.proc)
        raise
    return servers


def hey(url: str, n: int, c: int, size: int) -> float:
    """Run hey; MB/s of the whole run (n downloads of ``size`` bytes in hey's total time)."""
    r = subprocess.run(["hey", "-n", str(n), "-c", str(c), "-t", "600", "-disable-compression",
                        # hey would send "127.0.0.1:PORT" as TLS SNI; with this Host no SNI is sent
                        "-host", "127.0.0.1", url],
                       capture_output=True, text=True, timeout=900)
    total = re.search(r"Total:\s+([\d.]+) secs", r.stdout)
    ok = re.search(r"\[200\]\s+(\d+) responses", r.stdout)
    if r.returncode or not total or not ok or int(ok.group(1)) != n:
        raise SystemExit(f"benchmark: hey failed for {url}:\n{r.stdout[-3000:]}{r.stderr[-2000:]}")
    return n * size / float(total.group(1)) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    b.common_args(parser)
    parser.add_argument("--large-size", type=b.parse_size, default=None, help="the single large file (default 2G)")
    parser.add_argument("--concurrent-size", type=b.parse_size, default=None,
                        help=f"file downloaded {CONCURRENCY} times at once (default 32M)")
    parser.add_argument("--no-diagnose", dest="diagnose", action="store_false",
                        help="leave out our HTTPS with TLS in our own process (SYNCER_TLS_FRONT=python)")
    args = b.parse_args(parser)
    large = args.large_size or (b.parse_size("256M") if args.quick else b.parse_size("2G"))
    small = args.concurrent_size or (b.parse_size("8M") if args.quick else b.parse_size("32M"))
    b.require("caddy", "hey", "openssl")

    with b.workdir(args.dir, "serving-bench-") as work:
        root = work / "library"
        b.write_random(root / "large" / "disk.vmdk", large)
        b.write_random(root / "small" / "disk.vmdk", small)
        b.warm([root / "large" / "disk.vmdk", root / "small" / "disk.vmdk"])
        cert, key = make_cert(work)
        servers = start_servers(work, root, cert, key, args.diagnose)
        loads = {
            "one large file": ("large/disk.vmdk", 1, 1, large),
            f"{CONCURRENCY} concurrent downloads": ("small/disk.vmdk", CONCURRENCY, CONCURRENCY, small),
        }
        try:
            started = time.monotonic()
            for _ in range(args.repeat):
                for label, (path, n, c, size) in loads.items():
                    for s in servers:
                        before = b.tree_cpu_seconds(s.proc.pid)
                        s.mbps.setdefault(label, []).append(hey(s.url(path), n, c, size))
                        s.cpu.setdefault(label, []).append(b.tree_cpu_seconds(s.proc.pid) - before)
            elapsed = time.monotonic() - started
            rss = {(s.name, s.scheme): tree_peak_rss_kib(s.proc.pid) for s in servers}
            ciphers = {(s.name, s.scheme): negotiated_cipher(s.port) for s in servers if s.scheme == "https"}
        finally:
            for s in servers:
                b.stop(s.proc)

    b.header(
        "Serving: library-syncer serve vs Caddy file_server (loopback)",
        f"files: one of {b.human(large)}; one of {b.human(small)} downloaded {CONCURRENCY} times at once; "
        "random bytes, in the page cache",
        f"load tool: hey (HTTP/1.1, no compression) on the same machine; HTTPS: TLS 1.3, ECDSA P-256 "
        f"self-signed; caddy {caddy_version()}",
        f"median of {args.repeat} runs (ours and Caddy alternating); measured in {elapsed:.0f} s",
    )
    rows = []
    for label, (_, n, _, size) in loads.items():
        for scheme in ("http", "https"):
            ours = next(s for s in servers if s.name == "ours" and s.scheme == scheme)
            caddy = next(s for s in servers if s.name == "caddy" and s.scheme == scheme)
            o, c = b.median(ours.mbps[label]), b.median(caddy.mbps[label])
            gb = n * size / 1e9
            oc, cc = b.median(ours.cpu[label]) / gb, b.median(caddy.cpu[label]) / gb
            rows.append((f"{label}, {scheme.upper()}", f"{o:,.0f}", f"{c:,.0f}", f"{o / c:.2f}",
                         f"{oc:.2f}", f"{cc:.2f}", f"{oc / cc:.2f}"))
    b.table("Throughput (MB/s) and server CPU seconds per GB served (ours: HTTPS terminated by its Caddy front)",
            ["load", "ours MB/s", "caddy MB/s", "ours/caddy", "ours CPU s/GB", "caddy CPU s/GB",
             "ours/caddy CPU"], rows)
    names = [n for n in ("ours", PYTLS, "caddy") if any(s.name == n for s in servers)]
    b.table("Server peak memory (RSS, process tree) and the TLS 1.3 cipher picked for Go's client order",
            ["server", "HTTP", "HTTPS", "HTTPS cipher"],
            [(name, f"{rss[(name, 'http')] / 1024:.0f} MiB" if (name, "http") in rss else "-",
              f"{rss[(name, 'https')] / 1024:.0f} MiB", ciphers[(name, "https")]) for name in names])
    pytls = next((s for s in servers if s.name == PYTLS), None)
    if pytls:
        caddy = next(s for s in servers if s.name == "caddy" and s.scheme == "https")
        rows = []
        for label, (_, n, _, size) in loads.items():
            gb = n * size / 1e9
            d, dc = b.median(pytls.mbps[label]), b.median(pytls.cpu[label]) / gb
            rows.append((f"{label}, HTTPS", f"{d:,.0f}", f"{d / b.median(caddy.mbps[label]):.2f}", f"{dc:.2f}",
                         f"{dc / (b.median(caddy.cpu[label]) / gb):.2f}"))
        b.table("For comparison: our HTTPS with TLS in our own Python process (SYNCER_TLS_FRONT=python)",
                ["load", "MB/s", "/caddy", "CPU s/GB", "CPU /caddy"], rows)


def tree_peak_rss_kib(pid: int) -> int:
    """Peak RSS of a process plus that of its living children (our server and its Caddy front)."""
    total = b.peak_rss_kib(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                total += tree_peak_rss_kib(int(entry.name))
    return total


def negotiated_cipher(port: int) -> str:
    """The TLS 1.3 suite the server picks when offered GO_CLIENT_SUITES in that order (openssl s_client)."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
                        "-ciphersuites", GO_CLIENT_SUITES], input="", capture_output=True, text=True, timeout=30)
    found = re.search(r"Cipher is (\S+)", r.stdout)
    return found.group(1) if found else "?"


def caddy_version() -> str:
    r = subprocess.run(["caddy", "version"], capture_output=True, text=True)
    return r.stdout.split()[0] if r.stdout else "?"


if __name__ == "__main__":
    main()
