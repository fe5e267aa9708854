"""The environment of every child program (rsync, ssh, sshd, Caddy): never the tool's secrets.

The secret settings are the model's ``SecretStr`` fields (the library password,
the admin token) and their ``*_file`` partners; their environment names come
from the settings model, so a new secret is covered where it is declared.
Names are compared case-insensitively, as the settings model reads them.
"""

from __future__ import annotations

import os
import typing
from functools import lru_cache

from pydantic import SecretStr


@lru_cache(maxsize=1)
def secret_env_names() -> frozenset[str]:
    """Upper-case environment names of every secret setting and of the file it may be read from."""
    from ..config import Settings

    fields = Settings.model_fields
    secret = [n for n, f in fields.items() if SecretStr in typing.get_args(f.annotation) or f.annotation is SecretStr]
    names: set[str] = set()
    for name in secret + [f"{n}_file" for n in secret if f"{n}_file" in fields]:
        alias = fields[name].validation_alias
        names.add(name.upper())
        names.update(c.upper() for c in getattr(alias, "choices", [alias] if isinstance(alias, str) else []))
    return frozenset(names)


def child_environ(base: typing.Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: this process's environment) without any secret setting."""
    secrets = secret_env_names()
    return {k: v for k, v in (os.environ if base is None else base).items() if k.upper() not in secrets}
