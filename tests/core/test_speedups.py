"""The native hint index and NotForMe fast path (umbra_waku/_speedups.c) against their pure-Python
twin (umbra_waku/_speedups_py.py) and against the full classification path.

- the extension must be built in CI (nothing may silently fall back there);
- HintIndex: a multiset of (fingerprint, owner), with collisions, deletions, rebuilds, many
  entries, parking notices and the garbage collector;
- the envelope scanner: never accepts what protobuf's parser refuses or reads differently, and
  accepts every envelope umbra-waku writes;
- classification: the fast path, the twin and the full path give the same answers, in lockstep
  on sessions that change as they read.
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import sys
import weakref
from collections import Counter
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from umbra_waku import Identity, Session, _speedups_py, hints
from umbra_waku._proto.umbra_envelope_pb2 import EncryptedBytes, UmbraEnvelopeV1
from umbra_waku.conversations.private import PRIVATE_TOPIC, PrivateV1
from umbra_waku.frames import BadlyFormed, Classification, NotForMe, Readable
from umbra_waku.hints import ParkingLot, fingerprint, private_fingerprints, private_hint
from umbra_waku.session import REPLAY_MEMORY

from .helpers import Clock, make_pair

try:
    from umbra_waku import _speedups as native
except ImportError:  # pragma: no cover - checked by test_the_extension_is_built_in_ci
    native = None  # type: ignore[assignment]

IMPLEMENTATIONS = [
    pytest.param(_speedups_py, id="python"),
    pytest.param(native, id="native", marks=pytest.mark.skipif(native is None, reason="not built")),
]

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_the_extension_is_built_in_ci() -> None:
    """In CI nothing may silently fall back to the pure-Python twin."""
    if os.environ.get("CI") != "true":  # pragma: no cover
        if native is None:
            pytest.skip("umbra_waku._speedups is not built (no C compiler?): the Python twin runs")
        if os.environ.get("UMBRA_WAKU_PURE_PYTHON") == "1":
            pytest.skip("UMBRA_WAKU_PURE_PYTHON=1: the Python twin runs")
    assert native is not None, "CI: umbra_waku._speedups was not built (pip install -e .)"
    assert native.NATIVE is True
    assert hints.NATIVE is True
    assert hints.impl is native
    assert type(Session(Identity.generate()).classify) is native.FastPath


# ---- HintIndex ---------------------------------------------------------------------------------


class Owner:
    """An owner object (identity matters, as for conversations)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_index_is_a_multiset(impl: ModuleType) -> None:
    index = impl.HintIndex()
    a, b = Owner("a"), Owner("b")
    index.add(7, a)
    index.add(7, a)  # the same entry twice: kept twice
    index.add(7, b)  # another owner under the same fingerprint: a collision
    assert len(index) == 3
    assert 7 in index
    assert Counter(index.owners(7)) == Counter({a: 2, b: 1})
    assert index.remove(7, a)
    assert Counter(index.owners(7)) == Counter({a: 1, b: 1})
    assert not index.remove(7, Owner("a"))  # owners are told apart by identity, not by name
    assert not index.remove(8, a)
    assert index.remove(7, a)
    assert not index.remove(7, a)
    assert index.owners(7) == (b,)
    assert index.remove(7, b)
    assert len(index) == 0
    assert 7 not in index
    assert index.owners(7) == ()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_fingerprints_0_and_1_share_entries_with_2_and_3(impl: ModuleType) -> None:
    """0 and 1 mark free slots natively: both implementations map them to 2 and 3."""
    index = impl.HintIndex()
    zero, two = Owner("zero"), Owner("two")
    index.add(0, zero)
    index.add(2, two)
    assert set(index.owners(0)) == set(index.owners(2)) == {zero, two}
    index.add(1, zero)
    assert index.owners(3) == (zero,)
    assert index.remove(0, zero)
    assert index.remove(3, zero)
    assert index.owners(2) == (two,)
    assert 2**64 - 1 not in index
    index.add(2**64 - 1, two)
    assert index.owners(2**64 - 1) == (two,)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_index_refuses_what_is_not_a_fingerprint(impl: ModuleType) -> None:
    index = impl.HintIndex()
    for bad in (-1, 2**64):
        with pytest.raises(OverflowError):
            index.add(bad, "x")
        with pytest.raises(OverflowError):
            index.owners(bad)
        assert bad not in index
    with pytest.raises(TypeError):
        index.add("7", "x")
    with pytest.raises(ValueError, match="multiple of 8"):
        index.add_packed(b"\x00" * 9, "x")
    assert "7" not in index
    assert len(index) == 0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_packed_fingerprints(impl: ModuleType) -> None:
    index = impl.HintIndex()
    owner = Owner("o")
    key = bytes(range(32))
    packed = private_fingerprints(key, 10, 8)
    assert len(packed) == 64
    index.add_packed(packed, owner)
    assert len(index) == 8
    for counter in range(10, 18):
        fp = fingerprint(private_hint(key, counter))
        assert fp is not None
        assert index.owners(fp) == (owner,)
    assert index.remove_packed(packed[:16], owner) == 2
    assert index.remove_packed(packed[:16], owner) == 0
    assert len(index) == 6
    index.clear()
    assert len(index) == 0
    assert index.owners(int.from_bytes(packed[16:24], "big")) == ()


