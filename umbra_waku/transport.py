"""The transport seam: how umbra-waku reaches a Waku network.

A transport is anything that satisfies :class:`Transport`, a typed Protocol in the style of
httpx's transports and nats.py's connection. umbra-waku ships two, as plugins:

- ``memory://<name>``: the embedded in-process network (``umbra_waku_memory``);
- ``http://host:port``: a Waku node's REST API, nwaku or go-waku (``umbra_waku_rest``).

:func:`connect` picks the adapter by URL scheme from the entry-point group
``umbra_waku.transports``; a third party adds a scheme by registering ``scheme = "pkg:connect"``
there, where ``connect(url: str, **options) -> Transport``. The core never imports an adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import TracebackType
from typing import Literal, Protocol, Self, runtime_checkable
from urllib.parse import urlsplit

from umbra_waku.errors import ConfigError
from umbra_waku.waku.message import MessageHash, WakuMessage

ENTRY_POINT_GROUP = "umbra_waku.transports"

Source = Literal["relay", "filter", "store", "memory"]


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message as the network delivered it, with the pubsub topic it travelled on."""

    message: WakuMessage
    pubsub_topic: str
    hash: MessageHash
    source: Source = "relay"

    @classmethod
    def of(cls, message: WakuMessage, pubsub_topic: str, source: Source) -> ReceivedMessage:
        return cls(message, pubsub_topic, message.hash(pubsub_topic), source)


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A store query. Times are Unix nanoseconds, both ends inclusive; ``cursor`` is the opaque
    value a previous page returned."""

    content_topics: Sequence[str]
    pubsub_topic: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    cursor: str | None = None
    page_size: int = 100
    ascending: bool = True


@dataclass(frozen=True, slots=True)
class HistoryPage:
    messages: list[ReceivedMessage]
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    implementation: str  # "nwaku", "go-waku", "memory" or "unknown"
    version: str = ""
    listen_addresses: list[str] = field(default_factory=list)
    enr: str | None = None
    has_store: bool = False


@runtime_checkable
class Subscription(Protocol):
    """A live stream of received messages for some content topics.

    Each message is yielded once (duplicates are dropped by message hash). Iteration ends when
    the subscription is closed.
    """

    @property
    def content_topics(self) -> Sequence[str]: ...

    def __aiter__(self) -> AsyncIterator[ReceivedMessage]: ...

    async def close(self) -> None: ...


@runtime_checkable
class Transport(Protocol):
    """What umbra-waku needs from a Waku network. All methods are coroutines except
    :meth:`pubsub_topic`; every failure is a :class:`umbra_waku.errors.TransportError`."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def start(self) -> None:
        """Connect and wait until the node is ready (raises NodeUnreachable or NodeTimeout)."""

    async def close(self) -> None:
        """Close every subscription and release resources; idempotent."""

    def pubsub_topic(self, content_topic: str) -> str:
        """The pubsub topic (shard) this transport publishes ``content_topic`` on."""

    async def publish(self, message: WakuMessage) -> MessageHash:
        """Publish and return the message hash; invalid messages raise before anything is sent."""

    async def subscribe(self, content_topics: Sequence[str]) -> Subscription:
        """Start receiving messages on these content topics."""

    async def query_history(self, query: HistoryQuery) -> HistoryPage:
        """One page of stored messages (raises TransportError when no store is reachable)."""

    async def node_info(self) -> NodeInfo: ...

    async def ready(self) -> bool:
        """Whether the node answers and can carry messages now; never raises."""


TransportFactory = Callable[..., Transport]


def transport_factory(url: str) -> TransportFactory:
    """The adapter registered for ``url``'s scheme."""
    scheme = urlsplit(url).scheme.lower()
    if not scheme:
        raise ConfigError("node", f"{url!r} has no scheme (use memory://, http:// or https://)")
    found = entry_points(group=ENTRY_POINT_GROUP, name=scheme)
    if not found:
        known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise ConfigError("node", f"no transport for scheme {scheme!r} (installed: {known})")
    factory: TransportFactory = next(iter(found)).load()
    return factory


def connect(url: str, **options: object) -> Transport:
    """Create (not yet start) the transport for ``url``; use it as ``async with connect(url)``."""
    return transport_factory(url)(url, **options)


async def fetch_history(
    transport: Transport, query: HistoryQuery
) -> AsyncIterator[ReceivedMessage]:
    """Every stored message matching ``query``, following cursors page by page."""
    cursor = query.cursor
    while True:
        page = await transport.query_history(
            HistoryQuery(
                content_topics=query.content_topics,
                pubsub_topic=query.pubsub_topic,
                start_time=query.start_time,
                end_time=query.end_time,
                cursor=cursor,
                page_size=query.page_size,
                ascending=query.ascending,
            )
        )
        for received in page.messages:
            yield received
        if not page.cursor or not page.messages:
            return
        cursor = page.cursor
