"""Parsing of real rsync 3.5.0 output (captured through rrsync) and command building."""

from __future__ import annotations

from pathlib import Path

from library_syncer.transport import rsync as rs

DATA = Path(__file__).parent / "data"


def events(name: str) -> list:
    splitter = rs.LineSplitter()
    text = (DATA / name).read_bytes().decode()
    lines = []
    for i in range(0, len(text), 7):  # feed in small chunks, as a pipe would
        lines += splitter.feed(text[i:i + 7])
    lines += splitter.close()
    return [rs.parse_change(ln) or rs.parse_progress(ln) or ln for ln in lines]


def test_first_pull_changes_progress_and_stats():
    evs = events("rsync-first-pull.out")
    changes = [e for e in evs if isinstance(e, rs.FileChange)]
    assert [(c.action, c.type, c.path, c.size, c.digest) for c in changes] == [
        ("create", "d", "gone/", 4096, None),
        ("transfer", "f", "gone/f.txt", 2, "9a8ad92c50cae39aa2c5604fd0ab6d8c"),  # md5sum of the source
        ("create", "d", "item 3/", 4096, None),
        ("transfer", "f", "item 3/big.bin", 2000000, "92636e3087c9888803eaa197fb692cd1"),
        ("transfer", "f", "item 3/caf\ufffd.txt", 1, "4a8a08f09d37b73795649038408b5f33"),  # Latin-1, as \#351
        ("create", "d", "item2/", 4096, None),
        ("transfer", "f", "item2/b.txt", 3, "bfcc9da4f2e1d313c63cd0a4ee7604e9"),
    ]
    progress = [e for e in evs if isinstance(e, rs.Progress)]
    assert progress[0] == rs.Progress(0, 0, 0.0, 0)
    last = progress[-1]
    assert (last.bytes, last.percent, last.files_transferred, last.to_check, last.total_files) == (2000006, 100, 4, 0, 8)
    assert abs(last.rate - 82.93 * 1024 * 1024) < 1
    stats = rs.parse_stats((DATA / "rsync-first-pull.out").read_text(errors="replace"))
    assert (stats.files, stats.files_created, stats.files_transferred) == (8, 7, 4)
    assert (stats.literal_bytes, stats.matched_bytes, stats.total_size) == (2000006, 0, 2000006)
    assert stats.bytes_received > stats.bytes_sent > 0
    assert stats.wire_bytes == stats.bytes_sent + stats.bytes_received


def test_delta_pull_with_deletion_glued_to_progress():
    evs = events("rsync-delta-pull.out")
    changes = [e for e in evs if isinstance(e, rs.FileChange)]
    assert [(c.action, c.path, c.digest) for c in changes] == [
        ("attrs", "./", None), ("transfer", "item 3/big.bin", "26243aa8412211c0cebf333247dbe23a"),
        ("attrs", "item2/b.txt", None),  # mode changed only: not transferred, no md5
        ("delete", "gone/f.txt", None), ("delete", "gone/", None),
    ]
    assert not [e for e in evs if isinstance(e, str) and "deleting" in e]
    stats = rs.parse_stats((DATA / "rsync-delta-pull.out").read_text())
    assert stats.literal_bytes == 1408 and stats.matched_bytes == 1998592
    assert (stats.bytes_sent, stats.bytes_received, stats.files_deleted) == (8705, 7293, 2)
    assert stats.rate == 10665.33
    assert stats.to_dict()["wire_bytes"] == 8705 + 7293


def test_list_only():
    entries = rs.parse_listing((DATA / "rsync-list-only.out").read_text())
    assert [(e.name, e.is_dir) for e in entries] == [
        ("lib.json", False), ("item 3", True), ("item1", True), ("item2", True)]


def test_unescape_utf8_name():
    assert rs.unescape_name("caf\\#303\\#251.txt") == "caf\u00e9.txt"
    assert rs.unescape_name("plain name") == "plain name"


def test_progress_unknown_eta_and_other_lines():
    p = rs.parse_progress("  1,234,567  12%  1.50MB/s    ??:??:??  ")
    assert p is not None and p.bytes == 1234567 and p.eta_seconds is None and p.rate == 1.5 * 1024 * 1024
    assert rs.parse_progress("0:01:05 12%") is None
    assert rs.parse_eta("1:01:05") == 3665
    assert rs.parse_change("Number of files: 8 (reg: 4, dir: 4)") is None
    assert rs.parse_change("cL+++++++++ 9 " + " " * 32 + " item/link").action == "create"
    assert rs.parse_change(">f+++++++++ 9 item/without-checksum-field") is None  # not our out-format
    name_like_md5 = ">f+++++++++ 9 " + "a" * 32 + " " + "b" * 32 + " x"  # a name may look like a digest
    change = rs.parse_change(name_like_md5)
    assert change is not None and change.digest == "a" * 32 and change.path == "b" * 32 + " x"
    spaced = rs.parse_change(".f...p..... 3 " + " " * 32 + "  leading space")
    assert spaced is not None and spaced.digest is None and spaced.path == " leading space"


def test_parse_stats_tolerates_missing_block():
    assert rs.parse_stats("sent 10 bytes  received 20 bytes  5.00 bytes/sec").wire_bytes == 30
    assert rs.parse_stats("").wire_bytes == 0


def test_sync_command_rules():
    cmd = rs.sync_command(rs.remote_source("syncer", "10.0.0.1"), Path("/L/.library-syncer/staging"),
                          rsh="ssh -p 2222", timeout=120, max_bw="1.5m")
    assert cmd[-2:] == ["syncer@10.0.0.1:./", "/L/.library-syncer/staging/"]
    for required in ("-a", "--delete-delay", "--partial-dir=.rsync-partial", "--timeout=120", "--bwlimit=1.5m",
                     "--filter=- .vSphere-HA", "--filter=- /lib.json", "--filter=- /items.json",
                     "--filter=-p /*/item.json", "--filter=- /.library-syncer/", "--stats"):
        assert required in cmd
    assert "--checksum-choice=xxh128" in cmd and "--out-format=%i %l %C %n" in cmd  # rsync's digest of each file
    for forbidden in ("--inplace", "-s", "--protect-args", "--checksum", "-c"):
        assert forbidden not in cmd
    assert not any(a.startswith("--bwlimit") for a in rs.sync_command("a/", "b", max_bw="0"))
    assert rs.remote_source("u", "::1") == "u@[::1]:./"


def test_child_env_drops_protect_args():
    env = rs.child_env({"RSYNC_PROTECT_ARGS": "1", "RSYNC_RSH": "x", "PATH": "/bin"})
    assert "RSYNC_PROTECT_ARGS" not in env and "RSYNC_RSH" not in env and env["PATH"] == "/bin"
