"""The ``library-syncer`` command line: one group, one module per subcommand.

Subcommands declare the settings they accept with :func:`setting_options`
(a role's settings groups, or single fields); the flag help names the
environment variable and default of each setting, and
:func:`settings_from` merges flags, environment and ``--config`` TOML.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .. import __version__, logs
from ..config import Group, Settings, env_names, flag_fields, load_settings
from ..errors import UserError

# Subcommand modules, each defining a click command named ``command``.
SUBCOMMANDS = ["manifest", "serve", "server", "keys", "sync", "client", "relay", "status", "demo"]

_FLAGS_KEY = "_setting_flags"


def setting_options(*sources: Group | str, **renamed: str) -> Callable:
    """Add a ``--flag`` for each field of the given settings groups and for each named field.

    ``renamed`` maps a field to its flag (a field not in ``sources`` is added).  Every option
    defaults to None ("not given") so that environment, TOML and model defaults apply
    underneath; its help shows the env var and default.  Secrets never get a flag.
    """
    fields: list[str] = []
    for source in sources:
        fields += [f for f in ([source] if isinstance(source, str) else flag_fields(source)) if f not in fields]
    fields += [f for f in renamed if f not in fields]

    def decorate(func: Callable) -> Callable:
        flags: dict[str, str] = {}
        for field in reversed(fields):
            info = Settings.model_fields[field]
            flag = renamed.get(field) or "--" + field.replace("_", "-")
            flags[field] = flag
            default = info.default
            default_txt = "unset" if default is None else str(default)
            help_txt = f"{info.description}. [env: {'/'.join(env_names(field))}; default: {default_txt}]"
            annotation = info.annotation
            kwargs: dict[str, Any] = {"default": None, "help": help_txt}
            if annotation is bool:
                opt = click.option(f"{flag}/--no-{flag[2:]}", field, **kwargs)
            else:
                if annotation is int:
                    kwargs["type"] = int
                elif annotation is float:
                    kwargs["type"] = float
                elif annotation in (Path, Path | None):
                    kwargs["type"] = click.Path(path_type=Path)
                opt = click.option(flag, field, metavar=field.split("_")[-1].upper(), **kwargs)
            func = opt(func)
        existing = getattr(func, _FLAGS_KEY, {})
        setattr(func, _FLAGS_KEY, {**existing, **flags})
        return func

    return decorate


def settings_from(ctx: click.Context, values: dict[str, Any]) -> Settings:
    """Merge the given flag values with env and the group's ``--config`` file."""
    fields = {k: v for k, v in values.items() if k in Settings.model_fields}
    flags = getattr(ctx.command.callback, _FLAGS_KEY, {})
    root = ctx.find_root().params
    if root.get("log_format"):
        fields.setdefault("log_format", root["log_format"])
    settings = load_settings(root.get("config"), flags=flags, **fields)
    if settings.log_format != logs.current_format():  # e.g. set in the TOML file
        logs.configure(settings.log_format, verbose=bool(root.get("verbose")))
    return settings


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return SUBCOMMANDS

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                return None
            raise
        return module.command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"library-syncer: error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="library-syncer")
@click.option(
    "--config", type=click.Path(path_type=Path, dir_okay=False), default=None, envvar="SYNCER_CONFIG",
    help="TOML file with settings (keys are the long flag names with '_'). [env: SYNCER_CONFIG]",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default=None, envvar="SYNCER_LOG_FORMAT",
    help="Log lines as readable text or JSON objects (setting log_format). [env: SYNCER_LOG_FORMAT; default: text]",
)
def main(config: Path | None, verbose: bool, log_format: str | None) -> None:
    """Sync a VMware Content Library to remote sites over rsync+SSH and publish it (VCSP).

    Settings come from flags, then environment variables (the original container's
    names), then the --config TOML file, then defaults.
    """
    logs.configure(log_format or "text", verbose=verbose)
