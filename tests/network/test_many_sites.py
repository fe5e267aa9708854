"""Twenty sites, each in its own namespace with its own 20 Mbit/s link, on one server.

First twenty syncs start in the same instant (each sync process waits at a
barrier until all twenty are up).  Then the same sites run as real
``library-syncer client`` daemons whose schedule ticks every 10 s: SYNC_DELAY
spreads their scheduled syncs over SYNC_DELAY_MAX_SECONDS.
"""

from __future__ import annotations

import getpass
import hashlib
import re
import time
from datetime import datetime

from library_syncer.publish import generations as gen

from .netbench import PYTHON, SSH_PORT, write_random

MB = 1_000_000
SITES = 20
DELAY_MAX = 10
SCHEDULE = "*/10 * * * * *"  # cron with a seconds field (first): every 10 s


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def peak_sessions(server_log: str) -> int:
    """Most sessions open at once at the server, from sshd's log (session start / disconnect lines)."""
    open_now = peak = 0
    for line in server_log.splitlines():
        if "Starting session:" in line:
            open_now += 1
            peak = max(peak, open_now)
        elif "Disconnected from user" in line:
            open_now -= 1
    return peak


def test_twenty_sites_at_once_then_spread_by_sync_delay(bench, figures):
    lib = bench.work / "primary"
    write_random(lib / "Template" / "disk.iso", 4 * MB)
    write_random(lib / "Tools" / "tools.iso", 1 * MB)
    (lib / "Notes").mkdir()
    (lib / "Notes" / "readme.txt").write_text("notes\n")
    sites = [bench.add_site(mbit=20) for _ in range(SITES)]
    bench.start_server(lib)

    # 1. Twenty syncs started in the same instant (each process waits at a barrier until all are up).
    runs = [bench.sync(site, barrier=True, retry_base=2) for site in sites]
    for run in runs:
        run.wait_event("ready", 60)
    t0 = time.time()
    for run in runs:
        run.go()
    results = [run.result(180) for run in runs]
    assert all(r["ok"] for r in results), [r["reason"] for r in results if not r["ok"]]
    for site in sites:
        assert gen.current_generation(site.library) == 1
        root = gen.current_root(site.library)
        assert sha256(root / "Template" / "disk.iso") == sha256(lib / "Template" / "disk.iso")
        assert (root / "lib.json").is_file() and (root / "Notes" / "item.json").is_file()
    durations = sorted(r["duration_seconds"] for r in results)
    figures(f"{SITES} sites start a 5 MB sync in the same instant, 20 Mbit/s each",
            all_done_after=f"{max(run.events('result')[0]['t'] for run in runs) - t0:.1f}s",
            per_site_duration=f"{durations[0]:.1f}..{durations[-1]:.1f}s (median {durations[SITES // 2]:.1f}s)",
            peak_concurrent_sessions_at_the_server=peak_sessions(bench.server_log_text()),
            attempts=sum(r["attempts"] for r in results),
            bytes_on_the_wire=f"{sum(r['wire_bytes'] for r in results):,} (rsync's count, all sites)")
    assert sum(r["attempts"] for r in results) == SITES  # nobody was refused

    # 2. The same sites as real client daemons: the start sync (nothing to do) is never delayed;
    # each scheduled sync waits a random delay up to SYNC_DELAY_MAX_SECONDS after its tick.
    daemons = []
    for site in sites:
        env = {"SYNC_PEER": site.link.server_addr, "SYNC_PORT": str(SSH_PORT), "SYNC_USER": getpass.getuser(),
               "SYNC_KEY": str(site.key), "SYNC_HOST_KEY": bench.host_key_line,
               "SYNCER_LIBRARY": str(site.library), "SYNCER_STATE_DIR": str(site.state),
               "SYNCER_HTTP_HOST": "127.0.0.1", "SYNCER_HTTP_PORT": "8080", "LIBRARY_NAME": site.name,
               "SYNC_SCHEDULE": SCHEDULE, "SYNC_DELAY": "true", "SYNC_DELAY_MAX_SECONDS": str(DELAY_MAX)}
        daemons.append(bench.popen_lines(site, PYTHON, "-m", "library_syncer", "client", env=env))
    planned = []
    for d in daemons:
        _, line = d.wait_for(lambda i: "next sync at" in i[1], 90, "the daemon's first sync and its next plan")
        m = re.search(r"next sync at (\S+) .*random delay (\d+)s", line)
        assert m, line
        planned.append((datetime.fromisoformat(m[1]).timestamp(), int(m[2])))
    started = [d.wait_for(lambda i: "started (schedule)" in i[1], 10 + DELAY_MAX + 30, "the scheduled sync")[0]
               for d in daemons]
    done = [d.wait_for(lambda i: re.search(r"sync \S+ (succeeded|failed)", i[1]) and i[0] > s, 60,
                       "the scheduled sync's end")[1] for d, s in zip(daemons, started)]
    assert all("succeeded" in line for line in done), [line for line in done if "succeeded" not in line]
    delays = [delay for _, delay in planned]
    lateness = [s - p for s, (p, _) in zip(started, planned)]
    ticks = {round(p - delay) for p, delay in planned}
    figures(f"{SITES} client daemons, SYNC_SCHEDULE '{SCHEDULE}', SYNC_DELAY=true, "
            f"SYNC_DELAY_MAX_SECONDS={DELAY_MAX}",
            random_delays=f"{sorted(delays)}", scheduled_starts_spread_over=f"{max(started) - min(started):.1f}s "
            f"({len(ticks)} tick(s))", start_vs_plan=f"{min(lateness):+.1f}..{max(lateness):+.1f}s")
    assert max(delays) - min(delays) >= DELAY_MAX / 3, delays
    assert all(-1.5 <= x <= 5 for x in lateness), lateness  # each started when its delay said
