"""A link cut and a server crash in the middle of a large file: bounded detection, retries, resume.

Both scenarios: a site has published a first generation and serves it; the
primary gains a 48 MB file; while it crosses a 40 Mbit/s link the link is cut
for longer than rsync's timeout (or the server host crashes and stays down as
long as the timeout); then it comes back.  The sync must notice in bounded time, retry with backoff, resume from
the partial file and publish, while the web server keeps serving the first
generation unchanged until the switch.
"""

from __future__ import annotations

import time

from library_syncer.transport.ssh import alive_interval

from .netbench import wire, write_random

MB = 1_000_000
SIZE = 48 * MB
TIMEOUT = 10  # SYNC_TIMEOUT (its minimum): rsync's I/O timeout, the ssh keepalives derive from it
# The client's rsync counts its own keep-alive writes into the ssh pipe as I/O, so on a silent
# link its --timeout does not fire: ssh's ServerAliveInterval (3 unanswered, ~4 intervals) does.
DEAD_LINK_BOUND = max(TIMEOUT, 4 * alive_interval(TIMEOUT)) + 3
SETTINGS = dict(sync_timeout=TIMEOUT, sync_connect_timeout=5, sync_retry_deadline=240, retry_base=1)


def big_transfer_under_way(bench, site):
    """A first generation published, served and polled; then a sync of a new 48 MB file, until 40 % of
    it crossed.  Returns (probe, what it first got, link counters before, start time, the run, progress)."""
    lib, probe, first_got = bench.publish_first_generation(site)
    write_random(lib / "Big" / "disk.iso", SIZE)
    before = site.link.site_counters()
    t0 = time.time()
    run = bench.sync(site, **SETTINGS)
    at = run.wait_event("progress", 60, lambda e: e["bytes"] >= 0.4 * SIZE)
    return probe, first_got, before, t0, run, at


def check_served_unchanged(probe, first_got, run, what):
    """Every poll until the publish step saw the first generation; then the new one is served."""
    publish = run.wait_event("phase", 1, lambda e: e["name"] == "publish")["t"]
    switched = probe.wait_for(lambda p: p["got"][0][1] != first_got[0][1], 15, "the new generation served")
    polls = probe.snapshot()
    during = [p for p in polls if p["t"] < publish]
    assert len(during) > 20, f"too few polls while {what}"
    for p in polls:
        assert all(g[0] == 200 for g in p["got"]), f"a request failed while {what}: {p}"
        assert p["got"][1] == first_got[1], f"the published file changed while {what}: {p}"
    for p in during:
        assert p["got"][0] == first_got[0], f"lib.json changed before the publish step while {what}: {p}"
    assert switched["t"] >= publish
    return len(during)


def check_resumed(result, wire_bytes):
    assert result["ok"] and result["generation"] == 2, result["reason"]
    assert result["attempts"] >= 3, result
    # The last attempt built the file from the partial one: much of it matched, and the
    # whole run moved far less than the kept part plus a second full copy would.
    assert result["matched_bytes"] >= 0.3 * SIZE, result
    assert wire_bytes < 1.25 * SIZE, wire_bytes


def test_link_cut_mid_file_then_restored(bench, figures):
    site = bench.add_site(mbit=40)
    probe, first_got, before, t0, run, cut_at = big_transfer_under_way(bench, site)
    t_cut = time.time()
    site.link.set_cut(True)
    first_retry = run.wait_event("retry", TIMEOUT + 30)
    detected = first_retry["t"] - t_cut
    # Keep the link dead until a reconnection attempt has failed as well, and longer than the timeout.
    run.wait_event("retry", 60, lambda e: e["attempt"] >= 2)
    while time.time() - t_cut < TIMEOUT + 5:
        time.sleep(0.1)
    dropped = site.link.dropped_packets()
    t_restore = time.time()
    site.link.set_cut(False)
    result = run.result(180)
    moved = wire(before, site.link.site_counters())
    retries = run.events("retry")
    figures("48 MB at 40 Mbit/s, link cut at {:.0f}% for {:.1f}s".format(100 * cut_at["bytes"] / SIZE, t_restore - t_cut),
            dead_link_noticed_after=f"{detected:.1f}s (SYNC_TIMEOUT {TIMEOUT}s, "
                                            f"ssh keepalive every {alive_interval(TIMEOUT)}s)",
            retry_delays=" / ".join(f"{r['delay']:.1f}s" for r in retries),
            first_failure=f"'{retries[0]['reason']}'", attempts=result["attempts"], packets_dropped_by_the_cut=dropped,
            finished_after_restore=f"{result_time(run) - t_restore:.1f}s", total=f"{result_time(run) - t0:.1f}s",
            bytes_on_the_wire=f"{moved:,}", matched_from_partial=f"{result['matched_bytes']:,}")
    assert detected <= DEAD_LINK_BOUND, f"the dead link was noticed after {detected:.1f}s"
    check_resumed(result, moved)
    polls = check_served_unchanged(probe, first_got, run, "the link was cut")
    print(f"{polls} polls of the web server served generation 1 unchanged until the switch")


def test_server_crash_mid_file_then_restarted(bench, figures):
    site = bench.add_site(mbit=40)
    probe, first_got, before, t0, run, crash_at = big_transfer_under_way(bench, site)
    t_crash = time.time()
    bench.crash_server()
    first_retry = run.wait_event("retry", TIMEOUT + 30)
    detected = first_retry["t"] - t_crash
    run.wait_event("retry", 60, lambda e: e["attempt"] >= 2)  # a reconnection refused while it is down
    while time.time() - t_crash < TIMEOUT:  # down as long as the timeout
        time.sleep(0.1)
    t_restart = time.time()
    bench.start_server()
    result = run.result(180)
    moved = wire(before, site.link.site_counters())
    retries = run.events("retry")
    figures("48 MB at 40 Mbit/s, server host killed at {:.0f}%, down {:.1f}s".format(
                100 * crash_at["bytes"] / SIZE, t_restart - t_crash),
            crash_noticed_after=f"{detected:.1f}s",
            retry_delays=" / ".join(f"{r['delay']:.1f}s" for r in retries),
            first_failure=f"'{retries[0]['reason']}'", attempts=result["attempts"], finished_after_restart=f"{result_time(run) - t_restart:.1f}s",
            total=f"{result_time(run) - t0:.1f}s", bytes_on_the_wire=f"{moved:,}",
            matched_from_partial=f"{result['matched_bytes']:,}")
    assert detected <= 5, f"the crash was noticed after {detected:.1f}s"
    check_resumed(result, moved)
    polls = check_served_unchanged(probe, first_got, run, "the server was down")
    print(f"{polls} polls of the web server served generation 1 unchanged until the switch")


def result_time(run) -> float:
    return run.events("result")[0]["t"]
