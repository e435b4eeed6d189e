"""UmbraClient with an ordered ledger (``ordered_writes``): received messages are handed over
without waiting for each write, yet events are emitted in order and only once durable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from umbra_waku.client import (
    ClientEvent,
    ConversationStarted,
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

from .conftest import FAST_CLIENT, eventually


class GatedLedger(MemoryLedger):
    """Takes each write's place in order at once (a write is a batch of messages, or one
    message); applies them when the gate opens."""

    ordered_writes = True

    def __init__(self) -> None:
        super().__init__()
        self.queued: list[MessageHash] = []
        self.applied: list[MessageHash] = []
        self.gate = asyncio.Event()

    async def received(
        self, event: InboundEvent, conversation: ConversationState, message_hash: MessageHash
    ) -> None:
        self.queued.append(message_hash)
        await self.gate.wait()
        self.applied.append(message_hash)
        await super().received(event, conversation, message_hash)

    async def received_many(
        self,
        conversations: Sequence[ConversationState],
        events: Sequence[tuple[InboundEvent, MessageHash]],
    ) -> None:
        hashes = [message_hash for _, message_hash in events]
        self.queued.extend(hashes)
        await self.gate.wait()
        self.applied.extend(hashes)
        states = {(c.client_address, c.conversation_id): c for c in conversations}
        for event, message_hash in events:
            state = states[event.client_address, event.conversation_id]
            await MemoryLedger.received(self, event, state, message_hash)


async def test_a_batch_is_handed_over_at_once_and_emitted_in_order(network_name: str) -> None:
    url = f"memory://{network_name}"
    ledger = GatedLedger()
    async with UmbraClient(Identity.generate(), connect(url), options=FAST_CLIENT) as alice:
        bob = UmbraClient(Identity.generate(), connect(url), ledger=ledger, options=FAST_CLIENT)
        async with bob:
            await bob.wait_live(2)
            stream = bob.events()
            sent = await alice.invite(bob.client_address, "0")
            await sent.wait(2)
            for i in range(1, 6):
                await (await alice.send(sent.conversation_id, str(i))).wait(2)
            # every write was queued, none applied: nothing was emitted yet
            await eventually(lambda: len(ledger.queued) == 6)
            assert ledger.applied == []
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(stream), 0.1)

            ledger.gate.set()
            events = [await asyncio.wait_for(anext(stream), 5) for _ in range(6)]
            assert isinstance(events[0], ConversationStarted)
            texts = [e.content.as_text() for e in events[1:] if isinstance(e, MessageReceived)]
            assert texts == ["1", "2", "3", "4", "5"]
            assert ledger.applied == ledger.queued
            assert [e.message_hash for e in events if isinstance(e, InboundEvent)] == ledger.queued


async def test_a_failing_ordered_ledger_stops_the_client(network_name: str) -> None:
    class BrokenLedger(MemoryLedger):
        ordered_writes = True

        async def received(
            self, event: InboundEvent, conversation: ConversationState, message_hash: MessageHash
        ) -> None:
            await asyncio.sleep(0)
            raise StateError("disk full")

    url = f"memory://{network_name}"
    async with UmbraClient(Identity.generate(), connect(url), options=FAST_CLIENT) as alice:
        bob = UmbraClient(
            Identity.generate(), connect(url), ledger=BrokenLedger(), options=FAST_CLIENT
        )
        async with bob:
            await bob.wait_live(2)
            stream = bob.events()
            await alice.invite(bob.client_address, "hi")
            with pytest.raises(StateError, match="disk full"):
                await asyncio.wait_for(bob.wait_closed(), 5)
            assert not bob.live
            assert bob.failure is not None
            # the stream ends without the unsaved message
            assert await asyncio.wait_for(_drain(stream), 5) == []


async def _drain(stream: AsyncIterator[ClientEvent]) -> list[ClientEvent]:
    return [event async for event in stream]
