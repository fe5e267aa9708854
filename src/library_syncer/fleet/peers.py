"""The clients connected to sshd now, from ``/proc/net/tcp`` and ``/proc/net/tcp6``.

:func:`established_peers` reads the text of one such file (pure); :func:`ssh_peers`
reads both files of this machine. sshd does not log every end of a session, so
the fleet ends those whose connection is gone (:meth:`.model.Fleet.reap`).
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Literal

_TCP_ESTABLISHED = "01"


def established_peers(proc_net_tcp: str, local_port: int,
                      byteorder: Literal["little", "big"] = sys.byteorder) -> set[tuple[str, int]]:
    """(client address, port) of each ESTABLISHED connection to ``local_port`` in the text of
    ``/proc/net/tcp`` or ``/proc/net/tcp6`` (IPv4-mapped addresses shown as IPv4, as sshd logs them)."""
    peers = set()
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != _TCP_ESTABLISHED:
            continue
        try:
            local, remote = fields[1].split(":"), fields[2].split(":")
            if int(local[1], 16) != local_port:
                continue
            raw = b"".join(int(remote[0][i:i + 8], 16).to_bytes(4, byteorder) for i in range(0, len(remote[0]), 8))
            addr = ipaddress.ip_address(raw)
        except (ValueError, IndexError):
            continue
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        peers.add((str(addr), int(remote[1], 16)))
    return peers


def ssh_peers(port: int) -> set[tuple[str, int]] | None:
    """Clients connected to the ssh port now (None when /proc/net is not readable)."""
    peers: set[tuple[str, int]] = set()
    for name in ("tcp", "tcp6"):
        try:
            peers |= established_peers(Path("/proc/net", name).read_text(), port)
        except FileNotFoundError:
            continue  # no IPv6
        except OSError:
            return None
    return peers
