"""Conversation hints (profile section 5): the inbox formula and PrivateV1's unlinkable hints."""

from __future__ import annotations

import hashlib
import random

from umbra_waku import Content, Identity, Session
from umbra_waku.conversations.inbox import seal_to_inbox
from umbra_waku.conversations.private import PrivateV1
from umbra_waku.frames import NotForMe, Readable
from umbra_waku.hints import (
    HINT_LENGTH,
    HintIndex,
    ParkingLot,
    fingerprint,
    hint,
    private_hint,
)

from . import wire
from .helpers import make_pair, text_of

HEX = frozenset("0123456789abcdef")


def test_hint_formula() -> None:
    rng = random.Random(5)
    for salt in [0, 1, 0xDEADBEEF, 2**32 - 1, *(rng.getrandbits(32) for _ in range(50))]:
        cid = f"/inbox/v1/{rng.randbytes(32).hex()}"
        expected = hashlib.blake2s(salt.to_bytes(4, "big") + cid.encode("utf-8")).hexdigest()
        assert hint(cid, salt) == expected
    assert hint("/x/\u00e9", 7) == hashlib.blake2s(b"\x00\x00\x00\x07/x/\xc3\xa9").hexdigest()


def test_inbox_envelopes_carry_the_formula_hint() -> None:
    recipient = Identity.generate()
    _, frame = PrivateV1.initiate(
        Identity.generate().private_key, recipient.public_key, created_at_ms=1
    )
    cid = "/inbox/v1/" + hashlib.blake2s(recipient.client_address.encode()).hexdigest()
    seen = set()
    for _ in range(200):
        topic, envelope = seal_to_inbox(recipient.public_key, frame)
        assert topic == recipient.inbox_content_topic
        fields = wire.as_dict(envelope)
        salt = fields.get(2, 0)
        assert isinstance(salt, int)
        expected = hashlib.blake2s(salt.to_bytes(4, "big") + cid.encode()).hexdigest()
        assert fields[1] == expected.encode()
        seen.add(fields[1])
    assert len(seen) == 200  # a fresh random salt per envelope


def test_private_hint_formula() -> None:
    rng = random.Random(6)
    for counter in [0, 1, 255, 256, 2**32, 2**64 - 1, *(rng.getrandbits(40) for _ in range(50))]:
        key = rng.randbytes(32)
        expected = hashlib.blake2s(counter.to_bytes(8, "big"), key=key).hexdigest()
        assert private_hint(key, counter) == expected


