"""The bridge runtime: bots (identities with tokens), their durable state, one UmbraClient.

Each bot is one identity with its own API token; the bridge binds every bot's Session to one
:class:`~umbra_waku.client.UmbraClient`, whose :class:`~umbra_waku.client.Ledger` here is the
:class:`~umbra_waku.bridge.store.Store`: what the client receives is saved (ratchet state + the
bot's events, one transaction) before it counts as received, and what it sends is saved (ratchet
state + outbox row) before it is published.

Tokens: a bot token is ``<bot_id>.<secret>``; only its SHA-256 is stored, and every comparison is
constant-time (:func:`hmac.compare_digest`). The admin token comes from the settings or is
generated on first start into ``<data_dir>/admin.token`` (mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from umbra_waku.bridge.files import create_private_file, prepare_data_dir, read_secret_file
from umbra_waku.bridge.metrics import BridgeMetrics
from umbra_waku.bridge.settings import BridgeSettings
from umbra_waku.bridge.sqlite import SqliteStore
from umbra_waku.bridge.store import (
    BotRecord,
    ConversationRecord,
    EventRecord,
    NewEvent,
    Received,
    Sealed,
    Store,
    short_id,
)
from umbra_waku.client import (
    ClientOptions,
    ConversationClosed,
    ConversationStarted,
    ConversationState,
    Delivery,
    InboundEvent,
    LedgerSnapshot,
    PendingEnvelope,
    Sent,
    UmbraClient,
)
from umbra_waku.conversations.private import PRIVATE_TOPIC, PrivateV1
from umbra_waku.errors import ConversationError, StateError, TransportError, UmbraWakuError
from umbra_waku.frames import Content
from umbra_waku.identity import Identity, inbox_address_of, inbox_content_topic
from umbra_waku.session import Session
from umbra_waku.transport import Transport, connect
from umbra_waku.waku.message import MessageHash, WakuMessage

T = TypeVar("T")
log = logging.getLogger("umbra_waku.bridge")

ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 -- a file name
DATABASE_FILE = "bridge.sqlite3"
#: Message hashes the bridge remembers (in memory and in the database) to drop duplicates.
DEDUPE_CAPACITY = 100_000
#: Conversation records kept in memory for the API (most recently used), by (bot, short id).
CONVERSATION_CACHE = 4_096
#: Newest events kept in memory per bot with an open event stream (pushed from there), at most
#: this many and this many bytes of content: a stalled reader costs little memory, its stream
#: then catches up from the database.
RECENT_EVENTS = 512
RECENT_BYTES = 256 * 1024
#: Seconds between two passes of the event retention.
PRUNE_INTERVAL = 10.0
_DUMMY_HASH = hashlib.sha256(b"no such bot").digest()


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from."""

    kind: Literal["admin", "bot"]
    bot_id: str | None = None


ADMIN = Principal("admin")


@dataclass(frozen=True, slots=True)
class BotInfo:
    """A bot's public facts (what the bridge keeps in memory; no key, no token)."""

    bot_id: str
    name: str
    client_address: str
    created_at_ms: int
    token_hash: bytes

    @property
    def inbox_address(self) -> str:
        return inbox_address_of(self.client_address)

    @property
    def topics(self) -> list[str]:
        return [inbox_content_topic(self.inbox_address), PRIVATE_TOPIC]