def test_native_index_rebuilds_and_keeps_every_entry() -> None:
    if native is None:  # pragma: no cover
        pytest.skip("not built")
    rng = random.Random(1)
    index = native.HintIndex()
    twin: _speedups_py.HintIndex[Owner] = _speedups_py.HintIndex()
    owners = [Owner(f"o{i}") for i in range(50)]
    live: list[tuple[int, Owner]] = []
    capacities = set()
    for step in range(60_000):
        if live and rng.random() < 0.45:
            fp, owner = live.pop(rng.randrange(len(live)))
            assert index.remove(fp, owner)
            assert twin.remove(fp, owner)
        else:
            # every 8th fingerprint shares its top 32 bits (its home slot) with an earlier one,
            # every 16th repeats one: long probe chains and duplicates
            if live and step % 8 == 0:
                fp = (live[-1][0] & ~0xFFFFFFFF) | rng.getrandbits(32)
            elif live and step % 16 == 1:
                fp = live[-1][0]
            else:
                fp = rng.getrandbits(64)
            owner = rng.choice(owners)
            index.add(fp, owner)
            twin.add(fp, owner)
            live.append((fp, owner))
        capacities.add(index.capacity)
        if step % 5_000 == 0:
            assert index.tombstones >= 0
            assert len(index) * 4 <= index.capacity * 3  # the load stays under 3/4
    assert len(index) == len(twin) == len(live)
    for fp, _ in live:
        assert fp in index
        assert Counter(index.owners(fp)) == Counter(twin.owners(fp))
    assert len(capacities) > 5  # it grew (and shrank) through several rebuilds
    for fp, owner in live:
        assert index.remove(fp, owner)
    assert len(index) == 0
    assert index.capacity <= 64  # shrunk back
    assert not any(fp in index for fp, _ in live)


def test_native_index_absent_lookups_pass_the_filter_rarely() -> None:
    """Many entries (as with 100,000 conversations, scaled down): absent fingerprints are
    answered, present ones all found, after churn too (the filter keeps stale bits)."""
    if native is None:  # pragma: no cover
        pytest.skip("not built")
    rng = random.Random(2)
    index = native.HintIndex()
    owner = Owner("many")
    packed = rng.randbytes(8 * 200_000)
    index.add_packed(packed, owner)
    assert len(index) == 200_000
    present = [int.from_bytes(packed[i : i + 8], "big") for i in range(0, len(packed), 8)]
    assert all(fp in index for fp in present[::97])
    absent = [rng.getrandbits(64) for _ in range(20_000)]
    assert sum(fp in index for fp in absent) == 0  # 2**-64 each
    assert index.remove_packed(packed[: 8 * 150_000], owner) == 150_000
    assert all(fp in index for fp in present[150_000::13])
    assert not any(fp in index for fp in present[:150_000:13])


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_index_tells_the_parking_lot(impl: ModuleType) -> None:
    noticed: list[int] = []

    class Lot:
        def notice(self, fp: int) -> None:
            noticed.append(fp)

    index = impl.HintIndex(Lot())
    index.add(0, "x")
    index.add_packed((5).to_bytes(8, "big") + (6).to_bytes(8, "big"), "x")
    assert noticed == [0, 5, 6]  # the fingerprints as given, before the 0/1 mapping
    index.parking = None
    index.add(9, "x")
    assert noticed == [0, 5, 6]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_index_cycles_are_collected(impl: ModuleType) -> None:
    """A conversation holds its index and the index holds the conversation: the collector must
    see through the native table (tp_traverse / tp_clear)."""

    class Conversation:
        pass

    conversation = Conversation()
    index = impl.HintIndex()
    conversation.index = index  # type: ignore[attr-defined]
    index.add(42, conversation)
    index.add(43, conversation)
    dead = weakref.ref(conversation)
    del conversation, index
    gc.collect()
    assert dead() is None


def test_random_operations_agree_between_the_implementations() -> None:
    if native is None:  # pragma: no cover
        pytest.skip("not built")
    rng = random.Random(3)
    owners = [Owner(str(i)) for i in range(4)]
    indexes = [native.HintIndex(), _speedups_py.HintIndex()]
    for _ in range(5_000):
        fp = rng.choice([0, 1, 2, 3, rng.getrandbits(8), rng.getrandbits(64)])
        owner = rng.choice(owners)
        if rng.random() < 0.5:
            for index in indexes:
                index.add(fp, owner)
        else:
            assert len({index.remove(fp, owner) for index in indexes}) == 1
        assert len({len(index) for index in indexes}) == 1
        assert Counter(indexes[0].owners(fp)) == Counter(indexes[1].owners(fp))


def _tagged(index: Any, fps: list[int]) -> Counter[tuple[int, Any]]:
    """(fingerprint, owner) -> entries, over the distinct fingerprints (0 and 1 are 2 and 3)."""
    keys = {_speedups_py._normalise(fp) for fp in fps}
    return Counter((fp, owner) for fp in keys for owner in index.owners(fp))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_mirror_holds_one_tagged_entry_per_entry(impl: ModuleType) -> None:
    """Several indexes mirrored into one router: it holds (fingerprint, tag) once per entry of
    each, through adds, removals, clear and unmirroring (a multiset, like the index)."""
    router = impl.HintIndex()
    a, b = impl.HintIndex(), impl.HintIndex()
    x, y = Owner("x"), Owner("y")
    a.add(5, x)
    a.add(5, y)
    a.mirror_to(router, "A")  # what a already holds goes in at once
    b.mirror_to(router, "B")
    b.add_packed((5).to_bytes(8, "big") + (7).to_bytes(8, "big"), x)
    fps = [5, 7]
    assert _tagged(router, fps) == Counter({(5, "A"): 2, (5, "B"): 1, (7, "B"): 1})
    assert a.remove(5, x)
    assert not a.remove(7, x)
    assert _tagged(router, fps) == Counter({(5, "A"): 1, (5, "B"): 1, (7, "B"): 1})
    assert b.remove_packed((7).to_bytes(8, "big"), x) == 1
    assert _tagged(router, fps) == Counter({(5, "A"): 1, (5, "B"): 1})
    b.clear()
    assert _tagged(router, fps) == Counter({(5, "A"): 1})
    assert len(router) == 1
    a.mirror_to(None, None)
    assert len(router) == 0
    assert a.owners(5) == (y,)
    a.add(8, x)  # no mirror any more
    assert len(router) == 0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_mirrors_do_not_chain(impl: ModuleType) -> None:
    router, a, other = impl.HintIndex(), impl.HintIndex(), impl.HintIndex()
    a.mirror_to(router, "A")
    for source, target in ((a, a), (other, a), (router, other)):
        with pytest.raises(ValueError, match="chain"):
            source.mirror_to(target, "t")
    with pytest.raises(TypeError):
        other.mirror_to({}, "t")


