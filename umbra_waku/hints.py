"""Conversation hints (profile §5) and the index that matches them in O(1).

- ``hint(conversation_id, salt)``: hex BLAKE2s-256 over salt (4 bytes big-endian) || UTF-8
  conversation_id. The inbox uses it with a fresh random salt per envelope.
- ``private_hint(hint_key, counter)``: the unlinkable hints of conversations with a shared secret
  (PrivateV1): hex keyed BLAKE2s-256 of the sender's per-direction message counter. Without the key
  the hints of one conversation look like independent random strings; with it the receiver
  precomputes the next few, so matching is one dict lookup whatever the number of conversations.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Any, Generic, TypeVar

HINT_LENGTH = 64  # hex characters of a 32-byte digest

_SALT = struct.Struct(">I")
_COUNTER = struct.Struct(">Q")

T = TypeVar("T")


def hint(conversation_id: str, salt: int) -> str:
    return hashlib.blake2s(_SALT.pack(salt) + conversation_id.encode()).hexdigest()


def private_hint(hint_key: bytes, counter: int) -> str:
    return hashlib.blake2s(_COUNTER.pack(counter), key=hint_key).hexdigest()


class ParkingLot(Generic[T]):
    """Envelopes that matched nothing yet, kept by hint until some conversation expects it.

    A PrivateV1 receiver expects only the next ``window`` hints of each conversation. When
    messages arrive out of order by more than that (a store backfill delivering older messages
    after newer live ones), the newer ones match nothing at first. Parked here (bounded, oldest
    evicted first), they are released the moment a :class:`HintIndex` using this lot starts
    expecting their hint, and the caller classifies them again.
    """

    __slots__ = ("_capacity", "_parked", "_ready")

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._parked: dict[str, T] = {}
        self._ready: list[T] = []

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, hint_value: str, item: T) -> None:
        parked = self._parked
        parked[hint_value] = item
        if len(parked) > self._capacity:
            del parked[next(iter(parked))]

    def notice(self, hint_value: str) -> None:
        """A conversation now expects ``hint_value``: release what was parked under it."""
        item = self._parked.pop(hint_value, None)
        if item is not None:
            self._ready.append(item)

    def take_ready(self) -> list[T]:
        """The released items, to classify again (each is returned once)."""
        ready, self._ready = self._ready, []
        return ready


class HintIndex(Generic[T]):
    """hint -> owner (a conversation) for every hint some conversation expects next.

    Owners add the hints they expect and remove the ones they consumed or gave up on; lookups are
    a single dict access, independent of how many conversations are registered.
    """

    __slots__ = ("_entries", "get", "parking")

    def __init__(self, parking: ParkingLot[Any] | None = None) -> None:
        self._entries: dict[str, T] = {}
        self.parking = parking
        # the lookup is the bound dict.get itself: one call on the hottest path
        self.get: Callable[[str], T | None] = self._entries.get

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, hint_value: str, owner: T) -> None:
        self._entries[hint_value] = owner
        if self.parking is not None:
            self.parking.notice(hint_value)

    def remove(self, hint_value: str) -> None:
        self._entries.pop(hint_value, None)
