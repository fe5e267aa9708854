"""sshd configuration for the server, as text (no I/O).

- :func:`render_sshd_config`: a hardened ``sshd_config`` whose only use is a
  read-only rsync of the library (and its origin manifest) by one account, with
  public keys only;
- :func:`render_authorized_keys`: one ``restrict,command="DISPATCHER"`` line per
  site key (:func:`forced_command`), with the site's optional ``from=`` limits;
  every part is checked so no input can add a line or an option (ValueError otherwise);
- every session gets ``SESSION_MARKER_VAR`` (``SetEnv``) and, with
  ``ExposeAuthInfo``, ``SSH_USER_AUTH`` naming the key it logged in with: how
  the server finds the sessions of a revoked key (see :mod:`.sessions`);
- :class:`LogFolder`: turns sshd's log lines into ours, naming the site of
  each session (sshd logs the key fingerprint when it accepts a key).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .keys import SiteKey, site_name_ok
from ..util.net import host_port
from .ssh import KEY_TYPES

SESSION_MARKER_VAR = "LIBRARY_SYNCER_SERVER"  # set by sshd in every session of this server
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")  # a newline or NUL would end a line of sshd's files
_BLOB_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_FROM_RE = re.compile(r"!?[0-9A-Za-z.:*?/-]+")


@dataclass(frozen=True)
class SshdSetup:
    """Everything the sshd configuration depends on."""

    listen_host: str
    port: int
    host_keys: tuple[Path, ...]
    authorized_keys: Path
    user: str  # the only account allowed to log in
    command: str  # the forced command (see forced_command)
    root_login: bool = False  # True when the account is root (unprivileged mode started as root)
    strict_modes: bool = True
    marker: str = ""  # SESSION_MARKER_VAR's value in this server's sessions (see session_marker)


def session_marker(authorized_keys: Path) -> str:
    """The mark of one server's sessions: derived from its ``authorized_keys`` path, stable across restarts."""
    return hashlib.sha256(str(authorized_keys).encode()).hexdigest()[:16]


def check_line_safe(value: str, what: str) -> str:
    """``value`` unchanged; ValueError when it holds a control character (newline, CR, NUL...)."""
    if _CONTROL_RE.search(value):
        raise ValueError(f"{what} {value!r} contains a control character")
    return value


def forced_command(rrsync: str, *, python: str, script: Path, library: Path | None = None,
                   published: Path | None = None, origin: Path | None = None,
                   reports: Path | None = None, keys: Path | None = None) -> str:
    """The shell command every session runs: the dispatcher (:mod:`.dispatch`, a copy at ``script``
    run by ``python``), which allows a read-only rsync of ``library`` (the primary; its origin manifest
    is ``origin``) or of the generation a relay publishes in ``published``, the origin query, and site
    reports stored in ``reports`` for the sites of the key map ``keys``."""
    args = [python, "-I", str(script), "--rrsync", rrsync]
    if library is not None:
        args += ["--library", str(library)]
        if origin is not None:
            args += ["--origin", str(origin)]
    elif published is not None:
        args += ["--published", str(published)]
    else:
        raise ValueError("forced command: a library or a published folder is needed")
    if reports is not None and keys is not None:
        args += ["--reports", str(reports), "--keys", str(keys)]
    return " ".join(shlex.quote(a) for a in args)


def render_sshd_config(s: SshdSetup) -> str:
    """The complete ``sshd_config`` text; ValueError when a value would break a line."""
    values = [("host key", str(p)) for p in s.host_keys] + [
        ("authorized_keys", str(s.authorized_keys)), ("forced command", s.command), ("account", s.user),
        ("listen address", s.listen_host)]
    for what, value in values:
        check_line_safe(value, what)
    if not re.fullmatch(r"[0-9a-f]*", s.marker):
        raise ValueError(f"session marker {s.marker!r} is not hexadecimal")
    host_keys = "".join(f"HostKey {p}\n" for p in s.host_keys)
    return f"""\
# Written by library-syncer at every start: edits are lost.
# The only things an account can do here: a read-only rsync of the library, and read its origin manifest.
ListenAddress {host_port(s.listen_host, s.port)}
{host_keys}PidFile none
LogLevel VERBOSE
UseDNS no
UsePAM no
PrintMotd no
PrintLastLog no
Banner none
Subsystem sftp /bin/false

# Who and how: one account, public keys only.
AllowUsers {s.user}
PermitRootLogin {"forced-commands-only" if s.root_login else "no"}
AuthorizedKeysFile {s.authorized_keys}
AuthorizedPrincipalsFile none
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
GSSAPIAuthentication no
PermitEmptyPasswords no
StrictModes {"yes" if s.strict_modes else "no"}
MaxAuthTries 3

# What: nothing but the forced command (also set per key in authorized_keys).
ForceCommand {s.command}
DisableForwarding yes
AllowAgentForwarding no
AllowTcpForwarding no
AllowStreamLocalForwarding no
X11Forwarding no
GatewayPorts no
PermitListen none
PermitOpen none
PermitTunnel no
PermitTTY no
PermitUserRC no
PermitUserEnvironment no
MaxSessions 1
# Each session carries this server's mark and the key it logged in with
# (SSH_USER_AUTH), so revoking a key also ends the sessions it opened.
# SHLVL=1: sshd runs the forced command with the account's shell; bash then
# reads the account's ~/.bashrc unless it is a nested shell.  That file can
# be slow (about 0.1 s per session measured) or print text that breaks the
# rsync protocol; a nested level makes bash skip it.
SetEnv {SESSION_MARKER_VAR}={s.marker or "-"} SHLVL=1
ExposeAuthInfo yes

# Many sites on slow, lossy links, often starting at the same scheduled time:
# - MaxStartups: sshd's default 10:30:100 starts dropping unauthenticated
#   connections beyond 10 at once; allow 100 before random early drop (30%),
#   refuse all beyond 300, so a fleet hitting the same cron minute gets in.
# - LoginGraceTime: key exchange plus authentication over a congested link
#   with retransmissions can take well over the usual seconds; 2 minutes.
# - ClientAlive*: a keepalive every 60 s, the connection dropped after 10
#   unanswered (10 minutes), so dead links free their session while a slow
#   but alive link is never cut. TCPKeepAlive is off: its probes cannot be
#   told from real loss and are spoofable; the encrypted keepalives decide.
MaxStartups 100:30:300
LoginGraceTime 120
ClientAliveInterval 60
ClientAliveCountMax 10
TCPKeepAlive no
"""


