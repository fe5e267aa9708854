"""``library-syncer keys new`` and ``keys list`` through the real CLI."""

from __future__ import annotations

import stat

from support import cli


def test_keys_new_and_list(tmp_path):
    out = tmp_path / "new"
    r = cli("keys", "new", "branch-paris", "--out", out)
    assert r.returncode == 0, r.stderr
    private, public = out / "branch-paris", out / "branch-paris.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_text().startswith("ssh-ed25519 ") and "PRIVATE KEY" in private.read_text()
    assert str(private) in r.stdout and "SYNC_KEY" in r.stdout and "keys folder" in r.stdout
    # Never overwrites an existing key.
    r = cli("keys", "new", "branch-paris", "--out", out)
    assert r.returncode == 2 and f"key file {private} already exists" in r.stderr
    r = cli("keys", "new", "../evil", "--out", out)
    assert r.returncode == 2 and "site name '../evil'" in r.stderr

    keys = tmp_path / "keys"
    keys.mkdir()
    public.rename(keys / public.name)
    (keys / "sites.toml").write_text('[branch-paris]\nfrom = ["10.1.0.0/16"]\n')
    fp = cli("keys", "list", "--keys", keys)
    assert fp.returncode == 0, fp.stderr
    assert "branch-paris" in fp.stdout and "SHA256:" in fp.stdout and "10.1.0.0/16" in fp.stdout
    # Same list through the environment; an unusable file is reported, not listed.
    (keys / "junk.pub").write_text("junk\n")
    r = cli("keys", "list", env={"SYNCER_KEYS_DIR": str(keys)})
    assert r.returncode == 0 and "branch-paris" in r.stdout
    assert f"key file {keys / 'junk.pub'}" in r.stderr
    r = cli("keys", "list", "--keys", tmp_path / "nowhere")
    assert r.returncode == 2 and "setting keys_dir: folder" in r.stderr
