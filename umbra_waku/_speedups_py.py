"""The pure-Python twin of the native ``umbra_waku._speedups`` (umbra_waku/_speedups.c).

Same names, same behaviour, used when the extension is not built (no C compiler at install
time); ``umbra_waku.hints.NATIVE`` tells which one runs. tests/core/test_speedups.py holds the two
against each other, and CI fails when the extension is missing. The C file explains the design;
in short:

- :class:`HintIndex`: a multiset of (fingerprint, owner) entries. A fingerprint is the first 16
  hex digits of a hint as an integer (the first 8 bytes of its digest); a hit is a candidate the
  owner must check against the whole hint.
- :func:`scan_envelope`: a strict subset of the protobuf parser's acceptance of UmbraEnvelopeV1,
  enough for the common shape (hint, salt, encrypted_bytes in that order, minimal varints).
- :class:`FastPath`: "certainly NotForMe" for envelopes of that shape whose hint nothing expects,
  on a topic that is not the inbox; otherwise the full classification (``fallback``). Its
  ``many`` classifies a batch in order (natively with the index's memory reads prefetched).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

NATIVE = False

T = TypeVar("T")

_HEX = frozenset(b"0123456789abcdef")
_HINT_CHARS = 64


def _normalise(fp: int) -> int:
    # 0 and 1 mark free slots in the native table; both implementations map them alike
    return fp + 2 if fp < 2 else fp


def _check_fp(fp: int) -> int:
    if not 0 <= fp < 1 << 64:
        raise OverflowError("a fingerprint is an unsigned 64-bit integer")
    return _normalise(fp)


_COUNTER = struct.Struct(">Q")


def _hint_key(hint_key: bytes, name: str) -> bytes:
    if not isinstance(hint_key, bytes) or len(hint_key) != 32:
        raise ValueError(f"{name}: the hint key is 32 bytes")
    return hint_key


def private_hint(hint_key: bytes, counter: int) -> str:
    """hex(BLAKE2s-256 keyed with ``hint_key``, of u64(counter)) (docs/protocol.md 5.2)."""
    key = _hint_key(hint_key, "private_hint")
    if not 0 <= counter < 1 << 64:
        raise OverflowError("a counter is an unsigned 64-bit integer")
    return hashlib.blake2s(_COUNTER.pack(counter), key=key).hexdigest()


def private_fingerprints(hint_key: bytes, first: int, count: int) -> bytes:
    """The first 8 bytes of the digests of counters ``first`` .. ``first + count - 1``."""
    key = _hint_key(hint_key, "private_fingerprints")
    if not 0 <= count <= 1 << 20:
        raise ValueError("private_fingerprints: count out of range")
    if not 0 <= first < 1 << 64:
        raise OverflowError("a counter is an unsigned 64-bit integer")
    if count and first + count - 1 >= 1 << 64:
        raise OverflowError("private_fingerprints: counters past 2**64")
    return b"".join(
        hashlib.blake2s(_COUNTER.pack(c), key=key).digest()[:8] for c in range(first, first + count)
    )


def fingerprint(hint: str) -> int | None:
    """The first 16 hex digits of a 64-digit lowercase hex hint, as an integer; None otherwise."""
    if not isinstance(hint, str):
        raise TypeError("fingerprint() takes a str")
    if len(hint) != _HINT_CHARS or not hint.isascii():
        return None
    raw = hint.encode("ascii")
    if not _HEX.issuperset(raw):
        return None
    return int(raw[:16], 16)


class HintIndex(Generic[T]):
    """fingerprint -> owners: a multiset of (fingerprint, owner) entries."""

    __slots__ = ("_entries", "_mirror", "_size", "_sources", "_tag", "parking")

    def __init__(self, parking: Any = None) -> None:
        self._entries: dict[int, list[T]] = {}
        self._size = 0
        self.parking = parking
        self._mirror: HintIndex[Any] | None = None
        self._tag: Any = None
        self._sources = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, fp: object) -> bool:
        if not isinstance(fp, int) or not 0 <= fp < 1 << 64:
            return False
        return _normalise(fp) in self._entries

    @property
    def capacity(self) -> int:
        return len(self._entries)

    @property
    def tombstones(self) -> int:
        return 0

    def add(self, fp: int, owner: T) -> None:
        key = _check_fp(fp)
        self._entries.setdefault(key, []).append(owner)
        self._size += 1
        if self._mirror is not None:
            self._mirror._put(key, self._tag)
        if self.parking is not None:
            self.parking.notice(fp)

    def add_packed(self, fps: bytes, owner: T) -> None:
        values = _unpack(fps)
        for fp in values:
            self._entries.setdefault(_normalise(fp), []).append(owner)
            if self._mirror is not None:
                self._mirror._put(_normalise(fp), self._tag)
        self._size += len(values)
        if self.parking is not None:
            for fp in values:
                self.parking.notice(fp)

    def _put(self, key: int, owner: T) -> None:
        self._entries.setdefault(key, []).append(owner)
        self._size += 1

    def remove(self, fp: int, owner: T) -> bool:
        key = _check_fp(fp)
        owners = self._entries.get(key)
        if owners is None:
            return False
        for position, candidate in enumerate(owners):
            if candidate is owner:
                del owners[position]
                if not owners:
                    del self._entries[key]
                self._size -= 1
                if self._mirror is not None:
                    self._mirror.remove(key, self._tag)
                return True
        return False

    def remove_packed(self, fps: bytes, owner: T) -> int:
        return sum(self.remove(fp, owner) for fp in _unpack(fps))

    def owners(self, fp: int) -> tuple[T, ...]:
        return tuple(self._entries.get(_check_fp(fp), ()))

    def clear(self) -> None:
        self._unmirror_entries()
        self._entries.clear()
        self._size = 0

    def mirror_to(self, index: HintIndex[Any] | None, tag: Any) -> None:
        """Keep one (fingerprint, ``tag``) entry in ``index`` for each entry of this one, from
        now on (None: stop, and take them out of the mirror)."""
        if index is None:
            self._unmirror()
            return
        if not isinstance(index, HintIndex):
            raise TypeError("mirror_to: the mirror must be a HintIndex or None")
        if index is self or index._mirror is not None or self._sources > 0:
            raise ValueError("mirror_to: mirrors do not chain")
        self._unmirror()
        for key, owners in self._entries.items():
            for _ in owners:
                index._put(key, tag)
        self._mirror, self._tag = index, tag
        index._sources += 1

    def _unmirror_entries(self) -> None:
        mirror = self._mirror
        if mirror is not None:
            for key, owners in self._entries.items():
                for _ in owners:
                    mirror.remove(key, self._tag)

    def _unmirror(self) -> None:
        mirror = self._mirror
        if mirror is not None:
            self._unmirror_entries()
            mirror._sources -= 1
            self._mirror, self._tag = None, None

    def route(self, payloads: Iterable[Any], max_bytes: int) -> list[tuple[T, ...] | None]:
        """Per payload, the owners of its hint's fingerprint (a tuple, empty for none) when the
        scanner is sure of the envelope (exact bytes, at most ``max_bytes``), else None."""
        if isinstance(payloads, bytes | bytearray | memoryview | str):
            raise TypeError("route() takes a sequence of payloads")
        out: list[tuple[T, ...] | None] = []
        for data in tuple(payloads):
            scanned = _scan(data) if type(data) is bytes and len(data) <= max_bytes else None
            out.append(None if scanned is None else self.owners(int(scanned[0][:16], 16)))
        return out


def _unpack(fps: bytes) -> list[int]:
    if len(fps) % 8:
        raise ValueError("packed fingerprints: a multiple of 8 bytes")
    return [int.from_bytes(fps[i : i + 8], "big") for i in range(0, len(fps), 8)]


# ---- the envelope scanner (the rules and why they stay within upb's: see _speedups.c) ----


def _varint(data: bytes, pos: int, end: int, max_bytes: int) -> tuple[int, int] | None:
    """A minimal varint of at most ``max_bytes`` at ``pos``: (value, next position)."""
    value = 0
    for i in range(max_bytes):
        if pos >= end:
            return None
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if i > 0 and byte == 0:
                return None
            return value, pos
    return None


def _delimited(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """A length prefix (at most 3 bytes) and its body: (body start, body end)."""
    read = _varint(data, pos, end, 3)
    if read is None:
        return None
    length, pos = read
    if length > end - pos:
        return None
    return pos, pos + length


def _bytes_message(data: bytes, pos: int, end: int, max_field: int) -> bool:
    last = 0
    while pos < end:
        tag = data[pos]
        pos += 1
        field = tag >> 3
        if tag >= 0x80 or tag & 7 != 2 or field <= last or field > max_field:
            return False
        last = field
        body = _delimited(data, pos, end)
        if body is None:
            return False
        pos = body[1]
    return True


_SUB_FIELDS = {2: 1, 3: 3, 4: 2}  # Plaintext, Ecies, Ratchet: their highest bytes field


def _encrypted(data: bytes, pos: int, end: int) -> bool:
    if pos >= end:
        return False
    tag = data[pos]
    field = tag >> 3
    if tag >= 0x80 or tag & 7 != 2 or not 1 <= field <= 4:
        return False
    body = _delimited(data, pos + 1, end)
    if body is None or body[1] != end:
        return False
    if field == 1:
        return True
    return _bytes_message(data, body[0], body[1], _SUB_FIELDS[field])


def _scan(data: bytes) -> tuple[bytes, int] | None:
    pos, end = 0, len(data)
    hint: bytes | None = None
    salt = 0
    have_encrypted = False
    last = 0
    while pos < end:
        tag = data[pos]
        pos += 1
        field, wire_type = tag >> 3, tag & 7
        if tag >= 0x80 or field <= last:
            return None
        last = field
        if field == 1:
            body = _delimited(data, pos, end) if wire_type == 2 else None
            if body is None or body[1] - body[0] != _HINT_CHARS:
                return None
            value = data[body[0] : body[1]]
            if not _HEX.issuperset(value):
                return None
            hint, pos = value, body[1]
        elif field == 2:
            read = _varint(data, pos, end, 5) if wire_type == 0 else None
            if read is None or read[0] > 0xFFFFFFFF:
                return None
            salt, pos = read
        elif field == 10:
            body = _delimited(data, pos, end) if wire_type == 2 else None
            if body is None or not _encrypted(data, body[0], body[1]):
                return None
            have_encrypted, pos = True, body[1]
        else:
            return None
    if hint is None or not have_encrypted:
        return None
    return hint, salt


def scan_envelope(data: bytes) -> tuple[str, int] | None:
    """The scanner's verdict alone: (hint, salt) when ``data`` has the accepted shape."""
    scanned = _scan(bytes(data))
    if scanned is None:
        return None
    return scanned[0].decode("ascii"), scanned[1]


