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
from typing import Generic, TypeVar

HINT_LENGTH = 64  # hex characters of a 32-byte digest

_SALT = struct.Struct(">I")
_COUNTER = struct.Struct(">Q")

T = TypeVar("T")


def hint(conversation_id: str, salt: int) -> str:
    return hashlib.blake2s(_SALT.pack(salt) + conversation_id.encode()).hexdigest()


def private_hint(hint_key: bytes, counter: int) -> str:
    return hashlib.blake2s(_COUNTER.pack(counter), key=hint_key).hexdigest()


class HintIndex(Generic[T]):
    """hint -> owner (a conversation) for every hint some conversation expects next.

    Owners add the hints they expect and remove the ones they consumed or gave up on; lookups are
    a single dict access, independent of how many conversations are registered.
    """

    __slots__ = ("_entries", "get")

    def __init__(self) -> None:
        self._entries: dict[str, T] = {}
        # the lookup is the bound dict.get itself: one call on the hottest path
        self.get: Callable[[str], T | None] = self._entries.get

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, hint_value: str, owner: T) -> None:
        self._entries[hint_value] = owner

    def remove(self, hint_value: str) -> None:
        self._entries.pop(hint_value, None)
