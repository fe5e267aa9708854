"""The fleet model fed with sshd 9.2 log lines (as captured from the real server) and a fake clock."""

from __future__ import annotations

import pytest

from library_syncer.fleet.model import Fleet, established_peers, parse_line

PARIS, ROME, NICE = "SHA256:AFYiX7fNFlKBzDsC9cXUtDfY7os0gCbeg4+zfZrXuL4", "SHA256:rome", "SHA256:nice"
STRANGER = "SHA256:UzT0sfB8z34JRl3zih2pQOf5mgAkC/rfRXaH3YYBVtE"
KEYS = {PARIS: "paris", ROME: "rome", NICE: "nice"}
DAY = 86400


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def clean_session(fleet: Fleet, clock: Clock, addr: str, port: int, fp: str, seconds: float) -> None:
    fleet.feed(f'Connection from {addr} port {port} on 127.0.0.1 port 2222 rdomain ""')
    clock.t += 0.2
    fleet.feed(f"Postponed publickey for syncer from {addr} port {port} ssh2 [preauth]")
    fleet.feed(f"Accepted publickey for syncer from {addr} port {port} ssh2: ED25519 {fp}")
    fleet.feed(f"Starting session: forced-command (config) '/usr/bin/rrsync -ro /lib' for syncer from {addr} port {port} id 0")
    clock.t += seconds - 0.2
    fleet.feed(f"Received disconnect from {addr} port {port}:11: disconnected by user")
    fleet.feed(f"Disconnected from user syncer {addr} port {port}")


def site(doc: dict, name: str) -> dict:
    return next(s for s in doc["sites"] if s["site"] == name)


def test_parse_lines():
    assert parse_line('Connection from ::1 port 5 on ::1 port 2222 rdomain ""').kind == "connect"
    e = parse_line(f"Accepted publickey for syncer from 10.0.0.5 port 4242 ssh2: ED25519 {PARIS}")
    assert (e.kind, e.addr, e.port, e.fingerprint) == ("accepted", "10.0.0.5", 4242, PARIS)
    assert parse_line("Received disconnect from 10.0.0.5 port 4242:11: disconnected by user").code == 11
    for line in ("Connection closed by 10.0.0.5 port 4242",
                 "Connection closed by authenticating user syncer 10.0.0.5 port 4242 [preauth]",
                 "Connection reset by user syncer 10.0.0.5 port 4242",
                 "Timeout, client not responding from user syncer 10.0.0.5 port 4242",
                 "Connection from user syncer 10.0.0.5 port 4242 timed out",
                 "ssh_packet_write_poll: Connection from user syncer 10.0.0.5 port 4242: Broken pipe",
                 "ssh_dispatch_run_fatal: Connection from authenticating user syncer 10.0.0.5 port 4242: "
                 "message authentication code incorrect [preauth]",
                 "banner exchange: Connection from 10.0.0.5 port 4242: invalid format",
                 "Read error from remote host 10.0.0.5 port 4242: Connection timed out"):
        e = parse_line(line)
        assert (e.kind, e.addr, e.port) == ("lost", "10.0.0.5", 4242), line
    assert parse_line("Disconnected from authenticating user syncer 10.0.0.5 port 4242 [preauth]").kind == "ended"
    assert parse_line("Server listening on 127.0.0.1 port 2222.").kind == "listening"
    for ignored in ("Close session: user syncer from 10.0.0.5 port 4242 id 0", "Transferred: sent 1, received 2 bytes",
                    "Root login accepted for forced command.", ""):
        assert parse_line(ignored) is None


