"""Property tests of Session.classify (profile section 7): for any input it never raises, returns
exactly one of Readable / BadlyFormed / NotForMe, never an internal error, in bounded time."""

from __future__ import annotations

import random
import time
from functools import cache
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from umbra_waku import Content, Identity, Session
from umbra_waku.conversations.private import PrivateV1
from umbra_waku.frames import BadlyFormed, Classification, Readable
from umbra_waku.hints import hint, private_hint
from umbra_waku.waku import MAX_MESSAGE_BYTES

from . import wire
from .helpers import check_shape, make_pair

#: a bound on pathological behaviour, not a benchmark: one classification of any input
TIME_LIMIT_S = 0.05

SETTINGS = settings(
    max_examples=400,
    deadline=None,  # timed by hand, per classification
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@cache
def _world() -> tuple[Session, PrivateV1, list[bytes]]:
    pair = make_pair()
    # pair.invite has been read: fresh envelopes are better seeds
    envelopes = [pair.a2b(f"message {i}" * (1 + i)).payload for i in range(6)]
    alice_conv, invite = pair.alice.invite(pair.bob.identity.client_address, Content.text("again"))
    envelopes.append(invite.payload)
    envelopes.append(pair.b2a("to alice").payload)  # a valid envelope, but not for bob
    pair.alice.remove_conversation(alice_conv.conversation_id)
    return pair.bob, pair.bob.conversation(pair.cid), envelopes


def world() -> tuple[Session, list[bytes], list[str]]:
    """Bob's session (an inbox and one PrivateV1 conversation), valid envelopes (the first seven
    for him) and the hints his conversation expects now."""
    bob, conv, envelopes = _world()
    expected = [private_hint(conv.recv_hint_key, c) for c in conv.expected_counters()]
    return bob, envelopes, expected


def classify_timed(session: Session, data: bytes, topic: str | None = None) -> Classification:
    start, start_cpu = time.perf_counter(), time.thread_time()
    result = session.classify(data, topic)
    elapsed, cpu = time.perf_counter() - start, time.thread_time() - start_cpu
    check_shape(result)
    # Wall time is the bound; a machine busy with other work may stall this thread, so a slow
    # wall time fails only when the thread also spent that long on the CPU.
    assert elapsed < TIME_LIMIT_S or cpu < TIME_LIMIT_S, (
        f"{elapsed * 1000:.1f} ms ({cpu * 1000:.1f} ms CPU) for {len(data)} bytes"
    )
    if currently_in_test_context():
        reason = result.reason.split(":")[0][:40] if isinstance(result, BadlyFormed) else ""
        event(f"{type(result).__name__} {reason}".strip())
    return result


def setup_module() -> None:
    bob, _envelopes, _ = world()
    classify_timed(bob, b"warm-up")


# ---- random bytes ----


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    bob = world()[0]
    first = classify_timed(bob, data)
    assert not isinstance(first, Readable)
    second = classify_timed(bob, data)
    assert type(second) is type(first)


# ---- mutated valid envelopes ----

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
)


def mutate(data: bytes, ops: list[tuple[str, int, Any]]) -> bytes:
    buf = bytearray(data)
    for op, position, arg in ops:
        pos = position % (len(buf) + 1)
        if op == "flip" and pos < len(buf):
            buf[pos] ^= 1 << arg
        elif op == "set" and pos < len(buf):
            buf[pos] = arg
        elif op == "insert":
            buf[pos:pos] = arg
        elif op == "delete":
            del buf[pos : pos + arg]
        elif op == "truncate":
            del buf[pos:]
    return bytes(buf)


@SETTINGS
@given(st.data(), st.lists(mutation, min_size=1, max_size=6))
def test_mutated_envelopes(data: st.DataObject, ops: list[tuple[str, int, Any]]) -> None:
    bob, envelopes, _ = world()
    original = data.draw(st.sampled_from(envelopes))
    result = classify_timed(bob, mutate(original, ops))
    if isinstance(result, Readable):  # only a re-encoding of an envelope meant for bob
        assert original in envelopes[:7]