def test_a_collected_index_leaves_its_mirror() -> None:
    """Natively an index that is freed (a cycle collected, too) takes its entries out of the
    mirror; Session detaches explicitly (use_router(None)), so the twin needs no finaliser."""
    if native is None:  # pragma: no cover
        pytest.skip("not built")
    router = native.HintIndex()
    index = native.HintIndex()
    index.mirror_to(router, "A")
    index.add(11, index)  # a cycle: only the collector frees it
    index.add(12, "plain")
    assert len(router) == 2
    del index
    gc.collect()
    assert len(router) == 0


def test_random_mirrored_operations_agree_between_the_implementations() -> None:
    if native is None:  # pragma: no cover
        pytest.skip("not built")
    rng = random.Random(5)
    owners = [Owner(str(i)) for i in range(3)]
    worlds = []
    for impl in (native, _speedups_py):
        router = impl.HintIndex()
        sources = [impl.HintIndex() for _ in range(3)]
        for k, source in enumerate(sources):
            source.mirror_to(router, f"s{k}")
        worlds.append((router, sources))
    fps: list[int] = []
    for step in range(4_000):
        fp = rng.choice([0, 1, 2, rng.getrandbits(6), rng.getrandbits(64)])
        fps.append(fp)
        k, owner, action = rng.randrange(3), rng.choice(owners), rng.random()
        for router, sources in worlds:
            if action < 0.55:
                sources[k].add(fp, owner)
            elif action < 0.6:
                sources[k].add_packed(fp.to_bytes(8, "big") * 2, owner)
            elif action < 0.98:
                sources[k].remove(fp, owner)
            elif action < 0.99:
                sources[k].clear()
            else:  # leave and come back: the entries go out and in again
                sources[k].mirror_to(None, None)
                sources[k].mirror_to(router, f"s{k}")
        if step % 50 == 0:
            tagged = [_tagged(router, fps) for router, _ in worlds]
            assert tagged[0] == tagged[1]
            sources = worlds[0][1]
            expected: Counter[tuple[int, Any]] = Counter()
            for k, source in enumerate(sources):
                for f in {_speedups_py._normalise(f) for f in fps}:
                    expected[f, f"s{k}"] += len(source.owners(f))
            assert tagged[0] == +expected
            assert len(worlds[0][0]) == len(worlds[1][0]) == sum(len(s) for s in sources)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_route_names_the_owners_of_envelopes_the_scanner_is_sure_of(impl: ModuleType) -> None:
    pair = make_pair()
    envelope = pair.a2b("hello").payload
    hint_value, _ = impl.scan_envelope(envelope)
    fp = fingerprint(hint_value)
    assert fp is not None
    router = impl.HintIndex()
    router.add(fp, "bob")
    router.add(fp, "carol")
    foreign = make_pair().a2b("x").payload
    payloads: list[Any] = [envelope, foreign, envelope[:-1], bytearray(envelope), b"", envelope]
    assert router.route(payloads, len(envelope)) == [
        ("bob", "carol"),
        (),  # sure of it, and nobody expects it
        None,  # truncated: not sure
        None,  # not bytes: not the fast path's
        None,
        ("bob", "carol"),
    ]
    assert router.route([envelope], len(envelope) - 1) == [None]  # larger than a message
    with pytest.raises(TypeError):
        router.route(envelope, 10)


# ---- the hint function ---------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@SETTINGS
@given(key=st.binary(min_size=32, max_size=32), counter=st.integers(0, 2**64 - 1))
@example(key=bytes(32), counter=0)
@example(key=b"\xff" * 32, counter=2**64 - 1)
def test_private_hints_are_keyed_blake2s(impl: ModuleType, key: bytes, counter: int) -> None:
    expected = hashlib.blake2s(counter.to_bytes(8, "big"), key=key)
    assert impl.private_hint(key, counter) == expected.hexdigest()
    count = min(3, 2**64 - counter)
    packed = impl.private_fingerprints(key, counter, count)
    assert packed == b"".join(
        hashlib.blake2s((counter + i).to_bytes(8, "big"), key=key).digest()[:8]
        for i in range(count)
    )


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_private_hint_arguments(impl: ModuleType) -> None:
    for bad_key in (b"", bytes(31), bytes(33), bytearray(32), "k" * 32):
        with pytest.raises(ValueError, match="32 bytes"):
            impl.private_hint(bad_key, 0)
        with pytest.raises(ValueError, match="32 bytes"):
            impl.private_fingerprints(bad_key, 0, 1)
    for bad_counter in (-1, 2**64):
        with pytest.raises(OverflowError):
            impl.private_hint(bytes(32), bad_counter)
    with pytest.raises(OverflowError):
        impl.private_fingerprints(bytes(32), 2**64 - 1, 2)
    with pytest.raises(ValueError, match="count"):
        impl.private_fingerprints(bytes(32), 0, -1)
    assert impl.private_fingerprints(bytes(32), 0, 0) == b""