def test_clean_sessions_lost_transfer_and_refusals():
    clock = Clock()
    fleet = Fleet(KEYS, silent_after=DAY, clock=clock)
    fleet.feed("Server listening on 0.0.0.0 port 2222.")
    clean_session(fleet, clock, "10.1.0.5", 40001, PARIS, 95.5)
    # rome's transfer is killed: the connection just closes.
    fleet.feed('Connection from 10.2.0.7 port 50000 on 0.0.0.0 port 2222 rdomain ""')
    fleet.feed(f"Accepted publickey for syncer from 10.2.0.7 port 50000 ssh2: ED25519 {ROME}")
    clock.t += 30
    assert site(fleet.snapshot(), "rome")["state"] == "syncing"
    fleet.feed("Connection closed by 10.2.0.7 port 50000")
    fleet.feed("Close session: user syncer from 10.2.0.7 port 50000 id 0")
    fleet.feed("Closing connection to 10.2.0.7 port 50000")
    # nice's key is refused (its from= limit), a stranger's key is unknown.
    fleet.feed('Connection from 10.3.0.1 port 1 on 0.0.0.0 port 2222 rdomain ""')
    fleet.feed(f"Failed publickey for syncer from 10.3.0.1 port 1 ssh2: ED25519 {NICE}")
    fleet.feed("Connection closed by authenticating user syncer 10.3.0.1 port 1 [preauth]")
    fleet.feed('Connection from 192.0.2.9 port 2 on 0.0.0.0 port 2222 rdomain ""')
    fleet.feed(f"Failed publickey for syncer from 192.0.2.9 port 2 ssh2: ED25519 {STRANGER}")
    fleet.feed("Connection closed by authenticating user syncer 192.0.2.9 port 2 [preauth]")

    doc = fleet.snapshot()
    paris = site(doc, "paris")
    assert paris["state"] == "ok" and paris["address"] == "10.1.0.5" and not paris["silent"]
    assert paris["last_sync"]["result"] == "ok" and paris["last_sync"]["duration_seconds"] == pytest.approx(95.5)
    assert paris["sessions"] == {"ok": 1, "error": 0, "lost": 0, "refused": 0}
    rome = site(doc, "rome")
    assert rome["state"] == "failing" and rome["last_sync"]["result"] == "lost"
    assert rome["last_sync"]["duration_seconds"] == pytest.approx(30)
    nice = site(doc, "nice")
    assert nice["state"] == "failing" and nice["last_sync"]["result"] == "refused" and nice["address"] == "10.3.0.1"
    assert doc["unknown_keys"]["attempts"] == 1
    assert doc["unknown_keys"]["last"]["address"] == "192.0.2.9"
    assert doc["unknown_keys"]["last"]["fingerprint"] == STRANGER
    assert doc["sshd"] == {"up": True, "restarts": 0}
    assert doc["summary"]["sites"] == 3 and doc["summary"]["failing"] == 2 and doc["summary"]["ok"] == 1


def test_other_disconnect_reason_is_an_error_and_retry_with_a_second_key_is_not_refused():
    clock = Clock()
    fleet = Fleet(KEYS, silent_after=DAY, clock=clock)
    fleet.feed(f"Failed publickey for syncer from ::1 port 7 ssh2: ED25519 {STRANGER}")  # connect line missed
    fleet.feed(f"Accepted publickey for syncer from ::1 port 7 ssh2: ED25519 {PARIS}")
    fleet.feed("Received disconnect from ::1 port 7:2: Packet corrupt")
    fleet.feed("Disconnected from user syncer ::1 port 7")
    doc = fleet.snapshot()
    assert site(doc, "paris")["last_sync"]["result"] == "error" and site(doc, "paris")["address"] == "::1"
    assert doc["unknown_keys"]["attempts"] == 0


def test_silent_and_never_seen_sites():
    clock = Clock()
    fleet = Fleet(KEYS, silent_after=DAY, clock=clock)
    clean_session(fleet, clock, "10.1.0.5", 1, PARIS, 10)
    clock.t += DAY - 1  # one second short of silent
    doc = fleet.snapshot()
    assert site(doc, "paris")["state"] == "ok"
    assert site(doc, "rome")["state"] == "never seen" and site(doc, "rome")["silent"]
    assert site(doc, "rome")["last_seen"] is None
    clock.t += 2
    doc = fleet.snapshot()
    assert site(doc, "paris")["state"] == "silent" and site(doc, "paris")["silent"]
    assert doc["summary"]["silent"] == 3 and doc["summary"]["never_seen"] == 2
    assert [s["site"] for s in doc["sites"]] == ["nice", "rome", "paris"]  # problems first
    # A long transfer keeps a site from being silent.
    fleet.feed(f"Accepted publickey for syncer from 10.1.0.5 port 2 ssh2: ED25519 {PARIS}")
    clock.t += 2 * DAY
    assert site(fleet.snapshot(), "paris")["state"] == "syncing"


def test_revoked_keys_and_reload():
    clock = Clock()
    fleet = Fleet(KEYS, silent_after=DAY, clock=clock)
    clean_session(fleet, clock, "10.2.0.7", 1, ROME, 10)
    fleet.set_keys({PARIS: "paris"})
    doc = fleet.snapshot()
    assert site(doc, "rome")["state"] == "key removed" and not site(doc, "rome")["silent"]
    assert doc["summary"]["sites"] == 1 and "nice" not in [s["site"] for s in doc["sites"]]


