"""SqliteStore group commit: concurrent writes share one transaction, each stays all-or-nothing,
and nobody hears "done" before the COMMIT that holds its write. Plus the Bridge's in-memory
conversation map that spares a POST its database read."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from umbra_waku.bridge.sqlite import SqliteStore
from umbra_waku.bridge.store import BotRecord, ConversationRecord, NewEvent
from umbra_waku.errors import StateError

from .conftest import StartBridge

CONVERSATION = "/private/v1/" + "ab" * 32


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "bridge.sqlite3")
    await store.open()
    await store.create_bot(BotRecord("bot", "", b"k" * 32, b"h" * 32, 1), "/inbox", 0)
    yield store
    await store.close()


def _conversation(bot_id: str = "bot", state: bytes = b"state") -> ConversationRecord:
    return ConversationRecord(bot_id, CONVERSATION, "peer", True, 1, False, state)


def _event(message_hash: Any = b"h" * 32) -> NewEvent:
    return NewEvent("message", CONVERSATION, "peer", message_hash, data=b"x")


class Held:
    """Keeps the database thread busy, so that the writes asked meanwhile form one group."""

    def __init__(self, store: SqliteStore) -> None:
        executor = store._executor
        assert executor is not None
        self.release = threading.Event()
        self.started = threading.Event()

        def hold() -> None:
            self.started.set()
            self.release.wait(10)

        self.done = asyncio.wrap_future(executor.submit(hold))

    async def __aenter__(self) -> Held:
        await asyncio.to_thread(self.started.wait, 10)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release.set()
        await self.done


async def _settle(tasks: list[asyncio.Task[Any]]) -> None:
    for _ in range(5):  # let every task reach its write
        await asyncio.sleep(0)
    assert not any(task.done() for task in tasks)  # nothing acknowledged before the COMMIT


async def test_concurrent_writes_share_one_commit(store: SqliteStore) -> None:
    commits = store.commits
    async with Held(store):
        sealed = [
            asyncio.create_task(store.record_sealed(_conversation(), "/t", b"p%d" % i, i))
            for i in range(20)
        ]
        received = asyncio.create_task(
            store.record_received(_conversation(), [_event()], b"m" * 32, 5)
        )
        await _settle([*sealed, received])
    ids = await asyncio.gather(*sealed)
    assert sorted(ids) == ids  # in the order asked
    assert len(set(ids)) == 20
    assert await received == [1]
    assert store.commits == commits + 1
    assert [row.payload for row in await store.pending_outbox()] == [b"p%d" % i for i in range(20)]


async def test_a_failing_write_fails_alone_and_leaves_nothing(store: SqliteStore) -> None:
    async with Held(store):
        before = asyncio.create_task(store.record_sealed(_conversation(), "/t", b"before", 1))
        # bumps last_seq and upserts the conversation, then fails on the event (NOT NULL hash)
        failing = asyncio.create_task(
            store.record_received(_conversation(state=b"bad"), [_event(None)], b"m" * 32, 5)
        )
        after = asyncio.create_task(store.record_sealed(_conversation(), "/t", b"after", 2))
        await _settle([before, failing, after])
    with pytest.raises(StateError, match="NOT NULL"):
        await failing
    await before
    await after
    assert await store.last_seq("bot") == 0  # the failing write left nothing behind
    assert await store.events("bot", 0, 10) == []
    [conversation] = await store.conversations("bot")
    assert conversation.state == b"state"
    assert [row.payload for row in await store.pending_outbox()] == [b"before", b"after"]
    assert await store.recent_hashes(10) == []


async def test_a_failed_commit_fails_every_caller_of_the_group(store: SqliteStore) -> None:
    def violate_at_commit(db: sqlite3.Connection) -> None:
        # a deferred foreign key is checked by COMMIT, not by the write
        db.execute("PRAGMA defer_foreign_keys = ON")
        db.execute(
            "INSERT INTO outbox (bot_id, conversation_id, content_topic, payload, timestamp, "
            "created_at_ms) VALUES ('nobody', 'c', 't', x'', 0, 0)"
        )

    commits = store.commits
    async with Held(store):
        first = asyncio.create_task(store.record_sealed(_conversation(), "/t", b"one", 1))
        bad = asyncio.create_task(store._write(violate_at_commit))
        last = asyncio.create_task(store.mark_failed(1, "x"))
        await _settle([first, bad, last])
    for task in (first, bad, last):
        with pytest.raises(StateError, match="FOREIGN KEY"):
            await task
    assert store.commits == commits
    assert await store.pending_outbox() == []
    assert await store.conversations() == []
    # and the store goes on working
    assert await store.record_sealed(_conversation(), "/t", b"two", 2) > 0
    assert len(await store.pending_outbox()) == 1


async def test_a_read_sees_the_writes_asked_before_it(store: SqliteStore) -> None:
    async with Held(store):
        write = asyncio.create_task(store.record_sealed(_conversation(), "/t", b"p", 1))
        await asyncio.sleep(0)
        read = asyncio.create_task(store.pending_outbox())
        await _settle([write, read])
    assert [row.payload for row in await read] == [b"p"]
    await write


async def test_writes_after_close_fail(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "bridge.sqlite3")
    await store.open()
    await store.close()
    with pytest.raises(StateError):
        await store.mark_published(1, b"h")


async def test_a_post_reads_its_conversation_from_memory(
    start_bridge: StartBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start_bridge()
    alice, bob = await h.create_bot(), await h.create_bot()
    conversation = await h.start_conversation(alice, bob, "hi")
    await h.wait_events(bob, 2)

    reads: list[tuple[str, str]] = []
    lookup = h.bridge.store.conversation

    async def counted(bot_id: str, short: str) -> ConversationRecord | None:
        reads.append((bot_id, short))
        return await lookup(bot_id, short)

    monkeypatch.setattr(h.bridge.store, "conversation", counted)
    for text in ("one", "two", "three"):
        await h.send(alice, conversation, text)
        await h.send(bob, conversation, text)
    assert reads == []  # both sides were cached by their own writes
    await h.wait_events(alice, 3)

    # what the cache holds is what the store holds
    for bot in (alice, bob):
        cached = await h.bridge.conversation(bot.bot_id, conversation)
        assert cached == await lookup(bot.bot_id, conversation)

    # a deleted bot's conversations are forgotten
    response = await h.http.delete(f"/v1/bots/{bob.bot_id}", headers=h.admin)
    assert response.status == 204
    assert await h.bridge.conversation(bob.bot_id, conversation) is None
