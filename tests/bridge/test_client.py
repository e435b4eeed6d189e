"""UmbraClient, the runtime under the bridge, on the memory:// network with injected faults."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from umbra_waku.client import (
    Backfilled,
    Classified,
    ClientEvent,
    ConversationClosed,
    ConversationStarted,
    ConversationState,
    Delivery,
    InboundEvent,
    MemoryLedger,
    MessageReceived,
    PendingEnvelope,
    Published,
    Sent,
    UmbraClient,
)
from umbra_waku.errors import (
    ConversationError,
    NodeHTTPError,
    NodeUnreachable,
    PublishRejected,
    StateError,
)
from umbra_waku.frames import Content, State
from umbra_waku.identity import Identity
from umbra_waku.session import Session
from umbra_waku.transport import ReceivedMessage, connect
from umbra_waku.waku.message import MessageHash, WakuMessage

from .conftest import FAST_CLIENT, eventually
from .faulty import FaultyTransport


async def next_of(stream: AsyncIterator[ClientEvent], kind: type[Any], within: float = 5.0) -> Any:
    async def find() -> Any:
        async for event in stream:
            if isinstance(event, kind):
                return event
        pytest.fail(f"stream ended before a {kind.__name__}")

    return await asyncio.wait_for(find(), within)


@contextlib.asynccontextmanager
async def two_live_clients(network_name: str) -> AsyncIterator[tuple[UmbraClient, UmbraClient]]:
    """Alice and Bob, each with an identity of their own, both live on one memory network."""
    url = f"memory://{network_name}"
    async with (
        UmbraClient(Identity.generate(), connect(url), options=FAST_CLIENT) as alice,
        UmbraClient(Identity.generate(), connect(url), options=FAST_CLIENT) as bob,
    ):
        assert await alice.wait_live(2)
        assert await bob.wait_live(2)
        yield alice, bob


async def test_a_conversation_between_two_clients(network_name: str) -> None:
    async with two_live_clients(network_name) as (alice, bob):
        bob_events, alice_events = bob.events(), alice.events()
        sent = await alice.invite(bob.client_address, "hello")
        assert await sent.wait(2) is Delivery.PUBLISHED
        started = await next_of(bob_events, ConversationStarted)
        assert (started.conversation_id, started.peer) == (
            sent.conversation_id,
            alice.client_address,
        )
        assert started.initial_content.as_text() == "hello"
        assert started.message_hash == sent.message_hash

        await bob.send(started.conversation_id, "hi alice")
        received = await next_of(alice_events, MessageReceived)
        assert (received.content.as_text(), received.sender) == ("hi alice", bob.client_address)
    # the stream ends when the client closes
    assert [event async for event in bob_events] == []


async def test_closing_then_forgetting_a_conversation(network_name: str) -> None:
    """close_conversation: the peer reads the Close, the closer keeps the conversation closed in
    its ledger; forget_conversation: gone from the ledger and the session, unknown afterwards."""
    async with two_live_clients(network_name) as (alice, bob):
        bob_events = bob.events()
        sent = await alice.invite(bob.client_address, "hello")
        cid = sent.conversation_id
        await next_of(bob_events, ConversationStarted)
        closing = await alice.close_conversation(cid, "bye")
        assert await closing.wait(2) is Delivery.PUBLISHED
        closed = await next_of(bob_events, ConversationClosed)
        assert (closed.conversation_id, closed.reason) == (cid, "bye")
        ledger = alice.ledger
        assert isinstance(ledger, MemoryLedger)
        assert ledger.conversations[alice.client_address, cid].closed
        with pytest.raises(ConversationError, match="closed"):
            await alice.send(cid, "more?")
        await alice.forget_conversation(cid)
        assert (alice.client_address, cid) not in ledger.conversations
        assert cid not in alice.session.conversations
        for forgotten in (alice.forget_conversation(cid), alice.close_conversation(cid)):
            with pytest.raises(ConversationError, match="unknown"):
                await forgotten


async def test_duplicates_are_dropped_by_hash(network_name: str) -> None:
    url = f"memory://{network_name}"
    faulty = FaultyTransport(network_name)
    async with (
        UmbraClient(Identity.generate(), connect(url), options=FAST_CLIENT) as alice,
        UmbraClient(Identity.generate(), faulty, options=FAST_CLIENT) as bob,
    ):
        await bob.wait_live(2)
        stream = bob.events(operational=True)
        sent = await alice.invite(bob.client_address)
        await next_of(stream, ConversationStarted)
        readable = await next_of(stream, Classified)
        assert (readable.state, readable.backfill) == (State.READABLE, False)

        # the node goes away and comes back: the backfill returns the invitation again
        faulty.is_ready = False
        await eventually(lambda: not bob.live)
        faulty.is_ready = True
        again = await next_of(stream, Classified)
        assert (again.state, again.backfill) == ("duplicate", True)
        assert again.message_hash == readable.message_hash == sent.message_hash

        # another Waku message carrying the same envelope has another hash: the session
        # recognises the envelope and never delivers it twice
        same = sent.message
        await alice.transport.publish(
            WakuMessage(same.payload, same.content_topic, (same.timestamp or 0) + 1)
        )
        replay = await next_of(stream, Classified)
        assert (replay.state, replay.reason) == (State.BADLY_FORMED, "replay")


async def test_publish_retries_the_same_message(network_name: str) -> None:
    faulty = FaultyTransport(network_name)
    peer = Identity.generate()
    async with UmbraClient(Identity.generate(), faulty, options=FAST_CLIENT) as client:
        published: list[Published] = []
        client.add_listener(lambda e: published.append(e) if isinstance(e, Published) else None)
        faulty.publish_errors = [NodeUnreachable("down"), NodeUnreachable("still down")]
        sent = await client.invite(peer.client_address, "hi")
        assert await sent.wait(5) is Delivery.PUBLISHED
        assert len(faulty.published) == 3
        assert all(m is sent.message for m in faulty.published)
        assert published[-1].attempts == 3
        assert published[-1].message_hash == sent.message_hash

        faulty.publish_errors = [PublishRejected("invalid")]
        refused = await client.send(sent.conversation_id, "again")
        assert await refused.wait(5) is Delivery.FAILED
        assert published[-1].delivery is Delivery.FAILED
        assert isinstance(client.ledger, MemoryLedger)
        assert not client.ledger.outbox


class _BatchFaultyTransport(FaultyTransport):
    """A FaultyTransport with ``publish_many`` (as the memory transport has): its first attempts
    go through it, in one call, with the same injected errors."""

    def __init__(self, network: str) -> None:
        super().__init__(network)
        self.batches: list[int] = []

    async def publish_many(self, messages: list[WakuMessage]) -> list[MessageHash | Exception]:
        self.batches.append(len(messages))
        out: list[MessageHash | Exception] = []
        for message in messages:
            try:
                out.append(await self.publish(message))
            except Exception as exc:  # returned, as the memory transport does
                out.append(exc)
        return out


async def test_publish_many_retries_what_it_refused(network_name: str) -> None:
    faulty = _BatchFaultyTransport(network_name)
    peer = Identity.generate()
    async with UmbraClient(Identity.generate(), faulty, options=FAST_CLIENT) as client:
        published: list[Published] = []
        client.add_listener(lambda e: published.append(e) if isinstance(e, Published) else None)
        batches: list[list[Any]] = []
        client.add_batch_listener(batches.append)
        sent = await client.invite(peer.client_address, "hi")
        assert await sent.wait(5) is Delivery.PUBLISHED
        published.clear()
        batches.clear()
        # the 2nd message fails once (retried), the 3rd is refused (not retried)
        original = faulty.publish
        calls = 0

        async def publish(message: WakuMessage) -> MessageHash:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise NodeUnreachable("down")
            if calls == 3:
                raise PublishRejected("invalid")
            return await original(message)

        faulty.publish = publish  # type: ignore[method-assign]
        results = await client.send_many([(sent.conversation_id, str(i)) for i in range(4)])
        deliveries = [await r.wait(5) for r in results if isinstance(r, Sent)]
        assert deliveries == [
            Delivery.PUBLISHED,
            Delivery.PUBLISHED,
            Delivery.FAILED,
            Delivery.PUBLISHED,
        ]
        assert faulty.batches == [4]
        await eventually(lambda: len(published) == 4)
        assert [p.attempts for p in published] == [1, 2, 1, 1]
        assert [p.message_hash for p in published] == [
            r.message_hash for r in results if isinstance(r, Sent)
        ]
        # one batch of them, the same events in the same order
        assert [b for b in batches if isinstance(b[0], Published)] == [published]


async def test_publishes_still_pending_are_republished(network_name: str) -> None:
    faulty = FaultyTransport(network_name)
    options = replace(FAST_CLIENT, publish_attempts=2)
    ledger = MemoryLedger()
    async with UmbraClient(Identity.generate(), faulty, ledger=ledger, options=options) as client:
        faulty.publish_errors = [NodeUnreachable("a"), NodeUnreachable("b")]
        sent = await client.invite(Identity.generate().client_address)
        assert await sent.wait(5) is Delivery.PENDING
        assert list(ledger.outbox) == [1]
        await eventually(lambda: not ledger.outbox)  # the republish loop got it through
        assert {m.timestamp for m in faulty.published} == {sent.message.timestamp}


async def test_pending_envelopes_of_a_previous_run_are_published_on_start(
    network_name: str,
) -> None:
    identity = Identity.generate()
    message = WakuMessage.create(b"\x0a\x01x", "/umbra/1/private/proto")
    ledger = MemoryLedger()
    ledger.outbox[7] = PendingEnvelope(7, identity.client_address, "/private/v1/x", message)
    faulty = FaultyTransport(network_name)
    async with UmbraClient(identity, faulty, ledger=ledger, options=FAST_CLIENT):
        await eventually(lambda: not ledger.outbox)
    assert faulty.published == [message]


async def test_a_failing_ledger_stops_the_client(network_name: str) -> None:
    class BrokenLedger(MemoryLedger):
        async def received(
            self, event: InboundEvent, conversation: ConversationState, message_hash: MessageHash
        ) -> None:
            raise StateError("disk full")

    url = f"memory://{network_name}"
    async with UmbraClient(Identity.generate(), connect(url), options=FAST_CLIENT) as alice:
        bob = UmbraClient(
            Identity.generate(), connect(url), ledger=BrokenLedger(), options=FAST_CLIENT
        )
        async with bob:
            await bob.wait_live(2)
            await alice.invite(bob.client_address, "hi")
            with pytest.raises(StateError, match="disk full"):
                await asyncio.wait_for(bob.wait_closed(), 5)
            assert not bob.live
            assert bob.failure is not None


async def test_backfill_on_start_from_the_checkpoint(network_name: str) -> None:
    url = f"memory://{network_name}"
    bob_identity = Identity.generate()
    async with UmbraClient(Identity.generate(), connect(url), options=FAST_CLIENT) as alice:
        sent = await alice.invite(bob_identity.client_address, "while you were away")
        await sent.wait(2)
        ledger = MemoryLedger()
        # bob was last complete 1 s ago: the invitation (newer) must come from the store
        import time

        ledger.checkpoints[bob_identity.inbox_content_topic] = time.time_ns() - 1_000_000_000
        faulty = FaultyTransport(network_name)
        async with UmbraClient(bob_identity, faulty, ledger=ledger, options=FAST_CLIENT) as bob:
            stream = bob.events(operational=True)
            backfilled = await next_of(stream, Backfilled)
            assert backfilled.ok
            assert backfilled.messages >= 1
            assert next(q.start_time for q in faulty.queries) is not None
            started = await next_of(stream, ConversationStarted)
            assert started.conversation_id == sent.conversation_id
            await eventually(lambda: bob_identity.inbox_content_topic in ledger.checkpoints)


async def test_a_lost_subscription_is_renewed_and_the_gap_backfilled(network_name: str) -> None:
    url = f"memory://{network_name}"
    faulty = FaultyTransport(network_name)
    async with (
        UmbraClient(Identity.generate(), connect(url), options=FAST_CLIENT) as alice,
        UmbraClient(Identity.generate(), faulty, options=FAST_CLIENT) as bob,
    ):
        await bob.wait_live(2)
        stream = bob.events()
        sent = await alice.invite(bob.client_address)
        await next_of(stream, ConversationStarted)
        queries = len(faulty.queries)

        # the subscription dies (as a node restart would make it): the next messages are only
        # in the store until the client resubscribes and backfills
        await faulty.subscriptions[-1].close()
        for text in ("lost 1", "lost 2"):
            await alice.send(sent.conversation_id, text)
        got = [await next_of(stream, MessageReceived) for _ in range(2)]
        assert sorted(m.content.as_text() for m in got) == ["lost 1", "lost 2"]
        assert len(faulty.subscriptions) >= 2
        assert len(faulty.queries) > queries
        assert await bob.wait_live(2)


async def test_a_node_that_comes_back_triggers_a_backfill(network_name: str) -> None:
    faulty = FaultyTransport(network_name)
    async with UmbraClient(Identity.generate(), faulty, options=FAST_CLIENT) as client:
        assert await client.wait_live(2)
        faulty.is_ready = False
        await eventually(lambda: not client.live)
        queries = len(faulty.queries)
        faulty.is_ready = True
        assert await client.wait_live(2)
        await eventually(lambda: len(faulty.queries) > queries)


async def test_transports_without_a_store_are_tolerated(network_name: str) -> None:
    faulty = FaultyTransport(network_name)
    faulty.has_store = False
    async with UmbraClient(Identity.generate(), faulty, options=FAST_CLIENT) as client:
        assert await client.wait_live(2)
        assert faulty.queries == []

    broken = FaultyTransport(network_name)
    broken.store_error = NodeHTTPError("GET", "/store/v3/messages", 501, "no store")
    async with UmbraClient(Identity.generate(), broken, options=FAST_CLIENT) as client:
        assert await client.wait_live(2)
        assert len(broken.queries) == 1  # not retriable: tried once, then given up


async def test_a_flaky_store_is_retried_until_the_gap_is_filled(network_name: str) -> None:
    faulty = FaultyTransport(network_name)
    faulty.store_error = NodeUnreachable("store down")
    async with UmbraClient(Identity.generate(), faulty, options=FAST_CLIENT) as client:
        await eventually(lambda: len(faulty.queries) >= 3)
        assert client.live
        assert client.backfill_pending
        faulty.store_error = None
        assert await client.wait_live(3)
        assert not client.backfill_pending


def test_received_message_type_is_what_transports_deliver() -> None:
    message = WakuMessage.create(b"x", "/umbra/1/private/proto")
    received = ReceivedMessage.of(message, "/waku/2/rs/42/0", "relay")
    assert received.hash == message.hash("/waku/2/rs/42/0")


async def test_messages_far_ahead_of_the_hint_window_are_parked_not_lost(
    network_name: str,
) -> None:
    """Newer envelopes that arrive more than the hint window ahead of older ones (as when a store
    backfill delivers the older ones late) are parked and read once the window reaches them."""
    url = f"memory://{network_name}"
    alice = Session(Identity.generate())
    async with (
        connect(url) as wire,
        UmbraClient(Identity.generate(), connect(url), options=FAST_CLIENT) as bob,
    ):
        assert await bob.wait_live(2)
        stream = bob.events()
        conversation, invitation = alice.invite(bob.client_address)
        await wire.publish(WakuMessage.create(invitation.payload, invitation.content_topic))
        await next_of(stream, ConversationStarted)
        window = bob.session.conversation(conversation.conversation_id).window
        outgoing = [
            alice.send(conversation.conversation_id, Content.text(f"m{i}"))
            for i in range(3 * window)
        ]
        # the last 2 * window first: all beyond the window, then the first window's worth
        for out in outgoing[window:] + outgoing[:window]:
            await wire.publish(WakuMessage.create(out.payload, out.content_topic))
        texts = [(await next_of(stream, MessageReceived)).content.as_text() for _ in outgoing]
        assert sorted(texts) == sorted(f"m{i}" for i in range(3 * window))
        assert len(set(texts)) == len(texts)
        assert len(bob._parked) == 0


async def test_one_batch_with_messages_before_their_invitation_and_a_repeat(
    network_name: str,
) -> None:
    """Messages handled as one batch (one ``classify_many`` per session and topic) come out as
    one at a time would: a message before its invitation is read once the invitation was, a
    second copy in the same batch is a duplicate, every message exactly once, the conversation's
    start first."""
    url = f"memory://{network_name}"
    alice = Session(Identity.generate())
    async with (
        connect(url) as wire,
        UmbraClient(Identity.generate(), connect(url), options=FAST_CLIENT) as bob,
    ):
        assert await bob.wait_live(2)
        batches: list[int] = []
        classify_many = bob.session.classify_many

        def counted(payloads: Any, content_topic: str | None = None) -> Any:
            batches.append(len(payloads))
            return classify_many(payloads, content_topic)

        bob.session.classify_many = counted  # type: ignore[method-assign]
        stream = bob.events()
        conversation, invitation = alice.invite(bob.client_address)
        cid = conversation.conversation_id
        m = [alice.send(cid, Content.text(f"m{i}")) for i in range(4)]
        invite = WakuMessage.create(invitation.payload, invitation.content_topic)
        copy = WakuMessage.create(m[0].payload, m[0].content_topic)
        order = [
            WakuMessage.create(m[2].payload, m[2].content_topic),
            copy,
            invite,
            WakuMessage.create(m[1].payload, m[1].content_topic),
            copy,  # the same Waku message again: same hash
            WakuMessage.create(m[3].payload, m[3].content_topic),
        ]
        for message in order:
            await wire.publish(message)
        events: list[ClientEvent] = []
        while len([e for e in events if isinstance(e, MessageReceived)]) < 4:
            events.append(await next_of(stream, ConversationStarted | MessageReceived))
        assert isinstance(events[0], ConversationStarted)
        texts = sorted(e.content.as_text() for e in events if isinstance(e, MessageReceived))
        assert texts == ["m0", "m1", "m2", "m3"]
        assert max(batches) > 1, "the messages were not handled as one batch"
        with pytest.raises(TimeoutError):  # nothing more comes: no message twice
            await next_of(stream, MessageReceived, within=0.3)
        assert len(bob._parked) == 0
