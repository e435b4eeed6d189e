"""Prometheus metrics of one bridge, in a registry of its own (never the global one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from umbra_waku.client import Backfilled, Classified, ClientEvent, Published

__all__ = ["CONTENT_TYPE_LATEST", "BridgeMetrics"]


class BridgeMetrics:
    """The bridge's counters; :meth:`observe` is a :class:`~umbra_waku.client.UmbraClient`
    listener, :meth:`observe_many` a batch listener (the same counts, one increment per
    label and batch)."""

    def __init__(self) -> None:
        # labelled children, looked up once (labels() costs more than inc())
        self._envelope_children: dict[tuple[object, bool], Any] = {}
        self._publish_children: dict[object, Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.envelopes = Counter(
            "umbra_bridge_envelopes",
            "Received Waku messages by classification (duplicates are dropped by hash first)",
            ["classification", "source"],
            registry=r,
        )
        self.publishes = Counter(
            "umbra_bridge_publishes",
            "Envelopes handed to the node, by outcome after retries",
            ["result"],
            registry=r,
        )
        self.publish_attempts = Counter(
            "umbra_bridge_publish_attempts", "Publish attempts, retries included", registry=r
        )
        self.backfills = Counter(
            "umbra_bridge_backfills", "Store backfills by outcome", ["result"], registry=r
        )
        self.backfill_messages = Counter(
            "umbra_bridge_backfill_messages",
            "Messages the store backfills handed to classification",
            registry=r,
        )
        self.delivery_latency = Histogram(
            "umbra_bridge_delivery_latency_seconds",
            "From a readable message's Waku timestamp to its event being stored (live only)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.events = Counter(
            "umbra_bridge_events", "Events stored for bots, by type", ["type"], registry=r
        )
        self.bots = Gauge("umbra_bridge_bots", "Bots on this bridge", registry=r)
        self.websockets = Gauge(
            "umbra_bridge_websockets", "Open event-stream WebSockets", registry=r
        )
        self.live = Gauge(
            "umbra_bridge_live", "1 when the node answers and the subscription is live", registry=r
        )

    def observe(self, event: ClientEvent) -> None:
        if isinstance(event, Classified):
            key = (event.state, event.backfill)
            child = self._envelope_children.get(key)
            if child is None:
                source = "backfill" if event.backfill else "live"
                child = self._envelope_children[key] = self.envelopes.labels(
                    str(event.state), source
                )
            child.inc()
            if event.latency is not None:
                self.delivery_latency.observe(event.latency)
        elif isinstance(event, Published):
            published = self._publish_children.get(event.delivery)
            if published is None:
                published = self._publish_children[event.delivery] = self.publishes.labels(
                    str(event.delivery)
                )
            published.inc()
            self.publish_attempts.inc(event.attempts)
        elif isinstance(event, Backfilled):
            self.backfills.labels("ok" if event.ok else "failed").inc()
            self.backfill_messages.inc(event.messages)

    def observe_many(self, events: Sequence[ClientEvent]) -> None:
        envelopes: dict[tuple[object, bool], int] = {}
        publishes: dict[object, int] = {}
        attempts = 0
        latency = self.delivery_latency
        for event in events:
            if isinstance(event, Classified):
                key = (event.state, event.backfill)
                envelopes[key] = envelopes.get(key, 0) + 1
                if event.latency is not None:
                    latency.observe(event.latency)
            elif isinstance(event, Published):
                publishes[event.delivery] = publishes.get(event.delivery, 0) + 1
                attempts += event.attempts
            elif isinstance(event, Backfilled):
                self.observe(event)
        for (state, backfill), count in envelopes.items():
            child = self._envelope_children.get((state, backfill))
            if child is None:
                source = "backfill" if backfill else "live"
                child = self._envelope_children[state, backfill] = self.envelopes.labels(
                    str(state), source
                )
            child.inc(count)
        for delivery, count in publishes.items():
            published = self._publish_children.get(delivery)
            if published is None:
                published = self._publish_children[delivery] = self.publishes.labels(str(delivery))
            published.inc(count)
        if attempts:
            self.publish_attempts.inc(attempts)

    def render(self) -> bytes:
        return generate_latest(self.registry)
