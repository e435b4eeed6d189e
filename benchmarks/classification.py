"""Classification throughput beside raw protobuf parsing of the same bytes, and the hint index
with 1, 1,000 and 100,000 known conversations.

- ``parse``: ``UmbraEnvelopeV1.FromString`` alone, the raw cost of looking at an envelope;
- ``floor``: parse plus what any NotForMe answer must do in Python (read the hint and salt, one
  dict lookup, one replay lookup, allocate the result), written inline: the best a Python
  classifier can do, to show where the rest of the gap to ``parse`` goes;
- NotForMe: envelopes of a conversation between two other clients, on the private topic;
- Readable PrivateV1: a stream of one conversation, decrypted in order (each run restarts from a
  copy of the receiver's state); Readable inbox: invitations, each accepted by a fresh receiver.

All runs are interleaved (rotating order, median of the rounds), so load drift hits them alike.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from benchmarks.common import interleaved, scaled
from umbra_waku import Content, Identity, Session
from umbra_waku._proto import umbra_frames_pb2
from umbra_waku._proto.umbra_envelope_pb2 import UmbraEnvelopeV1
from umbra_waku.conversations.private import PRIVATE_TOPIC, PrivateV1
from umbra_waku.frames import NotForMe


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
    """The least a Python NotForMe answer costs: parse, two field reads, two dict lookups, one
    length check and the result object (what Session.classify does, minus its error handling)."""
    parse = UmbraEnvelopeV1.FromString
    lookup = session._index.get
    recent = session._recent.get

    def go() -> int:
        for item in data:
            envelope = parse(item)
            conversation_hint = envelope.conversation_hint
            if lookup(conversation_hint) is None and len(conversation_hint) == 64:
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
    runs["readable_small"] = readable(small)
    runs["readable_large"] = readable(large)
    rates = interleaved(runs, repeats=repeats)

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
    out.update(
        {
            "classify_readable_private_per_s": rates["readable_small"],
            "classify_readable_private_vs_parse": rates["readable_small"] / rates["parse_private"],
            f"classify_readable_private_{_label(large)}_per_s": rates["readable_large"],
            f"readable_hints_{_label(large)}_vs_1": rates["readable_large"]
            / rates["readable_small"],
            "classify_readable_inbox_per_s": rates["readable_inbox"],
            "classify_readable_inbox_vs_parse": rates["readable_inbox"] / rates["parse"],
        }
    )
    return out


def _label(size: int) -> str:
    return f"{size // 1000}k" if size >= 1000 else str(size)