def authorized_keys_line(key: SiteKey, command: str) -> str:
    """One authorized_keys line: ``restrict``, the forced command, optional ``from=``, the key, the site.

    ValueError when any part could end the line or the options: a site name
    outside :func:`site_name_ok`, a key that is not ``TYPE BASE64``, a ``from``
    entry with other characters than an address pattern, a command with a
    control character or a trailing backslash (its quotes are escaped for sshd).
    """
    if not site_name_ok(key.site):
        raise ValueError(f"site name {key.site!r} is not a site name")
    if key.kind not in KEY_TYPES or not _BLOB_RE.fullmatch(key.blob):
        raise ValueError(f"site {key.site}: the key is not 'TYPE BASE64'")
    for pattern in key.from_:
        if not _FROM_RE.fullmatch(pattern):
            raise ValueError(f"site {key.site}: from entry {pattern!r} is not an address pattern")
    check_line_safe(command, "forced command")
    if command.endswith("\\"):
        raise ValueError(f"forced command {command!r} ends with a backslash")
    # sshd's option dequoting turns \" into " and keeps every other backslash as it is.
    opts = ["restrict", 'command="' + command.replace('"', '\\"') + '"']
    if key.from_:
        opts.append(f'from="{",".join(key.from_)}"')
    return f"{','.join(opts)} {key.key} {key.site}\n"


def render_authorized_keys(keys: list[SiteKey], command: str) -> str:
    """The authorized_keys text for every site key."""
    head = "# Written by library-syncer from the keys folder: edits are lost.\n"
    return head + "".join(authorized_keys_line(k, command) for k in keys)


_ACCEPTED_RE = re.compile(
    r"^Accepted publickey for (?P<user>\S+) from (?P<addr>\S+) port (?P<port>\d+) \S+: (?P<kind>\S+) (?P<fp>SHA256:\S+)"
)
_FP_RE = re.compile(r"SHA256:[A-Za-z0-9+/]+")
_PEER_RE = re.compile(r"(?P<addr>[0-9A-Fa-f.:]+) port (?P<port>\d+)")
# Lines after which sshd says no more about a session (clean end, or the connection is gone).
_SESSION_ENDS = ("Disconnected from user", "Connection closed by", "Connection reset by",
                 "Timeout, client not responding", "Read error from remote host")
_MAX_SESSIONS = 4096


@dataclass
class LogFolder:
    """Rewrites sshd log lines with the site name of each session.

    ``sites`` maps key fingerprints (``SHA256:...``) to site names; it can be
    replaced on reload.  Sessions are tracked by client address and port.
    """

    sites: dict[str, str] = field(default_factory=dict)
    sessions: dict[tuple[str, str], str] = field(default_factory=dict)

    def fold(self, line: str) -> str:
        """The log message for one sshd line (without trailing newline)."""
        line = line.rstrip("\r\n")
        m = _ACCEPTED_RE.match(line)
        if m:
            site = self.sites.get(m["fp"], "unknown key")
            self.sessions[(m["addr"], m["port"])] = site
            while len(self.sessions) > _MAX_SESSIONS:  # ends sshd never logged must not pile up
                del self.sessions[next(iter(self.sessions))]
            return f"site {site}: session from {m['addr']} port {m['port']} ({m['kind']} {m['fp']})"
        fp = _FP_RE.search(line)
        if fp and fp[0] in self.sites:
            return f"site {self.sites[fp[0]]}: {line}"
        m = _PEER_RE.search(line)
        if m and (m["addr"], m["port"]) in self.sessions:
            key = (m["addr"], m["port"])
            site = self.sessions[key]
            if line.startswith(_SESSION_ENDS):
                del self.sessions[key]
            return f"site {site}: {line}"
        return line
