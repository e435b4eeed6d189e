"""Hostile envelopes, published onto a real Waku network, end to end through the bridge.

tests/core checks the classifier on bytes; here every attack is a Waku message that an attacker
publishes through go-waku A onto the bot's inbox topic or the shared private topic, interleaved
with a legitimate conversation. The bridge (on B) must hand the bot exactly the legitimate
events, in order, count each attack in ``umbra_bridge_envelopes_total{classification=...}``, and
let no attack disturb the conversation (a tampered copy must not consume a counter).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import pytest
from realnodes.conftest import PairFactory

from umbra_waku import crypto
from umbra_waku._proto import umbra_envelope_pb2
from umbra_waku.client import Classified, Delivery
from umbra_waku.conversations.inbox import seal_to_inbox
from umbra_waku.conversations.private import PRIVATE_TOPIC, Agreement, PrivateV1
from umbra_waku.frames import Content
from umbra_waku.hints import hint
from umbra_waku.identity import Identity, inbox_address_of, inbox_conversation_id
from umbra_waku.waku.message import MAX_MESSAGE_BYTES, MessageHash, WakuMessage

from .conftest import RealBridge
from .helpers import (
    Peer,
    Tally,
    collect_events,
    node_transport,
    poll_events,
    report,
    settle,
)

pytestmark = [pytest.mark.gowaku]


@dataclass
class Attack:
    name: str
    topic: str
    payload: bytes
    expect: str  # the classification the bridge must report: badly_formed or not_for_me
    reason: str = ""  # a substring of the BadlyFormed reason, when it matters


def envelope(
    hint_text: str, salt: int, encrypted: umbra_envelope_pb2.EncryptedBytes | None
) -> bytes:
    env = umbra_envelope_pb2.UmbraEnvelopeV1(conversation_hint=hint_text, salt=salt)
    if encrypted is not None:
        env.encrypted_bytes.CopyFrom(encrypted)
    return env.SerializeToString()


def flip(data: bytes, index: int) -> bytes:
    mutated = bytearray(data)
    mutated[index] ^= 0x01
    return bytes(mutated)


def forged_invitation(
    bot_public: bytes,
    *,
    initiator: Identity | None = None,
    claim_initiator: bytes | None = None,
    recipient: bytes | None = None,
    ephemeral: bytes | None = None,
    initial_frame: bytes | None = None,
    confirmation: bytes | None = None,
    key_length: int = 32,
) -> bytes:
    """An invitation to the bot's inbox, built by an attacker who holds ``initiator`` (or no
    key at all), with the field given replaced."""
    attacker = initiator or Identity.generate()
    ek = crypto.generate_private_key()
    _, frame = PrivateV1.initiate(
        attacker.private_key, bot_public, created_at_ms=int(time.time() * 1000),
        ephemeral_private=ek,
    )  # fmt: skip
    invite = frame.invite_private_v1
    if claim_initiator is not None:
        invite.initiator_static_key = claim_initiator
    if recipient is not None:
        invite.recipient_static_key = recipient
    if ephemeral is not None:
        invite.initiator_ephemeral_key = ephemeral
    if key_length != 32:
        invite.initiator_ephemeral_key = invite.initiator_ephemeral_key[:key_length]
    if initial_frame is not None:
        invite.initial_frame = initial_frame
        # a real initiator can confirm whatever it sends: the confirmation is valid
        agreement = Agreement.derive(
            crypto.x25519(attacker.private_key, bot_public),
            crypto.x25519(ek, bot_public),
            attacker.public_key,
            bot_public,
            crypto.public_key(ek),
        )
        invite.key_confirmation = agreement.confirmation(invite)
    if confirmation is not None:
        invite.key_confirmation = confirmation
    _, payload = seal_to_inbox(bot_public, frame)
    return payload


async def test_hostile_envelopes_on_the_network(
    gowaku_pair_factory: PairFactory, real_bridge: RealBridge
) -> None:
    pair = await gowaku_pair_factory()
    h = await real_bridge(pair.b)
    bot = await h.create_bot("target")
    bot_public = bytes.fromhex(bot.client_address)
    inbox_address = inbox_address_of(bot.client_address)
    inbox_topic = f"/umbra/1/inbox-{inbox_address}/proto"
    outcomes: dict[MessageHash, Classified] = {}

    def listen(event: object) -> None:
        if isinstance(event, Classified) and event.state != "duplicate":
            outcomes.setdefault(event.message_hash, event)

    h.bridge.client.add_listener(listen)
    attacker = node_transport(pair.a)
    published: list[tuple[Attack, MessageHash]] = []

    async def publish(attack: Attack) -> None:
        message = WakuMessage.create(attack.payload, attack.topic)
        published.append((attack, await attacker.publish(message)))

    legit = [f"legit-{i}" for i in range(6)]
    async with attacker, Peer(pair.a) as peer:
        client = peer.client
        invited = await client.invite(bot.client_address, "legit hello")
        assert await invited.wait(30) is Delivery.PUBLISHED
        conversation = invited.conversation_id
        inbox_salt = secrets.randbits(32)
        inbox_hint = hint(inbox_conversation_id(inbox_address), inbox_salt)
        sent0 = await client.send(conversation, legit[0])
        await sent0.wait(30)
        # what the peer seals next, to tamper with before the real one is published
        session = client.session
        next_private = session.send(conversation, Content.text(legit[1])).payload
        second_peer = Identity.generate()
        _, second_frame = PrivateV1.initiate(
            second_peer.private_key, bot_public, created_at_ms=int(time.time() * 1000)
        )
        _, second_invite = seal_to_inbox(bot_public, second_frame)
        attacks: list[Attack] = [
            Attack("malformed: not protobuf", inbox_topic, b"\xff\xff\xff\xff\xff", "badly_formed"),
            Attack("malformed: not protobuf (private topic)", PRIVATE_TOPIC, b"\x0a\xff\x01",
                   "badly_formed"),
            Attack("malformed: truncated envelope", inbox_topic, invited.message.payload[:-7],
                   "badly_formed"),
            Attack("malformed: hint of 3 characters", PRIVATE_TOPIC,
                   envelope("abc", 1, umbra_envelope_pb2.EncryptedBytes(encrypted_bytes=b"x")),
                   "badly_formed", "64 characters"),
            Attack("malformed: no encrypted_bytes", inbox_topic,
                   envelope(inbox_hint, inbox_salt, None), "badly_formed", "encrypted_bytes is"),
            Attack("malformed: plaintext variant on the inbox", inbox_topic,
                   envelope(inbox_hint, inbox_salt, umbra_envelope_pb2.EncryptedBytes(
                       plaintext=umbra_envelope_pb2.EncryptedBytes.Plaintext(payload=b"hi"))),
                   "badly_formed", "ECIES"),
            Attack("oversized: 149 kB ECIES body to the inbox hint", inbox_topic,
                   envelope(inbox_hint, inbox_salt, umbra_envelope_pb2.EncryptedBytes(
                       ecies=umbra_envelope_pb2.EncryptedBytes.Ecies(
                           encrypted_bytes=secrets.token_bytes(MAX_MESSAGE_BYTES - 1200),
                           ephemeral_pubkey=crypto.public_key(crypto.generate_private_key()),
                           tag=bytes(16)))),
                   "badly_formed"),
            Attack("replayed invitation (same bytes, new timestamp)", inbox_topic,
                   invited.message.payload, "badly_formed", "replay"),
            Attack("replayed private message", PRIVATE_TOPIC, sent0.message.payload,
                   "badly_formed", "replay"),
            Attack("tampered private message (ciphertext bit)", PRIVATE_TOPIC,
                   flip(next_private, len(next_private) - 3), "badly_formed"),
            Attack("tampered private message (salt)", PRIVATE_TOPIC,
                   flip(next_private, 67), "badly_formed"),
            Attack("re-encoded private message (unknown field appended)", PRIVATE_TOPIC,
                   next_private + b"\x98\x01\x01", "badly_formed", "non-canonical"),
            Attack("tampered invitation (ciphertext bit), before the genuine one", inbox_topic,
                   flip(second_invite, len(second_invite) - 40), "badly_formed", "authentication"),
            Attack("genuine invitation from a second peer, after its tampered copy", inbox_topic,
                   second_invite, "readable"),
            Attack("forged invitation: wrong key confirmation", inbox_topic,
                   forged_invitation(bot_public, confirmation=secrets.token_bytes(32)),
                   "badly_formed", "forged"),
            Attack("forged invitation: 'from' the real peer without its key", inbox_topic,
                   forged_invitation(bot_public, claim_initiator=peer.identity.public_key),
                   "badly_formed", "forged"),
            Attack("forged invitation: from the bot itself", inbox_topic,
                   forged_invitation(bot_public, claim_initiator=bot_public),
                   "badly_formed", "ourselves"),
            Attack("forged invitation: addressed to another key", inbox_topic,
                   forged_invitation(bot_public, recipient=Identity.generate().public_key),
                   "badly_formed", "another client"),
            Attack("forged invitation: low-order ephemeral key", inbox_topic,
                   forged_invitation(bot_public, ephemeral=bytes(32)), "badly_formed"),
            Attack("forged invitation: 31-byte key", inbox_topic,
                   forged_invitation(bot_public, key_length=31), "badly_formed", "32 bytes"),
            Attack("forged invitation: initial frame without domain", inbox_topic,
                   forged_invitation(bot_public, initial_frame=b"\x10\x01"),
                   "badly_formed", "domain"),
            Attack("well-formed envelope for someone else", PRIVATE_TOPIC,
                   envelope(secrets.token_hex(32), 7, umbra_envelope_pb2.EncryptedBytes(
                       ratchet=umbra_envelope_pb2.EncryptedBytes.Ratchet(header=b"h" * 60,
                                                                         ciphertext=b"c" * 40))),
                   "not_for_me"),
        ]  # fmt: skip
        for attack in attacks:
            await publish(attack)
        # the real next message, after its tampered copies: still readable
        await client.publish(WakuMessage.create(next_private, PRIVATE_TOPIC))
        for text in legit[2:]:
            await peer.send_all(conversation, [text])
            await publish(Attack("replayed invitation again", inbox_topic,
                                 invited.message.payload, "badly_formed", "replay"))  # fmt: skip
        tally = Tally()
        await collect_events(h, bot, tally, legit, within=30)
        await settle(lambda: all(digest in outcomes for _, digest in published), within=30)

    wrong: list[str] = []
    for attack, digest in published:
        got = outcomes.get(digest)
        if got is None:
            wrong.append(f"{attack.name}: never classified")
        elif str(got.state) != attack.expect or attack.reason not in (got.reason or ""):
            wrong.append(f"{attack.name}: {got.state} ({got.reason}), expected {attack.expect}")
    for attack, digest in published:
        got = outcomes.get(digest)
        print(
            f"HOSTILE {attack.name} -> {got.state if got else None} ({got.reason if got else ''})"
        )
    events = await poll_events(h, bot)
    bogus = [
        e
        for e in events
        if not (
            (
                e["type"] == "conversation_started"
                and e["peer"] in (peer.identity.client_address, second_peer.client_address)
            )
            or (e["type"] == "message" and e.get("text") in ("legit hello", *legit))
        )
    ]
    metric = h.bridge.metrics.registry.get_sample_value
    badly = sum(
        metric("umbra_bridge_envelopes_total", {"classification": "badly_formed", "source": s}) or 0
        for s in ("live", "backfill")
    )
    expected_badly = sum(1 for attack, _ in published if attack.expect == "badly_formed")
    started = [e["peer"] for e in events if e["type"] == "conversation_started"]
    report(
        "hostile_envelopes_e2e",
        len(legit),
        tally.delivered(legit),
        tally.duplicates(),
        attacks=len(published),
        badly_formed_counted=int(badly),
        bogus_events=len(bogus),
    )
    assert wrong == []
    assert bogus == []
    assert tally.missing(legit) == []
    assert tally.duplicates() == 0
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert int(badly) == expected_badly
    assert started == [peer.identity.client_address, second_peer.client_address]
