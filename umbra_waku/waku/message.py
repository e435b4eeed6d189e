"""14/WAKU2-MESSAGE: the WakuMessage, its protobuf encoding and its deterministic hash.

The hash is SHA-256 over pubsub_topic || payload || content_topic || meta || uint64_be(timestamp),
exactly as nwaku (``waku_core/message/digest.nim``), go-waku (``pb/utils.go``) and js-waku
compute it.
version, ephemeral and the RLN proof are not hashed; the pubsub topic is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import time
from dataclasses import dataclass, field

from umbra_waku._proto import waku_message_pb2
from umbra_waku.errors import InvalidInput, MessageTooLarge

#: nwaku's --max-msg-size default (150 KiB) applies to the protobuf-encoded WakuMessage.
#: go-waku's default "150KB" is 150,000 bytes; publishers keep under the smaller of the two.
MAX_MESSAGE_BYTES = 150_000
#: MaxMetaAttrLength in nwaku; longer meta makes receivers drop the message.
MAX_META_BYTES = 64

_U64 = struct.Struct(">Q")
_MASK64 = (1 << 64) - 1


class MessageHash(bytes):
    """A 32-byte deterministic message hash; ``str()`` gives the 0x-hex form nwaku uses."""

    __slots__ = ()

    def __new__(cls, value: bytes) -> MessageHash:
        if len(value) != 32:
            raise InvalidInput(f"a message hash is 32 bytes, got {len(value)}")
        return super().__new__(cls, value)

    @classmethod
    def parse(cls, text: str) -> MessageHash:
        """Read a hash as any node writes it: 0x-hex (nwaku >= v0.35), hex, standard or URL-safe
        base64 (go-waku, nwaku <= v0.34)."""
        stripped = text.strip()
        body = stripped[2:] if stripped[:2] in ("0x", "0X") else stripped
        if len(body) == 64:
            try:
                return cls(bytes.fromhex(body))
            except ValueError:
                pass
        try:
            padded = stripped + "=" * (-len(stripped) % 4)
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"not a message hash: {text[:80]!r}") from exc
        return cls(raw)

    def hex0x(self) -> str:
        return "0x" + self.hex()

    def b64(self) -> str:
        return base64.b64encode(self).decode()

    def b64url(self) -> str:
        return base64.urlsafe_b64encode(self).decode()

    def __str__(self) -> str:
        return self.hex0x()

    def __repr__(self) -> str:
        return f"MessageHash({self.hex0x()})"


def message_hash(
    pubsub_topic: str,
    payload: bytes,
    content_topic: str,
    meta: bytes,
    timestamp: int | None,
) -> MessageHash:
    """The 14/WAKU2-MESSAGE deterministic hash. A missing timestamp hashes as 0."""
    h = hashlib.sha256(pubsub_topic.encode())
    h.update(payload)
    h.update(content_topic.encode())
    h.update(meta)
    h.update(_U64.pack((timestamp or 0) & _MASK64))
    return MessageHash(h.digest())


@dataclass(frozen=True, slots=True)
class WakuMessage:
    """A Waku message. ``timestamp`` is Unix nanoseconds; publishers always set it explicitly,
    so that the hash they compute is the hash the network stores."""

    payload: bytes
    content_topic: str
    timestamp: int | None = None
    version: int = 0
    meta: bytes = b""
    ephemeral: bool = False
    rate_limit_proof: bytes = field(default=b"", repr=False)

    @classmethod
    def create(
        cls,
        payload: bytes,
        content_topic: str,
        *,
        meta: bytes = b"",
        ephemeral: bool = False,
        timestamp: int | None = None,
    ) -> WakuMessage:
        """A message stamped with the current time in nanoseconds."""
        return cls(
            payload=payload,
            content_topic=content_topic,
            timestamp=time.time_ns() if timestamp is None else timestamp,
            meta=meta,
            ephemeral=ephemeral,
        )

    def hash(self, pubsub_topic: str) -> MessageHash:
        return message_hash(
            pubsub_topic, self.payload, self.content_topic, self.meta, self.timestamp
        )

    def encode(self) -> bytes:
        """The protobuf encoding, the form whose size the network limits."""
        pb = waku_message_pb2.WakuMessage(payload=self.payload, content_topic=self.content_topic)
        if self.version:
            pb.version = self.version
        if self.timestamp is not None:
            pb.timestamp = self.timestamp
        if self.meta:
            pb.meta = self.meta
        if self.rate_limit_proof:
            pb.rate_limit_proof = self.rate_limit_proof
        if self.ephemeral:
            pb.ephemeral = True
        return pb.SerializeToString()

    @classmethod
    def decode(cls, data: bytes) -> WakuMessage:
        """Parse a protobuf-encoded WakuMessage; raises InvalidInput on bad bytes."""
        pb = waku_message_pb2.WakuMessage()
        try:
            pb.ParseFromString(data)
        except Exception as exc:
            raise InvalidInput(f"not a WakuMessage: {exc}") from exc
        return cls(
            payload=pb.payload,
            content_topic=pb.content_topic,
            timestamp=pb.timestamp if pb.HasField("timestamp") else None,
            version=pb.version,
            meta=pb.meta,
            ephemeral=pb.ephemeral,
            rate_limit_proof=pb.rate_limit_proof,
        )

    def encoded_size(self) -> int:
        return len(self.encode())

    def check_publishable(self, limit: int = MAX_MESSAGE_BYTES) -> None:
        """Raise InvalidInput before anything is sent if no node would accept this message."""
        from umbra_waku.waku.topics import parse_content_topic

        parse_content_topic(self.content_topic)
        if not self.payload:
            raise InvalidInput("the payload is empty; the Waku REST APIs refuse empty payloads")
        if len(self.meta) > MAX_META_BYTES:
            raise InvalidInput(f"meta is {len(self.meta)} bytes, above {MAX_META_BYTES}")
        if self.timestamp is None or self.timestamp <= 0:
            raise InvalidInput("timestamp must be explicit Unix nanoseconds")
        size = self.encoded_size()
        if size > limit:
            raise MessageTooLarge(size, limit)