# ---- fingerprints and the parking lot ------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@SETTINGS
@given(text=st.text(max_size=70) | st.text("0123456789abcdefABCDEF", min_size=64, max_size=64))
@example(text="0" * 64)
@example(text="f" * 64)
@example(text="A" + "0" * 63)
@example(text="é" * 64)
def test_fingerprint(impl: ModuleType, text: str) -> None:
    fp = impl.fingerprint(text)
    lower_hex = len(text) == 64 and all(c in "0123456789abcdef" for c in text)
    assert fp == (int(text[:16], 16) if lower_hex else None)


def test_fingerprint_refuses_bytes() -> None:
    for impl in (native, _speedups_py):
        if impl is not None:
            with pytest.raises(TypeError):
                impl.fingerprint(b"0" * 64)


# ---- the scanner ---------------------------------------------------------------------------------


def _upb(data: bytes) -> tuple[str, int] | None:
    """What protobuf reads, when it reads the shape the scanner is about."""
    try:
        envelope = UmbraEnvelopeV1.FromString(data)
    except Exception:
        return None
    if not envelope.HasField("encrypted_bytes"):
        return None
    return envelope.conversation_hint, envelope.salt


def check_scanner(data: bytes) -> tuple[str, int] | None:
    """The native scanner and the twin agree, and accept nothing protobuf refuses or reads
    otherwise."""
    twin = _speedups_py.scan_envelope(data)
    if native is not None:
        assert native.scan_envelope(data) == twin
    if twin is not None:
        assert _upb(data) == twin, data
        assert len(twin[0]) == 64
    return twin


def _seeds() -> list[bytes]:
    pair = make_pair()
    out = [pair.invite.payload]
    out += [pair.a2b(f"m{i}" * i).payload for i in range(3)]
    out += [pair.b2a("reply").payload]
    return out


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """Real envelopes, mutated: flipped bytes, cuts, insertions, duplicated fields."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.integers(0, 4))
        if action == 0 and data:
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif action == 1:
            data = data[: draw(st.integers(0, len(data)))]
        elif action == 2:
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(max_size=6))
        elif action == 3:
            data += draw(st.sampled_from(SEEDS))[: draw(st.integers(0, 90))]
        elif data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.sampled_from([0x00, 0x08, 0x0A, 0x0B, 0x10, 0x12, 0x52, 0x80, 0xFF]))
    return bytes(data)


HEX = "0123456789abcdef"


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    """Envelopes built field by field: valid ones in every variant, and near misses (a hint of
    another length or alphabet, a salt varint padded or too large, fields repeated or swapped,
    unknown fields, sub-messages with extra or repeated fields)."""

    def varint(value: int, pad: int = 0) -> bytes:
        out = bytearray()
        while True:
            byte = value & 0x7F
            value >>= 7
            if value or pad:
                out.append(byte | 0x80)
            else:
                out.append(byte)
                break
            if not value:
                pad -= 1
                if pad == 0:
                    out.append(0)
                    break
        return bytes(out)

    def field(number: int, wire_type: int, body: bytes | int, pad: int = 0) -> bytes:
        tag = varint(number << 3 | wire_type)
        if wire_type == 0:
            assert isinstance(body, int)
            return tag + varint(body, pad)
        assert isinstance(body, bytes)
        return tag + varint(len(body), pad) + body

    # mostly valid outer envelopes, so that the sub-messages' rules get exercised
    hint_chars = draw(st.sampled_from([HEX] * 6 + [HEX.upper(), HEX + "g", "0"]))
    hint_length = draw(st.sampled_from([64] * 8 + [63, 65, 0]))
    hint = "".join(draw(st.sampled_from(hint_chars)) for _ in range(hint_length))
    salt = draw(st.sampled_from([0, 1, 127, 128, 2**32 - 1, 2**32, 2**35 - 1]))
    pad = draw(st.sampled_from([0, 0, 0, 1, 3]))

    members = []
    for number, sub_fields in ((1, 0), (2, 1), (3, 3), (4, 2)):
        if sub_fields == 0:
            members.append(field(1, 2, draw(st.binary(max_size=40))))
            continue
        body = b""
        for sub in draw(st.lists(st.integers(1, sub_fields + 1), max_size=4)):
            wire_type = draw(st.sampled_from([2, 2, 2, 0]))
            body += field(sub, wire_type, sub if wire_type == 0 else b"x" * sub)
        members.append(field(number, 2, body))
    chosen = draw(
        st.sampled_from([1, 1, 1, 1, 0, 2]).flatmap(
            lambda n: st.lists(st.sampled_from(members), min_size=n, max_size=n)
        )
    )
    encrypted = b"".join(chosen)

    parts = [
        field(1, 2, hint.encode()),
        field(2, 0, salt, pad) if salt or draw(st.booleans()) else b"",
        field(10, 2, encrypted),
    ]
    extra = draw(
        st.sampled_from([None] * 6 + [field(3, 0, 5), field(1, 2, hint.encode()), b"\x00"])
    )
    if extra is not None:
        parts.insert(draw(st.integers(0, len(parts))), extra)
    if draw(st.integers(0, 5)) == 0:
        parts = draw(st.permutations(parts))
    return b"".join(parts)


@SETTINGS
@given(st.binary(max_size=300) | mutated() | structured())
def test_scanner_is_a_sound_subset_of_protobuf(data: bytes) -> None:
    check_scanner(data)


def test_scanner_accepts_every_envelope_umbra_waku_writes() -> None:
    """It is not vacuous: the envelopes umbra-waku seals (and their variants) pass it."""
    for data in SEEDS:
        scanned = check_scanner(data)
        assert scanned is not None
        envelope = UmbraEnvelopeV1.FromString(data)
        assert scanned == (envelope.conversation_hint, envelope.salt)
    hint = "ab" * 32
    for variant in ("encrypted_bytes", "plaintext", "ecies", "ratchet"):
        encrypted = EncryptedBytes()
        if variant == "encrypted_bytes":
            encrypted.encrypted_bytes = b"\x01\x02"
        else:
            getattr(encrypted, variant).SetInParent()
        for salt in (0, 1, 2**32 - 1):
            envelope = UmbraEnvelopeV1(conversation_hint=hint, salt=salt)
            envelope.encrypted_bytes.CopyFrom(encrypted)
            assert check_scanner(envelope.SerializeToString()) == (hint, salt)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x0a\x40" + b"a" * 64,  # no encrypted_bytes
        b"\x0a\x40" + b"a" * 64 + b"\x52\x00",  # empty encrypted_bytes: left to the full path
        b"\x0a\x40" + b"a" * 64 + b"\x10\x80\x00\x52\x02\x0a\x00",  # salt varint padded
        b"\x0a\x40" + b"a" * 64 + b"\x10\x80\x80\x80\x80\x10\x52\x02\x0a\x00",  # salt >= 2**32
        b"\x0a\x40" + b"a" * 63 + b"A\x52\x02\x0a\x00",  # upper case
        b"\x52\x02\x0a\x00\x0a\x40" + b"a" * 64,  # fields out of order
        b"\x0a\x40" + b"a" * 64 + b"\x52\x04\x0a\x00\x0a\x00",  # two oneof members
        b"\x0a\x40" + b"a" * 64 + b"\x52\x03\x22\x01\x08",  # Ratchet with a varint field
        b"\x0a\x40" + b"a" * 64 + b"\x52\x03\x22\x01",  # truncated sub-message
        b"\x0a\xc0\x00" + b"a" * 64 + b"\x52\x02\x0a\x00",  # hint length padded
        b"\x0a\x40" + b"a" * 64 + b"\x52\x02\x0a\x00\x18\x01",  # unknown field 3
        b"\x0a\x40" + b"a" * 64 + b"\x52\x02\x0a\x00\xfa\x01\x00",  # unknown field 31
    ],
)
def test_scanner_leaves_the_unusual_to_the_full_path(data: bytes) -> None:
    assert check_scanner(data) is None


# ---- classification: fast path, twin and full path ---------------------------------------------


def _twin_session(identity: Identity) -> Session:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hints, "impl", _speedups_py)
        session = Session(identity, clock_ms=Clock())
    assert type(session.classify) is _speedups_py.FastPath
    return session


class Lockstep:
    """The same conversations in three sessions: the default (native when built), the twin,
    and one that is only ever asked its full path (``_classify``)."""

    def __init__(self, identity: Identity, states: list[bytes]) -> None:
        self.sessions = [
            Session(identity, clock_ms=Clock()),
            _twin_session(identity),
            Session(identity, clock_ms=Clock()),
        ]
        for session in self.sessions:
            session.restore(states)
        self.classifiers: list[Callable[[bytes, str | None], Classification]] = [
            self.sessions[0].classify,
            self.sessions[1].classify,
            self.sessions[2]._classify,
        ]

    def classify(self, data: bytes, topic: str | None) -> Classification:
        for session in self.sessions[:2]:
            fast: Any = session.classify
            quick = fast.notforme(data, topic)
            if quick is not None:  # a NotForMe answer changes nothing: compare it at once
                assert quick == self.sessions[2]._classify(data, topic)
        results = [classify(data, topic) for classify in self.classifiers]
        assert results[0] == results[1] == results[2], (data, results)
        for session in self.sessions:
            assert len(session._recent_index) == len(session._recent)
        return results[0]


def _stream() -> tuple[Identity, list[bytes], list[bytes], str]:
    """Bob's identity and state, and alice's envelopes to him (a hundred, so the window moves
    and counters go missing), plus some of bob's to alice (never for bob)."""
    pair = make_pair()
    to_bob = [pair.a2b(f"a{i}").payload for i in range(100)]
    to_alice = [pair.b2a(f"b{i}").payload for i in range(5)]
    bob_state = pair.bob.conversation(pair.cid).to_state()
    return pair.bob.identity, [bob_state], to_bob + to_alice, pair.bob.identity.inbox_content_topic


