"""Bandwidth timetable (SYNC_MAX_BW in rclone's syntax): parsing, the slot at an instant, the next change,
daylight-saving changes and the week's wrap, all with fixed instants; bad tables through the CLI."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from library_syncer.config import load_settings
from library_syncer.config.bwtable import parse, rate_bytes
from library_syncer.errors import ConfigError
from library_syncer.sync.timetable import Timetable, status
from inprocess import run_cli

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def at(table: str, when: datetime, tz=UTC) -> str:
    return Timetable.parse(table).slot_at(when, tz).rate


def test_plain_rsync_values_stay_one_constant_slot():
    for value, rate, bps in (("0", "off", None), ("500", "500", 512_000), ("1.5m", "1.5m", 1.5 * 2**20),
                             ("2MB", "2MB", 2_000_000), ("off", "off", None), ("1k", "1k", 1024)):
        (entry,) = parse(value)
        assert (entry.rate, entry.bytes_per_second) == (rate, bps), value
        table = Timetable.parse(value)
        assert table.constant and table.next_change(datetime(2026, 1, 1, tzinfo=UTC), UTC) is None
    assert parse("0")[0].bwlimit == "0" and parse("off")[0].bwlimit == "0" and parse("1.5m")[0].bwlimit == "1.5m"
    assert rate_bytes("0k") is None and rate_bytes("10M") == 10 * 2**20 and rate_bytes("1GiB") == 2**30


def test_daily_table_slots_and_wrap_before_the_first_entry():
    table = "08:00,512k 12:00,10M 18:00,off"
    monday = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
    assert at(table, monday.replace(hour=7, minute=59)) == "off"  # before 08:00: yesterday's last slot
    assert at(table, monday.replace(hour=8)) == "512k"
    assert at(table, monday.replace(hour=11, minute=59, second=59)) == "512k"
    assert at(table, monday.replace(hour=12)) == "10M"
    assert at(table, monday.replace(hour=23, minute=30)) == "off"
    assert at(table, datetime(2026, 3, 2, 9, 0)) == "512k"  # naive: UTC


def test_weekday_table_wraps_around_the_week():
    table = Timetable.parse("Mon-08:00,512k Sat-00:00,pause Sun-18:00,off")
    sunday_noon = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    assert table.slot_at(sunday_noon, UTC).paused
    assert table.slot_at(datetime(2026, 3, 9, 7, 0, tzinfo=UTC), UTC).rate == "off"  # Monday before 08:00
    assert table.slot_at(datetime(2026, 3, 13, 23, 59, tzinfo=UTC), UTC).rate == "512k"  # Friday night
    assert table.next_change(datetime(2026, 3, 8, 20, 0, tzinfo=UTC), UTC) == datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    # From Monday 08:00 the next change is Saturday 00:00, five days on.
    assert table.next_change(datetime(2026, 3, 9, 8, 0, tzinfo=UTC), UTC) == datetime(2026, 3, 14, tzinfo=UTC)


def test_day_names_and_mixed_daily_and_weekday_entries():
    table = Timetable.parse("monday-09:00,1m 08:00,512k SUN-08:30,off")
    monday, sunday = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC)
    assert table.slot_at(monday.replace(hour=8, minute=30), UTC).rate == "512k"
    assert table.slot_at(monday.replace(hour=9), UTC).rate == "1m"
    assert table.slot_at(monday + timedelta(days=1, hours=7), UTC).rate == "1m"  # Tuesday 07:00: Monday's last
    assert table.slot_at(sunday.replace(hour=8, minute=30), UTC).rate == "off"
    assert table.slot_at(sunday.replace(hour=8), UTC).rate == "512k"
    assert table.slot_at(monday.replace(hour=7), UTC).rate == "off"  # Monday before 08:00: Sunday's last


def test_next_change_skips_entries_with_the_same_rate():
    table = Timetable.parse("08:00,1m 12:00,1024k 18:00,off")
    when = datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC)
    assert table.next_change(when, UTC) == datetime(2026, 3, 2, 18, 0, tzinfo=UTC)
    assert table.next_change(datetime(2026, 3, 2, 7, 59, 59, tzinfo=UTC), UTC) == datetime(2026, 3, 2, 8, tzinfo=UTC)


def test_table_is_read_in_the_zone():
    table = Timetable.parse("08:00,512k 18:00,off")
    winter = datetime(2026, 1, 12, 7, 30, tzinfo=UTC)  # 08:30 in Berlin (CET)
    assert table.slot_at(winter, BERLIN).rate == "512k" and table.slot_at(winter, UTC).rate == "off"
    assert table.next_change(winter, BERLIN) == datetime(2026, 1, 12, 17, 0, tzinfo=UTC)


def test_spring_forward_an_entry_in_the_skipped_hour_starts_when_the_clock_jumps():
    # New York, 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC); 02:30 never happens.
    table = Timetable.parse("02:30,1m 06:00,off")
    before = datetime(2026, 3, 8, 6, 59, tzinfo=UTC)  # 01:59 EST
    assert table.slot_at(before, NY).rate == "off"
    jump = table.next_change(before, NY)
    assert jump == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT, the first instant at or past 02:30
    assert table.slot_at(jump, NY).rate == "1m"
    assert table.next_change(jump, NY) == datetime(2026, 3, 8, 10, 0, tzinfo=UTC)  # 06:00 EDT


def test_fall_back_the_repeated_hour_replays_its_slots():
    # New York, 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00 UTC); 01:00-02:00 happens twice.
    table = Timetable.parse("01:30,1m 03:00,off")
    first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    assert table.slot_at(first, NY).rate == "1m"
    back = table.next_change(first, NY)
    assert back == datetime(2026, 11, 1, 6, 0, tzinfo=UTC)  # 01:00 EST: the wall clock is before 01:30 again
    assert table.slot_at(back, NY).rate == "off"
    again = table.next_change(back, NY)
    assert again == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST
    assert table.next_change(again, NY) == datetime(2026, 11, 1, 8, 0, tzinfo=UTC)  # 03:00 EST
    # An entry outside the repeated hour happens once, at its local time.
    daily = Timetable.parse("08:00,512k 18:00,off")
    assert daily.next_change(datetime(2026, 11, 1, 0, 0, tzinfo=UTC), NY) == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)


def test_status_part_names_the_slot_and_the_next_change():
    doc = status(Timetable.parse("Mon-08:00,512k Sat-00:00,pause"), datetime(2026, 3, 7, 10, 0, tzinfo=UTC), UTC)
    assert doc == {"setting": "Mon-08:00,512k Sat-00:00,pause", "slot": "Sat-00:00,pause", "limit": "pause",
                   "bytes_per_second": 0.0, "paused": True, "next_change": "2026-03-09T08:00:00Z",
                   "next_limit": "512k"}
    plain = status(Timetable.parse("0"), datetime(2026, 3, 7, tzinfo=UTC), UTC)
    assert (plain["slot"], plain["limit"], plain["next_change"]) == ("always", "unlimited", None)


@pytest.mark.parametrize("value, needle", [
    ("fast", "the rate must be"),
    ("08:00,512k 25:00,off", "timetable entry '25:00,off': no such time 25:00"),
    ("08:00,512k 18:00", "timetable entry '18:00': expected HH:MM,RATE"),
    ("Xyz-08:00,1m", "timetable entry 'Xyz-08:00,1m': unknown day 'Xyz'"),
    ("08:00,1m 08:00,2m", "timetable entry '08:00,2m': Mon 08:00 is already set by '08:00,1m'"),
    ("08:00,1m Tue-08:00,2m", "timetable entry 'Tue-08:00,2m': Tue 08:00 is already set by '08:00,1m'"),
    ("08:00,1m 18:00,lots", "timetable entry '18:00,lots': the rate must be"),
    ("08:00,1m:2m", "upload:download pairs do not apply"),
    ("08:00,pause Sat-00:00,pause", "every timetable entry is 'pause'"),
    ("pause", "'pause' alone would never transfer anything"),
])
def test_malformed_tables_are_one_line_naming_the_entry(value, needle):
    with pytest.raises(ConfigError) as exc:
        load_settings(sync_max_bw=value)
    assert needle in str(exc.value) and "setting sync_max_bw" in str(exc.value) and "\n" not in str(exc.value)


def test_table_from_env_toml_list_and_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNC_MAX_BW", "  08:00,512k   18:00,off ")
    assert load_settings().sync_max_bw == "08:00,512k 18:00,off"
    monkeypatch.delenv("SYNC_MAX_BW")
    toml = tmp_path / "s.toml"
    toml.write_text('sync_max_bw = ["Mon-08:00,1m", "Sat-00:00,pause"]\n')
    assert load_settings(config_file=toml).sync_max_bw == "Mon-08:00,1m Sat-00:00,pause"
    toml.write_text('sync_max_bw = "08:00,2m 20:00,off"\n')
    assert load_settings(config_file=toml).sync_max_bw == "08:00,2m 20:00,off"
    bad = run_cli("sync", "--library", tmp_path / "L", "--from-folder", tmp_path,
                  env={"SYNC_MAX_BW": "08:00,512k 18:61,off"})
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "library-syncer: error: setting sync_max_bw from environment SYNC_MAX_BW: timetable entry '18:61,off': "
        "no such time 18:61 (got '08:00,512k 18:61,off')"]
    assert not (tmp_path / "L").exists()
