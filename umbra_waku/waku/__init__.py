"""Waku primitives, sans-IO: WakuMessage and its deterministic hash, topics and autosharding."""

from umbra_waku.waku.message import (
    MAX_MESSAGE_BYTES,
    MAX_META_BYTES,
    MessageHash,
    WakuMessage,
    message_hash,
)
from umbra_waku.waku.topics import (
    ContentTopic,
    PubsubTopic,
    content_topic_shard,
    parse_content_topic,
    parse_pubsub_topic,
    pubsub_topic_for,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_META_BYTES",
    "ContentTopic",
    "MessageHash",
    "PubsubTopic",
    "WakuMessage",
    "content_topic_shard",
    "message_hash",
    "parse_content_topic",
    "parse_pubsub_topic",
    "pubsub_topic_for",
]
