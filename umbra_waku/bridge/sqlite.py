"""The SQLite implementation of :class:`~umbra_waku.bridge.store.Store` (stdlib sqlite3).

One connection, used only by one dedicated thread: every call is queued to that thread, so the
event loop never blocks and writes happen one at a time, in the order they were asked for.
WAL journal with ``synchronous=FULL``: a transaction that returned survives a crash or power loss.

Group commit: writes asked for while a transaction is in flight share the next transaction and
its one fsync. Each write runs inside its own SAVEPOINT (all-or-nothing: a failing write is rolled
back alone and fails only its caller), and every caller learns its result only after the COMMIT
that contains its write succeeded; when that COMMIT (or BEGIN) fails, every caller of the group
gets the error. So nothing is acknowledged before it is durable, as with one transaction per write.
The database file is created with mode 0600 (its -wal and -shm files inherit it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from umbra_waku.bridge.files import create_private_file
from umbra_waku.bridge.store import (
    BotRecord,
    ConversationRecord,
    EventKind,
    EventRecord,
    NewEvent,
    OutboxRecord,
    Received,
    Sealed,
    short_id,
)
from umbra_waku.errors import StateError

log = logging.getLogger("umbra_waku.bridge.store")

T = TypeVar("T")

SCHEMA_VERSION = 1
#: Message hashes kept for deduplication across restarts.
KEEP_HASHES = 100_000
#: Published outbox rows waiting for the next transaction before one is forced for them.
PUBLISHED_BACKLOG = 1_024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bots (
    bot_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    private_key BLOB NOT NULL,
    token_hash BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS conversations (
    bot_id TEXT NOT NULL REFERENCES bots (bot_id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL,
    short_id TEXT NOT NULL,
    peer TEXT NOT NULL,
    initiator INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0,
    state BLOB NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (bot_id, conversation_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS conversations_short ON conversations (bot_id, short_id);
-- a bot's conversations oldest first, a page at a time (added in place: IF NOT EXISTS)
CREATE INDEX IF NOT EXISTS conversations_by_age ON conversations (bot_id, created_at_ms, short_id);
CREATE TABLE IF NOT EXISTS events (
    bot_id TEXT NOT NULL REFERENCES bots (bot_id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    peer TEXT NOT NULL,
    message_hash BLOB NOT NULL,
    domain TEXT,
    tag INTEGER,
    data BLOB,
    sent_at_ms INTEGER,
    created_at_ms INTEGER,
    reason TEXT,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (bot_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen_hashes (
    hash BLOB NOT NULL UNIQUE,
    seen_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    outbox_id INTEGER PRIMARY KEY AUTOINCREMENT,
    bot_id TEXT NOT NULL REFERENCES bots (bot_id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL,
    content_topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    timestamp INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    message_hash BLOB,
    error TEXT,
    created_at_ms INTEGER NOT NULL,
    done_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, outbox_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    content_topic TEXT PRIMARY KEY,
    complete_until_ns INTEGER NOT NULL
);
"""

_CONVERSATION_UPSERT = """
INSERT INTO conversations (bot_id, conversation_id, short_id, peer, initiator, created_at_ms,
                           closed, state, updated_at_ms)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (bot_id, conversation_id) DO UPDATE
SET closed = excluded.closed, state = excluded.state, updated_at_ms = excluded.updated_at_ms
"""

_SELECT_CONVERSATIONS = """
SELECT bot_id, conversation_id, peer, initiator, created_at_ms, closed, state FROM conversations
"""
_ALL_CONVERSATIONS = _SELECT_CONVERSATIONS + " ORDER BY created_at_ms, short_id"
_BOT_CONVERSATIONS = _SELECT_CONVERSATIONS + " WHERE bot_id = ? ORDER BY created_at_ms, short_id"
_BOT_CONVERSATIONS_AFTER = (
    _SELECT_CONVERSATIONS + " WHERE bot_id = ? AND (created_at_ms, short_id) > (?, ?)"
    " ORDER BY created_at_ms, short_id LIMIT ?"
)
_BOT_CONVERSATIONS_FIRST = (
    _SELECT_CONVERSATIONS + " WHERE bot_id = ? ORDER BY created_at_ms, short_id LIMIT ?"
)
_ONE_CONVERSATION = _SELECT_CONVERSATIONS + " WHERE bot_id = ? AND short_id = ?"
_CONVERSATION_PAGE = (
    "SELECT rowid, bot_id, conversation_id, peer, initiator, created_at_ms, closed, state "
    "FROM conversations WHERE bot_id = ? AND rowid > ? ORDER BY rowid LIMIT ?"
)
_INSERT_OUTBOX = """
INSERT INTO outbox (bot_id, conversation_id, content_topic, payload, timestamp, created_at_ms)
VALUES (?, ?, ?, ?, ?, ?)
"""

