"""Cryptography per message beside the raw cost of the primitives it is made of.

Each composite operation is timed next to each of its primitives (same inputs sizes, interleaved,
best round), and reported as ``<op>_vs_primitives`` = (sum of the primitives' times) / (the
operation's time): 1.0 would mean the code around the primitives costs nothing.

- PrivateV1 seal (``PrivateV1.seal`` of a prepared frame): 2 ChaCha20-Poly1305 seals (header
  under the direction's cached header AEAD, frame under a fresh message key), 1 BLAKE2b chain step,
  1 keyed BLAKE2s hint, protobuf encoding of header, frame and envelope.
- PrivateV1 open (parse the envelope, ``PrivateV1.open``): the same with opens and parses, and the
  keyed BLAKE2s of the hint that enters the look-ahead window.
- DH ratchet step (``PrivateV1._message_key`` for a header with a new ratchet key; it does not
  commit, so it is repeatable): 2 X25519 + 1 key pair generation + 2 HKDF-SHA256 (64 bytes) + 1
  BLAKE2b chain step. (The brief's "2 X25519 + HKDF" leaves out the key pair; it is included here
  because the step must make one.)
- Inbox seal (``seal_to_inbox``): 1 key pair + 1 X25519 + 1 HKDF (32 bytes) + 1 ChaCha20-Poly1305
  seal + 2 BLAKE2s (inbox address, hint) + protobuf encoding; inbox open (parse,
  ``InboxV1.open``): 1 X25519 + 1 HKDF + 1 ChaCha20-Poly1305 open + 2 parses.

X25519 is the raw exchange between loaded keys, and a key pair one generation: the scalar
multiplications the protocol needs. ``crypto_x25519_from_bytes_us`` is what umbra_waku.crypto
pays per exchange, because it loads the private key from bytes every time, and
``X25519PrivateKey.from_private_bytes`` derives the public key (one more scalar multiplication):
that is most of the distance between the DH operations and their primitives.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from benchmarks.common import interleaved, scaled
from umbra_waku import Content, Identity, Session, crypto
from umbra_waku._proto import umbra_envelope_pb2, umbra_frames_pb2
from umbra_waku._proto.umbra_envelope_pb2 import UmbraEnvelopeV1
from umbra_waku.conversations.inbox import InboxV1, seal_to_inbox
from umbra_waku.conversations.private import (
    CHAIN_LABEL,
    PrivateV1,
    content_frame,
)
from umbra_waku.hints import HintIndex
from umbra_waku.hints import hint as inbox_hint

_U64 = struct.Struct(">Q")


def _loop(items: list[Any], fn: Callable[[Any], object]) -> Callable[[], int]:
    def go() -> int:
        for item in items:
            fn(item)
        return len(items)

    return go


def run(*, quick: bool, scale: float = 1.0) -> dict[str, float]:
    n = scaled(1_000 if quick else 5_000, scale, 10)
    n_dh = scaled(150 if quick else 1_000, scale, 2)
    repeats = scaled(7 if quick else 15, scale, 1)

    alice, bob = Session(Identity.generate()), Session(Identity.generate())
    conversation, invitation = alice.invite(bob.identity.client_address)
    bob.classify(invitation.payload, invitation.content_topic)
    cid = conversation.conversation_id
    sender = alice.conversation(cid)
    receiver_state = bob.conversation(cid).to_state()
    sender_state = sender.to_state()

    frame = content_frame(Content.text("message 000001 " + "x" * 64), 1_700_000_000_000)
    frame_bytes = frame.SerializeToString()
    envelopes = [sender.seal(frame, salt=secrets.randbits(32))[1] for _ in range(n)]
    parsed = [UmbraEnvelopeV1.FromString(e) for e in envelopes]
    first = parsed[0]
    hint0, salt0 = first.conversation_hint, first.salt
    aad = hint0.encode() + struct.pack(">I", salt0)
    sealed_header = first.encrypted_bytes.ratchet.header
    sealed_frame = first.encrypted_bytes.ratchet.ciphertext

    # ---- PrivateV1 seal and open ----

    sealer = PrivateV1.from_state(sender_state)
    salts = [secrets.randbits(32) for _ in range(n)]

    def seal() -> int:
        do = sealer.seal
        for salt in salts:
            do(frame, salt=salt)
        return n

    def open_() -> int:
        conv = PrivateV1.from_state(receiver_state)
        conv.attach(HintIndex())  # computes the look-ahead window, as a Session does
        parse = UmbraEnvelopeV1.FromString
        do = conv.open
        for data in envelopes:
            envelope = parse(data)
            do(envelope.conversation_hint, envelope.salt, envelope.encrypted_bytes)
        return n

    header = umbra_frames_pb2.RatchetHeader(
        ratchet_key=sender.dhs_pub, previous_chain_length=0, message_number=7
    ).SerializeToString()
    header_aead = ChaCha20Poly1305(os.urandom(32))
    nonces = [b"\0\0\0\0" + _U64.pack(i) for i in range(n)]
    keys = [os.urandom(32) for _ in range(n)]
    header_sealed = [header_aead.encrypt(nonce, header, aad) for nonce in nonces]
    frames_sealed = [
        ChaCha20Poly1305(k).encrypt(crypto.ZERO_NONCE, frame_bytes, aad + header) for k in keys
    ]
    counters = [_U64.pack(i) for i in range(n)]
    hint_key = os.urandom(32)

    def aead_seal_header() -> int:
        encrypt = header_aead.encrypt
        for nonce in nonces:
            encrypt(nonce, header, aad)
        return n

    def aead_seal_frame() -> int:
        for key in keys:
            ChaCha20Poly1305(key).encrypt(crypto.ZERO_NONCE, frame_bytes, aad + header)
        return n

    def aead_open_header() -> int:
        decrypt = header_aead.decrypt
        for nonce, sealed in zip(nonces, header_sealed, strict=True):
            decrypt(nonce, sealed, aad)
        return n

    def aead_open_frame() -> int:
        for key, sealed in zip(keys, frames_sealed, strict=True):
            ChaCha20Poly1305(key).decrypt(crypto.ZERO_NONCE, sealed, aad + header)
        return n

    def chain_step() -> int:
        blake2b = hashlib.blake2b
        for key in keys:
            blake2b(CHAIN_LABEL, key=key).digest()
        return n

    def keyed_hint() -> int:
        blake2s = hashlib.blake2s
        for counter in counters:
            blake2s(counter, key=hint_key).hexdigest()
        return n

    def protobuf_encode() -> int:
        # what seal encodes: the header, the frame, the envelope around both sealed parts
        for _ in range(n):
            umbra_frames_pb2.RatchetHeader(
                ratchet_key=sender.dhs_pub, previous_chain_length=0, message_number=7
            ).SerializeToString()
            frame.SerializeToString()
            encrypted = umbra_envelope_pb2.EncryptedBytes()
            encrypted.ratchet.header = sealed_header
            encrypted.ratchet.ciphertext = sealed_frame
            envelope = UmbraEnvelopeV1(conversation_hint=hint0, salt=salt0)
            envelope.encrypted_bytes.CopyFrom(encrypted)
            envelope.SerializeToString()
        return n

    def protobuf_parse() -> int:
        # what open parses: the envelope, the header, the frame
        for data in envelopes:
            UmbraEnvelopeV1.FromString(data)
            umbra_frames_pb2.RatchetHeader.FromString(header)
            umbra_frames_pb2.PrivateV1Frame.FromString(frame_bytes)
        return n

    # ---- DH ratchet step ----

    stepper = PrivateV1.from_state(receiver_state)
    stepper.attach(HintIndex())
    new_keys = [crypto.public_key(crypto.generate_private_key()) for _ in range(n_dh)]
    step_headers = [
        umbra_frames_pb2.RatchetHeader(ratchet_key=k, previous_chain_length=0, message_number=0)
        for k in new_keys
    ]
    privates = [crypto.generate_private_key() for _ in range(n_dh)]
    root = os.urandom(32)

    def ratchet_step() -> int:
        message_key = stepper._message_key
        for step_header in step_headers:
            message_key(step_header)
        return n_dh

    loaded = [
        (X25519PrivateKey.from_private_bytes(private), X25519PublicKey.from_public_bytes(public))
        for private, public in zip(privates, new_keys, strict=True)
    ]

    def x25519() -> int:
        for private_key, public_key in loaded:
            private_key.exchange(public_key)
        return n_dh

    def x25519_from_bytes() -> int:
        for private, public in zip(privates, new_keys, strict=True):
            X25519PrivateKey.from_private_bytes(private).exchange(
                X25519PublicKey.from_public_bytes(public)
            )
        return n_dh

    def keypair() -> int:
        for _ in range(n_dh):
            key = X25519PrivateKey.generate()
            key.private_bytes_raw()
            key.public_key().public_bytes_raw()
        return n_dh

    def hkdf64() -> int:
        for key in new_keys:
            crypto.hkdf(key, salt=root, info=b"umbra-waku/private/v1/ratchet", length=64)
        return n_dh

    def hkdf32() -> int:
        for key in new_keys:
            crypto.hkdf(key, salt=root + key, info=b"umbra-waku/inbox/v1/ecies", length=32)
        return n_dh

    # ---- inbox ----

    recipient = bob.identity
    invite_frame = umbra_frames_pb2.InboxV1Frame.FromString(
        bytes(_invite_frame_bytes(alice, recipient))
    )
    inbox_envelopes = [seal_to_inbox(recipient.public_key, invite_frame)[1] for _ in range(n_dh)]
    inbox = InboxV1(recipient)
    invite_bytes = invite_frame.SerializeToString()
    inbox_aead_sealed = [
        ChaCha20Poly1305(k).encrypt(crypto.ZERO_NONCE, invite_bytes, aad) for k in keys[:n_dh]
    ]
    inbox_id = recipient.inbox_conversation_id
    client_address = recipient.client_address

    def inbox_seal() -> int:
        public = recipient.public_key
        for _ in range(n_dh):
            seal_to_inbox(public, invite_frame)
        return n_dh

    def inbox_open() -> int:
        for data in inbox_envelopes:
            envelope = UmbraEnvelopeV1.FromString(data)
            inbox.open(envelope.conversation_hint, envelope.salt, envelope.encrypted_bytes)
        return n_dh

    def inbox_aead_seal() -> int:
        for key in keys[:n_dh]:
            ChaCha20Poly1305(key).encrypt(crypto.ZERO_NONCE, invite_bytes, aad)
        return n_dh

    def inbox_aead_open() -> int:
        for key, sealed in zip(keys[:n_dh], inbox_aead_sealed, strict=True):
            ChaCha20Poly1305(key).decrypt(crypto.ZERO_NONCE, sealed, aad)
        return n_dh

    def inbox_hashes() -> int:
        for salt in salts[:n_dh]:
            hashlib.blake2s(client_address.encode()).hexdigest()
            inbox_hint(inbox_id, salt)
        return n_dh

    def inbox_encode() -> int:
        for _ in range(n_dh):
            invite_frame.SerializeToString()
            encrypted = umbra_envelope_pb2.EncryptedBytes()
            encrypted.ecies.encrypted_bytes = invite_bytes
            encrypted.ecies.tag = aad[:16]
            encrypted.ecies.ephemeral_pubkey = root
            envelope = UmbraEnvelopeV1(conversation_hint=hint0, salt=salt0)
            envelope.encrypted_bytes.CopyFrom(encrypted)
            envelope.SerializeToString()
        return n_dh

    def inbox_parse() -> int:
        for data in inbox_envelopes:
            UmbraEnvelopeV1.FromString(data)
            umbra_frames_pb2.InboxV1Frame.FromString(invite_bytes)
        return n_dh

    rates = interleaved(
        {
            "seal": seal,
            "open": open_,
            "aead_seal_header": aead_seal_header,
            "aead_seal_frame": aead_seal_frame,
            "aead_open_header": aead_open_header,
            "aead_open_frame": aead_open_frame,
            "chain_step": chain_step,
            "keyed_hint": keyed_hint,
            "protobuf_encode": protobuf_encode,
            "protobuf_parse": protobuf_parse,
            "ratchet_step": ratchet_step,
            "x25519": x25519,
            "x25519_from_bytes": x25519_from_bytes,
            "keypair": keypair,
            "hkdf64": hkdf64,
            "hkdf32": hkdf32,
            "inbox_seal": inbox_seal,
            "inbox_open": inbox_open,
            "inbox_aead_seal": inbox_aead_seal,
            "inbox_aead_open": inbox_aead_open,
            "inbox_hashes": inbox_hashes,
            "inbox_encode": inbox_encode,
            "inbox_parse": inbox_parse,
        },
        repeats=repeats,
    )
    us = {name: 1e6 / value for name, value in rates.items()}
    seal_primitives = (
        us["aead_seal_header"]
        + us["aead_seal_frame"]
        + us["chain_step"]
        + us["keyed_hint"]
        + us["protobuf_encode"]
    )
    open_primitives = (
        us["aead_open_header"]
        + us["aead_open_frame"]
        + us["chain_step"]
        + us["keyed_hint"]
        + us["protobuf_parse"]
    )
    step_primitives = 2 * us["x25519"] + us["keypair"] + 2 * us["hkdf64"] + us["chain_step"]
    inbox_seal_primitives = (
        us["keypair"]
        + us["x25519"]
        + us["hkdf32"]
        + us["inbox_aead_seal"]
        + us["inbox_hashes"]
        + us["inbox_encode"]
    )
    inbox_open_primitives = us["x25519"] + us["hkdf32"] + us["inbox_aead_open"] + us["inbox_parse"]
    return {
        "crypto_seal_us": us["seal"],
        "crypto_seal_primitives_us": seal_primitives,
        "crypto_seal_vs_primitives": seal_primitives / us["seal"],
        "crypto_open_us": us["open"],
        "crypto_open_primitives_us": open_primitives,
        "crypto_open_vs_primitives": open_primitives / us["open"],
        "crypto_ratchet_step_us": us["ratchet_step"],
        "crypto_ratchet_step_primitives_us": step_primitives,
        "crypto_ratchet_step_vs_primitives": step_primitives / us["ratchet_step"],
        "crypto_inbox_seal_us": us["inbox_seal"],
        "crypto_inbox_seal_vs_primitives": inbox_seal_primitives / us["inbox_seal"],
        "crypto_inbox_open_us": us["inbox_open"],
        "crypto_inbox_open_vs_primitives": inbox_open_primitives / us["inbox_open"],
        "crypto_x25519_us": us["x25519"],
        "crypto_x25519_from_bytes_us": us["x25519_from_bytes"],
        "crypto_keypair_us": us["keypair"],
        "crypto_aead_seal_frame_us": us["aead_seal_frame"],
        "crypto_protobuf_encode_us": us["protobuf_encode"],
    }


def _invite_frame_bytes(alice: Session, recipient: Identity) -> bytes:
    """An encoded InboxV1Frame with an invitation from alice to ``recipient``."""
    _, frame = PrivateV1.initiate(
        alice.identity.private_key, recipient.public_key, created_at_ms=1_700_000_000_000
    )
    return frame.SerializeToString()
