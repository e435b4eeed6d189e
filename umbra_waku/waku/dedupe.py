"""A bounded memory of recent message hashes, to drop the duplicates a network delivers."""

from __future__ import annotations

from collections import OrderedDict

from umbra_waku.waku.message import MessageHash


class RecentHashes:
    """A bounded set of message hashes; the least recently seen is evicted first.

    Used twice over: by the REST adapter (a node's own messages, relay and filter overlap, store
    backfill) and by the client runtime (the same envelope from several sources).
    """

    __slots__ = ("_capacity", "_hashes")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._hashes: OrderedDict[MessageHash, None] = OrderedDict()

    def __contains__(self, message_hash: object) -> bool:
        return message_hash in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)

    def seen(self, message_hash: MessageHash) -> bool:
        """Whether the hash is known (refreshing it if so)."""
        if message_hash in self._hashes:
            self._hashes.move_to_end(message_hash)
            return True
        return False

    def add(self, message_hash: MessageHash) -> bool:
        """Remember the hash; False if it was already known (a duplicate)."""
        if self.seen(message_hash):
            return False
        self._hashes[message_hash] = None
        if len(self._hashes) > self._capacity:
            self._hashes.popitem(last=False)
        return True
