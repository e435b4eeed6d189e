"""A memory:// transport with faults to switch on, for client and bridge tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from types import TracebackType
from typing import Self

from umbra_waku_memory import MemorySubscription, MemoryTransport

from umbra_waku.transport import HistoryPage, HistoryQuery, NodeInfo, Subscription, connect
from umbra_waku.waku.message import MessageHash, WakuMessage


class FaultyTransport:
    """A MemoryTransport with faults to switch on: failing publishes, a broken store, a node
    that is not ready, subscriptions that end."""

    def __init__(self, network: str) -> None:
        inner = connect(f"memory://{network}")
        assert isinstance(inner, MemoryTransport)
        self.inner: MemoryTransport = inner
        self.publish_errors: list[Exception] = []
        self.published: list[WakuMessage] = []
        self.queries: list[HistoryQuery] = []
        self.store_error: Exception | None = None
        self.has_store: bool = True
        self.is_ready: bool = True
        self.subscriptions: list[MemorySubscription] = []
        self.start_errors: list[Exception] = []

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self.start_errors:
            raise self.start_errors.pop(0)
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def pubsub_topic(self, content_topic: str) -> str:
        return self.inner.pubsub_topic(content_topic)

    async def publish(self, message: WakuMessage) -> MessageHash:
        self.published.append(message)
        if self.publish_errors:
            raise self.publish_errors.pop(0)
        return await self.inner.publish(message)

    async def subscribe(self, content_topics: Sequence[str]) -> Subscription:
        subscription = await self.inner.subscribe(content_topics)
        self.subscriptions.append(subscription)
        # MemorySubscription.content_topics is a tuple, the Protocol's a (mutable) Sequence
        return subscription  # type: ignore[return-value]

    async def query_history(self, query: HistoryQuery) -> HistoryPage:
        self.queries.append(query)
        if self.store_error is not None:
            raise self.store_error
        return await self.inner.query_history(query)

    async def node_info(self) -> NodeInfo:
        return replace(await self.inner.node_info(), has_store=self.has_store)

    async def ready(self) -> bool:
        return self.is_ready and await self.inner.ready()
