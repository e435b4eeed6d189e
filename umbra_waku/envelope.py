"""The UmbraEnvelopeV1 codec (profile §1): the outermost payload of every umbra-waku message."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from umbra_waku._proto import umbra_envelope_pb2 as pb

__all__ = ["EncryptedBytes", "Envelope", "EnvelopeError", "decode_envelope", "encode_envelope"]

EncryptedBytes = pb.EncryptedBytes


class EnvelopeError(Exception):
    """Bytes that are not a well-formed UmbraEnvelopeV1 (classification: BadlyFormed)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    conversation_hint: str
    salt: int
    encrypted_bytes: pb.EncryptedBytes


def encode_envelope(conversation_hint: str, salt: int, encrypted: pb.EncryptedBytes) -> bytes:
    envelope = pb.UmbraEnvelopeV1(conversation_hint=conversation_hint, salt=salt)
    envelope.encrypted_bytes.CopyFrom(encrypted)
    return envelope.SerializeToString()


def decode_envelope(data: bytes) -> pb.UmbraEnvelopeV1:
    """Parse and check the required fields; raises EnvelopeError."""
    envelope = pb.UmbraEnvelopeV1()
    try:
        envelope.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise EnvelopeError(f"not an UmbraEnvelopeV1: {exc}") from None
    if not envelope.conversation_hint:
        raise EnvelopeError("conversation_hint is missing")
    if not envelope.HasField("encrypted_bytes"):
        raise EnvelopeError("encrypted_bytes is missing")
    return envelope
