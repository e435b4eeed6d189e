"""JSON <-> WakuMessage, store responses of both node kinds, and opaque history cursors.

Pure functions, no I/O. Anything a node sends that does not have the documented shape becomes a
NodeProtocolError here, so a KeyError or TypeError never escapes the adapter.

Node differences handled here (see /work/shared/reference/waku-rest-api.md):

- nwaku writes camelCase keys and 0x-hex hashes (store v3 >= v0.35); go-waku writes the protobuf
  structs with Go's encoding/json: snake_case keys and standard base64 bytes.
- go-waku omits unset ``version``/``timestamp`` and may write ``"ephemeral": null``; a Go nil
  slice is ``null`` where nwaku writes ``[]``.
- Legacy store v1 cursors: nwaku ``{"senderTime": int, "storeTime": int, "digest": {"data": b64}}``,
  go-waku ``{"senderTime": "str", "storeTime": "str", "digest": "b64"}``; go-waku parses the
  digest it is sent back (and v3 cursors) as URL-safe base64.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Literal

from umbra_waku.errors import InvalidInput, NodeProtocolError
from umbra_waku.transport import ReceivedMessage, Source
from umbra_waku.waku.message import MessageHash, WakuMessage

Flavour = Literal["nwaku", "go-waku"]


def message_to_json(message: WakuMessage) -> dict[str, object]:
    """The RelayWakuMessage body. Only documented keys (nwaku answers 400 to unknown ones),
    ``meta`` only when non-empty, ``ephemeral`` only when true, the timestamp always explicit."""
    body: dict[str, object] = {
        "payload": base64.b64encode(message.payload).decode(),
        "contentTopic": message.content_topic,
        "version": message.version,
        "timestamp": message.timestamp,
    }
    if message.meta:
        body["meta"] = base64.b64encode(message.meta).decode()
    if message.ephemeral:
        body["ephemeral"] = True
    if message.rate_limit_proof:
        body["proof"] = base64.b64encode(message.rate_limit_proof).decode()
    return body


def message_from_json(value: object, where: str) -> WakuMessage:
    """A message as relay, filter and store answers carry it, in either key style."""
    if not isinstance(value, dict):
        raise NodeProtocolError(f"{where}: a message must be a JSON object, got {_kind(value)}")
    content_topic = _pick(value, "contentTopic", "content_topic")
    if not isinstance(content_topic, str):
        raise NodeProtocolError(f"{where}: message without a string contentTopic")
    _check_utf8(content_topic, where, "contentTopic")
    payload = _bytes_field(value, where, "payload")
    meta = _bytes_field(value, where, "meta")
    proof = _bytes_field(value, where, "proof", "rate_limit_proof", "rateLimitProof")
    version = _int_field(value, where, "version")
    timestamp = _int_field(value, where, "timestamp")
    ephemeral = value.get("ephemeral")
    if ephemeral is not None and not isinstance(ephemeral, bool):
        raise NodeProtocolError(f"{where}: ephemeral must be a bool or null")
    if version is not None and not 0 <= version <= 0xFFFFFFFF:
        raise NodeProtocolError(f"{where}: version {version} out of range")
    return WakuMessage(
        payload=payload,
        content_topic=content_topic,
        timestamp=timestamp,
        version=version or 0,
        meta=meta,
        ephemeral=bool(ephemeral),
        rate_limit_proof=proof,
    )


def message_list_from_json(value: object, where: str) -> list[WakuMessage]:
    """A relay or filter poll result: a JSON array, or ``null`` (go-waku) for none."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise NodeProtocolError(f"{where}: expected a JSON array of messages, got {_kind(value)}")
    return [message_from_json(item, where) for item in value]


# ---------------------------------------------------------------------------------------------
# Cursors


@dataclass(frozen=True, slots=True)
class StoreV3Cursor:
    """Store v3 paginates by the hash of the last message of a page."""

    hash: MessageHash

    def for_node(self, flavour: Flavour) -> str:
        # nwaku >= v0.35 parses 0x-hex; go-waku parses URL-safe base64 (with padding).
        return self.hash.hex0x() if flavour == "nwaku" else self.hash.b64url()


