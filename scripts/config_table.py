"""Print the README's configuration table from the settings model (the single source)."""

from library_syncer.config import Settings, env_names


def table() -> str:
    """Markdown table: setting, environment variable(s), default, meaning."""
    rows = ["| setting (TOML key) | environment | default | meaning |", "|---|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = "unset" if info.default is None else f"`{info.default}`"
        rows.append(f"| `{name}` | {' / '.join(f'`{e}`' for e in env_names(name))} | {default} | {info.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