def test_private_hints_never_repeat() -> None:
    pair = make_pair()
    alice_conv = pair.alice.conversation(pair.cid)
    bob_conv = pair.bob.conversation(pair.cid)
    assert alice_conv.send_hint_key == bob_conv.recv_hint_key
    assert alice_conv.recv_hint_key == bob_conv.send_hint_key
    assert alice_conv.send_hint_key != alice_conv.recv_hint_key
    hints: dict[str, list[str]] = {"a2b": [], "b2a": []}
    for i in range(1000):
        # alternate directions in runs, so the DH ratchet steps many times
        for direction, send, receiver in (
            ("a2b", pair.a2b, pair.bob),
            ("b2a", pair.b2a, pair.alice),
        ):
            if (i // 7) % 2 == (direction == "b2a"):
                out = send(f"{direction} {i}")
                fields = wire.as_dict(out.payload)
                value = fields[1]
                assert isinstance(value, bytes)
                hints[direction].append(value.decode())
                assert text_of(receiver.classify(out.payload, out.content_topic)) == (
                    f"{direction} {i}"
                )
    for direction, key in (("a2b", alice_conv.send_hint_key), ("b2a", bob_conv.send_hint_key)):
        values = hints[direction]
        assert len(values) >= 490
        assert len(set(values)) == len(values)
        assert values == [private_hint(key, n) for n in range(len(values))]
        assert all(len(v) == HINT_LENGTH and set(v) <= HEX for v in values)
    assert not set(hints["a2b"]) & set(hints["b2a"])
    inbox_hint = wire.as_dict(pair.invite.payload)[1]
    assert isinstance(inbox_hint, bytes)
    assert inbox_hint.decode() not in set(hints["a2b"]) | set(hints["b2a"])


def test_one_thousand_envelopes_one_direction() -> None:
    pair = make_pair()
    seen = set()
    for i in range(1000):
        out = pair.a2b(str(i))
        value = wire.as_dict(out.payload)[1]
        assert value not in seen
        seen.add(value)
        result = pair.bob.classify(out.payload)
        assert isinstance(result, Readable)
    assert len(seen) == 1000


def test_hint_index() -> None:
    """The basic contract; tests/core/test_speedups.py tests the table itself."""
    index: HintIndex[str] = HintIndex()
    h1 = private_hint(bytes(32), 1)
    fp = fingerprint(h1)
    assert fp is not None
    assert fp == int(h1[:16], 16)
    index.add(fp, "owner")
    assert index.owners(fp) == ("owner",)
    assert fp in index
    assert len(index) == 1
    assert index.remove(fp, "owner")
    assert not index.remove(fp, "owner")  # removing twice is harmless
    assert index.owners(fp) == ()
    assert len(index) == 0


def test_matching_is_independent_of_conversation_count() -> None:
    """Many conversations share the private topic; each envelope finds its own by hint."""
    hub = Session(Identity.generate())
    peers = []
    for _ in range(50):
        peer = Session(Identity.generate())
        conv, invite = peer.invite(hub.identity.client_address)
        assert isinstance(hub.classify(invite.payload), Readable)
        peers.append((peer, conv.conversation_id))
    for i, (peer, cid) in enumerate(peers):
        out = peer.send(cid, Content.text(f"from {i}"))
        result = hub.classify(out.payload, out.content_topic)
        assert isinstance(result, Readable)
        assert result.conversation_id == cid
        assert result.sender == peer.identity.client_address


def test_parking_lot_releases_when_a_hint_becomes_expected() -> None:
    lot: ParkingLot[str] = ParkingLot(capacity=2)
    index: HintIndex[str] = HintIndex(lot)
    h1, h2, h3 = (private_hint(bytes(32), n) for n in range(3))
    lot.park(h1, "first")
    lot.park(h2, "second")
    lot.park(h3, "third")  # over capacity: the oldest (h1) is evicted
    assert len(lot) == 2
    index.add(int(h1[:16], 16), "owner")
    assert lot.take_ready() == []
    index.add_packed(bytes.fromhex(h3[:16]), "owner")
    assert lot.take_ready() == ["third"]
    assert lot.take_ready() == []
    assert len(lot) == 1
    lot.park("h" * 64, "never expected")  # not a hint of ours: nothing to wait for
    lot.park(h2.upper(), "never expected")
    assert len(lot) == 1


def test_session_releases_parked_envelopes_as_its_window_moves() -> None:
    alice, bob = Session(Identity.generate()), Session(Identity.generate())
    lot: ParkingLot[bytes] = ParkingLot()
    bob.use_parking(lot)
    conversation, invitation = alice.invite(bob.identity.client_address)
    assert isinstance(bob.classify(invitation.payload), Readable)
    window = bob.conversation(conversation.conversation_id).window
    out = [
        alice.send(conversation.conversation_id, Content.text(f"m{i}")) for i in range(2 * window)
    ]
    for late in out[window:]:
        result = bob.classify(late.payload)
        assert isinstance(result, NotForMe)  # beyond the window
        lot.park(result.hint, late.payload)
    read = []
    for early in out[:window]:
        read.append(bob.classify(early.payload))
        for released in lot.take_ready():
            read.append(bob.classify(released))
    assert all(isinstance(r, Readable) for r in read)
    texts = [r.frame.as_text() for r in read if isinstance(r, Readable)]
    assert sorted(texts) == sorted(f"m{i}" for i in range(2 * window))
    assert len(lot) == 0
