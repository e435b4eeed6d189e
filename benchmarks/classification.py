"""Classification throughput beside raw protobuf parsing of the same bytes, and the hint index
with 1, 1,000 and 100,000 known conversations.

- ``parse``: ``UmbraEnvelopeV1.FromString`` alone, the raw cost of looking at an envelope;
- ``floor``: parse plus what any NotForMe answer must do when Python drives it (read the hint and
  salt, the fingerprint, one index lookup, one replay lookup, allocate the result), written
  inline: the best a classifier written in Python can do. ``Session.classify`` no longer is one:
  its NotForMe answer is native (``umbra_waku/_speedups.c``: one call scans the envelope, looks
  the fingerprint up and builds the result), so it beats this floor, which now shows what the
  native path saves;
- NotForMe: envelopes of a conversation between two other clients, on the private topic, one
  ``classify`` call each; and the same envelopes through ``classify_many`` in batches of 100
  (``*_batch_*`` keys; ``hints_batch_*_vs_1`` compare batched runs with each other);
- Readable PrivateV1: a stream of one conversation, decrypted in order (each run restarts from a
  copy of the receiver's state); Readable inbox: invitations, each accepted by a fresh receiver;
- a client with many identities (a bridge with many bots): ``UmbraClient``'s receive path
  (``_classify_chunk``: the router, then the sessions it names) on the same foreign envelopes in
  batches of 64, with 2 and with 1,000 identities bound (``identities_1k_vs_2``).

All runs are interleaved (rotating order, median of the rounds), so load drift hits them alike.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable

from benchmarks.common import interleaved, scaled
from umbra_waku import Content, Identity, Session
from umbra_waku._proto import umbra_frames_pb2
from umbra_waku._proto.umbra_envelope_pb2 import UmbraEnvelopeV1
from umbra_waku.client import UmbraClient, _Inbound
from umbra_waku.conversations.private import PRIVATE_TOPIC, PrivateV1
from umbra_waku.frames import NotForMe
from umbra_waku.hints import fingerprint
from umbra_waku.transport import ReceivedMessage, connect
from umbra_waku.waku.message import WakuMessage


def _pair() -> tuple[Session, Session, str]:
    alice, bob = Session(Identity.generate()), Session(Identity.generate())
    conversation, invitation = alice.invite(bob.identity.client_address)
    bob.classify(invitation.payload, invitation.content_topic)
    return alice, bob, conversation.conversation_id


def filler_states(count: int, template: bytes) -> list[bytes]:
    """Saved states of ``count`` distinct conversations (fresh hint and header keys), made from one
    template so that 100,000 need no key agreement each."""
    states = []
    for i in range(count):
        state = umbra_frames_pb2.PrivateV1State.FromString(template)
        state.conversation_id = f"/private/v1/filler-{i}"
        state.recv_hint_key = secrets.token_bytes(32)
        state.recv_header_key = secrets.token_bytes(32)
        states.append(state.SerializeToString())
    return states


def _raw_parse(data: list[bytes]) -> Callable[[], int]:
    parse = UmbraEnvelopeV1.FromString

    def go() -> int:
        for item in data:
            parse(item)
        return len(data)

    return go


def _floor(session: Session, data: list[bytes]) -> Callable[[], int]:
    """The least a NotForMe answer costs when Python drives it: parse, two field reads, the
    fingerprint, one index lookup, one replay lookup and the result object (what the full path
    of Session.classify does, minus its error handling and checks)."""
    parse = UmbraEnvelopeV1.FromString
    index = session._index
    recent = session._recent.get

    def go() -> int:
        for item in data:
            envelope = parse(item)
            conversation_hint = envelope.conversation_hint
            fp = fingerprint(conversation_hint)
            if fp is not None and fp not in index:
                recent(conversation_hint)
                NotForMe(conversation_hint, envelope.salt)
        return len(data)

    return go


def _classify_all(session: Session, data: list[bytes]) -> Callable[[], int]:
    classify = session.classify

    def go() -> int:
        for item in data:
            classify(item, PRIVATE_TOPIC)
        return len(data)

    return go


#: envelopes per ``classify_many`` call in the batched runs (a REST poll at 500 messages/s)
BATCH = 100


def _classify_batches(session: Session, data: list[bytes]) -> Callable[[], int]:
    """The same envelopes as ``_classify_all``, through ``Session.classify_many`` in chunks of
    ``BATCH`` (cut before timing, as a receiver gets them)."""
    many = session.classify_many
    chunks = [data[start : start + BATCH] for start in range(0, len(data), BATCH)]

    def go() -> int:
        for chunk in chunks:
            many(chunk, PRIVATE_TOPIC)
        return len(data)

    return go


CLIENT_BATCH = 64


def _client_receive(
    loop: asyncio.AbstractEventLoop, identities: int, data: list[bytes]
) -> Callable[[], int]:
    """What a client's receive loop does with a drained batch (``UmbraClient._classify_chunk``,
    an internal: no transport, queue or ledger around it), ``CLIENT_BATCH`` envelopes at a time,
    with ``identities`` sessions bound. NotForMe on the private topic is not remembered as seen,
    so every round classifies the same envelopes afresh."""
    client = UmbraClient(
        [Identity.generate() for _ in range(identities)],
        connect(f"memory://bench-identities-{uuid.uuid4().hex}"),
    )
    messages = [
        WakuMessage(payload, PRIVATE_TOPIC, timestamp=n + 1) for n, payload in enumerate(data)
    ]
    items = [_Inbound(ReceivedMessage.of(m, "/bench", "relay"), False) for m in messages]
    chunks = [items[start : start + CLIENT_BATCH] for start in range(0, len(items), CLIENT_BATCH)]

    async def receive() -> None:
        for chunk in chunks:
            await client._classify_chunk(chunk, {}, {})

    def go() -> int:
        loop.run_until_complete(receive())
        return len(items)

    return go


def run(
    *, quick: bool, scale: float = 1.0, sizes: tuple[int, ...] = (1, 1_000, 100_000)
) -> dict[str, float]:
    """``sizes``: numbers of known conversations for the hint index runs (smallest first)."""
    messages = scaled(2_000 if quick else 10_000, scale, 10)
    repeats = scaled(7 if quick else 15, scale, 1)
    inbox_count = scaled(100 if quick else 500, scale, 2)

    alice, bob, cid = _pair()
    template = bob.conversation(cid).to_state()
    payloads = [
        alice.send(cid, Content.text(f"message {i:06d} " + "x" * 64)).payload
        for i in range(messages)
    ]
    # Envelopes of a conversation between two other clients: NotForMe for every receiver below.
    carol, _dave, other = _pair()
    foreign = [carol.send(other, Content.text("y" * 80)).payload for _ in range(messages)]

    small, large = min(sizes), max(sizes)
    receivers: dict[int, Session] = {}
    fillers = filler_states(large - 1, template)
    for size in sizes:
        session = Session(bob.identity)
        session.restore(fillers[: size - 1])
        session.add_conversation(PrivateV1.from_state(template))
        receivers[size] = session
    del fillers

    # Readable: each run decrypts the whole stream from a fresh copy of bob's state.
    def readable(size: int) -> Callable[[], int]:
        session = receivers[size]

        def go() -> int:
            session.add_conversation(PrivateV1.from_state(template))
            classify = session.classify
            for item in payloads:
                result = classify(item, PRIVATE_TOPIC)
                if result.state != "readable":  # pragma: no cover - a broken benchmark
                    raise RuntimeError(f"benchmark stream not readable: {result}")
            return len(payloads)

        return go

    # Readable inbox envelopes (invitations), each to a fresh receiver state.
    invites = [
        Session(Identity.generate()).invite(bob.identity.client_address)[1]
        for _ in range(inbox_count)
    ]

    def readable_inbox() -> int:
        session = Session(bob.identity)
        for out in invites:
            session.classify(out.payload, out.content_topic)
        return len(invites)

    runs = {
        "parse": _raw_parse(foreign),
        "floor": _floor(receivers[small], foreign),
        "parse_private": _raw_parse(payloads),
        "readable_inbox": readable_inbox,
    }
    for size in sizes:
        runs[f"notforme_{size}"] = _classify_all(receivers[size], foreign)
    for size in sizes:
        runs[f"batch_{size}"] = _classify_batches(receivers[size], foreign)
    runs["readable_small"] = readable(small)
    runs["readable_large"] = readable(large)
    loop = asyncio.new_event_loop()
    try:
        runs["identities_2"] = _client_receive(loop, 2, foreign)
        runs["identities_1k"] = _client_receive(loop, 1_000, foreign)
        rates = interleaved(runs, repeats=repeats)
    finally:
        loop.close()

    out = {
        "parse_per_s": rates["parse"],
        "classify_floor_per_s": rates["floor"],
        "classify_notforme_per_s": rates[f"notforme_{small}"],
        "classify_notforme_vs_parse": rates[f"notforme_{small}"] / rates["parse"],
        "classify_notforme_vs_floor": rates[f"notforme_{small}"] / rates["floor"],
        "classify_floor_vs_parse": rates["floor"] / rates["parse"],
        "parse_us": 1e6 / rates["parse"],
        "classify_notforme_us": 1e6 / rates[f"notforme_{small}"],
    }
    for size in sizes:
        if size != small:
            label = _label(size)
            out[f"classify_notforme_{label}_per_s"] = rates[f"notforme_{size}"]
            out[f"hints_{label}_vs_1"] = rates[f"notforme_{size}"] / rates[f"notforme_{small}"]
    # batched: the same envelopes through classify_many, 100 at a time; each ratio against the
    # batched run with one conversation (like for like: both save the per-call overhead)
    out["classify_notforme_batch_per_s"] = rates[f"batch_{small}"]
    out["classify_notforme_batch_vs_parse"] = rates[f"batch_{small}"] / rates["parse"]
    out["classify_notforme_batch_us"] = 1e6 / rates[f"batch_{small}"]
    for size in sizes:
        if size != small:
            label = _label(size)
            out[f"classify_notforme_batch_{label}_per_s"] = rates[f"batch_{size}"]
            out[f"hints_batch_{label}_vs_1"] = rates[f"batch_{size}"] / rates[f"batch_{small}"]
    out.update(
        {
            "classify_readable_private_per_s": rates["readable_small"],
            "classify_readable_private_vs_parse": rates["readable_small"] / rates["parse_private"],
            f"classify_readable_private_{_label(large)}_per_s": rates["readable_large"],
            f"readable_hints_{_label(large)}_vs_1": rates["readable_large"]
            / rates["readable_small"],
            "classify_readable_inbox_per_s": rates["readable_inbox"],
            "classify_readable_inbox_vs_parse": rates["readable_inbox"] / rates["parse"],
            "client_receive_2_identities_per_s": rates["identities_2"],
            "client_receive_1k_identities_per_s": rates["identities_1k"],
            "identities_1k_vs_2": rates["identities_1k"] / rates["identities_2"],
        }
    )
    return out


def _label(size: int) -> str:
    return f"{size // 1000}k" if size >= 1000 else str(size)
