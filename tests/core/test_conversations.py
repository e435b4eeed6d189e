"""Invitation -> PrivateV1 -> messages, entirely in memory: loss, reordering, ratchet steps,
third parties, replays, forged invitations, persistence."""

from __future__ import annotations

import random

import pytest

from umbra_waku import Content, Identity, Session
from umbra_waku._proto import umbra_envelope_pb2, umbra_frames_pb2
from umbra_waku.conversations import private as private_mod
from umbra_waku.conversations.inbox import seal_to_inbox
from umbra_waku.conversations.private import MAX_SKIP, PRIVATE_TOPIC, PrivateV1
from umbra_waku.crypto import public_key, x25519
from umbra_waku.envelope import encode_envelope
from umbra_waku.errors import ConversationError, InvalidAddress, InvalidInput, StateError
from umbra_waku.frames import BadlyFormed, Closed, Invitation, NotForMe, Readable
from umbra_waku.hints import hint
from umbra_waku.session import Outgoing

from .helpers import Clock, Pair, check_shape, make_pair, text_of

# ---- the happy path ----


def test_invitation_then_messages_both_ways() -> None:
    alice = Session(Identity.generate(), clock_ms=Clock(1000))
    bob = Session(Identity.generate(), clock_ms=Clock(5000))
    conv, invite = alice.invite(bob.identity.client_address, Content.text("hello bob"))
    assert invite.content_topic == bob.identity.inbox_content_topic
    assert invite.conversation_id == conv.conversation_id
    assert conv.conversation_id.startswith("/private/v1/")
    assert set(alice.content_topics) == {alice.identity.inbox_content_topic, PRIVATE_TOPIC}

    result = bob.classify(invite.payload, invite.content_topic)
    assert isinstance(result, Readable)
    assert result.conversation_type == "inbox/v1"
    assert result.conversation_id == bob.identity.inbox_conversation_id
    assert result.sender is None  # the inbox authenticates no one ...
    invitation = result.frame
    assert isinstance(invitation, Invitation)
    assert invitation.initiator == alice.identity.client_address  # ... key confirmation does
    assert invitation.conversation_id == conv.conversation_id
    assert invitation.created_at_ms == 1000
    assert invitation.initial_content == Content(b"hello bob", "umbra.text", 0, 1000)
    cid = conv.conversation_id
    assert cid in bob.conversations

    for round_ in range(5):
        out = alice.send(cid, Content.text(f"a{round_}"))
        assert out.content_topic == PRIVATE_TOPIC
        got = bob.classify(out.payload, out.content_topic)
        assert isinstance(got, Readable)
        assert got.conversation_type == "private/v1"
        assert got.conversation_id == cid
        assert got.sender == alice.identity.client_address
        assert text_of(got) == f"a{round_}"
        back = bob.send(cid, Content(b"\x00\xffbin", "example.app", 42))
        got = alice.classify(back.payload, back.content_topic)
        assert isinstance(got, Readable)
        assert got.sender == bob.identity.client_address
        assert isinstance(got.frame, Content)
        assert got.frame == Content(b"\x00\xffbin", "example.app", 42, got.frame.sent_at_ms)
        assert got.frame.as_text() is None


def test_invitation_without_initial_content_and_simultaneous_first_messages() -> None:
    pair = make_pair(initial=None)
    # both send before either reads: the recipient already has a sending chain
    a = [pair.a2b(f"a{i}") for i in range(3)]
    b = [pair.b2a(f"b{i}") for i in range(3)]
    assert [text_of(pair.alice.classify(o.payload)) for o in b] == ["b0", "b1", "b2"]
    assert [text_of(pair.bob.classify(o.payload)) for o in a] == ["a0", "a1", "a2"]


# ---- loss and reordering ----


def _deliver_shuffled(
    receiver: Session, outs: list[Outgoing], texts: list[str], rng: random.Random, chunk: int
) -> list[int]:
    """Deliver in chunks, shuffled inside each chunk, dropping one per chunk; returns dropped."""
    dropped = []
    for start in range(0, len(outs), chunk):
        indices = list(range(start, min(start + chunk, len(outs))))
        rng.shuffle(indices)
        if len(indices) > 1:
            dropped.append(indices.pop())
        for i in indices:
            assert text_of(receiver.classify(outs[i].payload, PRIVATE_TOPIC)) == texts[i]
    return dropped


