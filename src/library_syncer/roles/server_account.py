"""The login account of the primary in root mode: created when missing, made usable for key logins.

Reads ``/etc/passwd`` (pwd) and ``/etc/shadow`` (a locked password makes sshd refuse
even key logins without PAM); creates or fixes the account with useradd/usermod.
"""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
from pathlib import Path

from ..errors import ConfigError, OperationFailed
from ..transport import keys as keymod
from ..util.childenv import child_environ

log = logging.getLogger("library_syncer.server")


def ensure_account(name: str, uid: int) -> pwd.struct_passwd:
    """The login account for root mode, created (locked password, /bin/sh) when missing."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        try:
            other = pwd.getpwuid(uid)
            raise ConfigError(f"setting syncer_uid: uid {uid} already belongs to the account {other.pw_name}")
        except KeyError:
            pass
        useradd = keymod.find_tool("useradd", "passwd")
        proc = subprocess.run(
            [useradd, "--uid", str(uid), "--user-group", "--no-create-home", "--home-dir", "/",
             "--shell", "/bin/sh", "--password", "*", "--comment", "library-syncer", name],
            capture_output=True, text=True, env=child_environ(),
        )
        if proc.returncode != 0:
            raise OperationFailed(f"cannot create the account {name}: {proc.stderr.strip()}")
        log.info("created the account %s (uid %d)", name, uid)
        pw = pwd.getpwnam(name)
    if pw.pw_uid != uid:
        raise ConfigError(
            f"setting syncer_uid: the account {name} already exists with uid {pw.pw_uid}, not {uid}"
        )
    if not os.access(pw.pw_shell or "/bin/sh", os.X_OK) or Path(pw.pw_shell).name in ("nologin", "false"):
        raise ConfigError(
            f"the account {name} has the shell {pw.pw_shell!r}, which cannot run the forced command: "
            f"run usermod -s /bin/sh {name}"
        )
    if _password_field(name).startswith("!"):
        # sshd (without PAM) refuses a locked account even for key logins; '*' keeps passwords unusable.
        subprocess.run([keymod.find_tool("usermod", "passwd"), "-p", "*", name], check=True, capture_output=True,
                       env=child_environ())
        log.info("account %s: locked password replaced by '*' (no password can match)", name)
    return pw


def _password_field(name: str) -> str:
    try:
        for line in Path("/etc/shadow").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name and len(fields) > 1:
                return fields[1]
    except OSError:
        pass
    return ""
