"""The UmbraEnvelopeV1 codec (profile §1): the outermost payload of every umbra-waku message.

Classification (session.py) parses with :data:`parse_envelope` and, once a hint matched, requires
:func:`is_canonical`; the conversation types seal with :func:`encode_envelope`.
"""

from __future__ import annotations

from umbra_waku._proto import umbra_envelope_pb2 as pb

__all__ = ["EncryptedBytes", "encode_envelope", "is_canonical", "parse_envelope"]

EncryptedBytes = pb.EncryptedBytes

#: Parse bytes into an UmbraEnvelopeV1 (raises protobuf's DecodeError on bad bytes). The bound
#: class method itself: this runs for every envelope a client sees.
parse_envelope = pb.UmbraEnvelopeV1.FromString


def encode_envelope(conversation_hint: str, salt: int, encrypted: pb.EncryptedBytes) -> bytes:
    envelope = pb.UmbraEnvelopeV1(conversation_hint=conversation_hint, salt=salt)
    envelope.encrypted_bytes.CopyFrom(encrypted)
    return envelope.SerializeToString()


def is_canonical(envelope: pb.UmbraEnvelopeV1, data: bytes) -> bool:
    """Whether ``data`` is the one encoding of ``envelope`` we would produce.

    Protobuf parsing accepts re-encodings (unknown fields, repeated fields, overlong varints);
    refusing them for our own envelopes means a relay cannot republish one of them under another
    Waku message hash. Drops ``envelope``'s unknown fields.
    """
    envelope.DiscardUnknownFields()
    return bool(envelope.SerializeToString(deterministic=True) == data)