@pytest.mark.parametrize(("window", "chunk"), [(None, 6), (4, 3), (16, 14), (32, 30)])
def test_loss_and_reordering_within_the_window(window: int | None, chunk: int) -> None:
    rng = random.Random(window)
    pair = make_pair(window=window)
    texts = [f"m{i}" for i in range(120)]
    outs = [pair.a2b(t) for t in texts]
    dropped = _deliver_shuffled(pair.bob, outs, texts, rng, chunk)
    assert dropped
    # the "lost" ones turn up late (e.g. from a store node): still readable, exactly once
    late, lost = dropped[: len(dropped) // 2], dropped[len(dropped) // 2 :]
    rng.shuffle(late)
    for i in late:
        assert text_of(pair.bob.classify(outs[i].payload)) == texts[i]
    # the conversation goes on; the rest stay lost
    for i in range(5):
        assert text_of(pair.bob.classify(pair.a2b(f"more{i}").payload)) == f"more{i}"
    for i in lost[-10:]:
        assert text_of(pair.bob.classify(outs[i].payload)) == texts[i]


def test_ratchet_steps_with_loss_and_reordering_both_ways() -> None:
    rng = random.Random(11)
    pair = make_pair()
    pending: dict[str, list[tuple[Outgoing, str]]] = {"a2b": [], "b2a": []}
    for burst in range(30):
        direction = "a2b" if burst % 2 == 0 else "b2a"
        send = pair.a2b if direction == "a2b" else pair.b2a
        receiver = pair.bob if direction == "a2b" else pair.alice
        texts = [f"{direction}-{burst}-{i}" for i in range(rng.randrange(1, 7))]
        outs = [send(t) for t in texts]
        dropped = _deliver_shuffled(receiver, outs, texts, rng, chunk=6)
        # deliver what was dropped in this direction's previous burst: a message of the
        # previous sending chain, after the DH ratchet step
        for out, text in pending[direction]:
            assert text_of(receiver.classify(out.payload)) == text
        pending[direction] = [(outs[i], texts[i]) for i in dropped]


def test_out_of_order_message_from_a_previous_chain() -> None:
    pair = make_pair()
    chain1 = [pair.a2b(f"c1-{i}") for i in range(5)]
    assert text_of(pair.bob.classify(chain1[0].payload)) == "c1-0"
    assert text_of(pair.bob.classify(chain1[1].payload)) == "c1-1"
    reply = pair.b2a("reply")
    assert text_of(pair.alice.classify(reply.payload)) == "reply"  # alice steps her ratchet
    chain2 = [pair.a2b(f"c2-{i}") for i in range(2)]
    alice_conv = pair.alice.conversation(pair.cid)
    assert alice_conv.pn == 5
    assert alice_conv.ns == 2
    assert text_of(pair.bob.classify(chain2[1].payload)) == "c2-1"  # bob steps: skips c1-2..4
    assert text_of(pair.bob.classify(chain1[3].payload)) == "c1-3"
    assert text_of(pair.bob.classify(chain2[0].payload)) == "c2-0"
    assert text_of(pair.bob.classify(chain1[2].payload)) == "c1-2"
    assert text_of(pair.bob.classify(chain1[4].payload)) == "c1-4"
    bob_conv = pair.bob.conversation(pair.cid)
    assert not bob_conv.skipped
    assert not bob_conv.missing


def test_beyond_the_window_is_not_for_me_until_the_gap_fills() -> None:
    """A documented limit: an envelope more than ``window`` counters ahead does not match."""
    pair = make_pair(window=8)
    outs = [pair.a2b(f"m{i}") for i in range(12)]
    far = pair.bob.classify(outs[10].payload)
    assert isinstance(far, NotForMe)
    for i in range(5):
        assert text_of(pair.bob.classify(outs[i].payload)) == f"m{i}"
    assert text_of(pair.bob.classify(outs[10].payload)) == "m10"  # redelivered: now in window
    for i in (5, 6, 7, 8, 9, 11):
        assert text_of(pair.bob.classify(outs[i].payload)) == f"m{i}"


def test_message_number_jump_is_bounded() -> None:
    pair = make_pair(window=MAX_SKIP + 20)
    outs = [pair.a2b(f"m{i}") for i in range(MAX_SKIP + 10)]
    result = pair.bob.classify(outs[-1].payload)
    assert isinstance(result, BadlyFormed)
    assert result.conversation_id == pair.cid
    assert "ahead" in result.reason
    # nothing changed: the conversation still reads everything in order
    for i, out in enumerate(outs):
        assert text_of(pair.bob.classify(out.payload)) == f"m{i}"


# ---- third parties and replays ----


def _conversation_traffic(pair: Pair) -> list[tuple[Session, Outgoing]]:
    traffic: list[tuple[Session, Outgoing]] = [(pair.bob, pair.invite)]
    for i in range(12):
        out = pair.a2b(f"a{i}") if i % 3 else pair.b2a(f"b{i}")
        receiver = pair.bob if i % 3 else pair.alice
        traffic.append((receiver, out))
    return traffic


def test_third_identity_sees_everything_as_not_for_me() -> None:
    pair = make_pair()
    traffic = _conversation_traffic(pair)
    carol = Session(Identity.generate())
    carol_conv, carol_invite = carol.invite(pair.alice.identity.client_address)
    for _receiver, out in traffic:
        for topic in (None, out.content_topic, carol.identity.inbox_content_topic):
            result = carol.classify(out.payload, topic)
            assert isinstance(result, NotForMe), result
    # and the traffic is still readable by its recipients afterwards
    for receiver, out in traffic[1:]:
        assert isinstance(receiver.classify(out.payload), Readable)
    assert isinstance(pair.alice.classify(carol_invite.payload), Readable)
    assert carol_conv.conversation_id in pair.alice.conversations


def test_replays_are_badly_formed_and_never_delivered_twice() -> None:
    pair = make_pair()  # the invitation was read by make_pair
    result = pair.bob.classify(pair.invite.payload)
    assert isinstance(result, BadlyFormed)
    assert result.reason == "replay"
    assert result.conversation_id == pair.bob.identity.inbox_conversation_id
    delivered = [(pair.bob, pair.invite)]
    for receiver, out in _conversation_traffic(pair)[1:]:
        assert isinstance(receiver.classify(out.payload), Readable)
        delivered.append((receiver, out))
        for old_receiver, old in delivered:  # replay everything seen so far, every time
            again = old_receiver.classify(old.payload, old.content_topic)
            assert isinstance(again, BadlyFormed), again
            assert again.reason == "replay"


def test_replays_after_the_replay_memory_is_full_are_still_not_delivered() -> None:
    from umbra_waku.session import REPLAY_MEMORY

    pair = make_pair()
    first = pair.a2b("first")
    assert text_of(pair.bob.classify(first.payload)) == "first"
    for i in range(REPLAY_MEMORY + 5):
        assert isinstance(pair.bob.classify(pair.a2b(str(i)).payload), Readable)
    again = pair.bob.classify(first.payload)
    assert not isinstance(again, Readable)  # forgotten hint: NotForMe, its counter is used
    again = pair.bob.classify(pair.invite.payload)
    assert isinstance(again, BadlyFormed)
    assert again.reason == "replay"


def test_resealed_invitation_is_a_replay() -> None:
    alice, bob = Identity.generate(), Session(Identity.generate())
    _, frame = PrivateV1.initiate(alice.private_key, bob.identity.public_key, created_at_ms=7)
    _, first = seal_to_inbox(bob.identity.public_key, frame)
    _, second = seal_to_inbox(bob.identity.public_key, frame)  # new salt, new ECIES key
    assert isinstance(bob.classify(first), Readable)
    result = bob.classify(second)
    assert isinstance(result, BadlyFormed)
    assert result.reason == "replay"
    assert len(bob.conversations) == 1


# ---- forged and malformed invitations ----


def _inbox_envelope(recipient: bytes, encrypted: umbra_envelope_pb2.EncryptedBytes) -> bytes:
    from umbra_waku.identity import inbox_address_of

    salt = random.getrandbits(32)
    return encode_envelope(
        hint("/inbox/v1/" + inbox_address_of(recipient.hex()), salt), salt, encrypted
    )


def _invite(alice: Identity, bob: Identity, **kw: object) -> umbra_frames_pb2.InboxV1Frame:
    _, frame = PrivateV1.initiate(
        alice.private_key,
        bob.public_key,
        created_at_ms=1234,
        **kw,  # type: ignore[arg-type]
    )
    return frame


def _reconfirm(frame: umbra_frames_pb2.InboxV1Frame, alice: Identity, ek_priv: bytes) -> None:
    """Recompute key_confirmation as a holder of alice's key would (for frames with odd fields)."""
    invite = frame.invite_private_v1
    agreement = private_mod.Agreement.derive(
        x25519(alice.private_key, invite.recipient_static_key),
        x25519(ek_priv, invite.recipient_static_key),
        invite.initiator_static_key,
        invite.recipient_static_key,
        invite.initiator_ephemeral_key,
    )
    invite.key_confirmation = agreement.confirmation(invite)


def _forgeries(alice: Identity, bob: Identity, mallory: Identity) -> dict[str, bytes]:
    forged: dict[str, bytes] = {}

    def sealed(frame: umbra_frames_pb2.InboxV1Frame) -> bytes:
        return seal_to_inbox(bob.public_key, frame)[1]

    frame = _invite(alice, bob)
    frame.invite_private_v1.key_confirmation = bytes(
        b ^ (i == 0) for i, b in enumerate(frame.invite_private_v1.key_confirmation)
    )
    forged["wrong key_confirmation"] = sealed(frame)

    frame = _invite(alice, bob)
    frame.invite_private_v1.key_confirmation = b""
    forged["empty key_confirmation"] = sealed(frame)

    frame = _invite(alice, bob)
    frame.invite_private_v1.created_at_ms += 1  # confirmation covers the whole transcript
    forged["altered created_at_ms"] = sealed(frame)

    frame = _invite(alice, bob, initial=Content.text("original"))
    frame.invite_private_v1.initial_frame = private_mod.encode_content(Content.text("altered"))
    forged["altered initial_frame"] = sealed(frame)

    # mallory claims to be alice: swap in alice's static key, confirm with what mallory knows
    ek = bytes(range(32))
    frame = _invite(mallory, bob, ephemeral_private=ek)
    frame.invite_private_v1.initiator_static_key = alice.public_key
    forged["claims alice's key, mallory's confirmation"] = sealed(frame)
    _reconfirm(frame, mallory, ek)  # DH(mallory, bob) is not DH(alice, bob)
    forged["claims alice's key, recomputed confirmation"] = sealed(frame)

    carol = Identity.generate()
    forged["addressed to another recipient"] = sealed(_invite(alice, carol))
    forged["invitation from ourselves"] = sealed(_invite(bob, bob))

    for name in ("initiator_static_key", "initiator_ephemeral_key", "recipient_static_key"):
        for length in (0, 31, 33):
            frame = _invite(alice, bob)
            setattr(frame.invite_private_v1, name, bytes(range(1, length + 1)))
            forged[f"{name} of {length} bytes"] = sealed(frame)

    frame = _invite(alice, bob, ephemeral_private=ek)
    frame.invite_private_v1.initiator_ephemeral_key = bytes(32)  # low order
    forged["low-order ephemeral key"] = sealed(frame)

    for name, initial in (("not a ContentFrame", b"\xff\xff"), ("empty domain", b"\x18\x01")):
        frame = _invite(alice, bob, ephemeral_private=ek)
        frame.invite_private_v1.initial_frame = initial
        _reconfirm(frame, alice, ek)
        forged[f"initial_frame {name} (valid confirmation)"] = sealed(frame)

    plain = umbra_envelope_pb2.EncryptedBytes()
    plain.plaintext.payload = _invite(alice, bob).SerializeToString()
    forged["plaintext instead of ecies"] = _inbox_envelope(bob.public_key, plain)
    raw = umbra_envelope_pb2.EncryptedBytes(encrypted_bytes=b"\x01" * 40)
    forged["encrypted_bytes variant"] = _inbox_envelope(bob.public_key, raw)
    ratchet = umbra_envelope_pb2.EncryptedBytes()
    ratchet.ratchet.header = b"\x01" * 40
    forged["ratchet variant"] = _inbox_envelope(bob.public_key, ratchet)
    forged["no variant"] = _inbox_envelope(bob.public_key, umbra_envelope_pb2.EncryptedBytes())

    good = umbra_envelope_pb2.UmbraEnvelopeV1.FromString(sealed(_invite(alice, bob)))
    for field, value in (("ephemeral_pubkey", bytes(31)), ("tag", bytes(15)), ("tag", b"")):
        bad = umbra_envelope_pb2.EncryptedBytes()
        bad.CopyFrom(good.encrypted_bytes)
        setattr(bad.ecies, field, value)
        forged[f"ecies {field} of {len(value)} bytes"] = _inbox_envelope(bob.public_key, bad)
    bad = umbra_envelope_pb2.EncryptedBytes()
    bad.CopyFrom(good.encrypted_bytes)
    bad.ecies.ephemeral_pubkey = public_key(bytes(32))
    forged["ecies for another ephemeral key"] = _inbox_envelope(bob.public_key, bad)
    forged["ecies with another hint and salt"] = encode_envelope(
        hint(bob.public_key.hex(), 1), 1, good.encrypted_bytes
    )  # NotForMe: that hint is not the inbox's
    forged["empty InboxV1Frame"] = sealed(umbra_frames_pb2.InboxV1Frame())
    return forged


# which check each forgery must trip (a fragment of BadlyFormed.reason), by name prefix
FORGERY_REASONS = [
    ("wrong key_confirmation", "key confirmation"),
    ("empty key_confirmation", "key confirmation"),
    ("altered", "key confirmation"),
    ("claims alice's key", "key confirmation"),
    ("addressed to another recipient", "another client"),
    ("invitation from ourselves", "ourselves"),
    ("initiator_static_key of", "must be 32 bytes"),
    ("initiator_ephemeral_key of", "must be 32 bytes"),
    ("recipient_static_key of", "must be 32 bytes"),
    ("low-order ephemeral key", "X25519"),
    ("initial_frame", "ContentFrame"),
    ("plaintext instead of ecies", "ECIES-encrypted"),
    ("encrypted_bytes variant", "ECIES-encrypted"),
    ("ratchet variant", "ECIES-encrypted"),
    ("no variant", "ECIES-encrypted"),
    ("ecies ephemeral_pubkey", "ephemeral_pubkey must be 32 bytes"),
    ("ecies tag", "tag must be 16 bytes"),
    ("ecies for another ephemeral key", "authentication failed"),
    ("empty InboxV1Frame", "no frame"),
]


def test_forged_and_malformed_invitations_are_badly_formed() -> None:
    alice, bob, mallory = Identity.generate(), Identity.generate(), Identity.generate()
    session = Session(bob)
    forgeries = _forgeries(alice, bob, mallory)
    assert len(forgeries) == 30
    for name, payload in forgeries.items():
        result = session.classify(payload, bob.inbox_content_topic)
        check_shape(result)
        if name == "ecies with another hint and salt":
            assert isinstance(result, NotForMe), name
            continue
        assert isinstance(result, BadlyFormed), (name, result)
        assert result.conversation_id == bob.inbox_conversation_id, name
        fragments = [f for prefix, f in FORGERY_REASONS if name.startswith(prefix)]
        assert len(fragments) == 1, name
        assert fragments[0] in result.reason, (name, result.reason)
    assert session.conversations == {}
    # a genuine invitation still works afterwards
    _, genuine = seal_to_inbox(bob.public_key, _invite(alice, bob))
    assert isinstance(session.classify(genuine), Readable)


def test_inbox_ignored_on_other_topics() -> None:
    alice, bob = Identity.generate(), Session(Identity.generate())
    _, payload = seal_to_inbox(bob.identity.public_key, _invite(alice, bob.identity))
    assert isinstance(bob.classify(payload, PRIVATE_TOPIC), NotForMe)
    assert isinstance(bob.classify(payload, bob.identity.inbox_content_topic), Readable)


# ---- persistence ----


def test_state_round_trip_mid_conversation() -> None:
    pair = make_pair()
    a_out = [pair.a2b(f"a{i}") for i in range(10)]
    for i in (0, 3, 5):  # bob misses 1, 2 and 4: skipped keys and missing counters
        assert text_of(pair.bob.classify(a_out[i].payload)) == f"a{i}"
    b_out = [pair.b2a(f"b{i}") for i in range(3)]
    assert text_of(pair.alice.classify(b_out[1].payload)) == "b1"  # alice misses b0
    bob_conv = pair.bob.conversation(pair.cid)
    alice_conv = pair.alice.conversation(pair.cid)
    assert bob_conv.skipped
    assert bob_conv.missing
    assert alice_conv.skipped
    assert alice_conv.missing

    saved_a, saved_b = alice_conv.to_state(), bob_conv.to_state()
    assert PrivateV1.from_state(saved_a).to_state() == saved_a
    assert PrivateV1.from_state(saved_b).to_state() == saved_b

    alice = Session(pair.alice.identity)
    alice.restore([saved_a])
    bob = Session(pair.bob.identity, hint_window=8)
    bob.restore([saved_b])
    for i in (4, 1, 6, 2, 7, 8, 9):
        assert text_of(bob.classify(a_out[i].payload)) == f"a{i}"
    assert text_of(alice.classify(b_out[2].payload)) == "b2"
    assert text_of(alice.classify(b_out[0].payload)) == "b0"
    for round_ in range(4):  # and on, both ways, through more ratchet steps
        out = alice.send(pair.cid, Content.text(f"after{round_}"))
        assert text_of(bob.classify(out.payload)) == f"after{round_}"
        out = bob.send(pair.cid, Content.text(f"back{round_}"))
        assert text_of(alice.classify(out.payload)) == f"back{round_}"
    # an envelope read before the restart is not delivered again after it
    for out in (a_out[0], a_out[3], b_out[1]):
        for session in (alice, bob):
            assert not isinstance(session.classify(out.payload), Readable)


def test_restored_invitation_replay_is_detected() -> None:
    pair = make_pair()
    bob = Session(pair.bob.identity)
    bob.restore([pair.bob.conversation(pair.cid).to_state()])
    result = bob.classify(pair.invite.payload)
    assert isinstance(result, BadlyFormed)
    assert result.reason == "replay"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: b"\xff\xff\xff",
        lambda s: b"",
        lambda s: umbra_frames_pb2.PrivateV1State(version=2).SerializeToString(),
        lambda s: _state_with(s, send_hint_key=b"short"),
        lambda s: _state_with(s, recv_header_key=b""),
    ],
)
def test_bad_state_is_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    saved = pair.alice.conversation(pair.cid).to_state()
    with pytest.raises(StateError):
        PrivateV1.from_state(mutate(saved))