def test_every_truncation_of_every_envelope() -> None:
    bob, envelopes, _ = world()
    for envelope in envelopes:
        for cut in range(len(envelope)):
            result = classify_timed(bob, envelope[:cut])
            assert isinstance(result, BadlyFormed), (cut, result)


# ---- oversized inputs ----


@settings(max_examples=40, deadline=None)
@given(st.integers(MAX_MESSAGE_BYTES + 1, 1_100_000), st.integers(0, 2**32), st.booleans())
def test_oversized_inputs(size: int, seed: int, valid_prefix: bool) -> None:
    bob, envelopes, _ = world()
    rng = random.Random(seed)
    data = (envelopes[0] if valid_prefix else b"") + rng.randbytes(size)
    result = classify_timed(bob, data)
    assert isinstance(result, BadlyFormed)


@settings(max_examples=20, deadline=None)
@given(st.integers(MAX_MESSAGE_BYTES - 2000, MAX_MESSAGE_BYTES), st.integers(0, 2**32))
def test_large_inputs_that_match_a_hint(size: int, seed: int) -> None:
    """Envelopes near the size limit whose hint matches the inbox (anyone can compute it) or the
    conversation, so that key agreement and the AEADs run."""
    bob, _, expected_hints = world()
    rng = random.Random(seed)
    salt = rng.getrandbits(32)

    def ecies(n: int) -> bytes:
        fields: list[tuple[int, int | bytes]] = [
            (1, rng.randbytes(n)),
            (2, rng.randbytes(32)),
            (3, rng.randbytes(16)),
        ]
        return encode_fields([(3, submessage(fields))])

    def ratchet(n: int) -> bytes:
        return encode_fields([(4, submessage([(1, rng.randbytes(40)), (2, rng.randbytes(n))]))])

    for conversation_hint, body in (
        (hint(bob.inbox.conversation_id, salt), ecies),
        (rng.choice(expected_hints), ratchet),
    ):
        head = encode_fields([(1, conversation_hint.encode()), (2, salt)])
        data = head + encode_fields([(10, body(size - len(head) - 80))])
        assert MAX_MESSAGE_BYTES - 2100 < len(data) <= MAX_MESSAGE_BYTES
        result = classify_timed(bob, data)
        assert isinstance(result, BadlyFormed)
        assert result.conversation_id is not None  # it did reach decryption


def test_largest_valid_envelopes_in_bounded_time() -> None:
    pair = make_pair()
    big = Content(bytes(MAX_MESSAGE_BYTES - 1000), "big", 0)
    out = pair.a2b("warm-up")
    classify_timed(pair.bob, out.payload)
    out = pair.alice.send(pair.cid, big)
    flipped = bytearray(out.payload)
    flipped[-1] ^= 1  # the frame's tag: the full AEAD runs, then fails
    assert isinstance(classify_timed(pair.bob, bytes(flipped)), BadlyFormed)
    result = classify_timed(pair.bob, out.payload)
    assert isinstance(result, Readable)
    assert result.frame == Content(big.data, "big", 0, result.frame.sent_at_ms)  # type: ignore[union-attr]
    carol = Session(Identity.generate())
    _, invite = pair.alice.invite(carol.identity.client_address, big)
    assert len(invite.payload) > MAX_MESSAGE_BYTES - 1000
    result = classify_timed(carol, invite.payload)
    assert isinstance(result, Readable)


# ---- protobuf-shaped inputs ----


varint = wire.varint
encode_fields = wire.encode
submessage = wire.encode


