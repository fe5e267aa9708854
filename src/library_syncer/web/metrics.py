"""The one way both roles keep and serve Prometheus metrics: a registry of their own (never the
process-global one), rendered in the text exposition format 0.0.4."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def new_registry() -> CollectorRegistry:
    """An empty registry of this process's own series."""
    return CollectorRegistry(auto_describe=False)


def render(registry: CollectorRegistry) -> bytes:
    """The registry's series as Prometheus text (served with :data:`CONTENT_TYPE`)."""
    return generate_latest(registry)
