"""Conversation hints (profile §5) and the index that matches them in O(1).

- ``hint(conversation_id, salt)``: hex BLAKE2s-256 over salt (4 bytes big-endian) || UTF-8
  conversation_id. The inbox uses it with a fresh random salt per envelope.
- ``private_hint(hint_key, counter)``: the unlinkable hints of conversations with a shared secret
  (PrivateV1): hex keyed BLAKE2s-256 of the sender's per-direction message counter. Without the key
  the hints of one conversation look like independent random strings; with it the receiver
  precomputes the next few, so matching is one table lookup whatever the number of conversations.
- :class:`HintIndex`: fingerprint -> owners, a compact multiset kept by the native extension
  (``umbra_waku/_speedups.c``). A hint's *fingerprint* is its first 16 hex digits as an integer
  (the first 8 bytes of its digest, :func:`private_fingerprints`); the hints are PRF outputs, so
  fingerprints are uniform. A fingerprint hit is a candidate only: its owner checks the whole hint
  before anything else happens.
- :class:`FastPath`: the native NotForMe answer of ``Session.classify``.

``impl`` is the module providing them: the extension, or its pure-Python twin
``umbra_waku._speedups_py`` when the extension is not built or ``UMBRA_WAKU_PURE_PYTHON=1`` is set
(to test the twin; ``NATIVE`` tells which).
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Generic, TypeVar

# UMBRA_WAKU_PURE_PYTHON=1 (a test switch) selects the twin without loading the extension
_pure = os.environ.get("UMBRA_WAKU_PURE_PYTHON") == "1"
if not _pure:
    try:
        from umbra_waku import _speedups as impl
    except ImportError:  # pragma: no cover - installed without a C compiler; CI requires it
        _pure = True
if _pure:
    from umbra_waku import _speedups_py as impl  # type: ignore[no-redef]

__all__ = [
    "HINT_LENGTH",
    "NATIVE",
    "FastPath",
    "HintIndex",
    "ParkingLot",
    "fingerprint",
    "hint",
    "impl",
    "private_fingerprints",
    "private_hint",
]

NATIVE: bool = impl.NATIVE
HintIndex = impl.HintIndex
FastPath = impl.FastPath
#: the fingerprint of a hint (an int), or None when it is not 64 lowercase hex digits, i.e. when
#: it can never be one of ours
fingerprint = impl.fingerprint

HINT_LENGTH = 64  # hex characters of a 32-byte digest

_SALT = struct.Struct(">I")

T = TypeVar("T")


def hint(conversation_id: str, salt: int) -> str:
    return hashlib.blake2s(_SALT.pack(salt) + conversation_id.encode()).hexdigest()


#: ``private_hint(hint_key, counter) -> str``: hex keyed BLAKE2s-256 of u64(counter); the key is
#: 32 bytes (native: the same function as hashlib's, without its call overhead)
private_hint = impl.private_hint

#: ``private_fingerprints(hint_key, first, count) -> bytes``: the fingerprints of the hints of
#: counters ``first`` .. ``first + count - 1``, packed: 8 bytes each, big-endian (the first 8 bytes
#: of each digest), as HintIndex.add_packed takes them
private_fingerprints = impl.private_fingerprints


class ParkingLot(Generic[T]):
    """Envelopes that matched nothing yet, kept by hint until some conversation expects it.

    A PrivateV1 receiver expects only the next ``window`` hints of each conversation. When
    messages arrive out of order by more than that (a store backfill delivering older messages
    after newer live ones), the newer ones match nothing at first. Parked here (bounded, oldest
    evicted first), they are released the moment a :class:`HintIndex` using this lot starts
    expecting their hint's fingerprint, and the caller classifies them again (a fingerprint
    collision merely classifies one envelope once more). A hint that is not 64 lowercase hex
    digits can never be expected: it is not parked.
    """

    __slots__ = ("_capacity", "_parked", "_ready")

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._parked: dict[int, T] = {}  # fingerprint -> item
        self._ready: list[T] = []

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, hint_value: str, item: T) -> None:
        fp = fingerprint(hint_value)
        if fp is None:
            return
        parked = self._parked
        parked[fp] = item
        if len(parked) > self._capacity:
            del parked[next(iter(parked))]

    def notice(self, fp: int) -> None:
        """A conversation now expects a hint of fingerprint ``fp``: release what was parked."""
        item = self._parked.pop(fp, None)
        if item is not None:
            self._ready.append(item)

    def take_ready(self) -> list[T]:
        """The released items, to classify again (each is returned once)."""
        ready, self._ready = self._ready, []
        return ready
