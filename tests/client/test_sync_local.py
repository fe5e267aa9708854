"""One sync run against a local source folder (real rsync, same options as over SSH)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

from library_syncer.config import load_settings
from library_syncer.sync.result import Phase
from library_syncer.sync.guard import delete_guard
from library_syncer.sync.cleanup import remove_empty_items
from library_syncer.sync.run import run_sync
from library_syncer.publish import generations as gen
from library_syncer.transport.rsync import FileChange
from inprocess import run_cli
from support import cli, require_tool, wait_until


def make_source(root: Path, items: dict[str, dict[str, bytes]]) -> Path:
    for item, files in items.items():
        for name, data in files.items():
            p = root / item / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    root.mkdir(parents=True, exist_ok=True)
    return root


def settings(tmp_path: Path, **kw):
    return load_settings(library=tmp_path / "L", state_dir=tmp_path / "state", **kw)


def lib_json(library: Path) -> dict:
    return json.loads((gen.current_root(library) / "lib.json").read_text())


def test_delete_guard_rules():
    pub = {"a", "b", "c", "d"}
    assert delete_guard(pub, pub, 0.5, False) is None
    assert delete_guard(pub, {"a", "b", "c"}, 0.5, False) is None
    assert delete_guard(pub, {"a"}, 0.5, False) is not None  # 75 % removed
    assert "all" in delete_guard(pub, set(), 1.0, False)  # all of them, whatever the share
    assert delete_guard(pub, set(), 0.5, True) is None
    assert delete_guard(set(), set(), 0.5, False) is None  # nothing published yet
    assert delete_guard(pub, {"a", "b", "c"}, 0.0, False) is not None


def test_remove_empty_items(tmp_path):
    make_source(tmp_path, {"gone": {"item.json": b"{}"}, "partial": {".rsync-partial/x": b"1"},
                           "keep": {"item.json": b"{}", "sub/f": b"1"}, ".hidden": {"x": b""}})
    (tmp_path / "empty").mkdir()
    assert remove_empty_items(tmp_path) == ["empty", "gone", "partial"]
    assert sorted(os.listdir(tmp_path)) == [".hidden", "keep"]


def test_first_sync_then_nothing_then_deletion(tmp_path):
    src = make_source(tmp_path / "src", {"Alpha": {"a.iso": b"A" * 5000}, "Beta": {"b.iso": b"B" * 300},
                                         "Gamma": {"g.iso": b"G"}, ".vSphere-HA": {"x": b"ha"}})
    (src / "lib.json").write_bytes(b'{"foreign": true}')
    events = []
    r = run_sync(settings(tmp_path), source=str(src), on_event=events.append)
    assert r.ok, r.reason
    assert (r.generation, r.items, r.library_bytes, r.files_changed, r.attempts) == (1, 3, 5301, 3, 1)
    assert r.wire_bytes > 5301
    assert [e.name for e in events if isinstance(e, Phase)] == [
        "listing", "transfer", "cleanup", "manifest", "publish", "prune"]
    root = gen.current_root(tmp_path / "L")
    assert sorted(os.listdir(root)) == ["Alpha", "Beta", "Gamma", "items.json", "lib.json"]
    assert "foreign" not in (root / "lib.json").read_text()
    assert lib_json(tmp_path / "L")["version"] == "1"
    d = r.to_dict()
    assert d["ok"] and d["generation"] == 1 and isinstance(d["started"], str)

    os.utime(src, (1, 1))  # a folder time change alone publishes nothing new
    again = run_sync(settings(tmp_path), source=str(src))
    assert again.ok and again.generation is None and again.files_changed == 0
    assert gen.current_generation(tmp_path / "L") == 1

    import shutil
    shutil.rmtree(src / "Gamma")
    (src / "Beta" / "b.iso").unlink()  # folder stays, empty at the source
    events.clear()
    # 2 of 3 items go (Beta counts once rsync has emptied it): above the default guard's half
    third = run_sync(settings(tmp_path, sync_delete_guard=0.9), source=str(src), on_event=events.append)
    assert third.ok, third.reason
    assert third.generation == 2 and third.items == 1 and third.files_deleted >= 2
    assert any(isinstance(e, FileChange) and e.action == "delete" and e.path == "Gamma/" for e in events)
    root = gen.current_root(tmp_path / "L")
    assert sorted(os.listdir(root)) == ["Alpha", "items.json", "lib.json"]
    assert not (gen.Layout(tmp_path / "L").staging / "Beta").exists()
    assert int(lib_json(tmp_path / "L")["version"]) > 1
    # the previous generation is still complete for downloads that started before the switch
    assert (gen.Layout(tmp_path / "L").generation(1) / "Gamma" / "g.iso").read_bytes() == b"G"


def test_delete_guard_refuses_empty_source_then_allowed(tmp_path):
    src = make_source(tmp_path / "src", {"A": {"a": b"1"}, "B": {"b": b"2"}})
    assert run_sync(settings(tmp_path), source=str(src)).ok
    for item in ("A", "B"):
        (src / item / item.lower()).unlink()
        (src / item).rmdir()
    staging_before = sorted(p.name for p in gen.Layout(tmp_path / "L").staging.iterdir())
    r = run_sync(settings(tmp_path), source=str(src))
    assert not r.ok and r.kind == "guard"
    assert "delete guard" in r.reason and "SYNC_ALLOW_MASS_DELETE" in r.reason and "\n" not in r.reason
    assert gen.published_items(tmp_path / "L") == {"A", "B"} and gen.current_generation(tmp_path / "L") == 1
    assert sorted(p.name for p in gen.Layout(tmp_path / "L").staging.iterdir()) == staging_before
    ok = run_sync(settings(tmp_path, sync_allow_mass_delete=True), source=str(src))
    assert ok.ok and ok.generation == 2 and ok.items == 0
    assert gen.published_items(tmp_path / "L") == set()


def test_delete_guard_rechecks_after_the_transfer(tmp_path):
    """Items that vanish at the source between the listing and the transfer are caught before publishing."""
    src = make_source(tmp_path / "src", {n: {"f.iso": n.encode()} for n in "ABCD"})
    assert run_sync(settings(tmp_path), source=str(src)).ok

    def vanish(event) -> None:  # the share at the primary is unmounted while the sync runs
        if isinstance(event, Phase) and event.name == "transfer":
            for n in "BCD":
                (src / n / "f.iso").unlink(missing_ok=True)
                if (src / n).exists():
                    (src / n).rmdir()

    r = run_sync(settings(tmp_path), source=str(src), on_event=vanish)
    assert not r.ok and r.kind == "guard" and "after the transfer" in r.reason, r.reason
    assert gen.published_items(tmp_path / "L") == set("ABCD") and gen.current_generation(tmp_path / "L") == 1


def test_stop_interrupts_and_keeps_what_is_served(tmp_path):
    src = make_source(tmp_path / "src", {"A": {"a": b"1"}})
    assert run_sync(settings(tmp_path), source=str(src)).ok
    (src / "Big").mkdir()
    (src / "Big" / "disk.vmdk").write_bytes(os.urandom(8 << 20))
    stop = threading.Event()
    seen = threading.Event()

    def on_event(e):
        if isinstance(e, Phase) and e.name == "transfer":
            seen.set()

    box = []
    t = threading.Thread(target=lambda: box.append(run_sync(settings(tmp_path, sync_max_bw="256"), source=str(src),
                                                            on_event=on_event, stop_event=stop)))
    t.start()
    partial = gen.Layout(tmp_path / "L").staging / "Big"
    wait_until(lambda: seen.is_set() and partial.exists() and any(partial.iterdir()), 20, "a partial file")
    stop.set()
    t.join(20)
    assert not t.is_alive()
    r = box[0]
    assert not r.ok and r.kind == "stopped"
    assert gen.published_items(tmp_path / "L") == {"A"} and gen.current_generation(tmp_path / "L") == 1
    assert list((partial / ".rsync-partial").iterdir())  # kept for the next run


def test_second_concurrent_run_fails_at_once(tmp_path):
    from library_syncer.util.proc import RunLock as _Lock

    lay = gen.Layout(tmp_path / "L")
    held = _Lock(lay.lock)
    assert held.acquire()
    try:
        r = run_sync(settings(tmp_path), source=str(make_source(tmp_path / "src", {"A": {"a": b"1"}})))
        assert not r.ok and r.kind == "busy" and "already running" in r.reason
    finally:
        held.release()


def test_cli_sync_from_folder_plain_output(tmp_path):
    src = make_source(tmp_path / "src", {"A": {"a.iso": b"1" * 100}})
    env = {"SYNCER_LIBRARY": str(tmp_path / "L"), "SYNCER_STATE_DIR": str(tmp_path / "state")}
    p = cli("sync", "--from-folder", src, env=env)
    assert p.returncode == 0, p.stderr
    assert "sync ok: published generation 1" in p.stdout
    assert ">f+++++++++ A/a.iso" in p.stderr and "manifest" in p.stderr
    assert gen.published_items(tmp_path / "L") == {"A"}


def test_cli_bad_settings_one_line_each(tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o600)
    base = {"SYNCER_LIBRARY": str(tmp_path / "L"), "SYNCER_STATE_DIR": str(tmp_path / "state")}
    peer = {**base, "SYNC_PEER": "127.0.0.1", "SYNC_KEY": str(key)}
    cases = [
        (base, "sync_peer"),
        ({**peer, "SYNC_KEY": str(tmp_path / "nokey")}, "nokey does not exist"),
        ({**peer, "SYNC_HOST_KEY": "ssh-ed25519 !!!"}, "sync_host_key"),
        ({**peer, "SYNC_KNOWN_HOSTS": str(tmp_path / "kh")}, "sync_known_hosts"),
        ({**peer, "SYNC_MAX_BW": "fast"}, "sync_max_bw"),
        ({**peer, "SYNC_PORT": "99999"}, "sync_port"),
        ({**peer, "SYNC_DELETE_GUARD": "2"}, "sync_delete_guard"),
        ({**peer, "SYNC_TIMEOUT": "abc"}, "sync_timeout"),
        ({**peer, "SYNCER_LIBRARY": "/proc/nope"}, "setting library: cannot create folder /proc/nope"),
    ]
    for env, needle in cases:  # the CLI in-process; the last run below is a real process
        p = run_cli("sync", env=env)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], (env, p.stderr)
        assert lines[0].startswith("library-syncer: error: ")
    key.chmod(0o644)  # readable by others: used through a private copy, with a warning
    p = cli("sync", env={**peer, "SYNC_RETRY_DEADLINE": "0"})
    assert "readable by others (mode 0644)" in p.stderr and str(key) in p.stderr
    assert (tmp_path / "state" / "sync_key").stat().st_mode & 0o777 == 0o600


def test_cli_sync_on_a_terminal_shows_a_progress_bar(tmp_path):
    script = require_tool("script", "bsdutils")
    src = make_source(tmp_path / "src", {"A": {"disk.vmdk": os.urandom(1 << 20)}})
    cmd = shlex.join([sys.executable, "-m", "library_syncer", "sync", "--from-folder", str(src),
                      "--library", str(tmp_path / "L"), "--state-dir", str(tmp_path / "state")])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "SYNCER_"))}
    p = subprocess.run([script, "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=60,
                       env={**env, "COLUMNS": "100"})
    assert p.returncode == 0, p.stdout
    assert "ETA" in p.stdout and "100%" in p.stdout and "MiB" in p.stdout
    assert "sync ok: published generation 1" in p.stdout


def test_library_synced_in_place_by_the_original_seeds_staging(tmp_path):
    src = make_source(tmp_path / "src", {"A": {"disk.vmdk": os.urandom(300_000)}, "B": {"b.iso": b"b"}})
    lib = tmp_path / "L"
    old = make_source(lib, {"A": {"disk.vmdk": (src / "A" / "disk.vmdk").read_bytes()}})
    st = (src / "A" / "disk.vmdk").stat()
    os.utime(old / "A" / "disk.vmdk", (st.st_atime, st.st_mtime))
    r = run_sync(settings(tmp_path), source=str(src))
    assert r.ok, r.reason
    assert r.files_changed == 1 and r.literal_bytes < 1000  # only B's file travelled
    assert gen.published_items(lib) == {"A", "B"}
    assert (gen.current_root(lib) / "A" / "disk.vmdk").stat().st_ino == (old / "A" / "disk.vmdk").stat().st_ino
