"""``library-syncer keys``: create site keypairs and list the authorized sites."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError
from . import setting_options, settings_from


@click.group("keys")
def command() -> None:
    """Manage the sites' SSH keys."""


@command.command("new")
@click.argument("site")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("."), show_default=True,
              help="Folder to write SITE (private key) and SITE.pub into.")
def new(site: str, out: Path) -> None:
    """Create the keypair of SITE (ed25519, no passphrase) and say where each half goes."""
    from ..transport import keys as keymod

    if not keymod.site_name_ok(site):
        raise ConfigError(f"site name {site!r}: use {keymod.SITE_NAME_RULE}")
    keygen = keymod.find_tool("ssh-keygen", "openssh-client")
    private = out / site
    public = out / f"{site}.pub"
    for p in (private, public):
        if p.exists():
            raise ConfigError(f"key file {p} already exists: remove it or choose another --out folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out: cannot create folder {out} ({exc.strerror})") from None
    keymod.generate_keypair(private, site, "ed25519", keygen)
    public.chmod(0o644)
    click.echo(f"Created the keypair of site {site}:")
    click.echo(f"  private key {private} (mode 0600): copy it to the site and set SYNC_KEY to its path there;")
    click.echo(f"  public key  {public}: copy it into the server's keys folder, then reload the server (SIGHUP).")


@command.command("list")
@setting_options(keys_dir="--keys")
def list_(**kwargs) -> None:
    """Show the sites whose keys the server authorizes, with fingerprints."""
    from rich.console import Console
    from rich.table import Table

    from ..transport import keys as keymod

    settings = settings_from(click.get_current_context(), kwargs)
    keygen = keymod.find_tool("ssh-keygen", "openssh-client")
    scan = keymod.scan_site_keys(settings.keys_dir, keygen)
    keys, problems = scan.keys, scan.problems + scan.skipped
    table = Table(title=f"Sites authorized by {settings.keys_dir}")
    for col in ("site", "type", "fingerprint", "from", "file"):
        table.add_column(col)
    for k in keys:
        table.add_row(k.site, k.kind, k.fingerprint, ", ".join(k.from_) or "any", str(k.path))
    Console(width=200).print(table)
    for problem in problems:
        click.echo(f"library-syncer: warning: {problem} (not authorized)", err=True)
    if not keys:
        raise ConfigError(f"setting keys_dir: no site keys (*.pub) in {settings.keys_dir}")
