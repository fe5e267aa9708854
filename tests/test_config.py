"""Settings precedence, one-line errors, and the role groups the flat model and the flags come from."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from library_syncer.cli import main
from library_syncer.config import (
    CLIENT_GROUPS, GROUPS, RELAY_GROUPS, SERVER_GROUPS, SYNC_GROUPS, Settings, flag_fields, load_settings,
)
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
        ({"sync_compress": "gzip"}, "sync_compress"),
        ({"sync_checksum": "sha1"}, "sync_checksum"),
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


# --- settings groups -----------------------------------------------------------------------


def test_settings_is_the_union_of_the_groups():
    names = [n for g in GROUPS for n in g.model_fields]
    assert len(names) == len(set(names)), "a setting in two groups"
    assert list(Settings.model_fields) == names


def test_every_group_validator_is_kept_in_the_flat_model():
    per_group = [n for g in GROUPS for n in g.__pydantic_decorators__.field_validators]
    assert len(per_group) == len(set(per_group)), "two groups name a validator alike: one would hide the other"
    assert set(Settings.__pydantic_decorators__.field_validators) == set(per_group)


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"library_name": "  "}, "setting library_name from --library-name: must not be empty"),
        ({"sync_peer": "a b"}, "setting sync_peer from --sync-peer: must be a host name"),
        ({"sync_peer": "relay-a,,primary"}, "setting sync_peer from --sync-peer: has an empty entry"),
        ({"sync_peer": "relay-a:99999,primary"}, "setting sync_peer from --sync-peer: entry 'relay-a:99999': port"),
        ({"sync_peer": "relay-a,relay-a:22"}, "setting sync_peer from --sync-peer: entry 'relay-a:22' is listed twice"),
        ({"origin_refresh_seconds": 0}, "setting origin_refresh_seconds from --origin-refresh-seconds"),
        ({"tls_name": "a b"}, "setting tls_name from --tls-name: must be a host name"),
        ({"webhook_url": "ftp://x"}, "setting webhook_url from --webhook-url: must be an http"),
        ({"acme_ca": "x"}, "setting acme_ca from --acme-ca: must be an http"),
        ({"syncer_user": "Root"}, "setting syncer_user from --syncer-user"),
        ({"log_format": "xml"}, "setting log_format from --log-format"),
    ],
)
def test_each_groups_checks_run_in_the_flat_model(kw, needle):
    with pytest.raises(ConfigError) as exc:
        load_settings(**kw)
    assert str(exc.value).startswith(needle) and "\n" not in str(exc.value)


# The flags of each role before its settings were grouped (fields; renamed flags in the command).
ROLE_FLAGS = {
    "client": {
        "sync_peer", "sync_port", "sync_user", "sync_key", "sync_host_key", "sync_known_hosts",
        "sync_schedule", "sync_delay", "sync_delay_max_seconds", "sync_skip_initial", "sync_max_bw", "sync_compress", "sync_checksum", "sync_timeout",
        "sync_connect_timeout", "sync_retry_deadline", "sync_delete_guard", "sync_allow_mass_delete", "sync_include", "sync_exclude",
        "library", "library_name", "library_browse", "library_password_file", "http_host", "http_port",
        "https_port", "tls_name", "tls_custom_cert", "certs_dir", "tls_cert", "tls_key", "tls_front", "tz", "state_dir",
        "keys_dir", "generation_grace_seconds", "status_port", "stale_after_seconds", "webhook_url",
        "admin_token_file", "acme_ca", "acme_email", "acme_ca_root", "acme_http_port",
        "http_header_timeout_seconds", "http_idle_timeout_seconds", "http_max_connections", "http_max_per_client",
        "vcenter_url", "vcenter_user", "vcenter_password_file", "vcenter_library", "vcenter_ca_file",
        "vcenter_thumbprint",
    },
    "sync": {
        "sync_peer", "sync_port", "sync_user", "sync_key", "sync_host_key", "sync_known_hosts", "sync_max_bw",
        "sync_compress", "sync_checksum", "sync_timeout", "sync_connect_timeout", "sync_retry_deadline",
        "sync_delete_guard",
        "sync_allow_mass_delete", "sync_include", "sync_exclude", "library", "library_name", "state_dir", "keys_dir", "generation_grace_seconds",
    },
    "server": {
        "library", "ssh_host", "state_dir", "syncer_uid", "syncer_user", "unprivileged", "allow_old_rsync",
        "fleet_host", "fleet_port", "site_silent_after_seconds", "admin_token_file", "ssh_port", "keys_dir",
        "origin_refresh_seconds",
    },
}
ROLE_FLAGS["relay"] = ROLE_FLAGS["client"] | {
    "ssh_host", "ssh_port", "syncer_uid", "syncer_user", "unprivileged", "allow_old_rsync", "relay_keys_dir",
}


@pytest.mark.parametrize("role, groups", [("client", CLIENT_GROUPS), ("sync", SYNC_GROUPS), ("server", SERVER_GROUPS),
                                         ("relay", RELAY_GROUPS)])
def test_a_roles_flags_come_from_its_groups(role, groups):
    command = main.get_command(None, role)  # type: ignore[arg-type]
    settings_params = {p.name for p in command.params if p.name in Settings.model_fields}
    assert settings_params == set(flag_fields(*groups)) == ROLE_FLAGS[role]


def test_secrets_never_get_a_flag():
    assert "library_password" not in flag_fields(*GROUPS) and "admin_token" not in flag_fields(*GROUPS)
    for role in ROLE_FLAGS:
        command = main.get_command(None, role)  # type: ignore[arg-type]
        assert not {"library_password", "admin_token"} & {p.name for p in command.params}


def test_server_flags_keep_their_names():
    command = main.get_command(None, "server")  # type: ignore[arg-type]
    opts = {p.name: p.opts for p in command.params}
    assert opts["ssh_port"] == ["--port"] and opts["keys_dir"] == ["--keys"] and opts["ssh_host"] == ["--ssh-host"]


@pytest.mark.parametrize("role, purpose", [("sync", "to sync"), ("client", "for the client")])
def test_a_missing_peer_is_one_line_before_anything_is_made(role, purpose, tmp_path, monkeypatch):
    for name in ("SYNC_PEER", "SYNCER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    library = tmp_path / "library"
    result = CliRunner().invoke(main, [role, "--library", str(library), "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 2
    assert result.stderr == f"library-syncer: error: setting sync_peer (SYNC_PEER / --sync-peer) is required {purpose}\n"
    assert not library.exists()
