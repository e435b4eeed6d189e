"""The bridge's storage seam: a small Protocol and the records it moves.

:class:`~umbra_waku.bridge.sqlite.SqliteStore` implements it; a PostgreSQL backend implements the
same methods. The contract that makes a crash lose nothing acknowledged:

- :meth:`Store.record_received` writes a conversation's new ratchet state, the events it produced
  (with the bot's next sequence numbers) and the Waku message hash in ONE transaction;
- :meth:`Store.record_sealed` writes a conversation's new ratchet state and the outbox row (the
  exact payload and timestamp to publish) in ONE transaction;
- the ``*_many`` variants do the same for a batch (many received messages, many sealed messages)
  in ONE transaction: all of the batch or nothing;
- a published outbox row is deleted (the network deduplicates a republished message by hash, and
  the bridge remembers received hashes); events are kept up to the retention (the newest
  ``event_retention`` per bot, see :meth:`Store.prune_events`);
- every committed transaction is durable (SQLite: WAL with synchronous=FULL);
- a write returns only once it is durable, whether it had a transaction of its own or shared one
  with other writes (SQLite: group commit, one SAVEPOINT per write).

A store may declare ``ordered_writes = True`` (SqliteStore does): every write takes its place in
the write order when called, before its first suspension, and the writes are applied in that
order. The bridge's ledger then lets the client hand received messages over without waiting for
each commit (see :class:`~umbra_waku.client.Ledger`).

Event sequence numbers are per bot, start at 1 and only grow: they are the event stream's cursor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

EventKind = Literal["conversation_started", "message", "conversation_closed"]


def short_id(conversation_id: str) -> str:
    """The API's name of a conversation: the last segment of its protocol id (64 hex)."""
    return conversation_id.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class BotRecord:
    bot_id: str
    name: str
    private_key: bytes = field(repr=False)
    token_hash: bytes = field(repr=False)
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    bot_id: str
    conversation_id: str  # the protocol id, /private/v1/<hex>
    peer: str
    initiator: bool  # whether the bot started it
    created_at_ms: int
    closed: bool
    state: bytes = field(repr=False)  # PrivateV1.to_state(): secret

    @property
    def short_id(self) -> str:
        return short_id(self.conversation_id)


@dataclass(slots=True)  # not frozen: built per message, frozen init costs
class NewEvent:
    """What a bot is told, before it gets its sequence number."""

    kind: EventKind
    conversation_id: str
    peer: str
    message_hash: bytes
    domain: str | None = None
    tag: int | None = None
    data: bytes | None = field(default=None, repr=False)
    sent_at_ms: int | None = None
    created_at_ms: int | None = None
    reason: str | None = None


@dataclass(slots=True)  # not frozen: built per message, frozen init costs
class EventRecord:
    seq: int
    received_at_ms: int
    event: NewEvent


@dataclass(slots=True)  # not frozen: built per message, frozen init costs
class Received:
    """One received message of a batch: the bot it is for, its events, its hash."""

    bot_id: str
    events: Sequence[NewEvent]
    message_hash: bytes


@dataclass(slots=True)  # not frozen: built per message, frozen init costs
class Sealed:
    """One sealed message of a batch, to publish byte for byte."""

    bot_id: str
    conversation_id: str
    content_topic: str
    payload: bytes = field(repr=False)
    timestamp: int  # Unix ns


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    outbox_id: int
    bot_id: str
    conversation_id: str
    content_topic: str
    payload: bytes = field(repr=False)
    timestamp: int  # Unix ns, part of the message hash: republished unchanged


class Store(Protocol):
    """Storage of one bridge. Every method is atomic; writes are durable when they return."""

    async def open(self) -> None: ...

    async def close(self) -> None:
        """Flush and release everything; idempotent."""

    # ---- bots ----

    async def list_bots(self) -> list[BotRecord]: ...

    async def create_bot(self, bot: BotRecord, inbox_topic: str, since_ns: int) -> None:
        """Add a bot; its inbox topic is known complete up to ``since_ns`` (nothing before)."""

    async def delete_bot(self, bot_id: str) -> bool:
        """Remove a bot with its conversations, events and outbox; False if unknown."""

    # ---- conversations ----

    async def conversations(self, bot_id: str | None = None) -> list[ConversationRecord]:
        """A bot's conversations, oldest first (every bot's with None)."""

    def conversation_pages(
        self, bot_id: str, page: int = 1000
    ) -> AsyncIterator[list[ConversationRecord]]:
        """A bot's conversations, ``page`` records at a time (in storage order), so that a
        restore never holds every state blob at once."""

    async def conversations_after(
        self, bot_id: str, after: tuple[int, str] | None, limit: int
    ) -> list[ConversationRecord]:
        """At most ``limit`` of a bot's conversations, oldest first (by ``created_at_ms``, then
        short id), after the one whose (created_at_ms, short id) is ``after`` (None: from the
        first)."""

    async def conversation(self, bot_id: str, short: str) -> ConversationRecord | None: ...

    async def delete_conversation(self, bot_id: str, conversation_id: str) -> bool:
        """Delete a conversation (its outbox rows stay); False if unknown."""

    # ---- receiving ----

    async def record_received(
        self,
        conversation: ConversationRecord,
        events: Sequence[NewEvent],
        message_hash: bytes,
        received_at_ms: int,
    ) -> list[int]:
        """ONE transaction: upsert the conversation, append the events, remember the hash.
        Returns the events' sequence numbers ([] if the bot no longer exists)."""

    async def record_received_many(
        self,
        conversations: Sequence[ConversationRecord],
        batch: Sequence[Received],
        received_at_ms: int,
    ) -> list[list[int]]:
        """ONE transaction: upsert the conversations (their latest states), append each
        message's events and remember its hash, in order. Returns each message's sequence
        numbers ([] for a bot that no longer exists; its conversations are skipped)."""

    async def prune_events(self, keep: int) -> int:
        """Delete every bot's events but its newest ``keep``; returns how many were deleted."""

    async def events(
        self, bot_id: str, after: int, limit: int, conversation_id: str | None = None
    ) -> list[EventRecord]:
        """A bot's events with seq > ``after``, in order, at most ``limit``."""

    async def last_seq(self, bot_id: str) -> int: ...

    async def recent_hashes(self, limit: int) -> list[bytes]:
        """The most recently remembered message hashes, oldest first."""

    # ---- sending ----

    async def record_sealed(
        self, conversation: ConversationRecord, content_topic: str, payload: bytes, timestamp: int
    ) -> int:
        """ONE transaction: upsert the conversation, add the outbox row; returns its id."""

    async def record_sealed_many(
        self, conversations: Sequence[ConversationRecord], messages: Sequence[Sealed]
    ) -> list[int]:
        """ONE transaction: upsert the conversations (their latest state), add the outbox rows in
        order; returns their ids."""

    async def mark_published(self, outbox_id: int, message_hash: bytes) -> None:
        """The node accepted the row: it is deleted."""

    async def mark_published_many(self, outbox_ids: Sequence[int]) -> None:
        """The node accepted these rows: they are deleted (one transaction)."""

    async def mark_failed(self, outbox_id: int, reason: str) -> None: ...

    async def pending_outbox(self) -> list[OutboxRecord]:
        """Sealed envelopes not yet published, oldest first."""

    # ---- backfill ----

    async def checkpoints(self) -> Mapping[str, int]:
        """content topic -> Unix ns up to which every message is known handled."""

    async def save_checkpoints(self, topics: Sequence[str], complete_until_ns: int) -> None:
        """Advance (never move back) the checkpoints of ``topics``."""