field_numbers = st.one_of(st.sampled_from([1, 2, 3, 4, 10, 11, 31]), st.integers(1, 2**29 - 1))
scalar = st.one_of(
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1]),
)
raw_field = st.one_of(
    st.tuples(field_numbers, st.sampled_from([0]), scalar),
    st.tuples(field_numbers, st.sampled_from([1]), st.binary(min_size=8, max_size=8)),
    st.tuples(field_numbers, st.sampled_from([5]), st.binary(min_size=4, max_size=4)),
    st.tuples(field_numbers, st.sampled_from([2]), st.binary(max_size=64)),
    st.tuples(field_numbers, st.sampled_from([3, 4, 6, 7]), st.binary(max_size=8)),
)


def encode_raw(fields: list[tuple[int, int, Any]]) -> bytes:
    out = bytearray()
    for number, wire_type, value in fields:
        out += varint(number << 3 | wire_type)
        if wire_type == 0:
            out += varint(value)
        elif wire_type == 2:
            out += varint(len(value)) + value
        else:
            out += value
    return bytes(out)


messages = st.recursive(
    st.lists(raw_field, max_size=6).map(encode_raw),
    lambda inner: st.lists(
        st.one_of(raw_field, st.tuples(field_numbers, st.just(2), inner)), max_size=6
    ).map(encode_raw),
    max_leaves=30,
)


@st.composite
def envelope_like(draw: st.DrawFn) -> bytes:
    """Mostly-valid envelope structure with interesting hints and EncryptedBytes variants."""
    bob, _, expected_hints = world()
    salt = draw(st.one_of(st.integers(0, 2**32 - 1), st.just(0)))
    hint_choice = draw(
        st.sampled_from(["inbox", "private", "random", "short", "long", "empty", "unicode"])
    )
    hint_value = {
        "inbox": hint(bob.inbox.conversation_id, salt).encode(),
        "private": draw(st.sampled_from(expected_hints)).encode(),
        "random": draw(st.binary(min_size=32, max_size=32)).hex().encode(),
        "short": b"ab" * 31,
        "long": b"ab" * 33,
        "empty": b"",
        "unicode": ("\u00e9" * 32).encode(),
    }[hint_choice]
    key32 = st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40))
    variant = draw(st.sampled_from(["ecies", "ratchet", "plaintext", "raw", "none", "junk"]))
    if variant == "ecies":
        inner = submessage(
            [(1, draw(st.binary(max_size=200))), (2, draw(key32)),
             (3, draw(st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20))))]
        )  # fmt: skip
        encrypted = encode_fields([(3, inner)])
    elif variant == "ratchet":
        inner = submessage([(1, draw(st.binary(max_size=80))), (2, draw(st.binary(max_size=200)))])
        encrypted = encode_fields([(4, inner)])
    elif variant == "plaintext":
        encrypted = encode_fields([(2, submessage([(1, draw(messages))]))])
    elif variant == "raw":
        encrypted = encode_fields([(1, draw(st.binary(max_size=200)))])
    elif variant == "none":
        encrypted = b""
    else:
        encrypted = draw(messages)
    fields: list[tuple[int, int | bytes]] = [(1, hint_value), (2, salt)]
    if draw(st.booleans()) or variant != "none":
        fields.append((10, encrypted))
    data = encode_fields(fields)
    if draw(st.booleans()):
        data += draw(messages)  # trailing unknown or repeated fields
    return data


@SETTINGS
@given(messages)
def test_protobuf_shaped_inputs(data: bytes) -> None:
    bob = world()[0]
    first = classify_timed(bob, data)
    assert not isinstance(first, Readable)
    assert type(classify_timed(bob, data)) is type(first)


@SETTINGS
@given(envelope_like(), st.sampled_from([None, "/umbra/1/private/proto", "inbox"]))
def test_envelope_shaped_inputs(data: bytes, topic: str | None) -> None:
    bob = world()[0]
    content_topic = bob.inbox.content_topic if topic == "inbox" else topic
    result = classify_timed(bob, data, content_topic)
    assert not isinstance(result, Readable)
