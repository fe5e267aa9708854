"""Relays on the bench: a primary behind one shaped uplink, two relays, six sites behind each relay.

Topology in :mod:`.relaybench`.  Every site lists its relay first and the primary after it.
The module builds the fleet once (primary, relays and twelve sites publish generation 1
through the relays); the scenarios then run in this order on it (each one sets up what it needs,
in this order at the least cost):

1. a few MB changed in one template: the bytes that left the primary when the sites pull
   through their relays, against the same sites pulling straight from the primary;
2. a relay whose upstream is cut stays one origin version behind: sites that have the newer
   version skip it, sites that list only it stay where they are, nobody goes backwards;
3. a relay's host processes SIGKILLed while its sites pull a new disk from it: they fail over
   to the primary, reuse what had arrived, keep their item ids;
4. the relay's forced command allows its read-only forms and refuses everything else.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import time

import pytest

from library_syncer.publish import generations as gen
from library_syncer.sync.origin_state import read_site_origin
from library_syncer.vcsp.manifest import check_manifest

from .netbench import SSH_PORT, write_random
from .relaybench import Fleet

MB = 1_000_000
UPLINK_MBIT = 20  # the primary's uplink, both ways: 2.5 MB/s
SITE_MBIT = 20  # each site's link to its relay
KILL_MBIT = 8  # the links of relay A's sites while it is killed: its sites are mid-file for seconds
SITES_PER_RELAY = 6
CHANGE = 3 * MB  # scenario 1: bytes rewritten in the middle of the template's disk
NEW_DISK = 6 * MB  # scenario 2: the template gains a second disk
KILL_AT = 512 * 1024  # scenario 2: every site has received this much of it when the relay is killed


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def rewrite(path, offset: int, size: int) -> None:
    """Overwrite ``size`` bytes of ``path`` at ``offset`` with new random bytes (the file keeps its size)."""
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(os.urandom(size))


def item_ids(site) -> dict[str, str]:
    root = gen.current_root(site.library)
    return {i["name"]: i["id"] for i in json.loads((root / "items.json").read_text())["items"]}


def same_files(site, library) -> bool:
    root = gen.current_root(site.library)
    return all(md5(root / p.relative_to(library)) == md5(p) for p in library.rglob("*") if p.is_file())


def sync_all(fleet, sites, peers, *, timeout: float = 180, **overrides) -> tuple[list[dict], float]:
    """One sync of each site at once, trying ``peers`` (one list, or one list per site); returns (results,
    time of the last result)."""
    lists = peers if isinstance(peers[0], list) else [peers] * len(sites)
    runs = [fleet.bench.sync(site, **fleet.site_values(site, p, **overrides)) for site, p in zip(sites, lists)]
    results = [run.result(timeout) for run in runs]
    return results, max(run.events("result")[0]["t"] for run in runs)


@pytest.fixture(scope="module")
def fleet(module_bench):
    """The fleet, every site at generation 1 pulled through its relay."""
    bench = module_bench
    fleet = Fleet(bench, uplink_mbit=UPLINK_MBIT, relays=2, sites_per_relay=SITES_PER_RELAY, site_mbit=SITE_MBIT)
    lib = fleet.library = bench.work / "primary"
    write_random(lib / "Template" / "disk.vmdk", 8 * MB)
    write_random(lib / "Tools" / "tools.iso", 1 * MB)
    (lib / "Notes").mkdir()
    (lib / "Notes" / "readme.txt").write_text("notes\n")
    bench.server_extra = ["--origin-refresh-seconds", "1"]
    bench.start_server(lib)
    first = fleet.wait_origin("Template", "disk.vmdk", md5(lib / "Template" / "disk.vmdk"))
    t0 = time.time()
    for relay in fleet.relays:
        fleet.start_relay(relay)
    for relay in fleet.relays:
        line = fleet.started(relay)
        assert "succeeded" in line and f"origin version {first['version']}" in line, line
    relays_done = time.time()
    results, last = sync_all(fleet, fleet.sites, ["relay", "primary"])
    for site, r in zip(fleet.sites, results):
        assert r["ok"] and r["generation"] == 1 and r["peer"] == fleet.peer_name(site, "relay"), r
        assert r["origin_version"] == first["version"], r
    fleet.setup = dict(relays_published_after=f"{relays_done - t0:.1f}s",
                       all_sites_published_after=f"{last - t0:.1f}s",
                       bytes_that_left_the_primary=f"{fleet.primary_sent():,}")
    return fleet


def test_relays_carry_a_change_once_each_instead_of_once_per_site(fleet, figures):
    bench, lib = fleet.bench, fleet.library
    disk = lib / "Template" / "disk.vmdk"
    figures("set-up: 2 relays and 12 sites publish a 9 MB library (generation 1) through the relays",
            **fleet.setup)

    # Round 1: through the relays.  Each relay pulls the change once; its sites pull it from the relay.
    rewrite(disk, 2 * MB, CHANGE)
    version = fleet.wait_origin("Template", "disk.vmdk", md5(disk))["version"]
    sent = fleet.primary_sent()
    t0 = time.time()
    pending = {relay.name: (relay, fleet.trigger(relay)) for relay in fleet.relays}
    runs, relay_times = [], {}
    deadline = time.monotonic() + 90
    while pending:  # each relay's sites start as soon as their relay has published
        for name, (relay, run_id) in list(pending.items()):
            end = fleet.relay_sync_end(relay, run_id)
            if end is not None:
                assert end[1] == "succeeded" and f"origin version {version}" in end[2], end
                relay_times[name] = end[0] - t0
                runs += [(site, bench.sync(site, **fleet.site_values(site, ["relay", "primary"])))
                         for site in relay.sites]
                del pending[name]
        assert time.monotonic() < deadline, f"relays {sorted(pending)} did not publish within 90s"
        time.sleep(0.1)
    results = [(site, run.result(180), run) for site, run in runs]
    relayed_time = max(run.events("result")[0]["t"] for _, _, run in results) - t0
    relayed = fleet.primary_sent() - sent
    for site, r, _ in results:
        assert r["ok"] and r["peer"] == fleet.peer_name(site, "relay") and r["origin_version"] == version, r
        assert r["generation"] == 2 and same_files(site, lib), (site.name, r)
        assert check_manifest(gen.current_root(site.library)) == []
    site_literal = sum(r["literal_bytes"] for _, r, _ in results)

    # Round 2: the same sites, the same size of change, every site straight from the primary.
    rewrite(disk, 5 * MB - CHANGE // 2, CHANGE)
    version = fleet.wait_origin("Template", "disk.vmdk", md5(disk))["version"]
    sent = fleet.primary_sent()
    t0 = time.time()
    direct_results, last = sync_all(fleet, fleet.sites, ["primary"])
    direct_time = last - t0
    direct = fleet.primary_sent() - sent
    for site, r in zip(fleet.sites, direct_results):
        assert r["ok"] and r["peer"] == fleet.peer_name(site, "primary") and r["origin_version"] == version, r
        assert r["generation"] == 3 and same_files(site, lib), (site.name, r)

    n_relays, n_sites = len(fleet.relays), len(fleet.sites)
    figures(f"{CHANGE // MB} MB rewritten in an 8 MB template disk; primary uplink {UPLINK_MBIT} Mbit/s, "
            f"{n_relays} relays, {n_sites} sites ({SITE_MBIT} Mbit/s each to its relay)",
            through_relays=f"{relayed:,} B left the primary ({relayed / CHANGE:.2f}x the change), relays "
                           f"published after {relay_times['relayA']:.1f}s / {relay_times['relayB']:.1f}s, every site "
                           f"published the new origin version after {relayed_time:.1f}s, literal data to the sites "
                           f"{site_literal:,} B (from the relays)",
            straight_from_the_primary=f"{direct:,} B left the primary ({direct / CHANGE:.2f}x the change), every "
                                      f"site published after {direct_time:.1f}s",
            ratio=f"{direct / relayed:.1f}x fewer bytes from the primary with relays")
    # About relays x change with relays, about sites x change without.
    assert relayed < 1.25 * n_relays * CHANGE, relayed
    assert direct > 0.95 * n_sites * CHANGE, direct
    assert direct / relayed > 0.7 * n_sites / n_relays, (direct, relayed)


def test_a_relay_one_version_behind_no_site_goes_backwards(fleet, figures):
    lib = fleet.library
    relay = fleet.relays[1]
    sites = relay.sites
    end = fleet.wait_relay_sync(relay, fleet.trigger(relay))
    current = fleet.primary_origin()["version"]
    assert end[1] == "succeeded" and f"origin version {current}" in end[2], end
    results, _ = sync_all(fleet, sites, ["relay", "primary"])
    assert all(r["ok"] and r["origin_version"] == current for r in results), results

    # The relay's upstream is cut (its own packets only: its sites still reach the primary through its host).
    fleet.cut_relay_upstream(relay, True)
    tools = lib / "Tools" / "tools.iso"
    rewrite(tools, 0, 64 * 1024)
    newer = fleet.wait_origin("Tools", "tools.iso", md5(tools))["version"]
    assert newer == current + 1
    relay_run = fleet.trigger(relay)
    ahead, stay = sites[:4], sites[4:]
    # Meanwhile four sites take the newer version from the primary (through the relay's host).
    results, _ = sync_all(fleet, ahead, ["primary"])
    assert all(r["ok"] and r["origin_version"] == newer for r in results), results
    end = fleet.wait_relay_sync(relay, relay_run)
    assert end[1] == "failed", end
    relay_failure = end[2]
    gens = {site.name: gen.current_generation(site.library) for site in sites}
    # At once: three of them sync with their usual list (the lagging relay is skipped, the primary
    # serves), the fourth lists only the relay (refused), two that are not ahead list only the relay.
    lists = [["relay", "primary"]] * 3 + [["relay"]] * 3
    results, _ = sync_all(fleet, ahead + stay, lists)
    for site, r in zip(ahead[:3], results[:3]):
        reason = r["peers_skipped"].get(fleet.peer_name(site, "relay"), "")
        assert r["ok"] and r["peer"] == fleet.peer_name(site, "primary") and r["origin_version"] == newer, r
        assert "older than the published" in reason, r
        assert gen.current_generation(site.library) == gens[site.name]
    skipped_reason = reason
    r, site = results[3], ahead[3]
    assert not r["ok"] and r["kind"] == "gave-up" and "older than the published" in r["reason"], r
    assert gen.current_generation(site.library) == gens[site.name] and same_files(site, lib)
    assert read_site_origin(site.library).version == newer
    refused_reason = r["reason"]
    for site, r in zip(stay, results[4:]):  # they stay at the relay's version
        assert r["ok"] and r["peer"] == fleet.peer_name(site, "relay") and r["origin_version"] == current, r
        assert gen.current_generation(site.library) == gens[site.name]
    stay_behind = results[4]["peer_behind"]

    # The upstream comes back: the relay catches up, and so do the sites that only list it.
    fleet.cut_relay_upstream(relay, False)
    end = fleet.wait_relay_sync(relay, fleet.trigger(relay))
    assert end[1] == "succeeded" and f"origin version {newer}" in end[2], end
    results, _ = sync_all(fleet, stay + ahead[3:], ["relay"])
    for site, r in zip(stay + ahead[3:], results):
        assert r["ok"] and r["origin_version"] == newer and same_files(site, lib), r
    figures(f"relay B's upstream cut while the primary goes from origin version {current} to {newer}",
            relay_sync=f"'{relay_failure}'", site_ahead_with_relay_then_primary=f"relay skipped: '{skipped_reason}', "
            f"served by the primary, nothing republished", site_ahead_listing_only_the_relay=f"'{refused_reason}'",
            sites_behind_listing_only_the_relay=f"stay at version {current} (peer_behind {stay_behind})",
            after_the_upstream_is_back=f"relay and those sites at version {newer}")


def test_a_relay_killed_mid_transfer_its_sites_fail_over_to_the_primary(fleet, figures):
    bench, lib = fleet.bench, fleet.library
    relay = fleet.relays[0]
    sites = relay.sites
    ids_before = {site.name: item_ids(site) for site in sites}
    gens_before = {site.name: gen.current_generation(site.library) for site in sites}
    write_random(lib / "Template" / "disk-2.vmdk", NEW_DISK)
    version = fleet.wait_origin("Template", "disk-2.vmdk", md5(lib / "Template" / "disk-2.vmdk"))["version"]
    end = fleet.wait_relay_sync(relay, fleet.trigger(relay))
    assert end[1] == "succeeded" and f"origin version {version}" in end[2], end

    for site in sites:
        site.link.shape(KILL_MBIT)
    runs = [bench.sync(site, barrier=True, **fleet.site_values(site, ["relay", "primary"], sync_retry_deadline=120))
            for site in sites]
    for run in runs:
        run.wait_event("ready", 60)
    for run in runs:
        run.go()
    for run in runs:
        run.wait_event("progress", 90, lambda e: e["bytes"] >= KILL_AT)
    assert not any(run.events("result") for run in runs), "a site finished before the relay was killed"
    sent = fleet.primary_sent()
    t_kill = time.time()
    fleet.kill_relay(relay)
    at_kill = [max(e["bytes"] for e in run.events("progress")) for run in runs]
    results = [run.result(180) for run in runs]
    done = max(run.events("result")[0]["t"] for run in runs) - t_kill
    failover_sent = fleet.primary_sent() - sent
    for site in sites:
        site.link.shape(SITE_MBIT)
    skipped = [r["peers_skipped"].get(fleet.peer_name(s, "relay"), "") for s, r in zip(sites, results)]
    reused, literal = sum(r["matched_bytes"] for r in results), sum(r["literal_bytes"] for r in results)
    figures(f"relay A's host processes SIGKILLed while its {len(sites)} sites pull a new {NEW_DISK // MB} MB disk "
            f"from it ({KILL_MBIT} Mbit/s links)",
            progress_at_the_kill=f"{min(at_kill):,}..{max(at_kill):,} B", every_site_published_after=f"{done:.1f}s",
            attempts=sum(r["attempts"] for r in results), matched_data=f"{reused:,} B (partial files, unchanged blocks)",
            literal_data_from_the_primary=f"{literal:,} B", left_the_primary=f"{failover_sent:,} B",
            relay_not_used_because=f"'{skipped[0]}'")
    for site, r, got in zip(sites, results, at_kill):
        assert r["ok"] and r["peer"] == fleet.peer_name(site, "primary") and r["origin_version"] == version, r
        assert skipped[sites.index(site)], r  # the relay was tried first and failed mid-transfer
        assert r["generation"] == gens_before[site.name] + 1 and same_files(site, lib), (site.name, r)
        assert check_manifest(gen.current_root(site.library)) == []
        ids = item_ids(site)
        assert {k: v for k, v in ids.items() if k in ids_before[site.name]} == ids_before[site.name]
        # What had arrived from the relay was reused (data in flight kept arriving after the last progress
        # line, so the partial file may hold more); the primary sent only the rest (and the small change
        # of the previous scenario when the site had not seen it).
        assert r["matched_bytes"] >= got - KILL_AT, (site.name, got, r["matched_bytes"])
        assert r["literal_bytes"] <= NEW_DISK - got + KILL_AT + 200_000, (site.name, got, r["literal_bytes"])
    assert failover_sent < 1.1 * literal + len(sites) * 200_000, failover_sent

    fleet.start_relay(relay)  # it comes back and catches up at its start sync
    line = fleet.started(relay)
    assert "succeeded" in line and f"origin version {version}" in line, line


def test_the_relay_forced_command_allows_only_its_forms(fleet, figures):
    relay = fleet.relays[1]
    site = relay.sites[0]
    kh = fleet.bench.work / f"{site.name}-relay-known-hosts"
    kh.write_text(f"[{site.link.server_addr}]:{SSH_PORT} {relay.host_key()}\n")

    def ssh(*command: str):
        return fleet.ssh(site.ns, site.key, site.link.server_addr, kh, *command)

    refused = ["id", "sh -c id", "cat /etc/passwd", "", "library-syncer origin; id", "library-syncer originx",
               "rsync --server -logDtpre.iLsfxC . ./", "scp -f /etc/passwd", "sftp"]
    for command in refused:
        p = ssh(*([command] if command else []))
        assert p.returncode != 0 and "library-syncer: refused:" in p.stderr, (command, p.returncode, p.stderr)
    p = ssh("-s", "sftp")  # a subsystem request: no sftp server answers
    assert p.returncode != 0 and p.stdout == "", (p.returncode, p.stdout)
    sftp = p.returncode
    origin = json.loads(ssh("library-syncer origin").stdout)
    published = read_site_origin(relay.library)  # what the relay received for the generation it exports
    assert origin["version"] == published.version and origin["origin_id"] == published.origin_id, origin
    assert len(origin["path"]) == 1, origin
    # A read-only rsync of the exported generation works; the relay's own folder is not in it.
    rsh = " ".join(["ssh", "-F", "/dev/null", "-p", str(SSH_PORT), "-i", str(site.key), "-o", "BatchMode=yes",
                    "-o", f"UserKnownHostsFile={kh}", "-o", "StrictHostKeyChecking=yes"])
    source = f"{getpass.getuser()}@{site.link.server_addr}:"
    listing = site.ns.run("rsync", "--list-only", "-e", rsh, f"{source}./", check=False)
    assert listing.returncode == 0, listing.stderr
    names = {line.split()[-1] for line in listing.stdout.splitlines()}
    assert {"Template", "Tools", "Notes", "lib.json"} <= names and ".library-syncer" not in names, names
    for path in ("./.library-syncer/", "../", "./../../"):
        p = site.ns.run("rsync", "--list-only", "-e", rsh, f"{source}{path}", check=False)
        assert p.returncode != 0 or not {"staging", "generations", "state"} & {
            line.split()[-1] for line in p.stdout.splitlines()}, (path, p.stdout)
    upload = fleet.bench.work / "upload.txt"
    upload.write_text("x\n")
    p = site.ns.run("rsync", "-e", rsh, upload, f"{source}./", check=False)
    assert p.returncode != 0 and "library-syncer: refused:" in p.stderr, (p.returncode, p.stderr)
    figures("forced command of relay B, from a site behind it",
            refused=f"{len(refused)} commands with one line each (a shell, other programs, an rsync upload form, scp, "
                    f"sftp, an empty command, a chained one); the sftp subsystem exits {sftp} with no output; an rsync "
                    f"push exits {p.returncode}",
            allowed=f"'library-syncer origin' (version {origin['version']}, path {[e['name'] for e in origin['path']]}) "
                    f"and a read-only rsync listing of the exported generation ({len(names)} entries, no "
                    f".library-syncer)")
