"""Batches: the store's *_many writes, POST /v1/messages, batched receive, event frames with
several events, published outbox rows deleted, event retention, streamed restore."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from umbra_waku.bridge.api import MAX_BATCH_FRAME_CHARS
from umbra_waku.bridge.sqlite import SqliteStore
from umbra_waku.bridge.store import BotRecord, ConversationRecord, NewEvent, Received, Sealed
from umbra_waku.client import (
    ConversationState,
    InboundEvent,
    MemoryLedger,
    MessageReceived,
    UmbraClient,
)
from umbra_waku.errors import StateError
from umbra_waku.identity import Identity
from umbra_waku.transport import connect
from umbra_waku.waku.message import MessageHash

from .conftest import FAST_CLIENT, BotHandle, Harness, StartBridge, eventually

CONVERSATION = "/private/v1/" + "cd" * 32


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "bridge.sqlite3")
    await store.open()
    for bot_id in ("a", "b"):
        await store.create_bot(BotRecord(bot_id, "", b"k" * 32, b"h" * 32, 1), "/in/" + bot_id, 0)
    yield store
    await store.close()


def _conversation(bot_id: str, state: bytes, cid: str = CONVERSATION) -> ConversationRecord:
    return ConversationRecord(bot_id, cid, "peer", True, 1, False, state)


def _event(text: bytes, kind: Any = "message") -> NewEvent:
    return NewEvent(kind, CONVERSATION, "peer", b"m" * 32, "umbra.text", 0, text)


# ---- the store ----


async def test_received_many_is_one_transaction_with_seqs_in_order(store: SqliteStore) -> None:
    commits = store.commits
    batch = [
        Received("a", [_event(b"1")], b"1" * 32),
        Received("b", [_event(b"x"), _event(b"y")], b"2" * 32),
        Received("a", [_event(b"2")], b"3" * 32),
        Received("gone", [_event(b"z")], b"4" * 32),  # a bot deleted meanwhile
    ]
    conversations = [_conversation("a", b"a-last"), _conversation("b", b"b-last")]
    seqs = await store.record_received_many(conversations, batch, 5)
    assert seqs == [[1], [1, 2], [2], []]
    assert store.commits == commits + 1
    assert [e.event.data for e in await store.events("a", 0, 10)] == [b"1", b"2"]
    assert [e.event.data for e in await store.events("b", 0, 10)] == [b"x", b"y"]
    assert [c.state for c in await store.conversations("a")] == [b"a-last"]
    assert await store.recent_hashes(10) == [b"1" * 32, b"2" * 32, b"3" * 32]


async def test_a_failing_received_batch_keeps_nothing(store: SqliteStore) -> None:
    batch = [
        Received("a", [_event(b"1")], b"1" * 32),
        Received("a", [_event(b"2", kind=None)], b"2" * 32),  # NOT NULL kind: fails
    ]
    with pytest.raises(StateError):
        await store.record_received_many([_conversation("a", b"s")], batch, 5)
    assert await store.events("a", 0, 10) == []
    assert await store.last_seq("a") == 0
    assert await store.conversations("a") == []
    assert await store.recent_hashes(10) == []


async def test_sealed_many_keeps_order_and_published_rows_are_deleted(store: SqliteStore) -> None:
    first = await store.record_sealed(_conversation("a", b"s0"), "/t", b"p0", 10)
    sealed = [Sealed("a", CONVERSATION, "/t", b"p%d" % i, 10 + i) for i in range(1, 6)]
    ids = await store.record_sealed_many([_conversation("a", b"s5")], sealed)
    assert ids == list(range(first + 1, first + 6))
    pending = await store.pending_outbox()
    assert [row.payload for row in pending] == [b"p%d" % i for i in range(6)]
    assert [row.outbox_id for row in pending] == [first, *ids]
    assert [c.state for c in await store.conversations("a")] == [b"s5"]

    commits = store.commits
    await store.mark_published_many(ids[:3])
    await store.mark_published(first, b"h" * 32)
    assert store.commits == commits  # no transaction of their own
    assert [row.payload for row in await store.pending_outbox()] == [b"p4", b"p5"]
    await store.mark_failed(ids[3], "refused")
    assert [row.payload for row in await store.pending_outbox()] == [b"p5"]

    def rows() -> int:
        assert store._db is not None
        return int(store._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    # the next transaction (here mark_failed's) deleted the published rows
    assert await store._run(rows) == 2  # the failed row (kept, small) and the pending one


async def test_published_rows_are_deleted_on_close(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "b.sqlite3")
    await store.open()
    await store.create_bot(BotRecord("a", "", b"k" * 32, b"h" * 32, 1), "/in", 0)
    [key] = await store.record_sealed_many(
        [_conversation("a", b"s")], [Sealed("a", CONVERSATION, "/t", b"p", 1)]
    )
    await store.mark_published_many([key])
    await store.close()
    await store.open()
    try:
        assert await store.pending_outbox() == []
    finally:
        await store.close()


async def test_prune_keeps_each_bots_newest_events(store: SqliteStore) -> None:
    for i in range(7):
        await store.record_received(
            _conversation("a", b"s"), [_event(b"%d" % i)], b"%d" % i * 32, 5
        )
    await store.record_received(_conversation("b", b"s"), [_event(b"b")], b"b" * 32, 5)
    assert await store.prune_events(3) == 4
    assert [e.seq for e in await store.events("a", 0, 10)] == [5, 6, 7]
    assert [e.seq for e in await store.events("b", 0, 10)] == [1]
    assert await store.prune_events(3) == 0
    # sequence numbers go on from where they were
    [seqs] = await store.record_received_many([], [Received("a", [_event(b"n")], b"n" * 32)], 6)
    assert seqs == [8]


async def test_conversation_pages_stream_every_row_once(store: SqliteStore) -> None:
    for i in range(25):
        cid = f"/private/v1/{i:064x}"
        await store.record_sealed(_conversation("a", b"s%d" % i, cid), "/t", b"p", i)
    await store.record_sealed(_conversation("b", b"other"), "/t", b"p", 99)
    pages = [page async for page in store.conversation_pages("a", page=10)]
    assert [len(page) for page in pages] == [10, 10, 5]
    assert sorted(r.state for page in pages for r in page) == sorted(b"s%d" % i for i in range(25))
    assert [page async for page in store.conversation_pages("nobody")] == []


# ---- the client: batched receive ----


class CountingLedger(MemoryLedger):
    """Records each received_many call (one per batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def received_many(
        self,
        conversations: Sequence[ConversationState],
        events: Sequence[tuple[InboundEvent, MessageHash]],
    ) -> None:
        self.batches.append(len(events))
        await super().received_many(conversations, events)


async def test_what_the_queue_holds_is_saved_in_one_write(network_name: str) -> None:
    url = f"memory://{network_name}"
    ledger = CountingLedger()
    async with UmbraClient(Identity.generate(), connect(url), options=FAST_CLIENT) as alice:
        bob = UmbraClient(Identity.generate(), connect(url), ledger=ledger, options=FAST_CLIENT)
        async with bob:
            await bob.wait_live(2)
            stream = bob.events()
            sent = await alice.invite(bob.client_address, "0")
            await sent.wait(2)
            await asyncio.wait_for(anext(stream), 5)  # the invitation, with "0"
            # 30 messages published back to back: they reach bob's queue before it runs
            results = await alice.send_many([(sent.conversation_id, str(i)) for i in range(1, 31)])
            events = [await asyncio.wait_for(anext(stream), 5) for _ in range(30)]
            texts = [e.content.as_text() for e in events if isinstance(e, MessageReceived)]
            assert texts == [str(i) for i in range(1, 31)]
            assert len(results) == 30
            assert max(ledger.batches) > 1  # several messages in one write
            assert sum(ledger.batches) == 31
            assert len(ledger.inbound) == 31


async def test_send_many_refuses_items_alone(network_name: str) -> None:
    url = f"memory://{network_name}"
    async with (
        UmbraClient(Identity.generate(), connect(url), options=FAST_CLIENT) as alice,
        UmbraClient(Identity.generate(), connect(url), options=FAST_CLIENT) as bob,
    ):
        await bob.wait_live(2)
        sent = await alice.invite(bob.client_address)
        cid = sent.conversation_id
        results = await alice.send_many([(cid, "a"), ("/private/v1/" + "0" * 64, "b"), (cid, "c")])
        assert [type(r).__name__ for r in results] == ["Sent", "ConversationError", "Sent"]


# ---- the API ----


async def _pair(h: Harness) -> tuple[BotHandle, BotHandle, str]:
    alice, bob = await h.create_bot("alice"), await h.create_bot("bob")
    conversation = await h.start_conversation(alice, bob, "hello")
    await h.wait_events(bob, 2)
    return alice, bob, conversation


async def _post_batch(h: Harness, bot: BotHandle, messages: list[dict[str, Any]]) -> Any:
    response = await h.http.post("/v1/messages", json={"messages": messages}, headers=bot.auth)
    return response.status, await response.json()


async def test_a_batch_arrives_in_order(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, bob, conversation = await _pair(h)
    commits = h.bridge.store.commits  # type: ignore[attr-defined]
    texts = [f"m{i}" for i in range(40)]
    status, body = await _post_batch(
        h, alice, [{"conversation_id": conversation, "text": t} for t in texts]
    )
    assert status == 200
    results = body["results"]
    assert [r["status"] for r in results] == [201] * 40
    assert all(r["delivery"] == "published" and r["error"] is None for r in results)
    assert len({r["message_hash"] for r in results}) == 40
    events = await h.wait_events(bob, 40, after=2)
    assert [e["text"] for e in events] == texts
    assert [e["message_hash"] for e in events] == [r["message_hash"] for r in results]
    # sealed (1) + published (1) + received (few batches): far fewer commits than messages
    assert h.bridge.store.commits - commits < 20  # type: ignore[attr-defined]


async def test_a_batch_with_failing_items_sends_the_others(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, bob, conversation = await _pair(h)
    carol = await h.create_bot("carol")
    others = await h.start_conversation(carol, bob, "not alice's")
    messages: list[dict[str, Any]] = [
        {"conversation_id": conversation, "text": "one"},
        {"conversation_id": "f" * 64, "text": "nowhere"},
        {"conversation_id": others, "text": "not mine"},
        {"conversation_id": conversation, "domain": "app.v1", "tag": 3, "data_b64": "AAE="},
    ]
    status, body = await _post_batch(h, alice, messages)
    assert status == 200
    results = body["results"]
    assert [r["status"] for r in results] == [201, 404, 404, 201]
    assert results[1]["error"]["code"] == "not_found"
    assert results[1]["error"]["field"] == "messages.1.conversation_id"
    assert results[1]["message_hash"] is None
    events = await h.wait_events(bob, 4, after=2)  # carol's invitation, then alice's two
    mine = [e for e in events if e["conversation_id"] == conversation]
    assert [(e.get("text"), e["domain"]) for e in mine] == [("one", "umbra.text"), (None, "app.v1")]


async def test_an_invalid_batch_is_refused_whole(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, bob, conversation = await _pair(h)
    messages = [
        {"conversation_id": conversation, "text": "fine"},
        {"conversation_id": conversation, "text": "both", "data_b64": "AA=="},
    ]
    status, body = await _post_batch(h, alice, messages)
    assert status == 422
    assert body["error"]["field"] == "messages.1.text"
    status, body = await _post_batch(h, alice, [])
    assert status == 422
    assert body["error"]["field"] == "messages"
    status, body = await _post_batch(h, alice, [{"conversation_id": "XYZ", "text": "x"}])
    assert (status, body["error"]["field"]) == (422, "messages.0.conversation_id")
    await h.send(alice, conversation, "after")
    events = await h.wait_events(bob, 1, after=2)
    assert [e["text"] for e in events] == ["after"]  # nothing of the refused batches


async def test_a_closed_conversation_is_refused_alone(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, _bob, conversation = await _pair(h)
    record = await h.bridge.conversation(alice.bot_id, conversation)
    assert record is not None
    other = await h.start_conversation(alice, await h.create_bot("dave"), "hi")
    # the peer's ConversationClosed sets this; here the bridge is told directly
    h.bridge.remember_conversation(dataclasses.replace(record, closed=True))
    status, body = await _post_batch(
        h,
        alice,
        [{"conversation_id": conversation, "text": "x"}, {"conversation_id": other, "text": "y"}],
    )
    assert status == 200
    assert [r["status"] for r in body["results"]] == [409, 201]
    assert body["results"][0]["error"]["code"] == "conversation_closed"


async def test_storage_failure_refuses_the_whole_batch(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, _bob, conversation = await _pair(h)
    store = h.bridge.store

    async def broken(*args: Any) -> list[int]:
        raise StateError("disk full")

    store.record_sealed_many = broken  # type: ignore[method-assign,assignment]
    status, body = await _post_batch(
        h, alice, [{"conversation_id": conversation, "text": t} for t in ("a", "b")]
    )
    assert status == 503
    assert body["error"]["code"] == "storage_unavailable"
    assert await store.pending_outbox() == []


async def _frames(h: Harness, bot: BotHandle, query: str, count: int) -> list[Any]:
    frames: list[Any] = []
    async with h.http.ws_connect(f"/v1/events?{query}", headers=bot.auth) as ws:
        while sum(len(f) if isinstance(f, list) else 1 for f in frames) < count:
            message = await asyncio.wait_for(ws.receive(), 5)
            frames.append(json.loads(message.data))
    return frames


async def test_batch_frames_carry_several_events(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, bob, conversation = await _pair(h)
    await _post_batch(
        h, alice, [{"conversation_id": conversation, "text": str(i)} for i in range(10)]
    )
    await h.wait_events(bob, 10, after=2)
    batched = await _frames(h, bob, "after=0&batch=true", 12)
    assert all(isinstance(frame, list) for frame in batched)
    assert len(batched) < 12  # the page in one frame
    flat = [event for frame in batched for event in frame]
    assert [e["seq"] for e in flat] == list(range(1, 13))
    single = await _frames(h, bob, "after=0", 12)  # the default: one event per frame
    assert single == flat
    response = await h.http.get("/v1/events?batch=maybe", headers=bob.auth)
    assert response.status == 422


async def test_live_events_are_pushed_from_memory(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, bob, conversation = await _pair(h)
    store = h.bridge.store
    reads = 0
    original = store.events

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await original(*args, **kwargs)

    store.events = counting  # type: ignore[method-assign]
    async with h.http.ws_connect("/v1/events?after=2&batch=true", headers=bob.auth) as ws:
        await eventually(lambda: reads >= 1)  # the catch-up read from the cursor
        caught_up = reads
        for i in range(5):
            await h.send(alice, conversation, f"live {i}")
        got: list[dict[str, Any]] = []
        while len(got) < 5:
            got += json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
    assert [e["text"] for e in got] == [f"live {i}" for i in range(5)]
    assert reads == caught_up  # the live ones did not read the store


async def test_published_rows_do_not_stay(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, _bob, conversation = await _pair(h)
    for i in range(5):
        await h.send(alice, conversation, str(i))
    store = h.bridge.store
    assert isinstance(store, SqliteStore)

    def rows() -> int:
        assert store._db is not None
        return int(store._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    await eventually(lambda: not h.bridge.client._inflight)
    assert await store.pending_outbox() == []
    await store.save_checkpoints([], 0)  # any transaction carries the deletions
    assert await store._run(rows) == 0


async def test_the_bridge_prunes_events_beyond_the_retention(
    start_bridge: StartBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    from umbra_waku.bridge import service

    monkeypatch.setattr(service, "PRUNE_INTERVAL", 0.05)
    h = await start_bridge(event_retention=1000)
    alice, bob, conversation = await _pair(h)
    for start in range(0, 1100, 500):
        count = min(500, 1100 - start)
        await _post_batch(
            h, alice, [{"conversation_id": conversation, "text": str(i)} for i in range(count)]
        )
    store = h.bridge.store

    async def first_seq() -> int:
        events = await store.events(bob.bot_id, 0, 1)
        return events[0].seq if events else 0

    deadline = asyncio.get_running_loop().time() + 10
    while await store.last_seq(bob.bot_id) < 1102 or await first_seq() != 103:
        assert asyncio.get_running_loop().time() < deadline, (
            await store.last_seq(bob.bot_id),
            await first_seq(),
        )
        await asyncio.sleep(0.05)


def test_the_events_kept_in_memory_are_bounded() -> None:
    from umbra_waku.bridge import service
    from umbra_waku.bridge.store import EventRecord

    notifier = service.Notifier()
    assert notifier.after("bot", 0, 10) is None  # nobody follows: read the store
    notifier.follow("bot")
    small = [EventRecord(seq, 1, _event(b"x")) for seq in range(1, 601)]
    notifier.stored("bot", small)
    assert notifier.after("bot", 0, 10) is None  # the oldest were dropped: read the store
    kept = notifier.after("bot", 600 - service.RECENT_EVENTS, 1000)
    assert kept is not None
    assert [r.seq for r in kept] == list(range(601 - service.RECENT_EVENTS, 601))
    assert notifier.after("bot", 600, 10) == []
    big = [EventRecord(seq, 1, _event(b"y" * 32 * 1024)) for seq in range(601, 641)]
    notifier.stored("bot", big)
    kept = notifier.after("bot", 640 - 7, 1000)
    assert kept is not None
    assert [r.seq for r in kept] == list(range(634, 641))  # 7 x 32 KiB fit in 256 KiB
    assert notifier.after("bot", 640 - 8, 1000) is None
    notifier.stored("bot", [EventRecord(700, 1, _event(b"z"))])  # a gap: start again
    assert notifier.after("bot", 640, 10) is None
    assert notifier.after("bot", 699, 10) == [EventRecord(700, 1, _event(b"z"))]
    notifier.unfollow("bot")
    assert notifier.after("bot", 699, 10) is None


async def test_batch_frames_of_large_messages_stay_small(start_bridge: StartBridge) -> None:
    """A page of large messages is split over several frames (each at most
    MAX_BATCH_FRAME_CHARS, or one event), so a client with the usual frame limit reads them."""
    h = await start_bridge()
    alice, bob, conversation = await _pair(h)
    text = "é" * 50_000  # two bytes each in UTF-8: 100 kB messages
    for _ in range(12):
        status, _body = await _post_batch(
            h, alice, [{"conversation_id": conversation, "text": text}]
        )
        assert status == 200
    await h.wait_events(bob, 12, after=2)
    frames: list[str] = []
    async with h.http.ws_connect(
        "/v1/events?after=2&batch=true", headers=bob.auth, max_msg_size=1 << 20
    ) as ws:
        while sum(len(json.loads(f)) for f in frames) < 12:
            frames.append((await asyncio.wait_for(ws.receive(), 5)).data)
    assert all(len(f) <= MAX_BATCH_FRAME_CHARS for f in frames)
    assert all(len(f.encode()) <= 1 << 20 for f in frames)
    assert len(frames) >= 3  # 12 events of about 50,000 characters: 5 to a frame at most
    events = [e for f in frames for e in json.loads(f)]
    assert [e["seq"] for e in events] == list(range(3, 15))
    assert all(e["text"] == text for e in events)
