"""InboxV1, the default inbox (profile §4): ECIES-encrypted frames to a client's static key.

Sealing: a fresh ephemeral X25519 key e; key = HKDF-SHA256(ikm = X25519(e, recipient),
salt = e_pub || recipient_pub, info = "umbra-waku/inbox/v1/ecies", 32 bytes); ChaCha20-Poly1305
with a zero nonce (the key is used once) over the encoded InboxV1Frame, with the envelope's hint and
salt (4 bytes big-endian) as associated data. The tag travels apart in ``Ecies.tag``.
"""

from __future__ import annotations

import secrets
import struct

from google.protobuf.message import DecodeError

from umbra_waku import crypto
from umbra_waku._proto import umbra_envelope_pb2, umbra_frames_pb2
from umbra_waku.conversations.base import ConversationType, FrameError
from umbra_waku.envelope import encode_envelope
from umbra_waku.hints import hint
from umbra_waku.identity import (
    Identity,
    inbox_address_of,
    inbox_content_topic,
    inbox_conversation_id,
)

INBOX_V1 = ConversationType(
    name="inbox/v1",
    content_topics=("/umbra/1/inbox-{inbox_address}/proto",),
    encryption="ecies: x25519 + hkdf-sha256 + chacha20-poly1305 (EncryptedBytes.ecies)",
    frames=("InboxV1Frame.invite_private_v1",),
)

ECIES_INFO = b"umbra-waku/inbox/v1/ecies"
_SALT = struct.Struct(">I")


def _ecies_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return crypto.hkdf(shared, salt=ephemeral_public + recipient_public, info=ECIES_INFO, length=32)


def seal_to_inbox(
    recipient_public: bytes,
    frame: umbra_frames_pb2.InboxV1Frame,
    *,
    salt: int | None = None,
    ephemeral_private: bytes | None = None,
) -> tuple[str, bytes]:
    """Encrypt ``frame`` to a client's default inbox: (content topic, envelope bytes).

    ``salt`` and ``ephemeral_private`` are for test vectors only; leave them unset.
    """
    address = inbox_address_of(recipient_public.hex())
    salt = secrets.randbits(32) if salt is None else salt
    conversation_hint = hint(inbox_conversation_id(address), salt)
    ephemeral = (
        crypto.KeyPair.generate()
        if ephemeral_private is None
        else crypto.KeyPair.from_private(ephemeral_private)
    )
    e_pub = ephemeral.public
    key = _ecies_key(ephemeral.agree(recipient_public), e_pub, recipient_public)
    aad = conversation_hint.encode() + _SALT.pack(salt)
    sealed = crypto.aead_seal(key, crypto.ZERO_NONCE, frame.SerializeToString(), aad)
    encrypted = umbra_envelope_pb2.EncryptedBytes()
    encrypted.ecies.encrypted_bytes = sealed[: -crypto.TAG_BYTES]
    encrypted.ecies.tag = sealed[-crypto.TAG_BYTES :]
    encrypted.ecies.ephemeral_pubkey = e_pub
    return inbox_content_topic(address), encode_envelope(conversation_hint, salt, encrypted)


class InboxV1:
    """A client's own default inbox: recognises its envelopes and opens them."""

    kind = INBOX_V1

    __slots__ = ("_identity", "content_topic", "conversation_id")

    def __init__(self, identity: Identity) -> None:
        self._identity = identity
        self.conversation_id = identity.inbox_conversation_id
        self.content_topic = identity.inbox_content_topic

    def matches(self, conversation_hint: str, salt: int) -> bool:
        return hint(self.conversation_id, salt) == conversation_hint

    def open(
        self, conversation_hint: str, salt: int, encrypted: umbra_envelope_pb2.EncryptedBytes
    ) -> umbra_frames_pb2.InboxV1Frame:
        """Decrypt and decode an inbox frame; raises CryptoFailure or FrameError."""
        variant = encrypted.WhichOneof("encryption")
        if variant != "ecies":
            raise FrameError(f"inbox frames must be ECIES-encrypted, got {variant or 'nothing'}")
        ecies = encrypted.ecies
        if len(ecies.ephemeral_pubkey) != crypto.KEY_BYTES:
            raise FrameError("ECIES ephemeral_pubkey must be 32 bytes")
        if len(ecies.tag) != crypto.TAG_BYTES:
            raise FrameError("ECIES tag must be 16 bytes")
        own_public = self._identity.public_key
        shared = self._identity.keypair.agree(ecies.ephemeral_pubkey)
        key = _ecies_key(shared, ecies.ephemeral_pubkey, own_public)
        aad = conversation_hint.encode() + _SALT.pack(salt)
        plaintext = crypto.aead_open(key, crypto.ZERO_NONCE, ecies.encrypted_bytes + ecies.tag, aad)
        frame = umbra_frames_pb2.InboxV1Frame()
        try:
            frame.ParseFromString(plaintext)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise FrameError(f"not an InboxV1Frame: {exc}") from None
        if frame.WhichOneof("frame_type") is None:
            raise FrameError("InboxV1Frame carries no frame")
        return frame