class Notifier:
    """Wakes the event streams of a bot when its events were stored, and keeps the newest
    events of bots that have a stream open, so that streams send them without reading the
    store (which they read only to catch up from an older cursor)."""

    def __init__(self) -> None:
        self._bells: dict[str, asyncio.Event] = {}
        self._recent: dict[str, deque[EventRecord]] = {}
        self._recent_bytes: dict[str, int] = {}
        self._followers: Counter[str] = Counter()
        self.closed = asyncio.Event()

    def bell(self, bot_id: str) -> asyncio.Event:
        """The event the next :meth:`ring` sets. Take it BEFORE reading, then wait on it."""
        return self._bells.setdefault(bot_id, asyncio.Event())

    def ring(self, bot_id: str) -> None:
        bell = self._bells.pop(bot_id, None)
        if bell is not None:
            bell.set()

    def follow(self, bot_id: str) -> None:
        """A stream of this bot opened: keep its newest events from now on."""
        self._followers[bot_id] += 1
        if bot_id not in self._recent:
            self._recent[bot_id] = deque()
            self._recent_bytes[bot_id] = 0

    def unfollow(self, bot_id: str) -> None:
        self._followers[bot_id] -= 1
        if self._followers[bot_id] <= 0:
            del self._followers[bot_id]
            self._recent.pop(bot_id, None)
            self._recent_bytes.pop(bot_id, None)

    def stored(self, bot_id: str, records: Sequence[EventRecord]) -> None:
        """These events of the bot are durable (in seq order): keep them if followed, ring."""
        recent = self._recent.get(bot_id)
        if recent is not None and records:
            size = self._recent_bytes[bot_id]
            if recent and recent[-1].seq + 1 != records[0].seq:
                recent.clear()  # not contiguous (never expected): streams read the store
                size = 0
            for record in records:
                recent.append(record)
                size += _size(record)
            while recent and (len(recent) > RECENT_EVENTS or size > RECENT_BYTES):
                size -= _size(recent.popleft())
            self._recent_bytes[bot_id] = size
        self.ring(bot_id)

    def after(self, bot_id: str, after: int, limit: int) -> list[EventRecord] | None:
        """The kept events with seq > ``after`` (at most ``limit``); None when the kept ones do
        not reach back to ``after`` + 1 (then read the store)."""
        recent = self._recent.get(bot_id)
        if not recent:
            return None
        first = recent[0].seq
        if after + 1 < first:
            return None
        start = after + 1 - first
        if start >= len(recent):
            return []
        return [recent[i] for i in range(start, min(len(recent), start + limit))]

    def close(self) -> None:
        self.closed.set()
        for bell in self._bells.values():
            bell.set()
        self._bells.clear()


def _size(record: EventRecord) -> int:
    data = record.event.data
    return 200 + (len(data) if data else 0)  # about what a record holds besides its content


def _new_events(event: InboundEvent) -> list[NewEvent]:
    message_hash = bytes(event.message_hash)
    if isinstance(event, ConversationStarted):
        started = NewEvent(
            "conversation_started",
            event.conversation_id,
            event.peer,
            message_hash,
            created_at_ms=event.created_at_ms,
        )
        if event.initial_content is None:
            return [started]
        return [
            started,
            _message_event(event.conversation_id, event.peer, event.initial_content, message_hash),
        ]
    if isinstance(event, ConversationClosed):
        return [
            NewEvent(
                "conversation_closed",
                event.conversation_id,
                event.peer,
                message_hash,
                reason=event.reason,
            )
        ]
    return [_message_event(event.conversation_id, event.sender, event.content, message_hash)]


def _message_event(
    conversation_id: str, sender: str, content: Content, message_hash: bytes
) -> NewEvent:
    return NewEvent(
        "message",
        conversation_id,
        sender,
        message_hash,
        domain=content.domain,
        tag=content.tag,
        data=content.data,
        sent_at_ms=content.sent_at_ms or None,
    )


def _record(bot_id: str, conversation: ConversationState) -> ConversationRecord:
    return ConversationRecord(
        bot_id,
        conversation.conversation_id,
        conversation.peer,
        conversation.initiator,
        conversation.created_at_ms,
        conversation.closed,
        conversation.state,
    )