def _state_with(saved: bytes, **fields: bytes) -> bytes:
    state = umbra_frames_pb2.PrivateV1State.FromString(saved)
    for name, value in fields.items():
        setattr(state, name, value)
    return state.SerializeToString()


# ---- closing and API errors ----


def test_close() -> None:
    """The closer keeps the conversation, closed: it reads what the peer sent before it learnt,
    sends and closes no more; the peer reads the Close and is closed too."""
    pair = make_pair()
    crossing = pair.a2b("one more thing")  # sent before alice learns of the close
    out = pair.bob.close(pair.cid, "bye")
    assert pair.bob.conversation(pair.cid).closed
    assert pair.bob.conversation(pair.cid).to_state() != b""
    late = pair.bob.classify(crossing.payload)
    assert isinstance(late, Readable)
    assert isinstance(late.frame, Content)
    assert late.frame.as_text() == "one more thing"
    result = pair.alice.classify(out.payload)
    assert isinstance(result, Readable)
    assert result.frame == Closed("bye")
    with pytest.raises(ConversationError, match="closed"):
        pair.a2b("are you there?")
    with pytest.raises(ConversationError, match="closed"):
        pair.bob.send(pair.cid, Content.text("x"))
    with pytest.raises(ConversationError, match="closed"):
        pair.bob.close(pair.cid)
    pair.bob.remove_conversation(pair.cid)  # forgotten on request
    assert pair.cid not in pair.bob.conversations


