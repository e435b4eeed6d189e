"""Classification throughput beside raw protobuf parsing of the same bytes, and the hint index
with 1, 1,000 and 100,000 known conversations."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from benchmarks.common import interleaved
from umbra_waku import Content, Identity, Session
from umbra_waku._proto import umbra_frames_pb2
from umbra_waku._proto.umbra_envelope_pb2 import UmbraEnvelopeV1
from umbra_waku.conversations.private import PRIVATE_TOPIC, PrivateV1


def _pair() -> tuple[Session, Session, str]:
    alice, bob = Session(Identity.generate()), Session(Identity.generate())
    conversation, invitation = alice.invite(bob.identity.client_address)
    bob.classify(invitation.payload, invitation.content_topic)
    return alice, bob, conversation.conversation_id


def _filler_states(count: int, template: bytes) -> list[bytes]:
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


def run(*, quick: bool) -> dict[str, float]:
    messages = 2_000 if quick else 10_000
    repeats = 5 if quick else 9
    sizes = (1, 1_000, 100_000)

    alice, bob, cid = _pair()
    template = bob.conversation(cid).to_state()
    stream = [
        alice.send(cid, Content.text(f"message {i:06d} " + "x" * 64)) for i in range(messages)
    ]
    payloads = [out.payload for out in stream]

    # Envelopes of a conversation between two other clients: NotForMe for every receiver below.
    carol, _dave, other = _pair()
    foreign = [carol.send(other, Content.text("y" * 80)).payload for _ in range(messages)]

    parse = UmbraEnvelopeV1.FromString

    def raw_parse(data: list[bytes]) -> Callable[[], int]:
        def go() -> int:
            for item in data:
                parse(item)
            return len(data)

        return go

    def classify_all(session: Session, data: list[bytes]) -> Callable[[], int]:
        classify = session.classify

        def go() -> int:
            for item in data:
                classify(item, PRIVATE_TOPIC)
            return len(data)

        return go

    receivers: dict[int, Session] = {}
    fillers = _filler_states(max(sizes) - 1, template)
    for size in sizes:
        session = Session(bob.identity)
        session.restore(fillers[: size - 1])
        session.add_conversation(PrivateV1.from_state(template))
        receivers[size] = session

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
    invites = []
    for _ in range(200 if quick else 1_000):
        _, out = Session(Identity.generate()).invite(bob.identity.client_address)
        invites.append(out)

    def readable_inbox() -> int:
        session = Session(bob.identity)
        for out in invites:
            session.classify(out.payload, out.content_topic)
        return len(invites)

    rates = interleaved(
        {
            "parse": raw_parse(foreign),
            "notforme_1": classify_all(receivers[1], foreign),
            "notforme_1k": classify_all(receivers[1_000], foreign),
            "notforme_100k": classify_all(receivers[100_000], foreign),
            "parse_private": raw_parse(payloads),
            "readable_1": readable(1),
            "readable_100k": readable(100_000),
            "readable_inbox": readable_inbox,
        },
        repeats=repeats,
    )
    return {
        "parse_per_s": rates["parse"],
        "classify_notforme_per_s": rates["notforme_1"],
        "classify_notforme_vs_parse": rates["notforme_1"] / rates["parse"],
        "classify_notforme_1k_per_s": rates["notforme_1k"],
        "classify_notforme_100k_per_s": rates["notforme_100k"],
        "hints_100k_vs_1": rates["notforme_100k"] / rates["notforme_1"],
        "hints_1k_vs_1": rates["notforme_1k"] / rates["notforme_1"],
        "classify_readable_private_per_s": rates["readable_1"],
        "classify_readable_private_vs_parse": rates["readable_1"] / rates["parse_private"],
        "classify_readable_private_100k_per_s": rates["readable_100k"],
        "readable_hints_100k_vs_1": rates["readable_100k"] / rates["readable_1"],
        "classify_readable_inbox_per_s": rates["readable_inbox"],
        "classify_readable_inbox_vs_parse": rates["readable_inbox"] / rates["parse"],
    }