class BridgeLedger:
    """The client's :class:`~umbra_waku.client.Ledger`, kept in the bridge's Store."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge
        self._store = bridge.store
        # received_many() and sealed_many() queue their store write before their first
        # suspension when the store does (SqliteStore): see Ledger.ordered_writes.
        self.ordered_writes = bool(getattr(bridge.store, "ordered_writes", False))

    async def load(self) -> LedgerSnapshot:
        hashes = await self._store.recent_hashes(DEDUPE_CAPACITY)
        return LedgerSnapshot([MessageHash(h) for h in hashes], await self._store.checkpoints())

    async def received_many(
        self,
        conversations: Sequence[ConversationState],
        events: Sequence[tuple[InboundEvent, MessageHash]],
    ) -> None:
        bridge = self._bridge
        records = []
        for state in conversations:
            bot = bridge.bot_by_address(state.client_address)
            if bot is not None:  # else removed meanwhile
                records.append(_record(bot.bot_id, state))
        batch = []
        for event, message_hash in events:
            bot = bridge.bot_by_address(event.client_address)
            if bot is not None:
                batch.append(Received(bot.bot_id, _new_events(event), bytes(message_hash)))
        if not batch:
            return
        received_at_ms = _now_ms()
        seqs = await self._saving(
            records, self._store.record_received_many(records, batch, received_at_ms)
        )
        stored: dict[str, list[EventRecord]] = {}
        kinds: Counter[str] = Counter()
        for item, item_seqs in zip(batch, seqs, strict=True):
            if not item_seqs:
                continue
            out = stored.setdefault(item.bot_id, [])
            for seq, new in zip(item_seqs, item.events, strict=True):
                out.append(EventRecord(seq, received_at_ms, new))
                kinds[new.kind] += 1
        for kind, count in kinds.items():
            bridge.metrics.events.labels(kind).inc(count)
        for bot_id, bot_records in stored.items():
            bridge.notifier.stored(bot_id, bot_records)

    async def sealed_many(
        self,
        conversations: Sequence[ConversationState],
        messages: Sequence[tuple[str, WakuMessage]],
    ) -> list[int]:
        bridge = self._bridge
        bot = bridge.bot_by_address(conversations[0].client_address)
        if bot is None:
            raise ConversationError("the bot was removed")
        records = [_record(bot.bot_id, state) for state in conversations]
        sealed = []
        for conversation_id, message in messages:
            assert message.timestamp is not None
            sealed.append(
                Sealed(
                    bot.bot_id,
                    conversation_id,
                    message.content_topic,
                    message.payload,
                    message.timestamp,
                )
            )
        return await self._saving(records, self._store.record_sealed_many(records, sealed))

    async def _saving(self, records: Sequence[ConversationRecord], write: Awaitable[T]) -> T:
        """Await a store write of ``records``; the bridge's conversation map follows its outcome
        (what a failed write left in the store is not known). Awaited at once, so the write is
        queued before the caller's first suspension, as ``ordered_writes`` promises."""
        try:
            result = await write
        except BaseException:
            for record in records:
                self._bridge.forget_conversation(record.bot_id, record.short_id)
            raise
        for record in records:
            self._bridge.remember_conversation(record)
        return result

    async def published_many(self, keys: Sequence[int]) -> None:
        await self._store.mark_published_many(keys)

    async def forgotten(self, client_address: str, conversation_id: str) -> None:
        bot = self._bridge.bot_by_address(client_address)
        if bot is None:
            raise ConversationError("the bot was removed")
        try:
            await self._store.delete_conversation(bot.bot_id, conversation_id)
        finally:  # whatever the outcome, the map must not keep it
            self._bridge.forget_conversation(bot.bot_id, short_id(conversation_id))

    async def failed(self, key: int, reason: str) -> None:
        await self._store.mark_failed(key, reason)

    async def pending(self) -> Sequence[PendingEnvelope]:
        found = []
        for row in await self._store.pending_outbox():
            bot = self._bridge.bot(row.bot_id)
            if bot is not None:
                message = WakuMessage(row.payload, row.content_topic, row.timestamp)
                found.append(
                    PendingEnvelope(row.outbox_id, bot.client_address, row.conversation_id, message)
                )
        return found

    async def checkpoint(self, content_topics: Sequence[str], complete_until_ns: int) -> None:
        await self._store.save_checkpoints(content_topics, complete_until_ns)


