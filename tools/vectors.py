"""Deterministic test vectors of the umbra-waku wire profile (docs/protocol.md, "Test vectors").

Fixed private keys, ephemeral keys, salts and clocks go in; the library computes the addresses,
topics, the inbox invitation envelope, the first PrivateV1 message of each direction and their
intermediate keys. Everything comes from the library's own code paths (seal_to_inbox,
PrivateV1.initiate/accept/seal, Session.classify) with the test-only hooks that pin randomness.

    python tools/vectors.py                                  # print the JSON
    python tools/vectors.py --write docs/protocol-vectors.json

tests/core/test_vectors.py recomputes every value independently (hashlib, hmac, cryptography and a
hand-written protobuf reader) and checks that this script still reproduces the file byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from umbra_waku import crypto
from umbra_waku._proto import umbra_frames_pb2
from umbra_waku.conversations import inbox as inbox_mod
from umbra_waku.conversations import private as private_mod
from umbra_waku.conversations.private import PRIVATE_TOPIC, PrivateV1, content_frame
from umbra_waku.frames import TEXT_DOMAIN, Content, Readable
from umbra_waku.hints import hint
from umbra_waku.identity import Identity
from umbra_waku.session import Session
from umbra_waku.waku import WakuMessage, pubsub_topic_for

FORMAT = "umbra-waku test vectors v1"


def _seed(label: str) -> bytes:
    """A fixed 32-byte value: SHA-256 of an ASCII label (so the inputs are easy to re-derive)."""
    return hashlib.sha256(label.encode()).digest()


# ---- fixed inputs ----

#: RFC 7748 section 6.1 Alice and Bob: their public keys are published there.
INITIATOR_STATIC_PRIVATE = bytes.fromhex(
    "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
)
RECIPIENT_STATIC_PRIVATE = bytes.fromhex(
    "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
)
INVITE_EPHEMERAL_PRIVATE = _seed("umbra-waku test vector: invitation ephemeral key EK")
ECIES_EPHEMERAL_PRIVATE = _seed("umbra-waku test vector: inbox ECIES ephemeral key")
RECIPIENT_RATCHET_PRIVATE = _seed("umbra-waku test vector: recipient first ratchet key")
INBOX_SALT = 0xDEADBEEF
INVITE_CREATED_AT_MS = 1_700_000_000_000
INITIAL_TEXT = "hello from the initiator"
MESSAGES = (
    # (direction, salt, sent_at_ms, text): the first two messages of each direction's first chain
    ("initiator_to_recipient", 0x0BADF00D, 1_700_000_001_000, "first PrivateV1 message"),
    ("initiator_to_recipient", 0x00000001, 1_700_000_001_500, "second"),
    ("recipient_to_initiator", 0x00C0FFEE, 1_700_000_002_000, "first reply"),
    ("recipient_to_initiator", 0xFFFFFFFF, 1_700_000_002_500, "second reply"),
)
CLUSTER_ID = 1
SHARD_COUNTS = (1, 8, 1024)


def _identity_facts(identity: Identity) -> dict[str, str]:
    return {
        "static_private": identity.private_key.hex(),
        "client_address": identity.client_address,
        "inbox_address": identity.inbox_address,
        "inbox_conversation_id": identity.inbox_conversation_id,
        "inbox_content_topic": identity.inbox_content_topic,
    }


def _topic_facts(content_topic: str) -> dict[str, Any]:
    return {
        "content_topic": content_topic,
        "pubsub_topic": {
            str(n): pubsub_topic_for(content_topic, CLUSTER_ID, n) for n in SHARD_COUNTS
        },
    }


def compute() -> dict[str, Any]:
    """All vectors, as a JSON-ready dict (bytes as lowercase hex)."""
    initiator = Identity(INITIATOR_STATIC_PRIVATE)
    recipient = Identity(RECIPIENT_STATIC_PRIVATE)

    # ---- the invitation, sealed to the recipient's inbox ----
    conv_i, frame = PrivateV1.initiate(
        initiator.private_key,
        recipient.public_key,
        created_at_ms=INVITE_CREATED_AT_MS,
        initial=Content.text(INITIAL_TEXT),
        ephemeral_private=INVITE_EPHEMERAL_PRIVATE,
    )
    invite = frame.invite_private_v1
    inbox_topic, inbox_envelope = inbox_mod.seal_to_inbox(
        recipient.public_key, frame, salt=INBOX_SALT, ephemeral_private=ECIES_EPHEMERAL_PRIVATE
    )
    inbox_hint = hint(recipient.inbox_conversation_id, INBOX_SALT)
    ecies_public = crypto.public_key(ECIES_EPHEMERAL_PRIVATE)
    ecies_shared = crypto.x25519(ECIES_EPHEMERAL_PRIVATE, recipient.public_key)
    ecies_key = inbox_mod._ecies_key(ecies_shared, ecies_public, recipient.public_key)

    conv_r, invitation = PrivateV1.accept(
        recipient.private_key, invite, ratchet_private=RECIPIENT_RATCHET_PRIVATE
    )
    if invitation.conversation_id != conv_i.conversation_id:
        raise AssertionError("both sides must derive the same conversation_id")
    agreement = private_mod.Agreement.derive(
        crypto.x25519(initiator.private_key, recipient.public_key),
        crypto.x25519(INVITE_EPHEMERAL_PRIVATE, recipient.public_key),
        initiator.public_key,
        recipient.public_key,
        invite.initiator_ephemeral_key,
    )

    # The same envelope as a Waku message: explicit nanosecond timestamp, hash per shard count.
    waku_timestamp_ns = INVITE_CREATED_AT_MS * 1_000_000
    waku_message = WakuMessage(inbox_envelope, inbox_topic, timestamp=waku_timestamp_ns)
    inbox_pubsub = pubsub_topic_for(inbox_topic, CLUSTER_ID, 8)

    # ---- PrivateV1: one message each way, the recipient's through its first ratchet key ----
    senders = {"initiator_to_recipient": conv_i, "recipient_to_initiator": conv_r}
    messages: list[dict[str, Any]] = []
    for direction, salt, sent_at_ms, text in MESSAGES:
        conv = senders[direction]
        assert conv.cks is not None
        chain_key = conv.cks
        next_chain_key, message_key = private_mod._kdf_ck(chain_key)
        counter, ratchet_public = conv.send_counter, conv.dhs_pub
        header = umbra_frames_pb2.RatchetHeader(
            ratchet_key=conv.dhs_pub, previous_chain_length=conv.pn, message_number=conv.ns
        ).SerializeToString()
        private_frame = content_frame(Content.text(text), sent_at_ms)
        conversation_hint, envelope = conv.seal(private_frame, salt=salt)
        messages.append(
            {
                "direction": direction,
                "counter": counter,
                "salt": salt,
                "sent_at_ms": sent_at_ms,
                "text": text,
                "hint_key": conv.send_hint_key.hex(),
                "conversation_hint": conversation_hint,
                "header_key": conv.send_header_key.hex(),
                "header_nonce": private_mod._nonce(counter).hex(),
                "ratchet_public": ratchet_public.hex(),
                "ratchet_header": header.hex(),
                "chain_key": chain_key.hex(),
                "next_chain_key": next_chain_key.hex(),
                "message_key": message_key.hex(),
                "aad": (conversation_hint.encode() + salt.to_bytes(4, "big")).hex(),
                "frame": private_frame.SerializeToString().hex(),
                "envelope": envelope.hex(),
            }
        )

    # ---- the library reads its own vectors back ----
    receiver_i, receiver_r = Session(initiator), Session(recipient)
    result = receiver_r.classify(inbox_envelope)
    if not isinstance(result, Readable):
        raise AssertionError(f"the invitation vector does not read back: {result}")
    receiver_i.add_conversation(PrivateV1.from_state(conv_i.to_state()))
    receiver_r.add_conversation(PrivateV1.from_state(conv_r.to_state()))
    for message in messages:
        to = receiver_r if message["direction"] == "initiator_to_recipient" else receiver_i
        got = to.classify(bytes.fromhex(message["envelope"]), PRIVATE_TOPIC)
        expected = Content(message["text"].encode(), TEXT_DOMAIN, 0, message["sent_at_ms"])
        if not (isinstance(got, Readable) and got.frame == expected):
            raise AssertionError(f"a PrivateV1 vector does not read back: {got}")

    return {
        "format": FORMAT,
        "inputs": {
            "initiator_static_private": INITIATOR_STATIC_PRIVATE.hex(),
            "recipient_static_private": RECIPIENT_STATIC_PRIVATE.hex(),
            "invite_ephemeral_private": INVITE_EPHEMERAL_PRIVATE.hex(),
            "ecies_ephemeral_private": ECIES_EPHEMERAL_PRIVATE.hex(),
            "recipient_ratchet_private": RECIPIENT_RATCHET_PRIVATE.hex(),
            "inbox_salt": INBOX_SALT,
            "invite_created_at_ms": INVITE_CREATED_AT_MS,
            "initial_text": INITIAL_TEXT,
            "cluster_id": CLUSTER_ID,
        },
        "initiator": _identity_facts(initiator),
        "recipient": _identity_facts(recipient),
        "topics": {
            "inbox": _topic_facts(inbox_topic),
            "private": _topic_facts(PRIVATE_TOPIC),
        },
        "invitation": {
            "initiator_ephemeral_public": invite.initiator_ephemeral_key.hex(),
            "initial_frame": invite.initial_frame.hex(),
            "key_confirmation": invite.key_confirmation.hex(),
            "inbox_frame": frame.SerializeToString().hex(),
            "conversation_id": conv_i.conversation_id,
            "shared_secret": agreement.shared_secret.hex(),
            "hint_key_i2r": agreement.hint_i2r.hex(),
            "hint_key_r2i": agreement.hint_r2i.hex(),
            "header_key_i2r": agreement.header_i2r.hex(),
            "header_key_r2i": agreement.header_r2i.hex(),
            "confirm_key": agreement.confirm_key.hex(),
        },
        "inbox_envelope": {
            "content_topic": inbox_topic,
            "salt": INBOX_SALT,
            "conversation_hint": inbox_hint,
            "ecies_ephemeral_public": ecies_public.hex(),
            "ecies_shared_secret": ecies_shared.hex(),
            "ecies_key": ecies_key.hex(),
            "aad": (inbox_hint.encode() + INBOX_SALT.to_bytes(4, "big")).hex(),
            "envelope": inbox_envelope.hex(),
            "waku_timestamp_ns": waku_timestamp_ns,
            "waku_message": waku_message.encode().hex(),
            "waku_pubsub_topic": inbox_pubsub,
            "waku_message_hash": waku_message.hash(inbox_pubsub).hex0x(),
        },
        "private": {
            "recipient_ratchet_public": crypto.public_key(RECIPIENT_RATCHET_PRIVATE).hex(),
            "messages": messages,
        },
    }


def render(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PATH", help="write the JSON to PATH instead of stdout")
    args = parser.parse_args(argv)
    text = render(compute())
    if args.write:
        Path(args.write).write_text(text)
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