@dataclass(frozen=True, slots=True)
class LegacyCursor:
    """Legacy store v1 paginates by an index (sender time, store time, digest)."""

    pubsub_topic: str
    sender_time: int
    store_time: int
    digest: bytes

    def params(self, flavour: Flavour) -> list[tuple[str, str]]:
        digest = (
            base64.b64encode(self.digest)
            if flavour == "nwaku"
            else base64.urlsafe_b64encode(self.digest)
        )
        return [
            ("senderTime", str(self.sender_time)),
            ("storeTime", str(self.store_time)),
            ("digest", digest.decode()),
        ]


Cursor = StoreV3Cursor | LegacyCursor


def encode_cursor(cursor: Cursor) -> str:
    """The opaque string a HistoryPage carries; only :func:`decode_cursor` reads it."""
    if isinstance(cursor, StoreV3Cursor):
        return "v3." + cursor.hash.hex()
    legacy = {
        "p": cursor.pubsub_topic,
        "s": cursor.sender_time,
        "t": cursor.store_time,
        "d": base64.b64encode(cursor.digest).decode(),
    }
    return "v1." + base64.urlsafe_b64encode(json.dumps(legacy).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """Read back a cursor made by :func:`encode_cursor`; anything else is InvalidInput."""
    kind, _, body = text.partition(".")
    try:
        if kind == "v3":
            return StoreV3Cursor(MessageHash(bytes.fromhex(body)))
        if kind == "v1":
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            legacy = json.loads(raw)
            pubsub, sender, store, digest = legacy["p"], legacy["s"], legacy["t"], legacy["d"]
            if not (
                isinstance(pubsub, str)
                and _is_int(sender)
                and _is_int(store)
                and isinstance(digest, str)
            ):
                raise ValueError("bad legacy cursor fields")
            return LegacyCursor(pubsub, sender, store, base64.b64decode(digest, validate=True))
    except (ValueError, KeyError, TypeError, binascii.Error, InvalidInput) as exc:
        raise InvalidInput(f"not a history cursor of this transport: {text[:80]!r}") from exc
    raise InvalidInput(f"not a history cursor of this transport: {text[:80]!r}")


# ---------------------------------------------------------------------------------------------
# Store responses


@dataclass(frozen=True, slots=True)
class StorePage:
    messages: list[ReceivedMessage]
    cursor: Cursor | None


def parse_store_v3(value: object, pubsub_topic: str, where: str) -> StorePage:
    """A /store/v3/messages answer in nwaku's (camelCase, hex) or go-waku's (snake_case, base64)
    form. Hashes are recomputed locally with the message's pubsub topic."""
    if not isinstance(value, dict):
        raise NodeProtocolError(f"{where}: expected a JSON object, got {_kind(value)}")
    status = _pick(value, "statusCode", "status_code")
    if status is not None and status != 200:
        desc = _pick(value, "statusDesc", "status_desc")
        raise NodeProtocolError(f"{where}: store answered status {status}: {desc!r}")
    items = value.get("messages")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise NodeProtocolError(f"{where}: messages must be an array, got {_kind(items)}")
    received: list[ReceivedMessage] = []
    for item in items:
        if not isinstance(item, dict):
            raise NodeProtocolError(f"{where}: a store entry must be an object")
        if item.get("message") is None:
            raise NodeProtocolError(f"{where}: store entry without message (includeData ignored?)")
        message = message_from_json(item["message"], where)
        topic = _pick(item, "pubsubTopic", "pubsub_topic") or pubsub_topic
        if not isinstance(topic, str):
            raise NodeProtocolError(f"{where}: pubsubTopic must be a string")
        _check_utf8(topic, where, "pubsubTopic")
        received.append(ReceivedMessage.of(message, topic, "store"))
    raw_cursor = _pick(value, "paginationCursor", "pagination_cursor")
    cursor: Cursor | None = None
    if raw_cursor not in (None, ""):
        if not isinstance(raw_cursor, str):
            raise NodeProtocolError(f"{where}: paginationCursor must be a string")
        try:
            cursor = StoreV3Cursor(MessageHash.parse(raw_cursor))
        except InvalidInput as exc:
            raise NodeProtocolError(f"{where}: unreadable pagination cursor") from exc
    return StorePage(received, cursor)


def parse_store_v1(value: object, pubsub_topic: str, where: str) -> StorePage:
    """A legacy /store/v1/messages answer (messages carry no pubsub topic: it is the query's)."""
    if not isinstance(value, dict):
        raise NodeProtocolError(f"{where}: expected a JSON object, got {_kind(value)}")
    error = _pick(value, "errorMessage", "error_message")
    if error:
        raise NodeProtocolError(f"{where}: store error: {str(error)[:200]}")
    source: Source = "store"
    messages = [
        ReceivedMessage.of(message, pubsub_topic, source)
        for message in message_list_from_json(value.get("messages"), where)
    ]
    raw = value.get("cursor")
    if raw is None:
        return StorePage(messages, None)
    if not isinstance(raw, dict):
        raise NodeProtocolError(f"{where}: cursor must be an object")
    digest_field = raw.get("digest")
    if isinstance(digest_field, dict):  # nwaku: {"data": "<b64>"}
        digest_field = digest_field.get("data")
    if not isinstance(digest_field, str):
        raise NodeProtocolError(f"{where}: cursor digest must be base64")
    cursor = LegacyCursor(
        pubsub_topic=_str_or(raw.get("pubsubTopic") or raw.get("pubsub_topic"), pubsub_topic),
        sender_time=_int_value(raw.get("senderTime"), where, "senderTime"),
        store_time=_int_value(raw.get("storeTime"), where, "storeTime"),
        digest=_b64(digest_field, where, "digest"),
    )
    return StorePage(messages, cursor)


# ---------------------------------------------------------------------------------------------
# helpers


def _pick(value: dict[str, object], *keys: str) -> object:
    for key in keys:
        if key in value:
            return value[key]
    return None


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str_or(value: object, default: str) -> str:
    """``value`` if it is a non-empty string that UTF-8 can encode, else ``default``."""
    if not isinstance(value, str) or not value:
        return default
    try:
        value.encode()
    except UnicodeEncodeError:
        return default
    return value


def _b64(text: str, where: str, name: str) -> bytes:
    """Standard or URL-safe base64, padded or not: go-waku accepts and may write either."""
    try:
        padded = text + "=" * (-len(text) % 4)
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NodeProtocolError(f"{where}: {name} is not base64") from exc


def _bytes_field(value: dict[str, object], where: str, *names: str) -> bytes:
    raw = _pick(value, *names)
    if raw is None or raw == "":
        return b""
    if not isinstance(raw, str):
        raise NodeProtocolError(f"{where}: {names[0]} must be a base64 string")
    return _b64(raw, where, names[0])


# ASCII digits only: str.isdigit() also accepts superscripts and other scripts' digits
_DECIMAL = re.compile(r"-?[0-9]+")


def _check_utf8(text: str, where: str, name: str) -> None:
    """JSON may carry lone surrogates (\\udXXX) that no UTF-8 encoding (and no hash) accepts."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise NodeProtocolError(f"{where}: {name} is not valid Unicode") from None


def _int_field(value: dict[str, object], where: str, name: str) -> int | None:
    raw = value.get(name)
    return None if raw is None else _int_value(raw, where, name)


def _int_value(raw: object, where: str, name: str) -> int:
    """An int64, as a JSON number or (protobuf JSON, go-waku cursors) a decimal string."""
    if isinstance(raw, str) and _DECIMAL.fullmatch(raw):
        raw = int(raw)
    if not _is_int(raw):
        raise NodeProtocolError(f"{where}: {name} must be an integer, got {_kind(raw)}")
    assert isinstance(raw, int)
    if not -(1 << 63) <= raw < (1 << 63):
        raise NodeProtocolError(f"{where}: {name} is not an int64")
    return raw
