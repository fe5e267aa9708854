"""Building the settings: CLI values over environment over TOML file over defaults,
with one error line naming the setting, where its value came from and what is wrong."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, ValidationError

from ..errors import ConfigError
from .model import Settings


def env_names(field: str) -> list[str]:
    """Environment variable names a setting is read from."""
    alias = Settings.model_fields[field].validation_alias
    return [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else [field.upper()]


def _field_for(loc: str) -> str:
    for name in Settings.model_fields:
        if loc == name or loc.lower() in (n.lower() for n in env_names(name)):
            return name
    return loc


def load_settings(
    config_file: Path | None = None, flags: dict[str, str] | None = None, **cli: Any
) -> Settings:
    """Build the settings from CLI values (None = not given), environment and TOML file.

    ``flags`` maps field names to the CLI flag that set them, for error messages.
    """
    cli = {k: v for k, v in cli.items() if v is not None}
    toml: dict[str, Any] = {}
    if config_file is not None:
        try:
            toml = tomllib.loads(Path(config_file).read_text())
        except OSError as exc:
            raise ConfigError(f"config file {config_file}: cannot read ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file}: not valid TOML ({exc})") from None
        unknown = sorted(set(toml) - set(Settings.model_fields))
        if unknown:
            raise ConfigError(f"config file {config_file}: unknown setting {unknown[0]!r}")
    env_set = {f for f in Settings.model_fields if any(n.upper() in _environ_upper() for n in env_names(f))}
    # Lowest first: TOML, then environment (applied by pydantic-settings), then CLI on top.
    init = {k: v for k, v in toml.items() if k not in env_set}
    init.update(cli)
    try:
        # Passed by alias: matching by field name would also let pydantic-settings read
        # unrelated environment variables such as HTTP_PORT.
        return Settings(**{env_names(k)[0]: v for k, v in init.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _field_for(str(err["loc"][0])) if err["loc"] else "?"
        if field in cli:
            source = (flags or {}).get(field) or f"--{field.replace('_', '-')}"
        elif field in env_set:
            source = "environment " + "/".join(n for n in env_names(field) if n.upper() in _environ_upper())
        elif field in toml:
            source = f"config file {config_file}"
        else:
            source = "default"
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if "password" in field or "token" in field or isinstance(value, dict) else f" (got {value!r})"
        raise ConfigError(f"setting {field} from {source}: {msg}{shown}") from None


def _environ_upper() -> set[str]:
    return {k.upper() for k in os.environ}