class FastPath:
    """Call with ``(data, content_topic=None)``: NotForMe when certain, else ``fallback``'s
    answer. ``result_type(hint, salt)`` builds the NotForMe result."""

    __slots__ = ("_fallback", "_inbox_topic", "_index", "_max_bytes", "_recent", "_result")

    def __init__(
        self,
        index: HintIndex[Any],
        recent: HintIndex[Any],
        inbox_topic: str,
        result_type: Callable[[str, int], Any],
        max_bytes: int,
        fallback: Callable[..., Any],
    ) -> None:
        self._index, self._recent = index, recent
        self._inbox_topic = inbox_topic
        self._result = result_type
        self._max_bytes = max_bytes
        self._fallback = fallback

    def notforme(self, data: Any, content_topic: Any) -> Any:
        if (
            content_topic is None
            or type(content_topic) is not str
            or type(data) is not bytes
            or content_topic == self._inbox_topic
            or len(data) > self._max_bytes
        ):
            return None
        scanned = _scan(data)
        if scanned is None:
            return None
        hint, salt = scanned
        fp = int(hint[:16], 16)
        if fp in self._index or fp in self._recent:
            return None
        return self._result(hint.decode("ascii"), salt)

    def __call__(self, data: bytes, content_topic: str | None = None) -> Any:
        result = self.notforme(data, content_topic)
        if result is not None:
            return result
        return self._fallback(data, content_topic)

    def many(self, payloads: Iterable[Any], content_topic: Any = None) -> list[Any]:
        """``[self(data, content_topic) for data in payloads]``, in order (the native version
        prefetches the index's memory for the envelopes ahead; nothing here to prefetch)."""
        if isinstance(payloads, bytes | bytearray | memoryview | str):
            raise TypeError("many() takes a sequence of payloads, not one payload")
        # a copy first, as the native version takes: a fallback changing the caller's list
        # changes nothing here
        return [self(data, content_topic) for data in tuple(payloads)]