def test_history_survives_a_restart_and_bad_state_is_refused():
    clock = Clock()
    fleet = Fleet(KEYS, silent_after=DAY, clock=clock)
    clean_session(fleet, clock, "10.1.0.5", 1, PARIS, 10)
    fleet.feed(f"Failed publickey for syncer from 192.0.2.9 port 2 ssh2: ED25519 {STRANGER}")
    fleet.feed("Connection closed by authenticating user syncer 192.0.2.9 port 2 [preauth]")
    assert fleet.dirty
    text = fleet.to_json()
    assert not fleet.dirty
    clock.t += 100
    again = Fleet.from_json(text, KEYS, silent_after=DAY, clock=clock)
    doc = again.snapshot()
    assert site(doc, "paris")["last_sync"]["duration_seconds"] == pytest.approx(10)
    assert site(doc, "paris")["sessions"]["ok"] == 1
    assert doc["unknown_keys"]["attempts"] == 1
    assert doc["history_since"] == fleet.snapshot()["history_since"] != doc["server_started"]
    for bad in ("", "[]", '{"version": 99}', '{"version": 1}', '{"version": 1, "since": 1, "sites": [{"x": 1}]}'):
        with pytest.raises(ValueError, match="fleet state"):
            Fleet.from_json(bad, KEYS, silent_after=DAY)


def test_sshd_state_and_restarts():
    fleet = Fleet(KEYS, silent_after=DAY, clock=Clock())
    assert not fleet.snapshot()["sshd"]["up"]
    fleet.feed("Server listening on 127.0.0.1 port 2222.")
    assert fleet.snapshot()["sshd"]["up"]
    fleet.sshd_exited(unexpected=True)
    fleet.sshd_started()
    assert fleet.snapshot()["sshd"] == {"up": False, "restarts": 1}


def test_open_connections_are_bounded():
    clock = Clock()
    fleet = Fleet(KEYS, silent_after=DAY, clock=clock)
    for port in range(100):
        fleet.feed(f'Connection from 192.0.2.1 port {port} on 0.0.0.0 port 2222 rdomain ""')
    clock.t += 2 * 3600
    fleet.feed('Connection from 192.0.2.1 port 999 on 0.0.0.0 port 2222 rdomain ""')
    assert len(fleet._open) == 1


def test_sessions_whose_connection_is_gone_end_as_lost():
    clock = Clock()
    fleet = Fleet(KEYS, silent_after=DAY, clock=clock)
    # A client killed right after login: sshd only logs "ssh_packet_send_debug: send DEBUG: Broken pipe".
    fleet.feed('Connection from 10.2.0.7 port 50000 on 0.0.0.0 port 2222 rdomain ""')
    fleet.feed(f"Accepted publickey for syncer from 10.2.0.7 port 50000 ssh2: ED25519 {ROME}")
    fleet.feed("ssh_packet_send_debug: send DEBUG: Broken pipe")
    fleet.feed(f"Accepted publickey for syncer from 10.1.0.5 port 40001 ssh2: ED25519 {PARIS}")
    live = {("10.1.0.5", 40001)}
    clock.t += 5
    fleet.reap(live)  # first time missing: maybe its end line is still on its way
    assert site(fleet.snapshot(), "rome")["state"] == "syncing"
    clock.t += 5
    fleet.reap(live)
    doc = fleet.snapshot()
    assert site(doc, "rome")["state"] == "failing" and site(doc, "rome")["last_sync"]["result"] == "lost"
    assert site(doc, "rome")["last_sync"]["duration_seconds"] == pytest.approx(10)
    assert site(doc, "paris")["state"] == "syncing"
    # Back in the list after one miss: not ended.
    fleet.reap(set())
    fleet.reap(live)
    fleet.reap(set())
    assert site(fleet.snapshot(), "paris")["state"] == "syncing"


def test_established_peers_from_proc_net_tcp():
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    tcp = head + (
        "   0: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n"
        "   1: 0100007F:08AE 0500000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n"
        "   2: 0100007F:08AE 0600000A:C351 06 00000000:00000000 00:00000000 00000000     0        0 3 1\n"
        "   3: 0100007F:1F90 0700000A:C352 01 00000000:00000000 00:00000000 00000000     0        0 4 1\n"
    )
    assert established_peers(tcp, 2222, "little") == {("10.0.0.5", 50000)}  # not LISTEN, TIME_WAIT, other port
    tcp6 = head + (
        "   0: 00000000000000000000000001000000:08AE 00000000000000000000000001000000:0007 01 0:0 0:0 0 0 0 5 1\n"
        "   1: 00000000000000000000000001000000:08AE 0000000000000000FFFF00000500000A:0008 01 0:0 0:0 0 0 0 6 1\n"
        "   2: 00000000000000000000000001000000:08AE 000080FE000000000000000001000000:0009 01 0:0 0:0 0 0 0 7 1\n"
    )
    assert established_peers(tcp6, 2222, "little") == {("::1", 7), ("10.0.0.5", 8), ("fe80::1", 9)}
    assert established_peers("garbage\nline x y 01\n", 2222) == set()