STREAM = _stream()
TOPIC_CHOICES = [None, PRIVATE_TOPIC, STREAM[3], "/other/1/topic/proto"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, len(STREAM[2]) - 1),
            st.sampled_from(TOPIC_CHOICES),
            st.integers(0, 3),
            st.binary(min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_lockstep_fast_twin_and_full_paths(steps: list[tuple[int, str | None, int, bytes]]) -> None:
    """Valid envelopes in any order (so: loss, reordering, replays, the window moving), some
    mutated: every session gives the same answers, and stays the same."""
    identity, states, envelopes, _ = STREAM
    lockstep = Lockstep(identity, states)
    kinds = Counter()
    for index, topic, mutation, noise in steps:
        data = envelopes[index]
        if mutation == 1:
            data = data[: len(data) // 2]
        elif mutation == 2:
            position = noise[0] % len(data)
            data = data[:position] + bytes([data[position] ^ 0x40]) + data[position + 1 :]
        result = lockstep.classify(data, topic)
        kinds[type(result).__name__] += 1
    # the ratchets' fresh keys differ between sessions; the counters and windows must not
    for session in lockstep.sessions[1:]:
        for mine, theirs in zip(
            lockstep.sessions[0].conversations.values(), session.conversations.values(), strict=True
        ):
            assert mine.recv_next == theirs.recv_next
            assert mine.expected_counters() == theirs.expected_counters()
            assert mine._window == theirs._window
    assert sum(kinds.values()) == len(steps)


def test_lockstep_reads_a_whole_stream_out_of_order() -> None:
    """The property above is not vacuous: here everything is read, through every path."""
    identity, states, envelopes, inbox_topic = STREAM
    lockstep = Lockstep(identity, states)
    to_bob = envelopes[:100]
    order = list(range(100))
    for start in range(0, 100, 6):  # shuffled within the window of 8
        random.Random(start).shuffle(order[start : start + 6])
    kinds = Counter(type(lockstep.classify(to_bob[i], PRIVATE_TOPIC)).__name__ for i in order)
    assert kinds == Counter({"Readable": 100})
    for data in to_bob[:5]:  # replays: in the replay memory, so the fast path must not answer
        assert isinstance(lockstep.classify(data, PRIVATE_TOPIC), BadlyFormed)
    for data in envelopes[100:]:  # bob's own envelopes to alice: not for him
        assert isinstance(lockstep.classify(data, PRIVATE_TOPIC), NotForMe)
        assert isinstance(lockstep.classify(data, inbox_topic), NotForMe)
        assert isinstance(lockstep.classify(data, None), NotForMe)


def test_fast_path_answers_foreign_envelopes_itself() -> None:
    """A well-formed envelope nobody here expects, on the private topic: the fast path's own
    answer, equal to the full path's; on the inbox topic or without a topic it is not sure."""
    pair = make_pair()
    eve = Session(Identity.generate())
    fast: Any = eve.classify
    for out in (pair.a2b("x"), pair.b2a("y")):
        quick = fast.notforme(out.payload, PRIVATE_TOPIC)
        assert type(quick) is NotForMe
        assert quick == eve._classify(out.payload, PRIVATE_TOPIC)
        assert quick == eve.classify(out.payload, PRIVATE_TOPIC)
        assert quick == eve.classify(data=out.payload, content_topic=PRIVATE_TOPIC)
        assert fast.notforme(out.payload, None) is None
        assert fast.notforme(out.payload, eve.inbox.content_topic) is None
        assert fast.notforme(bytearray(out.payload), PRIVATE_TOPIC) is None
        assert eve.classify(out.payload) == quick  # the full path, same answer
    with pytest.raises(TypeError):
        eve.classify()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        eve.classify(b"", PRIVATE_TOPIC, 3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        eve.classify(b"", topic=PRIVATE_TOPIC)  # type: ignore[call-arg]


def test_a_fingerprint_collision_is_only_a_candidate() -> None:
    """A decoy registered under the fingerprint of a hint: an unknown hint with that fingerprint
    is still NotForMe (through the full path), and a real one still finds its conversation."""

    class Decoy:
        asked: list[str] = []

        def counter_of(self, conversation_hint: str, fp: int | None = None) -> int | None:
            self.asked.append(conversation_hint)
            return None

    for twin in (False, True):
        pair = make_pair()
        bob = _twin_session(pair.bob.identity) if twin else pair.bob
        if twin:
            bob.restore([pair.bob.conversation(pair.cid).to_state()])
        foreign = make_pair().a2b("not for bob").payload
        foreign_hint = UmbraEnvelopeV1.FromString(foreign).conversation_hint
        real = pair.a2b("for bob")
        real_hint = UmbraEnvelopeV1.FromString(real.payload).conversation_hint
        decoy = Decoy()
        for hint_value in (foreign_hint, real_hint):
            fp = fingerprint(hint_value)
            assert fp is not None
            bob._index.add(fp, decoy)  # type: ignore[arg-type]
        fast: Any = bob.classify
        assert fast.notforme(foreign, PRIVATE_TOPIC) is None  # a candidate: not sure
        assert bob.classify(foreign, PRIVATE_TOPIC) == NotForMe(
            foreign_hint, UmbraEnvelopeV1.FromString(foreign).salt
        )
        result = bob.classify(real.payload, PRIVATE_TOPIC)
        assert isinstance(result, Readable), result
        assert foreign_hint in decoy.asked


def test_a_same_prefix_hint_is_not_for_me() -> None:
    """An attacker's hint with the first 16 hex digits of an expected one: a fingerprint hit,
    but the whole hint does not match: NotForMe, and the conversation is untouched."""
    pair = make_pair()
    real = pair.a2b("real")
    envelope = UmbraEnvelopeV1.FromString(real.payload)
    forged = UmbraEnvelopeV1()
    forged.CopyFrom(envelope)
    last = "0" if envelope.conversation_hint[-1] != "0" else "1"
    forged.conversation_hint = envelope.conversation_hint[:-1] + last
    conversation = pair.bob.conversation(pair.cid)
    before = conversation.to_state()
    result = pair.bob.classify(forged.SerializeToString(), PRIVATE_TOPIC)
    assert result == NotForMe(forged.conversation_hint, envelope.salt)
    assert conversation.to_state() == before
    assert isinstance(pair.bob.classify(real.payload, PRIVATE_TOPIC), Readable)


def test_replay_memory_and_its_fingerprints_stay_in_step() -> None:
    pair = make_pair()
    outs = [pair.a2b(str(i)).payload for i in range(REPLAY_MEMORY + 20)]
    for data in outs:
        assert isinstance(pair.bob.classify(data, PRIVATE_TOPIC), Readable)
    bob = pair.bob
    assert len(bob._recent) == len(bob._recent_index) == REPLAY_MEMORY
    fast: Any = bob.classify
    for data in outs[-5:]:  # remembered: not sure, then replay
        assert fast.notforme(data, PRIVATE_TOPIC) is None
        assert isinstance(bob.classify(data, PRIVATE_TOPIC), BadlyFormed)
    for data in outs[:5]:  # forgotten, and their counters consumed: NotForMe
        assert type(fast.notforme(data, PRIVATE_TOPIC)) is NotForMe
        assert isinstance(bob.classify(data, PRIVATE_TOPIC), NotForMe)


def test_idle_conversation_holds_no_hint_strings() -> None:
    """What an idle conversation keeps: packed fingerprints, one bytes object for its six
    lifetime keys, no empty dicts."""
    pair = make_pair()
    conversation = PrivateV1.from_state(pair.bob.conversation(pair.cid).to_state())
    session = Session(pair.bob.identity)
    session.add_conversation(conversation)
    assert isinstance(conversation._window, bytes)
    assert len(conversation._window) == 8 * conversation.window
    assert conversation.skipped is None
    assert conversation.missing is None
    assert len(conversation._keys) == 6 * 32
    assert len(session._index) == conversation.window


def test_parking_lot_by_fingerprint() -> None:
    lot: ParkingLot[str] = ParkingLot()
    hint_value = private_hint(bytes(32), 5)
    lot.park(hint_value, "late")
    fp = fingerprint(hint_value)
    assert fp is not None
    lot.notice(fp + 1)
    assert lot.take_ready() == []
    lot.notice(fp)
    assert lot.take_ready() == ["late"]


# ---- classify_many: a batch, exactly as one call per envelope ------------------------------------


def _session_with(
    impl: ModuleType, identity: Identity, states: list[bytes], hint_window: int | None = None
) -> Session:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hints, "impl", impl)
        session = Session(identity, clock_ms=Clock(), hint_window=hint_window)
    assert type(session.classify) is impl.FastPath
    session.restore(states)
    return session


def _batch_pool() -> list[bytes]:
    """Envelopes for bob (STREAM's), invitations to his inbox, foreign envelopes, and the odd
    inputs a hostile peer sends (truncated, a hint prefix alone, nothing)."""
    identity = STREAM[0]
    invitations = [
        Session(Identity.generate()).invite(identity.client_address)[1].payload for _ in range(3)
    ]
    foreign = make_pair()
    others = [foreign.a2b(f"f{i}").payload for i in range(3)] + [foreign.invite.payload]
    hostile = [
        b"",
        b"\n@",
        b"\n@" + b"0" * 15,  # one byte short of what the prefetch peeks at
        b"\n@" + b"0" * 16,  # exactly that: peeked at, refused by the scanner
        b"\n@" + b"f" * 64,  # a hint alone, no encrypted_bytes
        STREAM[2][0][:-1],
    ]
    return STREAM[2] + invitations + others + hostile


BATCH_POOL = _batch_pool()


def _mutate(data: bytes, mutation: int, noise: bytes) -> Any:
    if mutation == 1:
        return data[: len(data) // 2]
    if mutation == 2 and data:
        position = noise[0] % len(data)
        return data[:position] + bytes([data[position] ^ 0x40]) + data[position + 1 :]
    if mutation == 3:
        return bytearray(data)  # not bytes: never the fast path's, the full path reads it
    return data


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(
        st.tuples(
            st.sampled_from(TOPIC_CHOICES),
            st.lists(
                st.tuples(
                    st.integers(0, len(BATCH_POOL) - 1),
                    st.sampled_from([0, 0, 0, 1, 2, 3]),
                    st.binary(min_size=1, max_size=4),
                ),
                max_size=40,
            ),
        ),
        min_size=1,
        max_size=4,
    )
)
@example(  # reads, a replay in the same batch, a truncated copy, foreign, an invitation
    batches=[
        (
            PRIVATE_TOPIC,
            [(0, 0, b"\0"), (1, 0, b"\0"), (0, 0, b"\0"), (2, 1, b"\0"), (101, 0, b"\0")],
        ),
        (None, [(len(STREAM[2]), 0, b"\0"), (3, 0, b"\0"), (len(STREAM[2]), 0, b"\0")]),
        (
            STREAM[3],
            [(len(STREAM[2]) + 1, 0, b"\0"), (4, 2, b"\7"), (len(BATCH_POOL) - 3, 0, b"\0")],
        ),
    ]
)
def test_classify_many_is_classify_on_each_in_turn(
    batches: list[tuple[str | None, list[tuple[int, int, bytes]]]],
) -> None:
    """Readable, replayed (within a batch and across batches), foreign, mutated and truncated
    envelopes and invitations, on any topic or none: ``classify_many`` gives what ``classify``
    gives envelope by envelope, in both implementations, and leaves the same state."""
    identity, states, _, _ = STREAM
    implementations = [_speedups_py] + ([native] if native is not None else [])
    pairs = [
        (_session_with(impl, identity, states), _session_with(impl, identity, states))
        for impl in implementations
    ]
    for topic, picks in batches:
        payloads = [_mutate(BATCH_POOL[index], mutation, noise) for index, mutation, noise in picks]
        outcomes = []
        for batched, single in pairs:
            got = batched.classify_many(payloads, topic)
            want = [single.classify(data, topic) for data in payloads]
            assert got == want, (topic, payloads)
            outcomes.append(got)
        assert all(outcome == outcomes[0] for outcome in outcomes)
    for batched, single in pairs:
        assert set(batched.conversations) == set(single.conversations)
        assert batched._recent == single._recent
        for cid, conversation in batched.conversations.items():
            assert conversation.recv_next == single.conversations[cid].recv_next
            assert conversation.expected_counters() == single.conversations[cid].expected_counters()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_batch_sees_the_state_changes_of_its_earlier_envelopes(impl: ModuleType) -> None:
    """An envelope beyond the window is NotForMe (natively: the fast path is sure of it) until
    earlier envelopes of the same batch slide the window over it; a second copy of an envelope
    read earlier in the batch is a replay. The prefetch looks ahead, the decisions do not."""
    pair = make_pair(window=4)
    state = pair.bob.conversation(pair.cid).to_state()
    bob = _session_with(impl, pair.bob.identity, [state], hint_window=4)
    stream = [pair.a2b(f"m{i}").payload for i in range(8)]
    late = stream[6]  # beyond a window of 4 until a few are read
    fast: Any = bob.classify
    assert type(fast.notforme(late, PRIVATE_TOPIC)) is NotForMe
    filler = [make_pair().a2b(f"x{i}").payload for i in range(20)]  # foreign: the fast path's
    batch = [late, *filler, stream[0], stream[1], stream[2], *filler, late, stream[0]]
    results = bob.classify_many(batch, PRIVATE_TOPIC)
    assert [type(result).__name__ for result in results] == (
        ["NotForMe"] + ["NotForMe"] * 20 + ["Readable"] * 3 + ["NotForMe"] * 20
    ) + ["Readable", "BadlyFormed"]
    assert isinstance(results[-1], BadlyFormed)
    assert results[-1].reason == "replay"
    assert isinstance(results[-2], Readable)
    assert results[-2].frame.as_text() == "m6"  # type: ignore[union-attr]
    # invitations on the inbox topic: accepted once, a replay the second time
    invitation = Session(Identity.generate()).invite(bob.identity.client_address)[1]
    first, again = bob.classify_many([invitation.payload] * 2, invitation.content_topic)
    assert isinstance(first, Readable)
    assert isinstance(again, BadlyFormed)
    assert again.reason == "replay"


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_classify_many_arguments(impl: ModuleType) -> None:
    session = _session_with(impl, Identity.generate(), [])
    foreign = [make_pair().a2b(str(i)).payload for i in range(3)]
    odd: list[Any] = [foreign[0], bytearray(foreign[1]), memoryview(foreign[2]), "text", 7, None]
    assert session.classify_many(odd, PRIVATE_TOPIC) == [
        session.classify(data, PRIVATE_TOPIC) for data in odd
    ]
    assert session.classify_many([]) == []
    assert session.classify_many(iter(foreign), PRIVATE_TOPIC) == session.classify_many(
        tuple(foreign), content_topic=PRIVATE_TOPIC
    )
    fast: Any = session.classify
    assert fast.many(payloads=foreign, content_topic=PRIVATE_TOPIC) == [
        NotForMe(*check_scanner(data))
        for data in foreign  # type: ignore[misc]
    ]
    for single in (foreign[0], bytearray(b"ab"), "text", memoryview(b"ab")):
        with pytest.raises(TypeError, match="not one payload"):
            session.classify_many(single)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        session.classify_many(7)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fast.many(foreign, PRIVATE_TOPIC, "extra")
    with pytest.raises(TypeError):
        fast.many(foreign, topic=PRIVATE_TOPIC)


def test_classify_many_when_classify_was_replaced() -> None:
    """An observer wrapping ``classify`` (the demo does) sees every envelope of a batch."""
    session = Session(Identity.generate())
    seen: list[bytes] = []
    original = session.classify

    def watching(data: bytes, content_topic: str | None = None) -> Classification:
        seen.append(data)
        return original(data, content_topic)

    session.classify = watching
    foreign = [make_pair().a2b(str(i)).payload for i in range(3)]
    assert session.classify_many(foreign, PRIVATE_TOPIC) == [
        original(data, PRIVATE_TOPIC) for data in foreign
    ]
    assert seen == foreign
    with pytest.raises(TypeError, match="not one payload"):
        session.classify_many(foreign[0])


def _bare_fast_path(impl: ModuleType, fallback: Callable[..., Any]) -> Any:
    return impl.FastPath(impl.HintIndex(), impl.HintIndex(), "/inbox", NotForMe, 1 << 20, fallback)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_many_holds_its_items_when_the_fallback_changes_the_list(impl: ModuleType) -> None:
    """A fallback that empties, refills and drops the caller's list: the batch is the items as
    they were when the call began, each alive until its turn."""
    payloads: list[Any] = [bytearray(b"a%d" % i) for i in range(40)]
    expected = [bytes(item) for item in payloads]
    seen: list[bytes] = []

    def fallback(data: Any, content_topic: Any) -> str:
        seen.append(bytes(data))
        payloads.clear()
        payloads.extend([bytearray(b"intruder")] * 3)
        return "full"

    fast = _bare_fast_path(impl, fallback)
    assert fast.many(payloads, "/topic") == ["full"] * 40
    assert seen == expected


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_many_lets_a_fallback_error_through_and_leaks_nothing(impl: ModuleType) -> None:
    foreign = make_pair().a2b("x").payload
    mine = [bytes(b"mine %d" % i) for i in range(30)]  # not the fast path's: the fallback's
    batch = [foreign] * 10 + mine
    topic = "/some/topic"
    calls: list[bytes] = []

    def fallback(data: bytes, content_topic: str | None) -> str:
        calls.append(data)
        if len(calls) == 5:
            raise ValueError("fallback failed")
        return "full"

    fast = _bare_fast_path(impl, fallback)
    before = [sys.getrefcount(item) for item in (foreign, *mine, topic)]
    for _ in range(3):
        calls.clear()
        with pytest.raises(ValueError, match="fallback failed"):
            fast.many(batch, topic)
        assert calls == mine[:5]  # in order, after the fast path answered the first ten
    del calls[:]
    gc.collect()
    assert [sys.getrefcount(item) for item in (foreign, *mine, topic)] == before


def test_native_many_prefetches_without_reading_past_the_end() -> None:
    """Batches longer than the prefetch distance, with envelopes of every length around what the
    prefetch peeks at: the same answers as one call each (run under ASan/valgrind to see more)."""
    if native is None:  # pragma: no cover
        pytest.skip("not built")
    foreign = make_pair().a2b("x").payload
    short = [foreign[:n] for n in range(0, 24)]
    batch = [*short, foreign] * 12
    session = _session_with(native, Identity.generate(), [])
    assert session.classify_many(batch, PRIVATE_TOPIC) == [
        session.classify(data, PRIVATE_TOPIC) for data in batch
    ]
