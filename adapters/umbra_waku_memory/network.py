"""In-process relay and store, and the MemoryTransport that speaks to them."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, urlsplit

from umbra_waku.errors import ConfigError, InvalidInput, TransportClosed
from umbra_waku.transport import HistoryPage, HistoryQuery, NodeInfo, ReceivedMessage
from umbra_waku.validation import check_int
from umbra_waku.waku.message import MAX_MESSAGE_BYTES, MessageHash, WakuMessage
from umbra_waku.waku.topics import parse_content_topic, pubsub_topic_for

log = logging.getLogger("umbra_waku.memory")

DEFAULT_CLUSTER_ID = 42
DEFAULT_NUM_SHARDS = 8
MAX_PAGE_SIZE = 100


class MemoryNetwork:
    """One in-process Waku network: relay fan-out plus a store of every non-ephemeral message."""

    def __init__(
        self,
        name: str = "default",
        *,
        cluster_id: int = DEFAULT_CLUSTER_ID,
        num_shards: int = DEFAULT_NUM_SHARDS,
        store_capacity: int = 1_000_000,
    ) -> None:
        self.name = name
        self.cluster_id = cluster_id
        self.num_shards = num_shards
        self._subscriptions: set[MemorySubscription] = set()
        # message hash -> received message, in arrival order; bounded like a node's retention
        self._store: OrderedDict[MessageHash, ReceivedMessage] = OrderedDict()
        self._store_capacity = store_capacity
        self.published = 0
        self._pubsub_topics: dict[str, str] = {}  # content topic -> pubsub topic (a cache)

    def pubsub_topic(self, content_topic: str) -> str:
        topic = self._pubsub_topics.get(content_topic)
        if topic is None:
            topic = pubsub_topic_for(content_topic, self.cluster_id, self.num_shards)
            if len(self._pubsub_topics) >= 4096:
                self._pubsub_topics.clear()
            self._pubsub_topics[content_topic] = topic
        return topic

    def deliver(self, message: WakuMessage) -> MessageHash:
        pubsub_topic = self.pubsub_topic(message.content_topic)
        received = ReceivedMessage.of(message, pubsub_topic, "memory")
        if received.hash in self._store:
            return received.hash  # relay drops what it has already seen
        self.published += 1
        if not message.ephemeral:
            self._store[received.hash] = received
            if len(self._store) > self._store_capacity:
                self._store.popitem(last=False)
        for subscription in list(self._subscriptions):
            subscription.offer(received)
        return received.hash

    def query(self, query: HistoryQuery) -> HistoryPage:
        topics = set(query.content_topics)
        if not topics:
            raise InvalidInput("a history query needs at least one content topic")
        page_size = max(1, min(query.page_size, MAX_PAGE_SIZE))
        items = list(self._store.values())
        if not query.ascending:
            items.reverse()
        start = 0
        if query.cursor is not None:
            try:
                cursor = MessageHash.parse(query.cursor)
            except InvalidInput:
                raise InvalidInput(f"unknown history cursor {query.cursor!r}") from None
            positions = {item.hash: i for i, item in enumerate(items)}
            if cursor not in positions:
                raise InvalidInput(f"unknown history cursor {query.cursor!r}")
            start = positions[cursor] + 1
        page: list[ReceivedMessage] = []
        more = False
        for item in items[start:]:
            msg = item.message
            if msg.content_topic not in topics:
                continue
            if query.pubsub_topic is not None and item.pubsub_topic != query.pubsub_topic:
                continue
            ts = msg.timestamp or 0
            if query.start_time is not None and ts < query.start_time:
                continue
            if query.end_time is not None and ts > query.end_time:
                continue
            if len(page) == page_size:
                more = True
                break
            page.append(item)
        if not query.ascending:
            page.reverse()  # pages are chronological, as nwaku returns them
        cursor_out = None
        if more:
            last = page[0] if not query.ascending else page[-1]
            cursor_out = last.hash.hex0x()
        return HistoryPage(page, cursor_out)

    def _attach(self, subscription: MemorySubscription) -> None:
        self._subscriptions.add(subscription)

    def _detach(self, subscription: MemorySubscription) -> None:
        self._subscriptions.discard(subscription)


_networks: dict[str, MemoryNetwork] = {}


def network(name: str = "default", **options: int) -> MemoryNetwork:
    """The process-wide network called ``name``, created on first use."""
    net = _networks.get(name)
    if net is None:
        net = _networks[name] = MemoryNetwork(name, **options)
    return net


class MemorySubscription:
    """Messages for some content topics, queued until the subscriber reads them."""

    def __init__(self, net: MemoryNetwork, content_topics: Sequence[str]) -> None:
        self.content_topics = tuple(content_topics)
        self._topics = frozenset(content_topics)
        self._net = net
        self._queue: deque[ReceivedMessage] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False

    def offer(self, received: ReceivedMessage) -> None:
        if not self._closed and received.message.content_topic in self._topics:
            self._queue.append(received)
            self._wakeup.set()

    async def __aiter__(self) -> AsyncIterator[ReceivedMessage]:
        while True:
            while self._queue:
                yield self._queue.popleft()
            if self._closed:
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    async def close(self) -> None:
        self._closed = True
        self._net._detach(self)
        self._wakeup.set()


class MemoryTransport:
    """A Transport on an in-process :class:`MemoryNetwork`."""

    def __init__(self, net: MemoryNetwork, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.network = net
        self._max_message_bytes = max_message_bytes
        self._subscriptions: set[MemorySubscription] = set()
        self._started = False
        self._closed = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        self._check_open()
        self._started = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.close()
        self._subscriptions.clear()

    def pubsub_topic(self, content_topic: str) -> str:
        return self.network.pubsub_topic(content_topic)

    async def publish(self, message: WakuMessage) -> MessageHash:
        self._check_open()
        message.check_publishable(self._max_message_bytes)
        return self.network.deliver(message)

    async def publish_many(self, messages: Sequence[WakuMessage]) -> list[MessageHash | Exception]:
        """:meth:`publish` of each message in order, in one call: its hash, or the error that
        refused it (the others go on)."""
        out: list[MessageHash | Exception] = []
        for message in messages:
            try:
                self._check_open()
                message.check_publishable(self._max_message_bytes)
                out.append(self.network.deliver(message))
            except Exception as exc:  # noqa: BLE001 -- the caller handles it as publish's
                out.append(exc)
        return out

    async def subscribe(self, content_topics: Sequence[str]) -> MemorySubscription:
        self._check_open()
        if not content_topics:
            raise InvalidInput("subscribe needs at least one content topic")
        for topic in content_topics:
            parse_content_topic(topic)
        subscription = MemorySubscription(self.network, content_topics)
        self.network._attach(subscription)
        self._subscriptions.add(subscription)
        return subscription

    async def query_history(self, query: HistoryQuery) -> HistoryPage:
        self._check_open()
        return self.network.query(query)

    async def node_info(self) -> NodeInfo:
        self._check_open()
        return NodeInfo("memory", "embedded", [f"memory://{self.network.name}"], None, True)

    async def ready(self) -> bool:
        return self._started and not self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed("the memory transport is closed")


def connect(url: str, **options: object) -> MemoryTransport:
    """``memory://<name>[?cluster_id=N&num_shards=M]``: a transport on the named network."""
    parts = urlsplit(url)
    if parts.scheme != "memory":
        raise ConfigError("node", f"{url!r} is not a memory:// URL")
    name = parts.netloc or parts.path.lstrip("/") or "default"
    settings: dict[str, int] = {}
    for key, values in parse_qs(parts.query).items():
        if key not in ("cluster_id", "num_shards"):
            raise ConfigError("node", f"unknown memory:// option {key!r}")
        try:
            settings[key] = int(values[-1])
        except ValueError:
            raise ConfigError("node", f"memory:// option {key} must be a number") from None
    max_bytes = options.pop("max_message_bytes", MAX_MESSAGE_BYTES)
    if options:
        raise ConfigError("node", f"unknown memory transport options {sorted(options)}")
    return MemoryTransport(
        network(name, **settings),
        max_message_bytes=check_int("max_message_bytes", max_bytes, 1),
    )
