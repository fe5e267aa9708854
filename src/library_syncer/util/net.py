"""Addresses: ``host:port`` with IPv6 brackets, and the wildcard addresses that mean "every interface"."""

from __future__ import annotations

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def is_wildcard(host: str) -> bool:
    """True for an address that listens on every interface."""
    return host in WILDCARD_HOSTS


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
