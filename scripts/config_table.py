"""Print the README's configuration tables from the settings model (the single source).

One table per settings group, each headed by the group's purpose and the commands
that have flags for its settings (read from the command line itself).
"""

import click

from library_syncer.cli import _FLAGS_KEY, main
from library_syncer.config import GROUPS, Group, env_names


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    """Every (name, command) under ``group``, subcommands of subgroups as 'keys list'."""
    ctx = click.Context(group)
    found: list[tuple[str, click.Command]] = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            found += _commands(cmd, f"{prefix}{name} ")
        elif cmd is not None:
            found.append((prefix + name, cmd))
    return found


def _flags_on(group: Group, commands: list[tuple[str, click.Command]]) -> str:
    """Which commands have a flag for a setting of ``group``."""
    names = [n for n, cmd in commands if set(getattr(cmd.callback, _FLAGS_KEY, {})) & set(group.model_fields)]
    names[:0] = [f"library-syncer {p.opts[0]}" for p in main.params if p.name in group.model_fields]
    return "flags on " + ", ".join(f"`{n}`" for n in names) if names else "no flags (environment or TOML only)"


def table() -> str:
    """Markdown: per group a heading line and a table of setting, environment variable(s), default, meaning."""
    commands = _commands(main)
    parts = []
    for group in GROUPS:
        title = " ".join((group.__doc__ or group.__name__).split()).rstrip(".")
        rows = [f"**{title}** ({_flags_on(group, commands)})", "",
                "| setting (TOML key) | environment | default | meaning |", "|---|---|---|---|"]
        for name, info in group.model_fields.items():
            default = "unset" if info.default is None else f"`{info.default}`"
            envs = " / ".join(f"`{e}`" for e in env_names(name))
            rows.append(f"| `{name}` | {envs} | {default} | {info.description} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(table())