def test_a_close_that_does_not_fit_changes_nothing() -> None:
    pair = make_pair()
    state = pair.bob.conversation(pair.cid).to_state()
    with pytest.raises(InvalidInput, match="reason"):
        pair.bob.close(pair.cid, "x" * 200_000)
    assert pair.bob.conversation(pair.cid).to_state() == state
    assert not pair.bob.conversation(pair.cid).closed


def test_session_input_errors() -> None:
    session = Session(Identity.generate())
    with pytest.raises(InvalidInput, match="oneself"):
        session.invite(session.identity.client_address)
    with pytest.raises(InvalidAddress):
        session.invite("not an address")
    with pytest.raises(ConversationError):
        session.send("/private/v1/unknown", Content.text("x"))
    pair = make_pair()
    for bad in (
        Content(b"x", "", 0),
        Content(b"x", "d" * 129, 0),
        Content(b"x", "d", -1),
        Content(b"x", "d", 2**32),
        Content(bytes(160_000), "d", 0),
    ):
        with pytest.raises(InvalidInput):
            pair.alice.send(pair.cid, bad)
    with pytest.raises(InvalidInput):
        pair.alice.invite(pair.bob.identity.client_address, Content(b"x", "", 0))
    big = pair.alice.send(pair.cid, Content(bytes(140_000), "d", 0))
    assert len(big.payload) < 150_000
    result = pair.bob.classify(big.payload)
    assert isinstance(result, Readable)
    assert isinstance(result.frame, Content)
    assert result.frame.data == bytes(140_000)


def test_invite_to_a_low_order_key_is_an_invalid_address() -> None:
    """64 hex characters that name no usable X25519 key are refused with InvalidAddress."""
    from umbra_waku.errors import InvalidAddress

    session = Session(Identity.generate())
    with pytest.raises(InvalidAddress):
        session.invite("00" * 32)
    assert not session.conversations
