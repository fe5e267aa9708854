"""Prometheus metrics of a site (prometheus-client, in a registry of its own: :mod:`..web.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ..sync.result import SyncResult
from ..web.metrics import new_registry, render

PREFIX = "library_syncer"


class ClientMetrics:
    """Sync, library and HTTP series of one client daemon; ``render()`` gives the exposition text."""

    def __init__(self) -> None:
        r = self.registry = new_registry()
        self.sync_duration = Histogram(
            f"{PREFIX}_sync_duration_seconds", "Duration of finished syncs", registry=r,
            buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 48 * 3600))
        self.syncs = Counter(f"{PREFIX}_syncs", "Finished syncs by result", ["result"], registry=r)
        self.failures = Counter(f"{PREFIX}_sync_failures", "Failed syncs by reason", ["reason"], registry=r)
        self.wire_bytes = Counter(f"{PREFIX}_sync_wire_bytes", "Bytes rsync moved over the link", registry=r)
        self.last_wire_bytes = Gauge(f"{PREFIX}_last_sync_wire_bytes", "Bytes on the wire of the last sync",
                                     registry=r)
        self.last_sync = Gauge(f"{PREFIX}_last_sync_timestamp_seconds", "End of the last sync", registry=r)
        self.last_success = Gauge(f"{PREFIX}_last_success_timestamp_seconds", "End of the last successful sync",
                                  registry=r)
        self.running = Gauge(f"{PREFIX}_sync_running", "1 while a sync runs", registry=r)
        self.next_run = Gauge(f"{PREFIX}_next_sync_timestamp_seconds", "When the next scheduled sync starts",
                              registry=r)
        self.items = Gauge(f"{PREFIX}_items", "Items in the published library", registry=r)
        self.held_back = Gauge(f"{PREFIX}_items_held_back",
                               "Published items kept at their last good version (new content failed validation)",
                               registry=r)
        self.library_bytes = Gauge(f"{PREFIX}_library_bytes", "Bytes of the published library", registry=r)
        self.generation = Gauge(f"{PREFIX}_published_generation", "Number of the published generation",
                                registry=r)
        self.origin_version = Gauge(f"{PREFIX}_origin_version",
                                    "Origin version of the published library (0: synced without one)", registry=r)
        self.relay_behind = Gauge(f"{PREFIX}_upstream_relay_behind_versions",
                                  "Versions the relay that served the last successful sync was behind its upstream",
                                  registry=r)
        self.served_by = Gauge(f"{PREFIX}_served_by", "The peer that served the last successful sync (value 1)",
                               ["peer"], registry=r)
        self.bandwidth_limit = Gauge(f"{PREFIX}_bandwidth_limit_bytes_per_second",
                                     "Transfer cap of the bandwidth slot in force (+Inf: unlimited, 0: pause)",
                                     registry=r)
        self.bandwidth_slot = Gauge(f"{PREFIX}_bandwidth_slot", "The bandwidth timetable slot in force (value 1)",
                                    ["entry", "limit"], registry=r)
        self.http_requests = Counter(f"{PREFIX}_http_requests", "HTTP requests answered", ["method", "status"],
                                     registry=r)
        self.http_bytes = Counter(f"{PREFIX}_http_sent_bytes", "Body bytes sent by the web server", registry=r)
        self.vcenter_requests = Counter(f"{PREFIX}_vcenter_sync_requests",
                                        "Requests to the site's vCenter to sync its subscribed library, by result",
                                        ["result"], registry=r)
        self.vcenter_last_ok = Gauge(f"{PREFIX}_vcenter_last_sync_request_ok",
                                     "1 when vCenter accepted the last sync request, 0 when it failed", registry=r)
        self.vcenter_last = Gauge(f"{PREFIX}_vcenter_last_sync_request_timestamp_seconds",
                                  "End of the last sync request to vCenter", registry=r)

    def observe_sync(self, result: SyncResult) -> None:
        """Count a finished sync."""
        self.syncs.labels(result.kind if result.kind in ("ok", "degraded") else "failed").inc()
        self.sync_duration.observe(max(result.duration, 0.0))
        self.wire_bytes.inc(result.wire_bytes)
        self.last_wire_bytes.set(result.wire_bytes)
        self.last_sync.set(result.ended.timestamp())
        if result.ok:
            self.last_success.set(result.ended.timestamp())
        else:
            self.failures.labels(result.kind).inc()

    def observe_published(self, published: dict | None, held_back: int = 0) -> None:
        """Set the library gauges from :func:`status.published_library`'s summary."""
        self.items.set(len(published["items"]) if published else 0)
        self.held_back.set(held_back)
        self.library_bytes.set(published["bytes"] if published else 0)
        self.generation.set((published or {}).get("generation") or 0)

    def observe_upstream(self, upstream: dict) -> None:
        """Set the upstream gauges from the status document's ``upstream`` part."""
        self.origin_version.set(upstream["origin_version"] or 0)
        self.relay_behind.set(upstream["relay_behind"] or 0)
        self.served_by.clear()
        if upstream["served_by"]:
            self.served_by.labels(upstream["served_by"]).set(1)

    def observe_bandwidth(self, bandwidth: dict) -> None:
        """Set the bandwidth gauges from the status document's ``bandwidth`` part (the slot in force)."""
        bps = bandwidth["bytes_per_second"]
        self.bandwidth_limit.set(float("inf") if bps is None else bps)
        self.bandwidth_slot.clear()
        self.bandwidth_slot.labels(bandwidth["slot"], bandwidth["limit"]).set(1)

    def observe_request(self, method: str, status: int, body_bytes: int) -> None:
        """Count one answered HTTP request."""
        self.http_requests.labels(method, str(status)).inc()
        self.http_bytes.inc(body_bytes)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return render(self.registry)
