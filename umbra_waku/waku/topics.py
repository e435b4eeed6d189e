"""23/WAKU2-TOPICS content topics, static shards and autosharding.

Autosharding follows nwaku ``getGenZeroShard``, go-waku ``GetShardFromContentTopic`` and js-waku
``contentTopicToShardIndex``: SHA-256 over application || version, the *last* 8 bytes read as a
big-endian uint64, modulo the number of shards in the network.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from umbra_waku.errors import InvalidContentTopic, InvalidPubsubTopic

# Segments are kept to characters every node accepts in paths and store queries unchanged.
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_PUBSUB = re.compile(r"/waku/2/rs/([0-9]{1,5})/([0-9]{1,5})")  # ASCII digits only


@dataclass(frozen=True, slots=True)
class ContentTopic:
    """A parsed content topic ``/[generation/]application/version/name/encoding``."""

    application: str
    version: str
    name: str
    encoding: str
    generation: int | None = None

    def __str__(self) -> str:
        gen = "" if self.generation is None else f"/{self.generation}"
        return f"{gen}/{self.application}/{self.version}/{self.name}/{self.encoding}"

    def shard(self, num_shards: int) -> int:
        return _shard_of(self.application, self.version, num_shards)


@dataclass(frozen=True, slots=True)
class PubsubTopic:
    """A static-sharding pubsub topic ``/waku/2/rs/<cluster>/<shard>``."""

    cluster_id: int
    shard: int

    def __str__(self) -> str:
        return f"/waku/2/rs/{self.cluster_id}/{self.shard}"


@lru_cache(maxsize=4096)
def parse_content_topic(topic: str) -> ContentTopic:
    """Validate a content topic; raises InvalidContentTopic saying what is wrong."""
    if not isinstance(topic, str) or not topic:
        raise InvalidContentTopic("a content topic must be a non-empty string")
    if not topic.startswith("/"):
        raise InvalidContentTopic(f"content topic {topic!r} must start with '/'")
    parts = topic[1:].split("/")
    if len(parts) not in (4, 5):
        raise InvalidContentTopic(
            f"content topic {topic!r} must be /<application>/<version>/<name>/<encoding> "
            "or /<generation>/<application>/<version>/<name>/<encoding>"
        )
    for part in parts:
        if not _SEGMENT.fullmatch(part):
            raise InvalidContentTopic(
                f"content topic {topic!r}: segment {part!r} must be non-empty and use only "
                "letters, digits, '.', '_' and '-'"
            )
    generation: int | None = None
    if len(parts) == 5:
        if not parts[0].isdigit():
            raise InvalidContentTopic(f"content topic {topic!r}: generation must be a number")
        generation = int(parts[0])
        if generation != 0:
            raise InvalidContentTopic(f"content topic {topic!r}: only generation 0 is supported")
        parts = parts[1:]
    return ContentTopic(parts[0], parts[1], parts[2], parts[3], generation)


def parse_pubsub_topic(topic: str) -> PubsubTopic:
    match = _PUBSUB.fullmatch(topic) if isinstance(topic, str) else None
    if match is None:
        raise InvalidPubsubTopic(f"pubsub topic {topic!r} must be /waku/2/rs/<cluster>/<shard>")
    cluster, shard = int(match[1]), int(match[2])
    if cluster > 0xFFFF or shard > 0xFFFF:
        raise InvalidPubsubTopic(f"pubsub topic {topic!r}: cluster and shard are 16-bit numbers")
    return PubsubTopic(cluster, shard)


@lru_cache(maxsize=4096)
def _shard_of(application: str, version: str, num_shards: int) -> int:
    if num_shards < 1:
        raise InvalidPubsubTopic("the number of shards in the network must be at least 1")
    digest = hashlib.sha256((application + version).encode()).digest()
    return int.from_bytes(digest[24:], "big") % num_shards


def content_topic_shard(content_topic: str, num_shards: int) -> int:
    """The autosharding shard of a content topic in a network of ``num_shards`` shards."""
    return parse_content_topic(content_topic).shard(num_shards)


def pubsub_topic_for(content_topic: str, cluster_id: int, num_shards: int) -> str:
    """The pubsub topic autosharding puts ``content_topic`` on."""
    return str(PubsubTopic(cluster_id, content_topic_shard(content_topic, num_shards)))
