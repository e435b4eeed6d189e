"""UmbraClient offers a private-topic envelope only to the sessions that may read it.

The router (every session's expected and recently read hint fingerprints, mirrored into one
index: ``Session.use_router``) names them; a session that reads an earlier message of the same
batch is offered the rest too, since its window moved. What is classified, by whom, and how must
be exactly what offering every envelope to every session in turn gives: these tests run the
same streams through two clients, one routing and one offering everything (the behaviour
before the router), and compare every outcome and every conversation state after.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from umbra_waku import _speedups_py, hints
from umbra_waku.client import UmbraClient, _Inbound, _unique_prefix
from umbra_waku.conversations.private import PRIVATE_TOPIC as PRIVATE
from umbra_waku.frames import Content, Readable
from umbra_waku.identity import Identity
from umbra_waku.session import Session
from umbra_waku.transport import ReceivedMessage, connect
from umbra_waku.waku.message import WakuMessage

from .conftest import FAST_CLIENT

try:
    from umbra_waku import _speedups as native
except ImportError:  # pragma: no cover - tests/core/test_speedups.py fails CI without it
    native = None  # type: ignore[assignment]

IMPLEMENTATIONS = [
    pytest.param(_speedups_py, id="python"),
    pytest.param(native, id="native", marks=pytest.mark.skipif(native is None, reason="not built")),
]

WINDOW = 3  # small, so that a shuffled stream overruns it: parking and second passes
PUBSUB = "/waku/2/rs/42/0"


@dataclass
class World:
    bots: list[Identity]
    states: list[list[bytes]]  # each bot's conversations when the client starts
    stream: list[bytes | tuple[str, bytes]]  # (content topic, payload), or junk on the private one
    chunks: list[int]


def _world(seed: int) -> World:
    """Five bots (bot 0 and bot 1 talk to each other), outsiders who talk to bots, invitations
    that come during the stream, foreign traffic, replays, and hostile bytes, shuffled."""
    rng = random.Random(seed)
    bots = [Identity.generate() for _ in range(5)]
    setup = [Session(bot, hint_window=WINDOW) for bot in bots]
    outsiders = [Session(Identity.generate(), hint_window=WINDOW) for _ in range(3)]

    def accept(sender: Session, receiver: int) -> str:
        conversation, invitation = sender.invite(bots[receiver].client_address)
        result = setup[receiver].classify(invitation.payload, invitation.content_topic)
        assert isinstance(result, Readable)
        return conversation.conversation_id

    talks = [(setup[0], accept(setup[0], 1))]  # bot 0 -> bot 1, both in the client
    talks += [(o, accept(o, rng.randrange(5))) for o in outsiders for _ in range(2)]
    states = [[c.to_state() for c in s.conversations.values()] for s in setup]

    stream: list[bytes | tuple[str, bytes]] = []
    for sender, cid in talks:
        for n in range(rng.randrange(1, 7)):
            stream.append((PRIVATE, sender.send(cid, Content.text(f"{cid[:6]}-{n}")).payload))
    # bot 1 answers bot 0 (bot 1's sending side is the client's too)
    reply_cid = talks[0][1]
    replier = Session(bots[1], hint_window=WINDOW)
    replier.restore(states[1])
    for n in range(rng.randrange(0, 4)):
        stream.append((PRIVATE, replier.send(reply_cid, Content.text(f"re-{n}")).payload))
    for outsider in outsiders:  # new conversations, started during the stream
        conversation, invitation = outsider.invite(bots[rng.randrange(5)].client_address)
        stream.append((invitation.content_topic, invitation.payload))
        for n in range(rng.randrange(0, 4)):
            content = Content.text(f"new-{n}")
            stream.append((PRIVATE, outsider.send(conversation.conversation_id, content).payload))
    stranger_a, stranger_b = Session(Identity.generate()), Session(Identity.generate())
    foreign, _ = stranger_a.invite(stranger_b.identity.client_address)
    for n in range(rng.randrange(1, 6)):
        stream.append(
            (PRIVATE, stranger_a.send(foreign.conversation_id, Content.text(f"f{n}")).payload)
        )
    envelopes = [item[1] for item in stream if isinstance(item, tuple)]
    for _ in range(rng.randrange(1, 5)):  # replays, truncations, bit flips, junk
        original = rng.choice(envelopes)
        kind = rng.randrange(4)
        if kind == 0:
            stream.append(original)  # the same envelope again (a new Waku message)
        elif kind == 1:
            stream.append(original[: rng.randrange(len(original))])
        elif kind == 2:
            at = rng.randrange(len(original))
            stream.append(original[:at] + bytes([original[at] ^ 0x20]) + original[at + 1 :])
        else:
            stream.append(rng.randbytes(rng.randrange(0, 80)))
    rng.shuffle(stream)
    chunks = []
    left = len(stream)
    while left > 0:
        chunks.append(min(left, rng.choice([1, 2, 5, 16, 64])))
        left -= chunks[-1]
    return World(bots, states, stream, chunks)


def _inbound(item: bytes | tuple[str, bytes], number: int) -> _Inbound:
    topic, payload = item if isinstance(item, tuple) else (PRIVATE, item)
    message = WakuMessage(payload, topic, timestamp=1_000_000 + number)
    return _Inbound(ReceivedMessage.of(message, PUBSUB, "relay"), False)


async def _run(world: World, impl: ModuleType, routed: bool) -> tuple[Any, ...]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hints, "impl", impl)
        sessions = []
        for bot, states in zip(world.bots, world.states, strict=True):
            session = Session(bot, hint_window=WINDOW)
            session.restore(states)
            sessions.append(session)
        client = UmbraClient(
            sessions, connect(f"memory://routing-{uuid.uuid4().hex}"), options=FAST_CLIENT
        )
    offered = [0]
    for session in sessions:
        many = session.classify_many

        def counted(payloads: Any, topic: Any = None, many: Any = many) -> Any:
            offered[0] += len(payloads)
            return many(payloads, topic)

        session.classify_many = counted  # type: ignore[method-assign]
    if not routed:  # every session offered every message from the first: the old behaviour
        client._offers = lambda chunk, private, by_owner: [  # type: ignore[method-assign]
            (address, 0) for address in client._sessions
        ]
    outcomes = []
    items = [_inbound(item, n) for n, item in enumerate(world.stream)]
    for size in world.chunks:
        queue, items = items[:size], items[size:]
        while queue:
            part, queue = _unique_prefix(queue)
            held: dict[str, Any] = {}
            for _, event, outcome in await client._classify_chunk(part, held, {}):
                outcomes.append(
                    (
                        outcome.message_hash,
                        outcome.state,
                        outcome.client_address,
                        outcome.reason,
                        type(event).__name__,
                        getattr(event, "conversation_id", None),
                    )
                )
            for lock in held.values():
                lock.release()
            queue.extend(client._parked.take_ready())
    # what reading changed (not to_state(): accepting an invitation draws a fresh ratchet key)
    states = {
        address: sorted(
            (c.conversation_id, c.recv_next, sorted(c.missing or ()), c.closed)
            for c in session.conversations.values()
        )
        for address, session in client._sessions.items()
    }
    return outcomes, states, len(client._parked), offered[0]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("seed", range(12))
async def test_routing_gives_what_offering_everything_gives(impl: ModuleType, seed: int) -> None:
    world = _world(seed)
    routed = await _run(world, impl, routed=True)
    everything = await _run(world, impl, routed=False)
    assert routed[:3] == everything[:3]
    assert any(outcome[1] == "readable" for outcome in routed[0])
    # and the router did skip sessions (fewer payloads offered to the five of them)
    assert routed[3] < everything[3]


async def test_a_removed_session_leaves_the_router() -> None:
    bots = [Identity.generate() for _ in range(3)]
    client = UmbraClient(bots, connect(f"memory://routing-{uuid.uuid4().hex}"))
    outsider = Session(Identity.generate())
    conversation, invitation = outsider.invite(bots[2].client_address)
    third = client._sessions[bots[2].client_address]
    assert isinstance(third.classify(invitation.payload, invitation.content_topic), Readable)
    held = len(client._router)
    assert held > 0  # the window of the new conversation, and the invitation as read
    client.remove(bots[2].client_address)
    assert len(client._router) == 0
    sent = outsider.send(conversation.conversation_id, Content.text("x"))
    message = _inbound((PRIVATE, sent.payload), 0)
    # offered to the first session only (whose NotForMe is everybody's), not to the removed one
    assert client._offers([message], [0], {}) == [(bots[0].client_address, 0)]
    client.add(third)
    assert len(client._router) == held
    assert client._offers([message], [0], {}) == [(bots[2].client_address, 0)]
