"""UmbraClient: the async runtime that binds Sessions to one Transport.

A :class:`~umbra_waku.session.Session` is sans-IO; this module moves its bytes::

    async with UmbraClient(Identity.load("bot.key"), connect("memory://demo")) as client:
        sent = await client.invite(peer_address, "hello")
        async for event in client.events():
            if isinstance(event, MessageReceived):
                await client.send(event.conversation_id, "echo: " + (event.content.as_text() or ""))

What it does:

- subscribes to every session's content topics (each identity's inbox topic and the shared private
  topic) in one subscription, replaced when sessions are added or removed;
- classifies each received message: an inbox-topic message only by the session that owns that
  inbox, a private-topic message by every session (the hint index makes the others cheap);
- drops duplicates by Waku message hash (a bounded LRU);
- backfills from the node's store on start, after a subscription is re-established and after the
  node comes back: for each topic since the last point known complete (a *checkpoint*), minus a
  margin for clock skew. Transports without a store are tolerated;
- publishes each envelope as one ``WakuMessage`` built once, retried with jittered exponential
  backoff for retriable errors only, always the same message (same timestamp, same hash), so the
  network's deduplication applies.

Durability is delegated to a :class:`Ledger` (the default :class:`MemoryLedger` keeps nothing
across restarts). Its contract is what makes a crash lose nothing that was acknowledged:

- received: the client classifies what its queue holds (up to ``MAX_RECEIVE_BATCH`` messages),
  then ``Ledger.received_many`` saves the batch (the new ratchet states, the events and the
  hashes, in one transaction), then the events are emitted. If the ledger fails the client
  stops (:meth:`UmbraClient.wait_closed` raises): the session in memory is then ahead of what was
  saved, and only a restart from the saved state (with backfill) is consistent again;
- sent: ``seal`` -> ``Ledger.sealed_many`` (new ratchet state + the message, in one transaction) ->
  publish -> ``Ledger.published_many`` (what was published meanwhile, in one write);
  :meth:`UmbraClient.send_many` seals a batch and saves it with one ``Ledger.sealed_many``, then
  publishes it in order. Messages the ledger still lists as pending are republished,
  byte for byte, on start, after reconnects and every ``republish_interval``.
- checkpoints advance only through the same queue the messages go through, so a checkpoint is
  saved only after every message received before it was handled.

Events (:meth:`UmbraClient.events` or :meth:`UmbraClient.add_listener`):
:class:`ConversationStarted`, :class:`MessageReceived`, :class:`ConversationClosed` for what
arrives; :class:`Classified`, :class:`Published` and :class:`Backfilled` for logs and metrics.
Events never carry keys; only the inbound events carry plaintext.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import random
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from umbra_waku import hints
from umbra_waku.conversations.private import PRIVATE_TOPIC, PrivateV1
from umbra_waku.errors import (
    ConversationError,
    InvalidInput,
    TransportError,
    UmbraWakuError,
)
from umbra_waku.frames import (
    BadlyFormed,
    Classification,
    Closed,
    Content,
    Invitation,
    NotForMe,
    Readable,
    State,
)
from umbra_waku.hints import HintIndex, ParkingLot
from umbra_waku.identity import Identity
from umbra_waku.session import Outgoing, Session
from umbra_waku.transport import (
    HistoryQuery,
    ReceivedMessage,
    Source,
    Subscription,
    Transport,
    fetch_history,
)
from umbra_waku.validation import check_int, check_seconds
from umbra_waku.waku.dedupe import RecentHashes
from umbra_waku.waku.message import MAX_MESSAGE_BYTES, MessageHash, WakuMessage

__all__ = [
    "Backfilled",
    "Classified",
    "ClientEvent",
    "ClientOptions",
    "ConversationClosed",
    "ConversationStarted",
    "ConversationState",
    "Delivery",
    "EventStream",
    "InboundEvent",
    "Ledger",
    "LedgerSnapshot",
    "MemoryLedger",
    "MessageReceived",
    "PendingEnvelope",
    "Published",
    "RecentHashes",
    "Sent",
    "UmbraClient",
]

log = logging.getLogger("umbra_waku.client")

#: nwaku refuses store queries with a cursor and more than 10 content topics.
STORE_TOPICS_PER_QUERY = 10
_NS = 1_000_000_000
#: Batches of received messages whose ledger writes may be in flight at once (ordered ledgers).
_MAX_BEHIND = 64
#: Most received messages classified and saved together (one ledger write).
MAX_RECEIVE_BATCH = 256


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientOptions:
    """Tuning of an :class:`UmbraClient`; every default suits a real node."""

    #: Message hashes remembered to drop duplicates (least recently seen evicted first).
    dedupe_capacity: int = 10_000
    #: Private-topic envelopes that matched nothing, kept in case they arrived ahead of earlier
    #: messages of their conversation by more than the hint window (see ParkingLot).
    park_capacity: int = 1_024
    #: Received messages waiting to be classified; a full queue slows the readers down.
    queue_size: int = 1_000
    #: Attempts of one publish for retriable errors (1 = no retry), always the same message.
    publish_attempts: int = 5
    #: Base of the jittered exponential backoff between attempts, in seconds.
    publish_backoff: float = 0.25
    #: Ceiling of one backoff sleep, in seconds.
    publish_max_backoff: float = 8.0
    #: Seconds between republishing the envelopes the ledger still lists as pending.
    republish_interval: float = 15.0
    #: Ceiling of the backoff between attempts to (re)subscribe or backfill, in seconds.
    resubscribe_max_backoff: float = 30.0
    #: Backfill from the store on start and after reconnects.
    backfill: bool = True
    #: Seconds subtracted from a checkpoint before querying the store (clock skew, propagation).
    backfill_margin: float = 20.0
    #: How far back to look for a topic that has no checkpoint yet, in seconds before start.
    initial_lookback: float = 0.0
    #: Attempts of one backfill query for retriable errors.
    backfill_attempts: int = 3
    #: Seconds between checkpoints while the subscription is live.
    checkpoint_interval: float = 5.0
    #: Seconds between ``Transport.ready()`` probes (a probe that recovers triggers a backfill).
    health_interval: float = 5.0
    #: Most seconds :meth:`UmbraClient.close` waits for in-flight publishes and queued messages.
    close_timeout: float = 5.0
    #: Events buffered per :meth:`UmbraClient.events` iterator before the client waits for it.
    event_buffer: int = 1_000

    def __post_init__(self) -> None:
        for name in (
            "dedupe_capacity",
            "park_capacity",
            "queue_size",
            "publish_attempts",
            "backfill_attempts",
            "event_buffer",
        ):
            check_int(name, getattr(self, name), 1)
        for name in (
            "publish_backoff",
            "publish_max_backoff",
            "resubscribe_max_backoff",
            "backfill_margin",
            "initial_lookback",
            "close_timeout",
        ):
            check_seconds(name, getattr(self, name), positive=False)
        for name in ("republish_interval", "checkpoint_interval", "health_interval"):
            check_seconds(name, getattr(self, name), positive=True)


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationStarted:
    """A peer invited ``client_address`` (one of ours) into a new conversation."""

    client_address: str
    conversation_id: str
    peer: str
    created_at_ms: int
    initial_content: Content | None
    message_hash: MessageHash


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """Content arrived in a conversation of ``client_address``."""

    client_address: str
    conversation_id: str
    sender: str
    content: Content
    message_hash: MessageHash


@dataclass(frozen=True, slots=True)
class ConversationClosed:
    """The peer left the conversation; sending to it is no longer possible."""

    client_address: str
    conversation_id: str
    peer: str
    reason: str
    message_hash: MessageHash


InboundEvent = ConversationStarted | MessageReceived | ConversationClosed


@dataclass(frozen=True, slots=True)
class Classified:
    """How one received message was classified (no plaintext), for logs and metrics.

    ``state`` is ``"duplicate"`` for a message dropped by hash before classification.
    ``latency`` is the seconds from the message's timestamp to its handling, for live messages
    that were readable; None otherwise.
    """

    state: State | Literal["duplicate"]
    content_topic: str
    message_hash: MessageHash
    source: Source
    backfill: bool
    client_address: str | None = None
    reason: str | None = None
    latency: float | None = None


class Delivery(StrEnum):
    """Where a sealed envelope stands."""

    PUBLISHED = "published"  # the node accepted it
    PENDING = "pending"  # not yet: retried later (the ledger keeps it)
    FAILED = "failed"  # the node refused it for good (a non-retriable error)


@dataclass(frozen=True, slots=True)
class Published:
    """The outcome of publishing one envelope (after its retries)."""

    conversation_id: str
    message_hash: MessageHash
    delivery: Delivery
    attempts: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Backfilled:
    """One backfill from the store: how many messages it handed to classification."""

    topics: tuple[str, ...]
    messages: int
    ok: bool
    error: str | None = None


ClientEvent = InboundEvent | Classified | Published | Backfilled
Listener = Callable[[ClientEvent], None]
#: A listener of events in batches (:meth:`UmbraClient.add_batch_listener`).
BatchListener = Callable[[Sequence[ClientEvent]], None]


# ---------------------------------------------------------------------------------------------
# The ledger: where the client's durable facts go
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationState:
    """A conversation as the ledger saves it. ``state`` is :meth:`PrivateV1.to_state` and holds
    keys: store it as carefully as an identity."""

    client_address: str  # ours
    conversation_id: str
    peer: str
    initiator: bool  # whether we started it
    created_at_ms: int
    closed: bool
    state: bytes = field(repr=False)

    @classmethod
    def of(cls, client_address: str, conversation: PrivateV1) -> ConversationState:
        return cls(
            client_address,
            conversation.conversation_id,
            conversation.peer_address,
            conversation.initiator,
            conversation.created_at_ms,
            conversation.closed,
            conversation.to_state(),
        )

    def restore(self) -> PrivateV1:
        """The live conversation again (``closed`` is not part of the ratchet state)."""
        conversation = PrivateV1.from_state(self.state)
        conversation.closed = self.closed
        return conversation


@dataclass(frozen=True, slots=True)
class PendingEnvelope:
    """A sealed envelope the ledger holds until the node accepts it."""

    key: int
    client_address: str
    conversation_id: str
    message: WakuMessage


@dataclass(frozen=True, slots=True)
class LedgerSnapshot:
    """What the client reads from its ledger when it starts."""

    recent_hashes: Sequence[MessageHash] = ()
    #: content topic -> Unix ns up to which every message of that topic is known handled.
    checkpoints: Mapping[str, int] = field(default_factory=dict)


class Ledger(Protocol):
    """The client's persistence seam. Each method is one atomic write (or read).

    A ledger may declare ``ordered_writes = True``: each write call takes its place in the
    ledger's write order before its first suspension, and the writes are applied in that order
    (e.g. queued synchronously to one writer). The client then hands received messages over
    without waiting for each to be durable before classifying the next; it still emits their
    events, in order, only once each is durable, and checkpoints only after them.
    """

    async def load(self) -> LedgerSnapshot:
        """Recent message hashes and checkpoints, once at start."""

    async def received_many(
        self,
        conversations: Sequence[ConversationState],
        events: Sequence[tuple[InboundEvent, MessageHash]],
    ) -> None:
        """Save a batch in ONE transaction: the latest state of each conversation it changed
        and every (event, hash), in order."""

    async def sealed_many(
        self,
        conversations: Sequence[ConversationState],
        messages: Sequence[tuple[str, WakuMessage]],
    ) -> list[int]:
        """Save a batch in ONE transaction: the latest state of each conversation and the
        (conversation_id, message) pairs to publish, in order; returns their keys."""

    async def forgotten(self, client_address: str, conversation_id: str) -> None:
        """The conversation is forgotten: delete its state (envelopes of it still pending stay,
        and are still published)."""

    async def published_many(self, keys: Sequence[int]) -> None:
        """The node accepted these envelopes (one write)."""

    async def failed(self, key: int, reason: str) -> None:
        """The node refused the envelope ``key`` for good."""

    async def pending(self) -> Sequence[PendingEnvelope]:
        """Every sealed envelope not yet published, oldest first."""

    async def checkpoint(self, content_topics: Sequence[str], complete_until_ns: int) -> None:
        """Every message of these topics up to this time has been handled."""


class MemoryLedger:
    """A :class:`Ledger` that keeps everything in memory (nothing survives a restart)."""

    def __init__(self) -> None:
        self.conversations: dict[tuple[str, str], ConversationState] = {}
        self.inbound: list[InboundEvent] = []
        self.outbox: dict[int, PendingEnvelope] = {}
        self.checkpoints: dict[str, int] = {}
        self._next_key = 1

    async def load(self) -> LedgerSnapshot:
        return LedgerSnapshot((), dict(self.checkpoints))

    async def received(
        self, event: InboundEvent, conversation: ConversationState, message_hash: MessageHash
    ) -> None:
        self.conversations[conversation.client_address, conversation.conversation_id] = conversation
        self.inbound.append(event)

    async def received_many(
        self,
        conversations: Sequence[ConversationState],
        events: Sequence[tuple[InboundEvent, MessageHash]],
    ) -> None:
        # through received(), one by one: this ledger has no transactions to share
        states = {(c.client_address, c.conversation_id): c for c in conversations}
        for event, message_hash in events:
            state = states[event.client_address, event.conversation_id]
            await self.received(event, state, message_hash)

    async def sealed_many(
        self,
        conversations: Sequence[ConversationState],
        messages: Sequence[tuple[str, WakuMessage]],
    ) -> list[int]:
        by_id = {c.conversation_id: c for c in conversations}
        for conversation in conversations:
            self.conversations[conversation.client_address, conversation.conversation_id] = (
                conversation
            )
        keys = []
        for conversation_id, message in messages:
            number, self._next_key = self._next_key, self._next_key + 1
            address = by_id[conversation_id].client_address
            self.outbox[number] = PendingEnvelope(number, address, conversation_id, message)
            keys.append(number)
        return keys

    async def published_many(self, keys: Sequence[int]) -> None:
        for key in keys:
            self.outbox.pop(key, None)

    async def forgotten(self, client_address: str, conversation_id: str) -> None:
        self.conversations.pop((client_address, conversation_id), None)

    async def failed(self, key: int, reason: str) -> None:
        self.outbox.pop(key, None)

    async def pending(self) -> Sequence[PendingEnvelope]:
        return list(self.outbox.values())

    async def checkpoint(self, content_topics: Sequence[str], complete_until_ns: int) -> None:
        for topic in content_topics:
            self.checkpoints[topic] = max(self.checkpoints.get(topic, 0), complete_until_ns)


# ---------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    """A sealed envelope: saved in the ledger, its publication under way."""

    conversation_id: str
    message_hash: MessageHash
    message: WakuMessage = field(repr=False)
    task: asyncio.Future[Delivery] = field(repr=False, compare=False)

    async def wait(self, timeout: float | None = None) -> Delivery:  # noqa: ASYNC109
        """Wait for the publication's outcome; PENDING if ``timeout`` passes first (publishing
        goes on in the background, and the ledger keeps the envelope until it succeeds)."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except TimeoutError:
            return Delivery.PENDING


