"""``library-syncer manifest``: write, update or check the VCSP manifest of a library folder."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import OperationFailed
from . import setting_options, settings_from


@click.command("manifest")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@setting_options(library_name="--name")
@click.option("--check", is_flag=True, help="Only validate the existing manifest against the folder; list every problem.")
@click.option(
    "--state", "state_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="State file (hash cache, last published documents). [default: PATH/.library-syncer/state.json]",
)
def command(path: Path | None, check: bool, state_path: Path | None, **kwargs) -> None:
    """Write or update lib.json, items.json and every <item>/item.json under PATH.

    PATH defaults to the library setting (SYNCER_LIBRARY). Items are the top-level
    folders of PATH. Only files changed since the last run are read. Exit status:
    0 done, 1 some items left out (or --check found problems), 2 bad input.
    """
    from ..vcsp import check_manifest, update_manifest

    settings = settings_from(click.get_current_context(), kwargs)
    root = path if path is not None else settings.library
    if check:
        problems = check_manifest(root)
        for line in problems:
            click.echo(line)
        if problems:
            raise OperationFailed(f"manifest of {root}: {len(problems)} problem(s)")
        click.echo(f"manifest of {root}: OK")
        return
    report = update_manifest(root, settings.library_name, state_path=state_path)
    changed = sum(1 for i in report.items if i.changed)
    click.echo(
        f"{root}: library version {report.library_version}"
        f" ({'changed' if report.changed else 'unchanged'}), {len(report.items)} item(s), {changed} changed;"
        f" read {report.files_hashed} file(s), {report.bytes_hashed} bytes"
    )
    if report.problems:
        raise OperationFailed(f"{len(report.problems)} problem(s); the affected items were left out")
