"""sshd's log lines that matter to the fleet, as events (pure logic, no I/O).

sshd (``-D -e``, ``LogLevel VERBOSE``, OpenSSH 9.2) prints these lines, which
are all the fleet needs (A = client address, P = client port)::

    Connection from A port P on 127.0.0.1 port 2222 rdomain ""        a connection begins
    Accepted publickey for syncer from A port P ssh2: ED25519 SHA256:…  a site key logged in
    Failed publickey for syncer from A port P ssh2: ED25519 SHA256:…    a key was refused
    Received disconnect from A port P:11: disconnected by user           the client says goodbye
    Disconnected from user syncer A port P                              … and the session ends
    Connection closed by [authenticating user syncer ]A port P          the link went away
    Connection reset by …, Timeout, client not responding from …,
    ssh_packet_write_poll: Connection from user syncer A port P: Broken pipe,
    Read error from remote host A port P: …, Closing connection to A port P
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = r"(?:(?:authenticating |invalid )?user \S+ )?(?P<addr>\S+) port (?P<port>\d+)"
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("connect", re.compile(r"^Connection from (?P<addr>\S+) port (?P<port>\d+) on ")),
    ("accepted", re.compile(
        r"^Accepted publickey for \S+ from (?P<addr>\S+) port (?P<port>\d+) \S+: \S+ (?P<fp>SHA256:\S+)")),
    ("failed", re.compile(
        r"^Failed publickey for (?:invalid user )?\S+ from (?P<addr>\S+) port (?P<port>\d+) \S+: \S+ (?P<fp>SHA256:\S+)")),
    ("goodbye", re.compile(r"^Received disconnect from (?P<addr>\S+) port (?P<port>\d+):(?P<code>\d+):")),
    ("ended", re.compile(r"^Disconnected from " + _ID)),
    ("lost", re.compile(r"^(?:Connection (?:closed|reset) by |Timeout, client not responding from )" + _ID)),
    # sshpkt_fatal: "[TAG: ]Connection from ID timed out" or "TAG: Connection from ID: REASON"
    ("lost", re.compile(r"^(?:[A-Za-z_ ]+: )?Connection from " + _ID + r"(?: timed out|: )")),
    ("lost", re.compile(r"^Read error from remote host (?P<addr>\S+) port (?P<port>\d+):")),
    ("closing", re.compile(r"^Closing connection to (?P<addr>\S+) port (?P<port>\d+)")),
    ("listening", re.compile(r"^Server listening on ")),
]
DISCONNECT_BY_APPLICATION = 11  # SSH disconnect reason sent by a client that is done


@dataclass(frozen=True)
class LogEvent:
    """One sshd log line that matters to the fleet."""

    kind: str  # connect, accepted, failed, goodbye, ended, lost, closing, listening
    addr: str = ""
    port: int = 0
    fingerprint: str = ""
    code: int = 0


def parse_line(line: str) -> LogEvent | None:
    """The event of one sshd log line, or None for lines the fleet ignores."""
    line = line.strip()
    for kind, pattern in _PATTERNS:
        m = pattern.match(line)
        if m:
            g = m.groupdict()
            return LogEvent(kind, g.get("addr") or "", int(g.get("port") or 0), g.get("fp") or "",
                            int(g.get("code") or 0))
    return None