class EventStream:
    """An async iterator of client events (see :meth:`UmbraClient.events`)."""

    def __init__(
        self,
        buffer: int,
        operational: bool,
        stopped: asyncio.Event,
        registry: weakref.WeakSet[EventStream],
    ) -> None:
        self._queue: asyncio.Queue[ClientEvent] = asyncio.Queue(buffer)
        self._operational = operational
        self._stopped = stopped
        self._registry = registry
        self._closed = False

    async def put(self, event: ClientEvent) -> None:
        if self._closed:
            return
        if self._operational or isinstance(
            event, ConversationStarted | MessageReceived | ConversationClosed
        ):
            await self._queue.put(event)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ClientEvent:
        if not self._queue.empty():
            return self._queue.get_nowait()
        if self._closed or self._stopped.is_set():
            raise StopAsyncIteration
        getter = asyncio.ensure_future(self._queue.get())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({getter, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not getter.done():
                getter.cancel()
        if getter.cancelled():
            raise StopAsyncIteration
        return getter.result()

    async def aclose(self) -> None:
        self._closed = True
        self._registry.discard(self)
        while not self._queue.empty():
            self._queue.get_nowait()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@dataclass(frozen=True, slots=True)
class _Inbound:
    received: ReceivedMessage
    backfill: bool


@dataclass(frozen=True, slots=True)
class _Mark:
    topics: tuple[str, ...]
    complete_until_ns: int


@dataclass(frozen=True, slots=True)
class _Backfill:
    """Brackets a backfill in the queue: live items between start and end wait until the
    backfill's (older) messages were handled, so that a conversation sees them in order."""

    start: bool


_Item = _Inbound | _Mark | _Backfill | None  # None: stop


def _is_retriable(error: BaseException) -> bool:
    return isinstance(error, UmbraWakuError) and error.retriable


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("attempt %d failed, retrying: %s", state.attempt_number, error)


def _session_of(item: Identity | Session) -> Session:
    return item if isinstance(item, Session) else Session(item)


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


class UmbraClient:
    """Binds Sessions (one per identity) to one Transport. See the module docstring.

    ``UmbraClient(identity, transport)`` for one identity;
    ``UmbraClient((), transport, ledger=...)`` and :meth:`add` for many. With
    ``manage_transport`` (the default) the client starts the transport in :meth:`start` and
    closes it in :meth:`close`.
    """

    def __init__(
        self,
        identities: Identity | Session | Iterable[Identity | Session],
        transport: Transport,
        *,
        ledger: Ledger | None = None,
        options: ClientOptions | None = None,
        manage_transport: bool = True,
    ) -> None:
        self.transport = transport
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self.options = options if options is not None else ClientOptions()
        self._manage_transport = manage_transport
        self._sessions: dict[str, Session] = {}
        # client_address -> position in _sessions' order (increasing; the sort key of offers)
        self._order: dict[str, int] = {}
        self._order_next = 0
        # every session's expected and recently read hint fingerprints, owner = client_address:
        # a private-topic envelope is offered only to the sessions that may read it
        self._router: HintIndex[str] = hints.impl.HintIndex()
        self._inbox_owner: dict[str, str] = {}  # inbox content topic -> client_address
        self._locks: dict[str, asyncio.Lock] = {}
        self._recent = RecentHashes(self.options.dedupe_capacity)
        self._parked: ParkingLot[_Inbound] = ParkingLot(self.options.park_capacity)
        self._checkpoints: dict[str, int] = {}
        self._listeners: list[Listener] = []
        self._batch_listeners: list[BatchListener] = []
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()

        self._queue: asyncio.Queue[_Item] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: dict[int, asyncio.Future[Delivery]] = {}  # by ledger key
        self._publishers: set[asyncio.Task[None]] = set()
        self._pubsub_topics: dict[str, str] = {}  # content topic -> pubsub topic (fixed)
        self._subscription: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribed: frozenset[str] = frozenset()
        self._backfilled: set[str] = set()
        self._has_store = True
        self._node_ready = True
        self._changed = asyncio.Event()
        self._status = asyncio.Event()
        self._stopped = asyncio.Event()
        self._ordered = bool(getattr(self.ledger, "ordered_writes", False))
        # Received messages handed to an ordered ledger: the last of a chain of tasks that each
        # wait for the previous one, then for their write, then emit their events.
        self._tail: asyncio.Task[None] | None = None
        self._behind = 0
        self._started = False
        self._closing = False
        self._started_ns = 0
        self.failure: BaseException | None = None

        items: Iterable[Identity | Session] = (
            (identities,) if isinstance(identities, Identity | Session) else identities
        )
        for item in items:
            self.add(item)

    # ---- sessions ----

    @property
    def sessions(self) -> Mapping[str, Session]:
        """The sessions, by their identity's client_address."""
        return self._sessions

    @property
    def session(self) -> Session:
        """The one session of a single-identity client."""
        if len(self._sessions) != 1:
            raise ConversationError(f"this client has {len(self._sessions)} identities, not one")
        return next(iter(self._sessions.values()))

    @property
    def client_address(self) -> str:
        return self.session.identity.client_address

    def add(self, identity: Identity | Session, *, since_ns: int | None = None) -> Session:
        """Bind another identity (or a session restored from saved state); the subscription
        follows at once if the client runs. ``since_ns``: nothing sent to its inbox before this
        time matters (a new identity), so backfill need not look further back."""
        session = _session_of(identity)
        address = session.identity.client_address
        if address in self._sessions:
            raise InvalidInput(f"identity {address} is already bound to this client")
        self._sessions[address] = session
        self._order[address] = self._order_next
        self._order_next += 1
        session.use_parking(self._parked)
        session.use_router(self._router, address)
        self._inbox_owner[session.inbox.content_topic] = address
        if since_ns is not None:
            topic = session.inbox.content_topic
            self._checkpoints[topic] = max(self._checkpoints.get(topic, 0), since_ns)
        self._locks[address] = asyncio.Lock()
        self._changed.set()
        return session

    def remove(self, client_address: str) -> Session | None:
        """Unbind an identity; its messages are no longer received."""
        session = self._sessions.pop(client_address, None)
        if session is not None:
            self._order.pop(client_address, None)
            session.use_router(None)
            self._inbox_owner.pop(session.inbox.content_topic, None)
            self._locks.pop(client_address, None)
            self._backfilled.discard(session.inbox.content_topic)
            self._changed.set()
        return session

    @property
    def content_topics(self) -> frozenset[str]:
        """Every topic the client must be subscribed to."""
        if not self._sessions:
            return frozenset()
        return frozenset(self._inbox_owner) | {PRIVATE_TOPIC}

    # ---- status ----

    @property
    def started(self) -> bool:
        """Whether :meth:`start` succeeded (and :meth:`close` was not called)."""
        return self._started and not self._closing

    @property
    def live(self) -> bool:
        """Whether the node answers and the subscription covers every topic."""
        return self._started and not self._closing and self._receiving()

    def _receiving(self) -> bool:
        topics = self.content_topics
        return (
            self.failure is None
            and self._node_ready
            and self._subscribed >= topics
            and (not topics or self._reader_alive())
        )

    @property
    def backfill_pending(self) -> frozenset[str]:
        """Topics whose gap since their checkpoint is not filled yet."""
        return self.content_topics - self._backfilled

    def status(self) -> dict[str, object]:
        return {
            "live": self.live,
            "node_ready": self._node_ready,
            "subscribed_topics": len(self._subscribed),
            "backfill_pending": len(self.backfill_pending),
            "publishing": len(self._inflight),
            "failure": None if self.failure is None else str(self.failure),
        }

    async def wait_live(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until :attr:`live` with nothing left to backfill; False if ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not (self.live and not self.backfill_pending):
            if self.failure is not None or self._closing:
                return False
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            event = self._status
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
        return True

    def _notify(self) -> None:
        event, self._status = self._status, asyncio.Event()
        event.set()

    def _reader_alive(self) -> bool:
        return self._reader is not None and not self._reader.done()

    # ---- events ----

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event (it must not block); returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def add_batch_listener(self, listener: BatchListener) -> Callable[[], None]:
        """Call ``listener(events)`` with the events the client emits together (those of a
        received batch, the outcomes of a published batch), in order, each event once, before
        the :meth:`add_listener` listeners and the streams get them; it must not block. The
        same events as a listener's, for one call per batch (e.g. to count them). Returns a
        remover."""
        self._batch_listeners.append(listener)
        listeners = self._batch_listeners
        return lambda: listeners.remove(listener) if listener in listeners else None

    def events(self, *, operational: bool = False) -> EventStream:
        """The events from now on: inbound ones, and with ``operational=True`` also
        :class:`Classified`, :class:`Published` and :class:`Backfilled`.

        ``async for event in client.events(): ...`` or ``async with client.events() as events``.
        A stream buffers ``event_buffer`` events; when it is full the client waits for it, so
        nothing is dropped: iterate it, or close it (dropping the last reference also detaches
        it). Iteration ends, after the buffered events, when the client closes.
        """
        stream = EventStream(self.options.event_buffer, operational, self._stopped, self._streams)
        self._streams.add(stream)
        return stream

    async def _emit(self, event: ClientEvent) -> None:
        await self._emit_many((event,))

    async def _emit_many(self, events: Sequence[ClientEvent]) -> None:
        """Each event in order to every listener, then to every stream (one coroutine for
        all of them, not one per event)."""
        if self._batch_listeners and events:
            for batch_listener in list(self._batch_listeners):
                try:
                    batch_listener(events)
                except Exception:
                    log.exception("event listener failed")
        for event in events:
            for listener in list(self._listeners):
                try:
                    listener(event)
                except Exception:
                    log.exception("event listener failed")
            if len(self._streams):  # a WeakSet: iterating an empty one is not free
                for stream in list(self._streams):
                    await stream.put(event)

    # ---- lifecycle ----

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
        """Load the ledger, start the transport, subscribe, backfill and republish pending
        envelopes. Returns once the work is under way (see :meth:`wait_live`)."""
        if self._started:
            return
        snapshot = await self.ledger.load()
        for message_hash in snapshot.recent_hashes:
            self._recent.add(message_hash)
        self._checkpoints.update(snapshot.checkpoints)
        if self._manage_transport:
            await self.transport.start()
        try:
            info = await self.transport.node_info()
            self._has_store = info.has_store
        except TransportError as exc:
            log.warning("node info unavailable (%s); assuming the node has a store", exc)
        self._started_ns = time.time_ns()
        self._queue = asyncio.Queue(self.options.queue_size)
        self._started = True
        self._changed.set()
        self._tasks = [
            asyncio.create_task(self._consume(), name="umbra-client-consume"),
            asyncio.create_task(self._supervise(), name="umbra-client-subscription"),
            asyncio.create_task(self._tick(), name="umbra-client-checkpoints"),
            asyncio.create_task(self._probe(), name="umbra-client-health"),
            asyncio.create_task(self._republish_loop(), name="umbra-client-republish"),
        ]

    async def close(self) -> None:
        """Stop receiving, let in-flight publishes and queued messages finish (bounded by
        ``close_timeout``), save a last checkpoint and close the transport if it is ours."""
        if self._closing or not self._started:
            self._closing = True
            self._stopped.set()
            return
        self._closing = True
        self._notify()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.close_timeout
        consumer, *others = self._tasks
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        mark = self._mark()  # before the reader stops: what it delivered is queued already
        await self._drop_subscription()
        queue = self._queue
        assert queue is not None
        items: list[_Item] = [None] if mark is None else [mark, None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                for item in items:
                    await queue.put(item)
                await asyncio.shield(consumer)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        if self._publishers:
            _, late = await asyncio.wait(
                set(self._publishers), timeout=max(0.0, deadline - loop.time())
            )
            for publishing in late:
                publishing.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._stopped.set()
        if self._manage_transport:
            await self.transport.close()

    async def wait_closed(self) -> None:
        """Return when the client has stopped; raise the failure that stopped it, if any."""
        await self._stopped.wait()
        if self.failure is not None:
            raise self.failure

    # ---- sending ----

    async def invite(
        self, peer: str, content: Content | str | None = None, *, sender: str | None = None
    ) -> Sent:
        """Start a conversation with the client at ``peer`` (a client_address): the invitation
        is saved, then published. ``Sent.conversation_id`` names the new conversation."""
        session = self._sender(sender, None)
        address = session.identity.client_address
        body = Content.text(content) if isinstance(content, str) else content
        async with self._locks[address]:
            conversation, outgoing = session.invite(peer, body)
            try:
                message = self._message(outgoing)
                [key] = await self.ledger.sealed_many(
                    [ConversationState.of(address, conversation)],
                    [(conversation.conversation_id, message)],
                )
            except BaseException:  # not saved: the conversation must not exist
                session.remove_conversation(conversation.conversation_id)
                raise
        return self._sent(key, address, outgoing.conversation_id, message)

    async def send(
        self, conversation_id: str, content: Content | str, *, sender: str | None = None
    ) -> Sent:
        """Encrypt ``content`` for a conversation: saved, then published (see :class:`Sent`)."""
        session = self._sender(sender, conversation_id)
        body = Content.text(content) if isinstance(content, str) else content
        return await self._seal(
            session, conversation_id, lambda: session.send(conversation_id, body)
        )

    async def close_conversation(
        self, conversation_id: str, reason: str = "", *, sender: str | None = None
    ) -> Sent:
        """Tell the peer we leave a conversation: the Close frame is saved with the conversation,
        now closed, then published (see :class:`Sent`). The conversation stays, closed: sends
        are refused (ConversationError), what the peer sent before it learnt is still read."""
        session = self._sender(sender, conversation_id)
        return await self._seal(
            session, conversation_id, lambda: session.close(conversation_id, reason)
        )

    async def _seal(
        self, session: Session, conversation_id: str, seal: Callable[[], Outgoing]
    ) -> Sent:
        """Under the session's lock, ``seal()`` one envelope of a conversation (it moves the
        session's state) and save it with that state in one ledger write; then publish it."""
        address = session.identity.client_address
        async with self._locks[address]:
            message = self._message(seal())
            state = ConversationState.of(address, session.conversation(conversation_id))
            [key] = await self.ledger.sealed_many([state], [(conversation_id, message)])
        return self._sent(key, address, conversation_id, message)

    async def forget_conversation(self, conversation_id: str, *, sender: str | None = None) -> None:
        """Forget a conversation (deleted from the ledger, then from the session): nothing more
        of it is read, and the peer is not told (:meth:`close_conversation` first for that).
        ConversationError if it is unknown."""
        session = self._sender(sender, conversation_id)
        address = session.identity.client_address
        async with self._locks[address]:
            session.conversation(conversation_id)  # ConversationError if unknown
            await self.ledger.forgotten(address, conversation_id)
            session.remove_conversation(conversation_id)

    async def send_many(
        self, items: Sequence[tuple[str, Content | str]], *, sender: str | None = None
    ) -> list[Sent | UmbraWakuError]:
        """Encrypt many messages (``(conversation_id, content)``, in this order) of one identity,
        save them in ONE ledger write, then publish them in order.

        Returns one entry per item, in order: its :class:`Sent`, or the error that refused it
        alone (:class:`ConversationError` for an unknown or closed conversation,
        :class:`InvalidInput` for content too large); the others go on. If the ledger write
        fails, it raises and nothing of the batch was saved or published."""
        if not items:
            return []
        session = self._sender(sender, items[0][0])
        address = session.identity.client_address
        results: list[Sent | UmbraWakuError | None] = [None] * len(items)
        sealed: list[tuple[int, str, WakuMessage]] = []
        async with self._locks[address]:
            touched: dict[str, None] = {}
            for index, (conversation_id, content) in enumerate(items):
                body = Content.text(content) if isinstance(content, str) else content
                try:
                    outgoing = session.send(conversation_id, body)
                    message = self._message(outgoing)
                except (ConversationError, InvalidInput) as exc:
                    results[index] = exc
                    continue
                sealed.append((index, conversation_id, message))
                touched[conversation_id] = None
            if sealed:
                states = [
                    ConversationState.of(address, session.conversation(conversation_id))
                    for conversation_id in touched
                ]
                keys = await self.ledger.sealed_many(states, [(c, m) for _, c, m in sealed])
        if sealed:
            pending = [
                PendingEnvelope(key, address, conversation_id, message)
                for key, (_, conversation_id, message) in zip(keys, sealed, strict=True)
            ]
            futures = self._publish_batch(pending)
            for (index, conversation_id, message), future in zip(sealed, futures, strict=True):
                results[index] = Sent(conversation_id, self._hash_of(message), message, future)
        return [result for result in results if result is not None]

    async def publish(self, message: WakuMessage) -> MessageHash:
        """Publish one message with retries (retriable errors only), always the same bytes."""
        async for attempt in self._retrying(self.options.publish_attempts):
            with attempt:
                return await self.transport.publish(message)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _sender(self, sender: str | None, conversation_id: str | None) -> Session:
        if sender is not None:
            try:
                return self._sessions[sender]
            except KeyError:
                raise ConversationError(f"identity {sender} is not bound to this client") from None
        if conversation_id is None or len(self._sessions) == 1:
            return self.session
        for session in self._sessions.values():
            if conversation_id in session.conversations:
                return session
        raise ConversationError(f"unknown conversation {conversation_id!r}")

    @staticmethod
    def _message(outgoing: Outgoing) -> WakuMessage:
        message = WakuMessage.create(outgoing.payload, outgoing.content_topic)
        message.check_publishable()
        return message

    def _sent(self, key: int, address: str, conversation_id: str, message: WakuMessage) -> Sent:
        pending = PendingEnvelope(key, address, conversation_id, message)
        [future] = self._publish_batch([pending])
        message_hash = message.hash(self.transport.pubsub_topic(message.content_topic))
        return Sent(conversation_id, message_hash, message, future)

    def _publish_batch(self, pending: Sequence[PendingEnvelope]) -> list[asyncio.Future[Delivery]]:
        """Publish envelopes (those not already being published) in one task; a future of each
        one's delivery, settled as soon as the node answered it."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Delivery]] = []
        todo: list[tuple[PendingEnvelope, asyncio.Future[Delivery]]] = []
        for envelope in pending:
            future = self._inflight.get(envelope.key)
            if future is None:
                future = self._inflight[envelope.key] = loop.create_future()
                todo.append((envelope, future))
            futures.append(future)
        if todo:
            task = asyncio.create_task(self._publish_all(todo))
            self._publishers.add(task)
            task.add_done_callback(self._publishers.discard)
        return futures

    async def _publish_all(
        self, todo: Sequence[tuple[PendingEnvelope, asyncio.Future[Delivery]]]
    ) -> None:
        keys = [envelope.key for envelope, _ in todo]
        try:
            many = getattr(self.transport, "publish_many", None)
            if len(todo) == 1:
                outcomes = [await self._publish_one(todo[0][0])]
            elif many is not None:
                outcomes = await self._publish_many(many, [envelope for envelope, _ in todo])
            else:  # started in order; a REST node gets them concurrently, as separate sends do
                outcomes = list(
                    await asyncio.gather(*(self._publish_one(envelope) for envelope, _ in todo))
                )
            for (_, future), outcome in zip(todo, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome.delivery)
            await self._emit_many(outcomes)
            published = [
                key
                for key, outcome in zip(keys, outcomes, strict=True)
                if outcome.delivery is Delivery.PUBLISHED
            ]
            if published:
                try:
                    await self.ledger.published_many(published)
                except Exception as exc:  # noqa: BLE001 -- they stay pending: republished
                    log.warning("cannot mark %d published envelopes: %s", len(published), exc)
            for key, outcome in zip(keys, outcomes, strict=True):
                if outcome.delivery is Delivery.FAILED:
                    try:
                        await self.ledger.failed(key, outcome.error or "refused")
                    except Exception as exc:  # noqa: BLE001
                        log.warning("cannot mark envelope %d failed: %s", key, exc)
        finally:
            for key, (_, future) in zip(keys, todo, strict=True):
                if not future.done():
                    future.cancel()
                if self._inflight.get(key) is future:
                    del self._inflight[key]

    async def _publish_many(
        self,
        many: Callable[[Sequence[WakuMessage]], Awaitable[Sequence[MessageHash | Exception]]],
        pending: Sequence[PendingEnvelope],
    ) -> list[Published]:
        """Envelopes through a transport's ``publish_many`` (first attempts in order, in one
        call, without a task per envelope); those it refused go on as :meth:`_publish_one`
        does after a failed first attempt (retried concurrently)."""
        firsts = await many([envelope.message for envelope in pending])
        outcomes: list[Published | None] = []
        retries: list[tuple[int, Coroutine[Any, Any, Published]]] = []
        for envelope, first in zip(pending, firsts, strict=True):
            if isinstance(first, Exception):
                retries.append((len(outcomes), self._publish_one(envelope, first)))
                outcomes.append(None)
            else:
                outcomes.append(
                    Published(envelope.conversation_id, first, Delivery.PUBLISHED, 1, None)
                )
        if retries:
            done = await asyncio.gather(*(coroutine for _, coroutine in retries))
            for (index, _), outcome in zip(retries, done, strict=True):
                outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    async def _publish_one(
        self, pending: PendingEnvelope, first_error: Exception | None = None
    ) -> Published:
        """One envelope, retried with backoff for retriable errors; never raises but
        cancellation. ``first_error``: the first attempt was made already and raised it."""
        message = pending.message
        attempts = 1
        error: str | None = None
        message_hash: MessageHash | None = None
        try:
            try:
                if first_error is not None:
                    raise first_error
                message_hash = await self.transport.publish(message)
            except UmbraWakuError as exc:
                if not exc.retriable or self.options.publish_attempts <= 1:
                    raise
                log.warning("attempt 1 failed, retrying: %s", exc)
                backoff = self.options.publish_backoff
                await asyncio.sleep(backoff + random.uniform(0, backoff))  # noqa: S311
                async for attempt in self._retrying(self.options.publish_attempts - 1):
                    with attempt:
                        attempts += 1
                        message_hash = await self.transport.publish(message)
            delivery = Delivery.PUBLISHED
        except UmbraWakuError as exc:
            error = str(exc)
            delivery = Delivery.PENDING if exc.retriable else Delivery.FAILED
            if exc.retriable:
                log.warning("publish of %s still pending: %s", self._hash_of(message), exc)
            else:
                log.error("publish of %s refused: %s", self._hash_of(message), exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            delivery = Delivery.PENDING
            log.exception("publish of %s failed unexpectedly", self._hash_of(message))
        if message_hash is None:
            message_hash = self._hash_of(message)
        return Published(pending.conversation_id, message_hash, delivery, attempts, error)

    def _hash_of(self, message: WakuMessage) -> MessageHash:
        topic = message.content_topic
        pubsub = self._pubsub_topics.get(topic)
        if pubsub is None:
            pubsub = self._pubsub_topics[topic] = self.transport.pubsub_topic(topic)
        return message.hash(pubsub)

    def _retrying(self, attempts: int) -> AsyncRetrying:
        options = self.options
        return AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(
                multiplier=options.publish_backoff,
                max=options.publish_max_backoff,
                jitter=options.publish_backoff,
            ),
            retry=retry_if_exception(_is_retriable),
            before_sleep=_log_retry,
            reraise=True,
        )

    async def _republish_loop(self) -> None:
        while True:
            await self._republish()
            await asyncio.sleep(self.options.republish_interval)

    async def _republish(self) -> None:
        try:
            pending = await self.ledger.pending()
        except Exception:
            log.exception("cannot read pending envelopes")
            return
        todo = [envelope for envelope in pending if envelope.key not in self._inflight]
        if todo:
            self._publish_batch(todo)

    # ---- receiving: subscription supervisor ----

    async def _supervise(self) -> None:
        delay = self._initial_delay()
        while True:
            self._changed.clear()
            topics = self.content_topics
            if not topics:
                await self._drop_subscription()
            elif topics != self._subscribed or not self._reader_alive():
                try:
                    await self._resubscribe(topics)
                except TransportError as exc:
                    log.warning("subscribe failed (retrying in %.1f s): %s", delay, exc)
                    await self._pause(delay)
                    delay = self._next_delay(delay)
                    continue
            pending = self.backfill_pending
            backfill_ok = True
            if pending:
                backfill_ok = await self._backfill(pending)
            self._notify()
            if backfill_ok and (not topics or self._reader_alive()):
                delay = self._initial_delay()
                await self._pause(None)
            else:
                await self._pause(delay)
                delay = self._next_delay(delay)
            if self._subscribed and not self._reader_alive():
                log.warning("subscription ended; resubscribing, then backfilling the gap")

    async def _resubscribe(self, topics: frozenset[str]) -> None:
        subscription = await self.transport.subscribe(sorted(topics))
        old, old_reader = self._subscription, self._reader
        lost = not self._reader_alive()
        self._subscription = subscription
        self._reader = asyncio.create_task(self._read(subscription), name="umbra-client-reader")
        self._subscribed = topics
        if lost:
            self._backfilled.clear()  # a gap (or the start): every topic needs a backfill
        self._backfilled &= topics
        if old is not None:
            with contextlib.suppress(TransportError):
                await old.close()
        if old_reader is not None:
            # let it hand over what the old subscription still holds, then make sure it ends
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(old_reader), self.options.close_timeout)
            old_reader.cancel()
            await asyncio.gather(old_reader, return_exceptions=True)
        log.info("subscribed to %d content topics", len(topics))

    async def _drop_subscription(self) -> None:
        subscription, reader = self._subscription, self._reader
        self._subscription, self._reader = None, None
        self._subscribed = frozenset()
        if subscription is not None:
            with contextlib.suppress(TransportError):
                await subscription.close()
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _pause(self, delay: float | None) -> None:
        """Until something changed, the reader ended, or ``delay`` seconds passed."""
        waiters: set[asyncio.Future[object]] = {asyncio.ensure_future(self._changed.wait())}
        if self._reader is not None and not self._reader.done():
            waiters.add(self._reader)  # type: ignore[arg-type]
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                if waiter is not self._reader:
                    waiter.cancel()

    def _initial_delay(self) -> float:
        return max(0.05, min(1.0, self.options.resubscribe_max_backoff))

    def _next_delay(self, delay: float) -> float:
        return min(delay * 2, max(self.options.resubscribe_max_backoff, 0.05))

    async def _read(self, subscription: Subscription) -> None:
        queue = self._queue
        assert queue is not None
        try:
            async for received in subscription:
                await queue.put(_Inbound(received, backfill=False))
        except TransportError as exc:
            log.warning("subscription failed: %s", exc)
        finally:
            self._notify()

    async def _backfill(self, topics: frozenset[str]) -> bool:
        """Query the store for ``topics`` since their checkpoints; True if the gap is filled
        (or cannot be: no store, or a non-retriable error)."""
        if not self.options.backfill or not self._has_store:
            self._backfilled |= topics
            return True
        queue = self._queue
        assert queue is not None
        ordered = sorted(topics)
        await queue.put(_Backfill(start=True))
        try:
            count, error, ok = await self._query_store(queue, ordered)
        except BaseException:  # cancelled by close(): the consumer flushes what it held back
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(_Backfill(start=False))
            raise
        await queue.put(_Backfill(start=False))
        log.info("backfill of %d topics handed %d messages to classification", len(topics), count)
        await self._emit(Backfilled(tuple(ordered), count, ok and error is None, error))
        return ok

    async def _query_store(
        self, queue: asyncio.Queue[_Item], ordered: list[str]
    ) -> tuple[int, str | None, bool]:
        margin = int(self.options.backfill_margin * _NS)
        default = self._started_ns - int(self.options.initial_lookback * _NS)
        count = 0
        error: str | None = None
        ok = True
        for start in range(0, len(ordered), STORE_TOPICS_PER_QUERY):
            chunk = ordered[start : start + STORE_TOPICS_PER_QUERY]
            since = min(self._checkpoints.get(topic, default) for topic in chunk) - margin
            query = HistoryQuery(content_topics=chunk, start_time=max(0, since))
            try:
                async for attempt in self._retrying(self.options.backfill_attempts):
                    with attempt:
                        async for received in fetch_history(self.transport, query):
                            await queue.put(_Inbound(received, backfill=True))
                            count += 1
            except UmbraWakuError as exc:
                error = str(exc)
                if exc.retriable:
                    ok = False
                    log.warning("backfill failed, will retry: %s", exc)
                    continue
                log.error("backfill impossible, giving up on this gap: %s", exc)
            self._backfilled.update(chunk)
        return count, error, ok

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(self.options.health_interval)
            try:
                ready = await self.transport.ready()
            except Exception:  # noqa: BLE001 -- ready() must not raise; if it does: not ready
                ready = False
            if ready == self._node_ready:
                continue
            self._node_ready = ready
            if ready:
                log.info("node reachable again; backfilling")
                self._backfilled.clear()
                self._changed.set()
                await self._republish()
            else:
                log.warning("node not ready")
            self._notify()

    def _mark(self) -> _Mark | None:
        """A checkpoint for the topics known complete up to now (minus the margin)."""
        if not self._started or not self._receiving():
            return None
        topics = tuple(sorted(self._backfilled & self._subscribed))
        if not topics:
            return None
        return _Mark(topics, time.time_ns() - int(self.options.backfill_margin * _NS))

    async def _tick(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            await asyncio.sleep(self.options.checkpoint_interval)
            mark = self._mark()
            if mark is not None and queue.qsize() < queue.maxsize // 2:
                await queue.put(mark)

    # ---- receiving: classification ----

    async def _consume(self) -> None:
        queue = self._queue
        assert queue is not None
        deferring = False
        deferred: deque[_Inbound | _Mark] = deque()
        batch: list[_Inbound] = []
        limit = self.options.queue_size * 100
        try:
            while True:
                if batch and (queue.empty() or len(batch) >= MAX_RECEIVE_BATCH):
                    await self._flush(batch)  # what the queue held, as one batch
                item = await queue.get()
                if self.failure is not None:  # a write handed over failed
                    return
                if isinstance(item, _Backfill):
                    deferring = item.start
                    while deferred and not deferring:
                        await self._take(deferred.popleft(), batch)
                elif item is None:
                    while deferred:
                        await self._take(deferred.popleft(), batch)
                    await self._flush(batch)
                    await self._settled()
                    return
                elif deferring and not (isinstance(item, _Inbound) and item.backfill):
                    deferred.append(item)
                    if len(deferred) > limit:  # a backfill that never ends: stop holding back
                        await self._take(deferred.popleft(), batch)
                else:
                    await self._take(item, batch)
        except Exception as exc:  # noqa: BLE001 -- recorded, and wait_closed() raises it
            self._fail(exc)
        finally:
            tail, self._tail = self._tail, None
            if tail is not None and not tail.done():
                tail.cancel()
                await asyncio.gather(tail, return_exceptions=True)

    def _fail(self, exc: BaseException) -> None:
        if self.failure is not None:
            return
        self.failure = exc
        log.critical("the ledger failed; the client stops: %s", exc)
        self._stopped.set()
        self._notify()

    async def _take(self, item: _Inbound | _Mark, batch: list[_Inbound]) -> None:
        """Add a message to the batch; a checkpoint first handles the batch before it."""
        if isinstance(item, _Inbound):
            batch.append(item)
            if len(batch) >= MAX_RECEIVE_BATCH:
                await self._flush(batch)
            return
        await self._flush(batch)
        await self._settled()  # never a checkpoint past a message not yet durable
        await self._checkpoint(item)

    async def _flush(self, batch: list[_Inbound]) -> None:
        if batch:
            items = batch.copy()
            batch.clear()
            await self._handle_batch(items)

    async def _emit_in_order(
        self, write: asyncio.Task[None] | None, events: Sequence[ClientEvent]
    ) -> None:
        """Emit ``events`` once ``write`` (if any) is durable, after every earlier batch's."""
        tail = self._tail
        if tail is not None and tail.done():
            self._tail, self._behind = None, 0
            tail.result()  # an earlier write failed: raise it here
            tail = None
        if write is None and tail is None:
            await self._emit_many(events)
            return
        self._tail = asyncio.create_task(self._emit_after(tail, write, events))
        self._tail.add_done_callback(self._chain_done)
        self._behind += 1
        if self._behind >= _MAX_BEHIND:
            await self._settled()

    async def _emit_after(
        self,
        previous: asyncio.Task[None] | None,
        write: asyncio.Task[None] | None,
        events: Sequence[ClientEvent],
    ) -> None:
        if previous is not None:
            await previous
        if write is not None:
            await write
        await self._emit_many(events)

    def _chain_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        self._fail(exc)  # at once, not when the next message comes; the consumer stops

    async def _settled(self) -> None:
        """Wait until every received message handed over is durable and emitted."""
        tail = self._tail
        if tail is not None:
            try:
                await asyncio.shield(tail)
            finally:
                if self._tail is tail:
                    self._tail, self._behind = None, 0

    async def _checkpoint(self, mark: _Mark) -> None:
        await self.ledger.checkpoint(mark.topics, mark.complete_until_ns)
        for topic in mark.topics:
            self._checkpoints[topic] = max(self._checkpoints.get(topic, 0), mark.complete_until_ns)

    async def _handle_batch(self, items: list[_Inbound]) -> None:
        """Classify a batch, save what it changed in ONE ledger write, then emit its events.

        A session whose state a message of the batch changed stays locked until the write has
        taken its place in the ledger's order (ordered ledgers) or is durable (others), so that
        no send of that session is saved before it with an older state."""
        held: dict[str, asyncio.Lock] = {}
        changed: dict[tuple[str, str], Session] = {}
        inbound: list[tuple[InboundEvent, MessageHash]] = []
        emitted: list[ClientEvent] = []
        queue = items
        write: asyncio.Task[None] | None = None
        try:
            while queue:
                chunk, queue = _unique_prefix(queue)
                for item, event, outcome in await self._classify_chunk(chunk, held, changed):
                    if event is not None:
                        inbound.append((event, item.received.hash))
                        emitted.append(event)
                    emitted.append(outcome)
                queue.extend(self._parked.take_ready())  # the window moved onto parked ones
            if inbound:
                states = [
                    ConversationState.of(address, session.conversation(conversation_id))
                    for (address, conversation_id), session in changed.items()
                ]
                saving = self.ledger.received_many(states, inbound)
                if not self._ordered:
                    await saving
                else:
                    write = asyncio.create_task(saving)
                    write.add_done_callback(_retrieved)  # its failure is the chain's
                    # One turn of the loop: the task's first step runs until the ledger has
                    # queued the write, before any later write of these sessions (they are
                    # locked until then).
                    await asyncio.sleep(0)
        finally:
            for lock in held.values():
                lock.release()
        await self._emit_in_order(write, emitted)

    async def _classify_chunk(
        self,
        chunk: list[_Inbound],
        held: dict[str, asyncio.Lock],
        changed: dict[tuple[str, str], Session],
    ) -> list[tuple[_Inbound, InboundEvent | None, Classified]]:
        """Classify messages with distinct hashes: each session classifies the ones it may read
        in one ``Session.classify_many`` call per run of one topic, so that its hint index's
        memory is fetched ahead (docs/performance.md, section 1). Results are those of
        classifying the messages one by one, session after session, in order:

        - a session classifies its messages in their order (its state changes in that order),
          and sessions are independent, so session after session gives each the same sequence;
        - a private-topic message goes to the next session only while none read it and none
          found it malformed for every session (the one-by-one rule);
        - a message that matched nothing may become readable through a later message of the
          chunk (an invitation, a window that moved): one at a time it would have been parked
          and released by the move; here it is classified again after the chunk, while some
          message of the previous pass was readable, and its new outcome comes after the
          chunk's, as a released one's would.
        """
        n = len(chunk)
        tracks = [_Track() for _ in range(n)]
        private: list[int] = []
        by_owner: dict[str, list[int]] = {}
        for i, item in enumerate(chunk):
            received = item.received
            topic = received.message.content_topic
            if self._recent.seen(received.hash):
                tracks[i].duplicate = True
            elif topic == PRIVATE_TOPIC:
                private.append(i)
            else:
                owner = self._inbox_owner.get(topic)
                if owner is not None:
                    by_owner.setdefault(owner, []).append(i)

        out: list[tuple[_Inbound, InboundEvent | None, Classified]] = []
        readable = await self._classify_pass(chunk, tracks, private, by_owner, held, changed)
        for i, item in enumerate(chunk):
            out.append((item, tracks[i].event, self._outcome(item, tracks[i])))
        # Again, for what matched nothing, while the previous pass read something.
        again = [i for i in private if tracks[i].state is State.NOT_FOR_ME]
        while readable and again:
            for i in again:
                tracks[i] = _Track()
            readable = await self._classify_pass(chunk, tracks, again, {}, held, changed)
            for i in again:
                if tracks[i].state is not State.NOT_FOR_ME:
                    out.append((chunk[i], tracks[i].event, self._outcome(chunk[i], tracks[i])))
            again = [i for i in again if tracks[i].state is State.NOT_FOR_ME]
        for i in private:
            track = tracks[i]
            if track.state is State.NOT_FOR_ME and isinstance(track.result, NotForMe):
                # It may become readable later, once earlier messages of its conversation
                # (delivered late, from the store) move the hint window: park it, and do not
                # remember it as seen, so that a copy coming again is not dropped either.
                self._parked.park(track.result.hint, chunk[i])
        return out

    async def _classify_pass(
        self,
        chunk: list[_Inbound],
        tracks: list[_Track],
        private: list[int],
        by_owner: dict[str, list[int]],
        held: dict[str, asyncio.Lock],
        changed: dict[tuple[str, str], Session],
    ) -> bool:
        """One pass of :meth:`_classify_chunk` over the sessions; True if anything was read."""
        readable = False
        for address, start in self._offers(chunk, private, by_owner):
            session, lock = self._sessions.get(address), self._locks.get(address)
            if session is None or lock is None:
                continue  # removed meanwhile
            if address not in held and lock.locked():
                await lock.acquire()  # a send of this session is being saved: after it
                held[address] = lock
                start = 0  # its state may have changed meanwhile: offered every open one
            # this session's messages, in order: its inbox's, and the private ones still open
            # from the first one it may read on (see _offers)
            mine = [
                *by_owner.get(address, ()),
                *(i for i in private[bisect.bisect_left(private, start) :] if not tracks[i].closed),
            ]
            if not mine:
                continue
            mine.sort()
            for topic, run in _topic_runs(chunk, mine):
                results = session.classify_many(
                    [chunk[i].received.message.payload for i in run], topic
                )
                for i, result in zip(run, results, strict=True):
                    track = tracks[i]
                    track.result = result
                    if isinstance(result, Readable):
                        if address not in held:
                            await lock.acquire()  # free: taken at once, no suspension
                            held[address] = lock
                        received = chunk[i].received
                        track.event, conversation_id = _inbound_event(
                            address, session, received, result
                        )
                        changed[address, conversation_id] = session
                        track.state, track.found, track.closed = State.READABLE, address, True
                        track.latency = None if chunk[i].backfill else _latency(received.message)
                        readable = True
                    elif isinstance(result, BadlyFormed):
                        track.state, track.reason = State.BADLY_FORMED, result.reason
                        if result.conversation_id is None:
                            # malformed for one session is malformed for every session
                            track.found, track.closed = None, True
                        else:
                            track.found = address
        return readable

    def _offers(
        self, chunk: list[_Inbound], private: list[int], by_owner: dict[str, list[int]]
    ) -> list[tuple[str, int]]:
        """The sessions a pass offers messages to, in the client's order, each with the position
        of the first message it is offered; from there on it is offered every private one still
        open, besides its inbox's.

        One by one, every session would be offered every private message in turn; this skips
        only what would certainly be NotForMe. The router (every session's expected and
        recently read fingerprints, :meth:`Session.use_router`) names, for an envelope the fast
        path's scanner is sure of, the sessions that may read it; every other session answers
        NotForMe for it as long as its state is what it was when the pass began, i.e. until it
        reads a message of this chunk (a window moves, an invitation adds a conversation).
        So a session starts at the first message the router names it for, or of its inbox;
        a message the scanner is not sure of goes to every session; one the router names
        nobody for goes to the first session, whose NotForMe is everybody's."""
        first: dict[str, int] = {address: indices[0] for address, indices in by_owner.items()}
        if private and self._sessions:
            lead = next(iter(self._sessions))
            payloads = [chunk[i].received.message.payload for i in private]
            routes = self._router.route(payloads, MAX_MESSAGE_BYTES)
            for i, route in zip(private, routes, strict=True):
                if route is None:  # not sure: every session, from here on at the latest
                    return [(address, min(first.get(address, i), i)) for address in self._sessions]
                for address in route or (lead,):
                    first[address] = min(first.get(address, i), i)
        order = self._order
        return sorted(
            ((a, i) for a, i in first.items() if a in order), key=lambda offer: order[offer[0]]
        )

    def _outcome(self, item: _Inbound, track: _Track) -> Classified:
        received = item.received
        topic = received.message.content_topic
        if track.duplicate:
            return Classified("duplicate", topic, received.hash, received.source, item.backfill)
        if track.state is not State.NOT_FOR_ME or topic != PRIVATE_TOPIC:
            self._recent.add(received.hash)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s on %s: %s%s",
                "backfilled" if item.backfill else "received",
                received.hash,
                topic,
                track.state,
                f" ({track.reason})" if track.reason else "",
            )
        return Classified(
            track.state,
            topic,
            received.hash,
            received.source,
            item.backfill,
            track.found,
            track.reason,
            track.latency,
        )


@dataclass(slots=True)
class _Track:
    """Where one message of a chunk stands while :meth:`UmbraClient._classify_chunk` runs."""

    duplicate: bool = False
    state: State = State.NOT_FOR_ME
    closed: bool = False  # read, or malformed for every session: offered to no other session
    found: str | None = None
    reason: str | None = None
    latency: float | None = None
    result: Classification | None = None
    event: InboundEvent | None = None


def _unique_prefix(items: list[_Inbound]) -> tuple[list[_Inbound], list[_Inbound]]:
    """The longest prefix without a repeated message hash, and the rest: a second copy is
    classified once the first one's outcome is known (it is then a duplicate, or parked)."""
    seen: set[MessageHash] = set()
    for i, item in enumerate(items):
        if item.received.hash in seen:
            return items[:i], items[i:]
        seen.add(item.received.hash)
    return items, []


def _topic_runs(chunk: list[_Inbound], indices: list[int]) -> list[tuple[str, list[int]]]:
    """``indices`` (ascending) cut into maximal runs of one content topic."""
    runs: list[tuple[str, list[int]]] = []
    for i in indices:
        topic = chunk[i].received.message.content_topic
        if runs and runs[-1][0] == topic:
            runs[-1][1].append(i)
        else:
            runs.append((topic, [i]))
    return runs


def _inbound_event(
    address: str, session: Session, received: ReceivedMessage, result: Readable
) -> tuple[InboundEvent, str]:
    """A Readable's event, and the conversation it changed."""
    frame = result.frame
    if isinstance(frame, Invitation):
        return (
            ConversationStarted(
                address,
                frame.conversation_id,
                frame.initiator,
                frame.created_at_ms,
                frame.initial_content,
                received.hash,
            ),
            frame.conversation_id,
        )
    conversation_id = result.conversation_id
    conversation = session.conversation(conversation_id)
    if isinstance(frame, Closed):
        return (
            ConversationClosed(
                address, conversation_id, conversation.peer_address, frame.reason, received.hash
            ),
            conversation_id,
        )
    event = MessageReceived(
        address, conversation_id, result.sender or conversation.peer_address, frame, received.hash
    )
    return event, conversation_id


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _latency(message: WakuMessage) -> float | None:
    if not message.timestamp:
        return None
    return max(0.0, (time.time_ns() - message.timestamp) / _NS)