_INSERT_EVENT = """
INSERT INTO events (bot_id, seq, received_at_ms, kind, conversation_id, peer, message_hash,
                    domain, tag, data, sent_at_ms, created_at_ms, reason)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_SELECT_EVENTS = """
SELECT seq, received_at_ms, kind, conversation_id, peer, message_hash, domain, tag, data,
       sent_at_ms, created_at_ms, reason
FROM events WHERE bot_id = ? AND seq > ?
"""
_BOT_EVENTS = _SELECT_EVENTS + " ORDER BY seq LIMIT ?"
_CONVERSATION_EVENTS = _SELECT_EVENTS + " AND conversation_id = ? ORDER BY seq LIMIT ?"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _nothing(db: sqlite3.Connection) -> None:
    """A write that only makes a group transaction happen."""


@dataclass(slots=True)
class _Write:
    """One write waiting for the next group transaction."""

    fn: Callable[..., Any]  # fn(db, *args), on the database thread, inside the transaction
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """On the event loop: hand each caller its result or error."""
    for future, ok, value in outcomes:
        if future.done():  # the caller was cancelled: the write happened all the same
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _conversation(row: sqlite3.Row) -> ConversationRecord:
    return ConversationRecord(
        row["bot_id"],
        row["conversation_id"],
        row["peer"],
        bool(row["initiator"]),
        row["created_at_ms"],
        bool(row["closed"]),
        row["state"],
    )


def _event(row: sqlite3.Row) -> EventRecord:
    kind: EventKind = row["kind"]
    return EventRecord(
        row["seq"],
        row["received_at_ms"],
        NewEvent(
            kind,
            row["conversation_id"],
            row["peer"],
            row["message_hash"],
            row["domain"],
            row["tag"],
            row["data"],
            row["sent_at_ms"],
            row["created_at_ms"],
            row["reason"],
        ),
    )


class SqliteStore:
    """A :class:`~umbra_waku.bridge.store.Store` in one SQLite file."""

    #: Every write takes its place in the write order when called (before it first suspends)
    #: and the writes are applied in that order.
    ordered_writes = True

    def __init__(self, path: str | os.PathLike[str], *, keep_hashes: int = KEEP_HASHES) -> None:
        self.path = Path(path)
        self._keep_hashes = keep_hashes
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        # Writes waiting for the next group transaction, and whether a flush is queued on the
        # database thread that has not taken them yet (shared by the loop and that thread).
        self._lock = threading.Lock()
        self._pending: list[_Write] = []
        self._flush_queued = False
        # Outbox rows published but not deleted yet: deleted by the next group transaction
        # (that needs no transaction of its own: a row still there is only republished, and
        # the network drops the copy by message hash).
        self._published: list[int] = []
        #: Group transactions committed, and writes they carried (for tests and metrics).
        self.commits = 0
        self.writes = 0

    # ---- plumbing ----

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        executor = self._executor
        if executor is None:
            raise StateError("the bridge database is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, functools.partial(fn, *args))
        except sqlite3.Error as exc:
            raise StateError(f"bridge database: {type(exc).__name__}: {exc}") from exc

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(db, *args)`` in the next group transaction; return once it is committed."""
        executor = self._executor
        if executor is None:
            raise StateError("the bridge database is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._pending.append(_Write(fn, args, future, loop))
            submit = not self._flush_queued
            self._flush_queued = True
        if submit:
            # Queued behind whatever the thread has already been asked, ahead of what comes
            # next: a read asked after this write sees it.
            executor.submit(self._flush)
        try:
            return await future
        except sqlite3.Error as exc:
            raise StateError(f"bridge database: {type(exc).__name__}: {exc}") from exc

    def _flush(self) -> None:
        """On the database thread: every waiting write in one transaction, one COMMIT."""
        with self._lock:
            batch, self._pending = self._pending, []
            published, self._published = self._published, []
            self._flush_queued = False
        if not batch:
            with self._lock:
                self._published[:0] = published
            return
        outcomes: list[tuple[bool, Any]] = []
        try:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                if published:
                    self._delete_published(db, published)
                if len(batch) == 1:  # alone: the transaction is its savepoint
                    outcomes.append((True, batch[0].fn(db, *batch[0].args)))
                else:
                    for write in batch:
                        db.execute("SAVEPOINT umbra_write")
                        try:
                            value = write.fn(db, *write.args)
                        except Exception as exc:  # noqa: BLE001 -- that caller's error
                            # Undo this write only; if SQLite already rolled the whole
                            # transaction back, this raises and the group fails below.
                            db.execute("ROLLBACK TO umbra_write")
                            db.execute("RELEASE umbra_write")
                            outcomes.append((False, exc))
                        else:
                            db.execute("RELEASE umbra_write")
                            outcomes.append((True, value))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
        except BaseException as exc:  # nothing of the group is durable: every caller fails
            with self._lock:
                self._published[:0] = published
            self._resolve([(write, False, exc) for write in batch])
            if not isinstance(exc, Exception):
                raise
            return
        self.commits += 1
        self.writes += len(batch)
        self._resolve([(w, ok, v) for w, (ok, v) in zip(batch, outcomes, strict=True)])

    @staticmethod
    def _resolve(results: list[tuple[_Write, bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for write, ok, value in results:
            by_loop.setdefault(write.loop, []).append((write.future, ok, value))
        for loop, outcomes in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, outcomes)

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateError("the bridge database is not open")
        return self._db

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="umbra-bridge-db")
        try:
            await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _open(self) -> None:
        create_private_file(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        db.row_factory = sqlite3.Row
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(f"{self.path}: cannot use WAL journal mode (got {mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) != SCHEMA_VERSION:
                raise StateError(
                    f"{self.path}: schema version {row[0]}, this bridge reads {SCHEMA_VERSION}"
                )
        except BaseException:
            db.close()
            raise
        self._db = db

    async def close(self) -> None:
        executor = self._executor
        if executor is None:
            return
        try:
            await self._run(self._close)
        finally:
            self._executor = None
            executor.shutdown(wait=True)

    def _close(self) -> None:
        db, self._db = self._db, None
        with self._lock:
            published, self._published = self._published, []
        if db is not None:
            if published:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("BEGIN IMMEDIATE")
                    self._delete_published(db, published)
                    db.execute("COMMIT")
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()

    # ---- bots ----

    async def list_bots(self) -> list[BotRecord]:
        return await self._run(self._list_bots)

    def _list_bots(self) -> list[BotRecord]:
        rows = self._conn.execute(
            "SELECT bot_id, name, private_key, token_hash, created_at_ms FROM bots "
            "ORDER BY created_at_ms, bot_id"
        )
        return [BotRecord(*row) for row in rows]

    async def create_bot(self, bot: BotRecord, inbox_topic: str, since_ns: int) -> None:
        await self._write(self._create_bot, bot, inbox_topic, since_ns)

    def _create_bot(
        self, db: sqlite3.Connection, bot: BotRecord, inbox_topic: str, since_ns: int
    ) -> None:
        db.execute(
            "INSERT INTO bots (bot_id, name, private_key, token_hash, created_at_ms) "
            "VALUES (?, ?, ?, ?, ?)",
            (bot.bot_id, bot.name, bot.private_key, bot.token_hash, bot.created_at_ms),
        )
        self._advance(db, [inbox_topic], since_ns)

    async def delete_bot(self, bot_id: str) -> bool:
        return await self._write(self._delete_bot, bot_id)

    @staticmethod
    def _delete_bot(db: sqlite3.Connection, bot_id: str) -> bool:
        return db.execute("DELETE FROM bots WHERE bot_id = ?", (bot_id,)).rowcount > 0

    async def delete_conversation(self, bot_id: str, conversation_id: str) -> bool:
        return await self._write(self._delete_conversation, bot_id, conversation_id)

    @staticmethod
    def _delete_conversation(db: sqlite3.Connection, bot_id: str, conversation_id: str) -> bool:
        deleted = db.execute(
            "DELETE FROM conversations WHERE bot_id = ? AND conversation_id = ?",
            (bot_id, conversation_id),
        )
        return deleted.rowcount > 0

    # ---- conversations ----

    async def conversations(self, bot_id: str | None = None) -> list[ConversationRecord]:
        return await self._run(self._conversations, bot_id)

    def _conversations(self, bot_id: str | None) -> list[ConversationRecord]:
        if bot_id is None:
            rows = self._conn.execute(_ALL_CONVERSATIONS)
        else:
            rows = self._conn.execute(_BOT_CONVERSATIONS, (bot_id,))
        return [_conversation(row) for row in rows]

    async def conversations_after(
        self, bot_id: str, after: tuple[int, str] | None, limit: int
    ) -> list[ConversationRecord]:
        return await self._run(self._conversations_after, bot_id, after, limit)

    def _conversations_after(
        self, bot_id: str, after: tuple[int, str] | None, limit: int
    ) -> list[ConversationRecord]:
        if after is None:
            rows = self._conn.execute(_BOT_CONVERSATIONS_FIRST, (bot_id, limit))
        else:
            rows = self._conn.execute(_BOT_CONVERSATIONS_AFTER, (bot_id, *after, limit))
        return [_conversation(row) for row in rows]

    async def conversation_pages(
        self, bot_id: str, page: int = 1000
    ) -> AsyncIterator[list[ConversationRecord]]:
        after = 0
        while True:
            after, records = await self._run(self._conversation_page, bot_id, after, page)
            if not records:
                return
            yield records

    def _conversation_page(
        self, bot_id: str, after: int, page: int
    ) -> tuple[int, list[ConversationRecord]]:
        rows = self._conn.execute(_CONVERSATION_PAGE, (bot_id, after, page)).fetchall()
        if not rows:
            return after, []
        return int(rows[-1]["rowid"]), [_conversation(row) for row in rows]

    async def conversation(self, bot_id: str, short: str) -> ConversationRecord | None:
        return await self._run(self._conversation, bot_id, short)

    def _conversation(self, bot_id: str, short: str) -> ConversationRecord | None:
        row = self._conn.execute(_ONE_CONVERSATION, (bot_id, short)).fetchone()
        return None if row is None else _conversation(row)

    @staticmethod
    def _upsert(db: sqlite3.Connection, conversation: ConversationRecord) -> None:
        db.execute(
            _CONVERSATION_UPSERT,
            (
                conversation.bot_id,
                conversation.conversation_id,
                short_id(conversation.conversation_id),
                conversation.peer,
                int(conversation.initiator),
                conversation.created_at_ms,
                int(conversation.closed),
                conversation.state,
                _now_ms(),
            ),
        )

    # ---- receiving ----

    async def record_received(
        self,
        conversation: ConversationRecord,
        events: Sequence[NewEvent],
        message_hash: bytes,
        received_at_ms: int,
    ) -> list[int]:
        return await self._write(
            self._record_received, conversation, events, message_hash, received_at_ms
        )

    async def record_received_many(
        self,
        conversations: Sequence[ConversationRecord],
        batch: Sequence[Received],
        received_at_ms: int,
    ) -> list[list[int]]:
        return await self._write(self._record_received_many, conversations, batch, received_at_ms)

    def _record_received_many(
        self,
        db: sqlite3.Connection,
        conversations: Sequence[ConversationRecord],
        batch: Sequence[Received],
        received_at_ms: int,
    ) -> list[list[int]]:
        # one sequence-number update per bot, one insert of every event, one of every hash
        wanted: dict[str, int] = {}
        for item in batch:
            wanted[item.bot_id] = wanted.get(item.bot_id, 0) + len(item.events)
        next_seq: dict[str, int] = {}
        for bot_id, count in wanted.items():
            row = db.execute(
                "UPDATE bots SET last_seq = last_seq + ? WHERE bot_id = ? RETURNING last_seq",
                (count, bot_id),
            ).fetchone()
            if row is not None:  # else the bot was deleted meanwhile: nothing of it is kept
                next_seq[bot_id] = row[0] - count + 1
        out: list[list[int]] = []
        rows = []
        hashes = []
        for item in batch:
            first = next_seq.get(item.bot_id)
            if first is None:
                out.append([])
                continue
            seqs = list(range(first, first + len(item.events)))
            next_seq[item.bot_id] = first + len(item.events)
            out.append(seqs)
            hashes.append((item.message_hash, received_at_ms))
            for seq, event in zip(seqs, item.events, strict=True):
                rows.append(
                    (
                        item.bot_id,
                        seq,
                        received_at_ms,
                        event.kind,
                        event.conversation_id,
                        event.peer,
                        event.message_hash,
                        event.domain,
                        event.tag,
                        event.data,
                        event.sent_at_ms,
                        event.created_at_ms,
                        event.reason,
                    )
                )
        db.executemany(_INSERT_EVENT, rows)
        db.executemany("INSERT OR IGNORE INTO seen_hashes (hash, seen_at_ms) VALUES (?, ?)", hashes)
        exists: dict[str, bool] = {}
        for conversation in conversations:
            bot_id = conversation.bot_id
            if bot_id not in exists:
                exists[bot_id] = bot_id in next_seq or self._bot_exists(db, bot_id)
            if exists[bot_id]:
                self._upsert(db, conversation)
        return out

    @staticmethod
    def _bot_exists(db: sqlite3.Connection, bot_id: str) -> bool:
        return db.execute("SELECT 1 FROM bots WHERE bot_id = ?", (bot_id,)).fetchone() is not None

    def _record_received(
        self,
        db: sqlite3.Connection,
        conversation: ConversationRecord,
        events: Sequence[NewEvent],
        message_hash: bytes,
        received_at_ms: int,
    ) -> list[int]:
        # a batch of one: the same statements, the same answer for a deleted bot
        batch = [Received(conversation.bot_id, events, message_hash)]
        return self._record_received_many(db, [conversation], batch, received_at_ms)[0]

    async def prune_events(self, keep: int) -> int:
        return await self._write(self._prune_events, keep)

    @staticmethod
    def _prune_events(db: sqlite3.Connection, keep: int) -> int:
        deleted = 0
        for bot_id, last_seq in db.execute("SELECT bot_id, last_seq FROM bots").fetchall():
            if last_seq > keep:
                cursor = db.execute(
                    "DELETE FROM events WHERE bot_id = ? AND seq <= ?", (bot_id, last_seq - keep)
                )
                deleted += max(0, cursor.rowcount)
        return deleted

    async def events(
        self, bot_id: str, after: int, limit: int, conversation_id: str | None = None
    ) -> list[EventRecord]:
        return await self._run(self._events, bot_id, after, limit, conversation_id)

    def _events(
        self, bot_id: str, after: int, limit: int, conversation_id: str | None
    ) -> list[EventRecord]:
        if conversation_id is None:
            rows = self._conn.execute(_BOT_EVENTS, (bot_id, after, limit))
        else:
            rows = self._conn.execute(_CONVERSATION_EVENTS, (bot_id, after, conversation_id, limit))
        return [_event(row) for row in rows]

    async def last_seq(self, bot_id: str) -> int:
        return await self._run(self._last_seq, bot_id)

    def _last_seq(self, bot_id: str) -> int:
        row = self._conn.execute("SELECT last_seq FROM bots WHERE bot_id = ?", (bot_id,))
        found = row.fetchone()
        return 0 if found is None else int(found[0])

    async def recent_hashes(self, limit: int) -> list[bytes]:
        return await self._run(self._recent_hashes, limit)

    def _recent_hashes(self, limit: int) -> list[bytes]:
        rows = self._conn.execute(
            "SELECT hash FROM (SELECT rowid, hash FROM seen_hashes ORDER BY rowid DESC LIMIT ?) "
            "ORDER BY rowid",
            (limit,),
        )
        return [bytes(row[0]) for row in rows]

    # ---- sending ----

    async def record_sealed(
        self, conversation: ConversationRecord, content_topic: str, payload: bytes, timestamp: int
    ) -> int:
        return await self._write(
            self._record_sealed, conversation, content_topic, payload, timestamp
        )

    def _record_sealed(
        self,
        db: sqlite3.Connection,
        conversation: ConversationRecord,
        content_topic: str,
        payload: bytes,
        timestamp: int,
    ) -> int:
        # a batch of one: the same statements
        sealed = Sealed(
            conversation.bot_id, conversation.conversation_id, content_topic, payload, timestamp
        )
        return self._record_sealed_many(db, [conversation], [sealed])[0]

    async def record_sealed_many(
        self, conversations: Sequence[ConversationRecord], messages: Sequence[Sealed]
    ) -> list[int]:
        return await self._write(self._record_sealed_many, conversations, messages)

    def _record_sealed_many(
        self,
        db: sqlite3.Connection,
        conversations: Sequence[ConversationRecord],
        messages: Sequence[Sealed],
    ) -> list[int]:
        for conversation in conversations:
            self._upsert(db, conversation)
        if not messages:
            return []
        now = _now_ms()
        db.executemany(
            _INSERT_OUTBOX,
            [
                (m.bot_id, m.conversation_id, m.content_topic, m.payload, m.timestamp, now)
                for m in messages
            ],
        )
        # AUTOINCREMENT and one writer: the rows just inserted have the last ids, in order
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        last = int(row[0])
        return list(range(last - len(messages) + 1, last + 1))

    async def mark_published(self, outbox_id: int, message_hash: bytes) -> None:
        await self.mark_published_many([outbox_id])

    async def mark_published_many(self, outbox_ids: Sequence[int]) -> None:
        """Published rows are deleted by the next group transaction, whoever asks for it (no
        fsync of their own); :meth:`pending_outbox` no longer lists them meanwhile. A crash
        before that commit republishes the same bytes, which the network and the receivers
        drop by message hash."""
        if self._executor is None:
            raise StateError("the bridge database is not open")
        with self._lock:
            self._published.extend(outbox_ids)
            many = len(self._published) >= PUBLISHED_BACKLOG
        if many:  # nobody else is writing: a transaction of their own
            await self._write(_nothing)

    @staticmethod
    def _delete_published(db: sqlite3.Connection, outbox_ids: Sequence[int]) -> None:
        db.executemany(
            "DELETE FROM outbox WHERE outbox_id = ? AND status = 'pending'",
            [(outbox_id,) for outbox_id in outbox_ids],
        )

    async def mark_failed(self, outbox_id: int, reason: str) -> None:
        await self._write(self._mark_failed, outbox_id, reason[:500])

    def _mark_failed(self, db: sqlite3.Connection, outbox_id: int, reason: str) -> None:
        db.execute(
            "UPDATE outbox SET status = 'failed', error = ?, done_at_ms = ? "
            "WHERE outbox_id = ? AND status = 'pending'",
            (reason, _now_ms(), outbox_id),
        )

    async def pending_outbox(self) -> list[OutboxRecord]:
        return await self._run(self._pending_outbox)

    def _pending_outbox(self) -> list[OutboxRecord]:
        rows = self._conn.execute(
            "SELECT outbox_id, bot_id, conversation_id, content_topic, payload, timestamp "
            "FROM outbox WHERE status = 'pending' ORDER BY outbox_id"
        )
        with self._lock:
            published = set(self._published)
        return [OutboxRecord(*row) for row in rows if row[0] not in published]

    # ---- backfill ----

    async def checkpoints(self) -> Mapping[str, int]:
        return await self._run(self._checkpoints)

    def _checkpoints(self) -> dict[str, int]:
        rows = self._conn.execute("SELECT content_topic, complete_until_ns FROM checkpoints")
        return {row[0]: int(row[1]) for row in rows}

    async def save_checkpoints(self, topics: Sequence[str], complete_until_ns: int) -> None:
        await self._write(self._save_checkpoints, topics, complete_until_ns)

    def _save_checkpoints(
        self, db: sqlite3.Connection, topics: Sequence[str], complete_until_ns: int
    ) -> None:
        self._advance(db, topics, complete_until_ns)
        db.execute(
            "DELETE FROM seen_hashes WHERE rowid <= (SELECT MAX(rowid) FROM seen_hashes) - ?",
            (self._keep_hashes,),
        )

    @staticmethod
    def _advance(db: sqlite3.Connection, topics: Sequence[str], complete_until_ns: int) -> None:
        db.executemany(
            "INSERT INTO checkpoints (content_topic, complete_until_ns) VALUES (?, ?) "
            "ON CONFLICT (content_topic) DO UPDATE "
            "SET complete_until_ns = MAX(complete_until_ns, excluded.complete_until_ns)",
            [(topic, complete_until_ns) for topic in topics],
        )
