"""Selective sync (SYNC_INCLUDE / SYNC_EXCLUDE): only matching items are transferred and published; a filter
change that removes published items is applied once and does not trip the delete guard; anything else that
would drop items still does.  Real rsync from a local source folder."""

from __future__ import annotations

import json

from library_syncer.config import load_settings
from library_syncer.errors import ConfigError
from library_syncer.publish import generations as gen
from library_syncer.sync.run import run_sync
from library_syncer.sync.selection import is_selected, rsync_filters
from library_syncer.web.pages.site import render_status
from inprocess import run_cli
from vcsp.helpers import put

import pytest


def settings(tmp_path, **kw):
    return load_settings(library=tmp_path / "L", state_dir=tmp_path / "state", **kw)


def served(library) -> list[str]:
    items = json.loads((gen.current_root(library) / "items.json").read_text())["items"]
    return sorted(i["selfHref"].removesuffix("/item.json") for i in items)


def test_selection_rule():
    assert is_selected("Win2022", (), ())
    assert is_selected("Win2022", ("Win*",), ()) and not is_selected("Ubuntu", ("Win*",), ())
    assert not is_selected("Win2022-old", ("Win*",), ("*-old",))  # an exclude wins
    assert not is_selected("tools", (), ("t?ols",))
    assert rsync_filters((), ()) == []
    assert rsync_filters(("Win*",), ("*-old",)) == ["--filter=- /*-old/", "--filter=+ /Win*/", "--filter=- /*/"]


def test_only_matching_items_are_transferred_and_published(tmp_path):
    src = tmp_path / "src"
    for name in ("Win2022", "Win2019-old", "Ubuntu", "Tools"):
        put(src / name / "disk.iso", name.encode() * 1000)
    r = run_sync(settings(tmp_path, sync_include=("Win*", "Tools"), sync_exclude=("*-old",)), source=str(src))
    assert r.kind == "ok", r.reason
    assert served(tmp_path / "L") == ["Tools", "Win2022"]
    staging = gen.Layout(tmp_path / "L").staging
    assert not (staging / "Ubuntu").exists() and not (staging / "Win2019-old").exists()  # never transferred
    assert r.files_changed == 2


def test_a_filter_change_is_applied_once_without_the_guard(tmp_path):
    src = tmp_path / "src"
    for name in ("A1", "A2", "A3", "B1"):
        put(src / name / "disk.iso", name.encode() * 100)
    assert run_sync(settings(tmp_path), source=str(src)).kind == "ok"
    # Three of four published items leave by the new filter: deliberate, more than the guard's 50 %.
    r = run_sync(settings(tmp_path, sync_exclude=("A*",)), source=str(src))
    assert r.kind == "ok", r.reason
    assert r.filtered_out == ["A1", "A2", "A3"] and "removed by the site filter: A1, A2, A3" in r.summary()
    assert served(tmp_path / "L") == ["B1"]
    again = run_sync(settings(tmp_path, sync_exclude=("A*",)), source=str(src))
    assert again.kind == "ok" and again.filtered_out == [] and again.generation is None  # applied once
    page = render_status({"site": "S", "now": r.ended.isoformat(), "ready": True, "ready_reason": "ok",
                          "published": None, "running": None, "last_sync": r.to_dict(), "history": [],
                          "schedule": "* * * * *", "tz": "UTC", "peer": None, "tls_thumbprint": None})
    assert "Removed by the site filter" in page and "A1, A2, A3" in page


def test_other_losses_still_trip_the_guard_with_a_filter(tmp_path):
    src = tmp_path / "src"
    for name in ("A1", "A2", "A3", "B1"):
        put(src / name / "disk.iso", name.encode() * 100)
    cfg = settings(tmp_path, sync_include=("A*",))
    assert run_sync(cfg, source=str(src)).kind == "ok"
    for name in ("A1", "A2", "A3"):  # the primary loses every selected item
        for f in (src / name).iterdir():
            f.unlink()
        (src / name).rmdir()
    r = run_sync(cfg, source=str(src))
    assert r.kind == "guard", r.reason
    assert served(tmp_path / "L") == ["A1", "A2", "A3"]


def test_patterns_from_env_toml_and_bad_values(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNC_INCLUDE", "Win*, Ubuntu-2?")
    assert load_settings().sync_include == ("Win*", "Ubuntu-2?")
    monkeypatch.delenv("SYNC_INCLUDE")
    toml = tmp_path / "s.toml"
    toml.write_text('sync_exclude = ["*-old", "tmp*"]\n')
    assert load_settings(config_file=toml).sync_exclude == ("*-old", "tmp*")
    with pytest.raises(ConfigError, match=r"setting sync_exclude from --sync-exclude: pattern 'a/b'"):
        load_settings(sync_exclude="a/b", flags={"sync_exclude": "--sync-exclude"})
    bad = run_cli("sync", "--library", tmp_path / "L", "--from-folder", tmp_path, "--sync-include", ".hidden")
    assert bad.returncode == 2 and "setting sync_include" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