class Bridge:
    """One bridge: its bots, store, client and metrics. :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        settings: BridgeSettings,
        *,
        transport: Transport | None = None,
        store: Store | None = None,
        client_options: ClientOptions | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.metrics = BridgeMetrics()
        self.store: Store = (
            store
            if store is not None
            else SqliteStore(self.data_dir / DATABASE_FILE, keep_hashes=DEDUPE_CAPACITY)
        )
        self.notifier = Notifier()
        self.draining = False
        self._transport = transport
        self._client_options = client_options
        self._client: UmbraClient | None = None
        self._connector: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._bots: dict[str, BotInfo] = {}
        self._by_address: dict[str, str] = {}
        self._admin_hash = _DUMMY_HASH
        self._opened = False
        # (bot id, short id) -> the conversation as last committed, so that a POST does not
        # read the database; updated after every committed write of a conversation (the
        # client saves a conversation's states in order, under its bot's lock), dropped with
        # its bot. ``_cache_version`` tells a lookup that read the store whether a write
        # happened meanwhile (then its row may be older than the cached one: not kept).
        self._conversation_cache: OrderedDict[tuple[str, str], ConversationRecord] = OrderedDict()
        self._cache_version = 0

    # ---- lifecycle ----

    @property
    def client(self) -> UmbraClient:
        if self._client is None:
            raise StateError("the bridge is not started")
        return self._client

    @property
    def connected(self) -> bool:
        """Whether the client runs (the node answered at least once since start)."""
        return self._client is not None and self._client.started

    async def start(self) -> None:
        """Check the node setting, prepare the data directory, open the store, restore every
        bot, then connect to the node in the background (retrying until it answers)."""
        transport = self._transport
        if transport is None:  # an invalid node setting fails here, before anything is written
            transport = connect(self.settings.node, **self.settings.transport_options())
        prepare_data_dir(self.data_dir)
        self._admin_hash = token_hash(self._admin_token())
        await self.store.open()
        self._opened = True
        try:
            options = self._client_options or ClientOptions(
                dedupe_capacity=DEDUPE_CAPACITY,
                backfill_margin=self.settings.backfill_margin,
                close_timeout=self.settings.shutdown_timeout / 2,
            )
            client = UmbraClient((), transport, ledger=BridgeLedger(self), options=options)
            client.add_batch_listener(self.metrics.observe_many)
            self._client = client
            await self._restore(client)
        except BaseException:
            await self.store.close()
            self._opened = False
            raise
        self._connector = asyncio.create_task(self._connect(client), name="umbra-bridge-connect")
        self._pruner = asyncio.create_task(self._prune(), name="umbra-bridge-retention")

    async def _prune(self) -> None:
        """The event retention: every bot keeps its newest ``event_retention`` events."""
        while True:
            await asyncio.sleep(PRUNE_INTERVAL)
            try:
                deleted = await self.store.prune_events(self.settings.event_retention)
            except Exception as exc:  # noqa: BLE001 -- tried again next time
                log.warning("event retention failed: %s", exc)
                continue
            if deleted:
                log.info("event retention deleted %d events", deleted)

    async def _restore(self, client: UmbraClient) -> None:
        # bot by bot, a page of rows at a time: never every state blob in memory at once
        for bot in await self.store.list_bots():
            identity = Identity(bot.private_key)
            session = Session(identity)
            async for page in self.store.conversation_pages(bot.bot_id):
                for record in page:
                    conversation = PrivateV1.from_state(record.state)
                    conversation.closed = record.closed
                    session.add_conversation(conversation)
                del page
            self._register(bot, identity.client_address)
            client.add(session)
        log.info("restored %d bots", len(self._bots))

    async def _connect(self, client: UmbraClient) -> None:
        delay = 0.5
        while True:
            try:
                await client.start()
            except TransportError as exc:
                log.warning(
                    "node %s unavailable (retrying in %.1f s): %s", self.node_label, delay, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            log.info("connected to %s", self.node_label)
            return

    def begin_drain(self) -> None:
        """Stop accepting work; wake every event stream so it can end."""
        self.draining = True
        self.notifier.close()

    async def stop(self) -> None:
        """Finish in-flight publishes, stop the client and close the store."""
        self.begin_drain()
        for task in (self._connector, self._pruner):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._client is not None:
            if self._client.started or self._client.failure is not None:
                await self._client.close()
            else:  # never connected: the client did not take the transport over
                with contextlib.suppress(TransportError):
                    await self._client.transport.close()
        if self._opened:
            self._opened = False
            await self.store.close()
        log.info("bridge stopped")

    async def wait_stopped(self) -> BaseException | None:
        """Wait until the client stops by itself: the failure that stopped it (the store could
        not write), or None when it was closed."""
        if self._connector is None:
            raise StateError("the bridge is not started")
        try:
            await asyncio.shield(self._connector)
            await self.client.wait_closed()
        except Exception as exc:  # noqa: BLE001 -- the failure is the answer
            return exc
        return None

    @property
    def node_label(self) -> str:
        parts = urlsplit(self.settings.node)
        host = parts.hostname or parts.netloc.rpartition("@")[2] or parts.path
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}"

    # ---- tokens and bots ----

    def _admin_token(self) -> str:
        configured = self.settings.admin_token
        if configured is not None:
            return configured.get_secret_value().strip()
        path = self.data_dir / ADMIN_TOKEN_FILE
        if path.exists():
            return read_secret_file(path)
        token = secrets.token_urlsafe(32)
        create_private_file(path, token + "\n")
        log.info("admin token generated into %s", path)
        return token

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal a ``Bearer`` Authorization header names, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        digest = token_hash(token)
        if hmac.compare_digest(digest, self._admin_hash):
            return ADMIN
        bot_id, dot, _ = token.partition(".")
        bot = self._bots.get(bot_id) if dot else None
        expected = bot.token_hash if bot is not None else _DUMMY_HASH
        if hmac.compare_digest(digest, expected) and bot is not None:
            return Principal("bot", bot.bot_id)
        return None

    def _register(self, record: BotRecord, client_address: str) -> BotInfo:
        info = BotInfo(
            record.bot_id, record.name, client_address, record.created_at_ms, record.token_hash
        )
        self._bots[info.bot_id] = info
        self._by_address[client_address] = info.bot_id
        self.metrics.bots.set(len(self._bots))
        return info

    def bot(self, bot_id: str) -> BotInfo | None:
        return self._bots.get(bot_id)

    def bot_by_address(self, client_address: str) -> BotInfo | None:
        bot_id = self._by_address.get(client_address)
        return None if bot_id is None else self._bots.get(bot_id)

    def bots(self) -> list[BotInfo]:
        return sorted(self._bots.values(), key=lambda bot: (bot.created_at_ms, bot.bot_id))

    async def create_bot(self, name: str | None) -> tuple[BotInfo, str]:
        """A new bot with a fresh identity; returns it with its token (never stored)."""
        identity = Identity.generate()
        bot_id = secrets.token_hex(8)
        token = f"{bot_id}.{secrets.token_urlsafe(32)}"
        record = BotRecord(bot_id, name or "", identity.private_key, token_hash(token), _now_ms())
        since = time.time_ns()
        await self.store.create_bot(record, identity.inbox_content_topic, since)
        info = self._register(record, identity.client_address)
        self.client.add(Session(identity), since_ns=since)
        log.info("bot %s created", bot_id)
        return info, token

    async def delete_bot(self, bot_id: str) -> bool:
        info = self._bots.pop(bot_id, None)
        if info is None:
            return False
        self._by_address.pop(info.client_address, None)
        self.client.remove(info.client_address)
        self._forget_bot(bot_id)
        try:
            await self.store.delete_bot(bot_id)
        finally:
            self._forget_bot(bot_id)
        self.metrics.bots.set(len(self._bots))
        self.notifier.ring(bot_id)
        log.info("bot %s deleted", bot_id)
        return True

    # ---- conversations and messages ----

    async def conversations(self, bot_id: str) -> list[ConversationRecord]:
        """A bot's conversations, oldest first."""
        return await self.store.conversations(bot_id)

    async def conversations_page(
        self, bot_id: str, after: tuple[int, str] | None, limit: int
    ) -> list[ConversationRecord]:
        """At most ``limit`` of a bot's conversations, oldest first, after the one whose
        (created_at_ms, short id) is ``after`` (None: from the first)."""
        return await self.store.conversations_after(bot_id, after, limit)

    async def conversation(self, bot_id: str, short: str) -> ConversationRecord | None:
        key = (bot_id, short)
        cache = self._conversation_cache
        record = cache.get(key)
        if record is not None:
            cache.move_to_end(key)
            return record
        version = self._cache_version
        record = await self.store.conversation(bot_id, short)
        if record is not None and version == self._cache_version and bot_id in self._bots:
            self._cache(key, record)
        return record

    def remember_conversation(self, record: ConversationRecord) -> None:
        """A write of this conversation was committed: its record as written."""
        self._cache_version += 1
        if record.bot_id in self._bots:
            self._cache((record.bot_id, record.short_id), record)

    def forget_conversation(self, bot_id: str, short: str) -> None:
        """A write of this conversation failed, or deleted it: drop it from the map (what the
        store holds is not known here)."""
        self._cache_version += 1
        self._conversation_cache.pop((bot_id, short), None)

    def _forget_bot(self, bot_id: str) -> None:
        self._cache_version += 1
        cache = self._conversation_cache
        for key in [key for key in cache if key[0] == bot_id]:
            del cache[key]

    def _cache(self, key: tuple[str, str], record: ConversationRecord) -> None:
        cache = self._conversation_cache
        cache[key] = record
        cache.move_to_end(key)
        if len(cache) > CONVERSATION_CACHE:
            cache.popitem(last=False)

    async def start_conversation(
        self, bot: BotInfo, peer: str, content: Content | None
    ) -> tuple[ConversationRecord, Sent, Delivery]:
        sent = await self.client.invite(peer, content, sender=bot.client_address)
        delivery = await sent.wait(self.settings.publish_wait)
        record = await self.conversation(bot.bot_id, short_id(sent.conversation_id))
        if record is None:  # deleted meanwhile
            raise ConversationError("the conversation is gone")
        return record, sent, delivery

    async def send(
        self, bot: BotInfo, conversation: ConversationRecord, content: Content
    ) -> tuple[Sent, Delivery]:
        sent = await self.client.send(
            conversation.conversation_id, content, sender=bot.client_address
        )
        return sent, await sent.wait(self.settings.publish_wait)

    async def close_conversation(
        self, bot: BotInfo, conversation: ConversationRecord, reason: str
    ) -> tuple[Sent, Delivery]:
        """Tell the peer the bot leaves: saved (the conversation now closed), then published."""
        sent = await self.client.close_conversation(
            conversation.conversation_id, reason, sender=bot.client_address
        )
        return sent, await sent.wait(self.settings.publish_wait)

    async def delete_conversation(self, bot: BotInfo, conversation: ConversationRecord) -> None:
        """Forget a conversation: deleted from the store and the bot's session."""
        await self.client.forget_conversation(
            conversation.conversation_id, sender=bot.client_address
        )

    async def send_many(
        self, bot: BotInfo, items: Sequence[tuple[ConversationRecord, Content]]
    ) -> list[tuple[Sent, Delivery] | UmbraWakuError]:
        """Seal every item (in order) and save them in one transaction, then publish them;
        each item's (Sent, Delivery) once the node answered (or ``publish_wait`` passed), or
        the error that refused that item alone."""
        results = await self.client.send_many(
            [(record.conversation_id, content) for record, content in items],
            sender=bot.client_address,
        )
        futures = [result.task for result in results if isinstance(result, Sent)]
        if futures:
            await asyncio.wait(futures, timeout=self.settings.publish_wait)
        out: list[tuple[Sent, Delivery] | UmbraWakuError] = []
        for result in results:
            if isinstance(result, Sent):
                task = result.task
                done = task.done() and not task.cancelled()
                out.append((result, task.result() if done else Delivery.PENDING))
            else:
                out.append(result)
        return out

    async def events(self, bot_id: str, after: int, limit: int) -> list[EventRecord]:
        """Events after a cursor: from memory when the stream's recent events cover it."""
        recent = self.notifier.after(bot_id, after, limit)
        if recent is not None:
            return recent
        return await self.store.events(bot_id, after, limit)

    # ---- health ----

    async def health(self) -> tuple[bool, str | None]:
        """(ready, reason when not)."""
        if self.draining:
            return False, "shutting down"
        client = self._client
        if client is None:
            return False, "not started"
        if client.failure is not None:
            return False, f"stopped: {client.failure}"
        if not self.connected:
            return False, f"node {self.node_label} not reachable yet"
        if not await client.transport.ready():
            return False, f"node {self.node_label} not reachable"
        if not client.live:
            return False, "subscription not live"
        return True, None
