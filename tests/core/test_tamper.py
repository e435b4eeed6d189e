"""Flip every byte of an inbox envelope and of PrivateV1 envelopes: never Readable with other
content, and BadlyFormed except where profile section 7 says NotForMe.

The expected split, from the encoding (byte spans computed with the independent wire reader):

- inside the conversation_hint string: the hint no longer matches anything, so NotForMe, unless
  the flipped byte is no longer ASCII: then the string is not UTF-8 and the envelope does not
  decode (BadlyFormed);
- inside the salt field of an *inbox* envelope: the inbox hint depends on the salt, so a changed
  salt makes a well-formed envelope whose hint matches nothing: NotForMe (or BadlyFormed when
  the field no longer decodes). A PrivateV1 hint does not depend on the salt, but its AEADs bind
  it: BadlyFormed;
- anywhere else: BadlyFormed.

One exception is inherent to protobuf: the salt is a uint32, and a varint's bits above 32 are
dropped when it is parsed, so flipping bits 4-6 of the fifth byte of the salt's varint gives
*the same envelope* (same hint, salt and encrypted_bytes). That result reads as the original
would, and replay detection (by hint) still stops it being delivered twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from google.protobuf.message import DecodeError

from umbra_waku import Content, Identity, Session
from umbra_waku._proto import umbra_envelope_pb2
from umbra_waku.frames import BadlyFormed, Classification, NotForMe, Readable

from . import wire
from .helpers import check_shape, make_pair

MASKS = (0x01, 0x20, 0x80, 0xFF)


def _decoded(data: bytes) -> tuple[str, int, bytes | None] | None:
    try:
        env = umbra_envelope_pb2.UmbraEnvelopeV1.FromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return None
    eb = env.encrypted_bytes.SerializeToString() if env.HasField("encrypted_bytes") else None
    return env.conversation_hint, env.salt, eb


def _sweep(
    original: bytes,
    classify: Callable[[bytes], Classification],
    *,
    inbox: bool,
) -> Counter[str]:
    spans = wire.spans(original)
    _, hint_start, hint_end = spans[1]
    salt_start, _, salt_end = spans[2]
    assert hint_end - hint_start == 64
    assert spans[1][0] == 0
    assert salt_start == hint_end
    assert spans[10][0] == salt_end
    before = _decoded(original)
    assert before is not None
    tally: Counter[str] = Counter()
    for i in range(len(original)):
        for mask in MASKS:
            mutated = bytearray(original)
            mutated[i] ^= mask
            result: Classification = classify(bytes(mutated))
            check_shape(result)
            after = _decoded(bytes(mutated))
            where = (
                "hint"
                if hint_start <= i < hint_end
                else "salt"
                if salt_start <= i < salt_end
                else "other"
            )
            kind = type(result).__name__
            tally[f"{where}:{kind}"] += 1
            context = (i, hex(mask), where, result)
            if after == before:  # a non-canonical encoding of the very same envelope
                assert where == "salt", context
                assert i == salt_end - 1, context
                assert isinstance(result, BadlyFormed), context
                assert result.reason == "non-canonical envelope encoding", context
                continue
            assert not isinstance(result, Readable), context
            if where == "hint":
                if mutated[i] < 0x80:
                    assert isinstance(result, NotForMe), context
                else:  # no longer UTF-8: not a decodable envelope
                    assert isinstance(result, BadlyFormed), context
                    assert after is None
            elif where == "salt" and inbox and after is not None and after[0] == before[0]:
                # the envelope decodes with the same hint and another salt: matches nothing
                assert after[1] != before[1] or after[2] != before[2]
                if after[1] != before[1] and after[2] is not None:
                    assert isinstance(result, NotForMe), context
                else:
                    assert isinstance(result, BadlyFormed), context
            else:
                assert isinstance(result, BadlyFormed), context
    return tally


def test_flip_every_byte_of_an_inbox_envelope() -> None:
    bob = Identity.generate()
    alice = Session(Identity.generate())
    _, invite = alice.invite(bob.client_address, Content.text("tamper me"))

    def classify(data: bytes) -> Classification:
        return Session(bob).classify(data)

    assert isinstance(classify(invite.payload), Readable)
    tally = _sweep(invite.payload, classify, inbox=True)
    assert tally["hint:NotForMe"] > 64  # the split really happened
    assert tally["other:NotForMe"] == 0
    assert tally["other:Readable"] == tally["hint:Readable"] == 0


def test_flip_every_byte_of_private_envelopes() -> None:
    pair = make_pair()
    saved = {
        "bob": pair.bob.conversation(pair.cid).to_state(),
        "alice": pair.alice.conversation(pair.cid).to_state(),
    }
    outs = {
        "bob": [pair.a2b("first"), pair.a2b("second, with a longer body " * 3)],
        "alice": [pair.b2a("reply")],
    }
    identities = {"bob": pair.bob.identity, "alice": pair.alice.identity}
    for who, envelopes in outs.items():

        def classify(data: bytes, who: str = who) -> Classification:
            session = Session(identities[who])
            session.restore([saved[who]])
            return session.classify(data)

        for out in envelopes:
            assert isinstance(classify(out.payload), Readable)
            tally = _sweep(out.payload, classify, inbox=False)
            assert tally["hint:NotForMe"] > 64
            assert tally["salt:NotForMe"] == tally["other:NotForMe"] == 0
            assert tally["other:Readable"] == tally["hint:Readable"] == 0


def test_truncations_and_extensions_are_badly_formed() -> None:
    pair = make_pair()
    saved = pair.bob.conversation(pair.cid).to_state()
    out = pair.a2b("truncate me")
    for cut in range(len(out.payload)):
        bob = Session(pair.bob.identity)
        bob.restore([saved])
        result = bob.classify(out.payload[:cut])
        check_shape(result)
        assert isinstance(result, BadlyFormed), (cut, result)


def test_re_encodings_are_never_delivered_twice() -> None:
    """The AEADs bind the hint and salt *values*, not the envelope bytes: re-encodings of one
    envelope (an appended unknown field, an earlier duplicate of a field, a non-minimal salt
    varint) decode to the same envelope. Only the canonical encoding is Readable; the others are
    refused as non-canonical, so a relay cannot republish an envelope under another hash."""
    pair = make_pair()
    out = pair.a2b("re-encode me")
    fields = wire.fields(out.payload)
    salt_start, salt_end = fields[1][3], fields[1][4]
    salt = fields[1][2]
    assert isinstance(salt, int)
    long_salt = bytearray([0x10])  # the same uint32, as a 10-byte varint with high bits set
    for shift in range(0, 63, 7):
        long_salt.append(((salt >> shift) & 0x7F) | 0x80)
    long_salt.append(0x01)
    variants = [
        out.payload + b"\x18\x01",  # unknown field 3
        out.payload + b"\xfa\x01\x00",  # unknown field 31, empty
        b"\x0a\x40" + b"0" * 64 + out.payload,  # an earlier hint, overridden by the real one
        out.payload[:salt_start] + bytes(long_salt) + out.payload[salt_end:],
        out.payload,
    ]
    assert len(set(variants)) == len(variants)
    readable = 0
    for variant in variants:
        assert _decoded(variant) == _decoded(out.payload)
        result = pair.bob.classify(variant)
        check_shape(result)
        if isinstance(result, Readable):
            readable += 1
            assert isinstance(result.frame, Content)
            assert result.frame == Content(
                b"re-encode me", "umbra.text", 0, result.frame.sent_at_ms
            )
        else:
            assert isinstance(result, BadlyFormed), result
            assert result.reason == "non-canonical envelope encoding", result
    assert readable == 1
    assert isinstance(pair.bob.classify(out.payload), BadlyFormed)  # and now it is a replay
