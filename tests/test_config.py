"""Settings precedence and one-line errors."""

from pathlib import Path

import pytest

from library_syncer.config import load_settings
from library_syncer.errors import ConfigError
from support import cli


def test_precedence_cli_over_env_over_toml(tmp_path: Path, monkeypatch):
    toml = tmp_path / "c.toml"
    toml.write_text('sync_port = 2300\nlibrary_name = "Toml"\nsync_peer = "toml.example"\n')
    assert load_settings(toml).sync_port == 2300
    monkeypatch.setenv("SYNC_PORT", "2400")
    s = load_settings(toml)
    assert (s.sync_port, s.library_name, s.sync_peer) == (2400, "Toml", "toml.example")
    assert load_settings(toml, sync_port=2500).sync_port == 2500


def test_original_bandwidth_names(monkeypatch):
    monkeypatch.setenv("SYNC_MAX_KBPS", "1.5m")
    assert load_settings().sync_max_bw == "1.5m"
    monkeypatch.setenv("SYNC_MAX_BW", "500")
    assert load_settings().sync_max_bw == "500"


def test_unrelated_env_vars_are_not_read(monkeypatch):
    monkeypatch.setenv("HTTP_PORT", "nonsense")
    monkeypatch.setenv("LIBRARY", "/elsewhere")
    s = load_settings()
    assert s.http_port == 8080 and s.library == Path("/syncer/library")


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"sync_schedule": "61 * * * *"}, "sync_schedule"),
        ({"sync_max_bw": "fast"}, "sync_max_bw"),
        ({"tz": "Mars/Base"}, "unknown time zone"),
        ({"http_port": 0}, "http_port"),
        ({"sync_delete_guard": 1.5}, "sync_delete_guard"),
    ],
)
def test_bad_values_name_the_setting(kw, needle):
    with pytest.raises(ConfigError) as exc:
        load_settings(**kw)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_bad_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("sync_port = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    bad.write_text("no_such_setting = 1")
    with pytest.raises(ConfigError, match="unknown setting 'no_such_setting'"):
        load_settings(bad)


def test_password_never_shown(monkeypatch):
    monkeypatch.setenv("LIBRARY_PASSWORD", "s3cret")
    s = load_settings()
    assert "s3cret" not in repr(s) and s.library_password_value() == "s3cret"


def test_cli_version_and_help():
    r = cli("--version")
    assert r.returncode == 0 and "library-syncer" in r.stdout
    r = cli("--help")
    assert r.returncode == 0 and "Content Library" in r.stdout


def test_readme_configuration_table_matches_the_model():
    import subprocess, sys
    root = Path(__file__).resolve().parent.parent
    table = subprocess.run([sys.executable, str(root / "scripts" / "config_table.py")], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert table in (root / "README.md").read_text(), "README table is stale: rerun scripts/config_table.py"
