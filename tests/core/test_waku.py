"""14/WAKU2-MESSAGE hash vectors, 23/WAKU2-TOPICS parsing, autosharding, WakuMessage codec."""

from __future__ import annotations

import base64
import hashlib

import pytest

from umbra_waku.errors import (
    InvalidContentTopic,
    InvalidInput,
    InvalidPubsubTopic,
    MessageTooLarge,
)
from umbra_waku.waku import (
    MAX_MESSAGE_BYTES,
    MAX_META_BYTES,
    ContentTopic,
    MessageHash,
    PubsubTopic,
    WakuMessage,
    content_topic_shard,
    message_hash,
    parse_content_topic,
    parse_pubsub_topic,
    pubsub_topic_for,
)

from . import wire

DEFAULT_CONTENT = "/waku/2/default-content/proto"
PAYLOAD = bytes.fromhex("010203045445535405060708")
META_12 = bytes.fromhex("73757065722d736563726574")  # b"super-secret"
META_64 = bytes(range(64))
TS = 0x175789BFA23F8400  # 1681964442 s in ns

# ---- 14/WAKU2-MESSAGE deterministic hash (waku-rest-api.md section 4) ----

RFC_VECTORS = [
    # (meta, payload, hash): pubsub /waku/2/default-waku/proto
    (META_12, PAYLOAD, "64cce733fed134e83da02b02c6f689814872b1a0ac97ea56b76095c3c72bfe05"),
    (META_64, PAYLOAD, "7158b6498753313368b9af8f6e0a0a05104f68f972981da42a43bc53fb0c1b27"),
    (b"", PAYLOAD, "a2554498b31f5bcdfcbf7fa58ad1c2d45f0254f3f8110a85588ec3cf10720fd8"),
    (META_12, b"", "483ea950cb63f9b9d6926b262bb36194d3f40a0463ce8446228350bd44e96de4"),
]

NWAKU_VECTORS = [
    # pubsub /waku/2/rs/0/0 (nwaku tests/waku_core/test_message_digest.nim)
    (b"", PAYLOAD, "cccab07fed94181c83937c8ca8340c9108492b7ede354a6d95421ad34141fd37"),
    (META_12, PAYLOAD, "b9b4852f9d8c489846e8bfc6c5ca6a1a8d460a40d28832a966e029eb39619199"),
    (META_64, PAYLOAD, "653460d04f66c5b11814d235152f4f246e6f03ef80a305a825913636fbafd0ba"),
    (META_12, b"", "0f6448cc23b2db6c696aa6ab4b693eff4cf3549ff346fe1dbeb281697396a09f"),
]


@pytest.mark.parametrize(("meta", "payload", "expected"), RFC_VECTORS)
def test_rfc_hash_vectors(meta: bytes, payload: bytes, expected: str) -> None:
    pubsub = "/waku/2/default-waku/proto"
    assert message_hash(pubsub, payload, DEFAULT_CONTENT, meta, TS).hex() == expected
    msg = WakuMessage(payload, DEFAULT_CONTENT, timestamp=TS, meta=meta)
    assert msg.hash(pubsub) == bytes.fromhex(expected)
    # version, ephemeral and the RLN proof are not hashed
    other = WakuMessage(
        payload, DEFAULT_CONTENT, timestamp=TS, meta=meta, version=1, ephemeral=True,
        rate_limit_proof=b"proof",
    )  # fmt: skip
    assert other.hash(pubsub) == msg.hash(pubsub)


@pytest.mark.parametrize(("meta", "payload", "expected"), NWAKU_VECTORS)
def test_nwaku_hash_vectors(meta: bytes, payload: bytes, expected: str) -> None:
    digest = message_hash("/waku/2/rs/0/0", payload, DEFAULT_CONTENT, meta, TS)
    assert digest.hex() == expected
    # recomputed independently: sha256(pubsub || payload || content || meta || u64be(ts))
    independent = hashlib.sha256(
        b"/waku/2/rs/0/0" + payload + DEFAULT_CONTENT.encode() + meta + TS.to_bytes(8, "big")
    ).hexdigest()
    assert independent == expected
    assert MessageHash.parse(str(digest)) == digest
    assert MessageHash.parse(digest.b64()) == digest
    assert MessageHash.parse(digest.b64url()) == digest


def test_rest_and_go_waku_encodings_of_the_first_nwaku_vector() -> None:
    assert base64.b64decode("AQIDBFRFU1QFBgcI") == PAYLOAD
    expected = bytes.fromhex("cccab07fed94181c83937c8ca8340c9108492b7ede354a6d95421ad34141fd37")
    forms = [
        "0xcccab07fed94181c83937c8ca8340c9108492b7ede354a6d95421ad34141fd37",
        "0XCCCAB07FED94181C83937C8CA8340C9108492B7EDE354A6D95421AD34141FD37",
        "cccab07fed94181c83937c8ca8340c9108492b7ede354a6d95421ad34141fd37",
        "zMqwf+2UGByDk3yMqDQMkQhJK37eNUptlUIa00FB/Tc=",  # go-waku JSON, standard base64
        "zMqwf-2UGByDk3yMqDQMkQhJK37eNUptlUIa00FB_Tc=",  # go-waku cursor, URL-safe
        "zMqwf-2UGByDk3yMqDQMkQhJK37eNUptlUIa00FB_Tc",  # unpadded
        "  0xcccab07fed94181c83937c8ca8340c9108492b7ede354a6d95421ad34141fd37\n",
    ]
    for form in forms:
        assert MessageHash.parse(form) == expected, form
    parsed = MessageHash.parse(forms[0])
    assert str(parsed) == forms[0]
    assert parsed.hex0x() == forms[0]
    assert parsed.b64() == forms[3]
    assert parsed.b64url() == forms[4]
    digest = message_hash(
        "/waku/2/rs/0/0", base64.b64decode("AQIDBFRFU1QFBgcI"), DEFAULT_CONTENT, b"", TS
    )
    assert digest == expected


@pytest.mark.parametrize(
    "text",
    ["", "0x", "0x1234", "not a hash", "zMqwf+2UGByDk3yMqDQMkQhJK37eNUptlUIa00FB", "AQID" * 20],
)
def test_message_hash_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidInput):
        MessageHash.parse(text)


def test_message_hash_is_32_bytes() -> None:
    with pytest.raises(InvalidInput):
        MessageHash(bytes(31))


def test_timestamp_encoding_in_hash() -> None:
    base = hashlib.sha256(b"/waku/2/rs/0/0" + b"x" + b"/a/1/b/c")
    for ts, tail in [
        (None, bytes(8)),
        (0, bytes(8)),
        (-1, b"\xff" * 8),
        (1, b"\x00" * 7 + b"\x01"),
        (2**63 - 1, b"\x7f" + b"\xff" * 7),
    ]:
        h = base.copy()
        h.update(tail)
        assert message_hash("/waku/2/rs/0/0", b"x", "/a/1/b/c", b"", ts) == h.digest()


# ---- content topics ----

INBOX_NAME = "inbox-" + "ab" * 32
VALID_TOPICS = [
    ("/toychat/2/huilong/proto", ContentTopic("toychat", "2", "huilong", "proto")),
    ("/0/toychat/2/huilong/proto", ContentTopic("toychat", "2", "huilong", "proto", 0)),
    (DEFAULT_CONTENT, ContentTopic("waku", "2", "default-content", "proto")),
    ("/waku/2/content/test.js", ContentTopic("waku", "2", "content", "test.js")),
    ("/my-app/2/chatroom-1/proto", ContentTopic("my-app", "2", "chatroom-1", "proto")),
    ("/umbra/1/private/proto", ContentTopic("umbra", "1", "private", "proto")),
    (f"/umbra/1/{INBOX_NAME}/proto", ContentTopic("umbra", "1", INBOX_NAME, "proto")),
    ("/a_b/1.0/c/d", ContentTopic("a_b", "1.0", "c", "d")),
]  # fmt: skip

INVALID_TOPICS = [
    "",
    "toychat/2/huilong/proto",  # no leading slash
    "/toychat/2/huilong",  # 3 parts
    "/toychat/2/huilong/proto/",  # trailing slash
    "/a/b/c/d/e/f",  # 6 parts
    "//2/huilong/proto",  # empty application
    "/toychat//huilong/proto",  # empty version
    "/toychat/2//proto",  # empty name
    "/toychat/2/huilong/",  # empty encoding
    "//toychat/2/huilong/proto",  # empty generation
    "/1/toychat/2/huilong/proto",  # generation > 0
    "/x/toychat/2/huilong/proto",  # generation not numeric
    "/toychat/2/hui/long/proto",  # a slash inside a segment reads as a non-numeric generation
    "/toy chat/2/huilong/proto",  # whitespace
    "/toychat/2/huilong/pro\u0442o",  # non-ASCII
    "/\u0660/toychat/2/huilong/proto",  # non-ASCII digit as generation
    " /toychat/2/huilong/proto",
    "/toychat/2/huilong/proto\n",
]


@pytest.mark.parametrize(("text", "parsed"), VALID_TOPICS)
def test_valid_content_topics(text: str, parsed: ContentTopic) -> None:
    assert parse_content_topic(text) == parsed
    assert str(parsed) == text


@pytest.mark.parametrize("text", INVALID_TOPICS)
def test_invalid_content_topics(text: str) -> None:
    with pytest.raises(InvalidContentTopic):
        parse_content_topic(text)


def test_invalid_content_topic_non_string() -> None:
    with pytest.raises(InvalidContentTopic):
        parse_content_topic(None)


# ---- autosharding (waku-rest-api.md section 3) ----

SHARD_TABLE = [
    # (content topic, bytes hashed, N=8, N=1024) ; N=1 is always 0
    ("/myapp/1/latest/proto", b"myapp1", 0, 296),
    ("/waku/2/content/test.js", b"waku2", 1, 921),
    ("/waku/2/default-content/proto", b"waku2", 1, 921),
    ("/app/22/sometopic/someencoding", b"app22", 2, 370),
    ("/toychat/2/huilong/proto", b"toychat2", 3, 1011),
    ("/0/toychat/2/huilong/proto", b"toychat2", 3, 1011),
    ("/statusim/1/community/cbor", b"statusim1", 4, 308),
    ("/app/27/sometopic/someencoding", b"app27", 5, 93),
    ("/app/29/sometopic/someencoding", b"app29", 6, 726),
    ("/app/20/sometopic/someencoding", b"app20", 7, 447),
    ("/toychat2/2/huilong/proto", b"toychat22", 6, None),
    ("/toychat/4/huilong/proto2", b"toychat4", 7, None),
    ("/my-app/2/chatroom-1/proto", b"my-app2", 4, 948),
]


@pytest.mark.parametrize(("topic", "hashed", "n8", "n1024"), SHARD_TABLE)
def test_autosharding_table(topic: str, hashed: bytes, n8: int, n1024: int | None) -> None:
    assert content_topic_shard(topic, 8) == n8
    assert content_topic_shard(topic, 1) == 0
    assert pubsub_topic_for(topic, 1, 8) == f"/waku/2/rs/1/{n8}"
    last64 = int.from_bytes(hashlib.sha256(hashed).digest()[24:], "big")
    assert last64 % 8 == n8
    if n1024 is not None:
        assert content_topic_shard(topic, 1024) == n1024
        assert last64 % 1024 == n1024


def test_autosharding_spec_example_and_non_power_of_two() -> None:
    assert hashlib.sha256(b"myapp1").hexdigest() == (
        "8e541178adbd8126068c47be6a221d77d64837221893a8e4e53139fb802d4928"
    )
    # The implementations reduce only the last 64 bits: for N=3 that differs from the full-hash
    # rule (waku-rest-api.md section 3 states the two results the other way round).
    assert content_topic_shard("/app/22/sometopic/someencoding", 3) == 0
    assert int.from_bytes(hashlib.sha256(b"app22").digest()[24:], "big") % 3 == 0
    assert int(hashlib.sha256(b"app22").hexdigest(), 16) % 3 == 2
    with pytest.raises(InvalidPubsubTopic):
        content_topic_shard("/app/22/sometopic/someencoding", 0)


def test_all_umbra_topics_share_one_shard() -> None:
    topics = ["/umbra/1/private/proto", "/umbra/1/inbox-" + "0" * 64 + "/proto"]
    for n in (1, 8, 1024):
        assert len({content_topic_shard(t, n) for t in topics}) == 1


# ---- pubsub topics ----


@pytest.mark.parametrize(
    ("text", "cluster", "shard"),
    [("/waku/2/rs/1/4", 1, 4), ("/waku/2/rs/0/0", 0, 0), ("/waku/2/rs/65535/65535", 65535, 65535)],
)
def test_pubsub_topic_parse(text: str, cluster: int, shard: int) -> None:
    parsed = parse_pubsub_topic(text)
    assert parsed == PubsubTopic(cluster, shard)
    assert str(parsed) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/waku/2/rs/1",
        "/waku/2/rs/1/4/",
        "/waku/2/rs/65536/0",
        "/waku/2/rs/0/65536",
        "/waku/2/rs/-1/0",
        "/waku/2/rs/1/x",
        "/waku/2/default-waku/proto",
        "/waku/2/rs/1/4\n",
        "/waku/2/rs/\u0661/\u0662",  # non-ASCII digits
        "waku/2/rs/1/4",
    ],
)
def test_pubsub_topic_rejects(text: str) -> None:
    with pytest.raises(InvalidPubsubTopic):
        parse_pubsub_topic(text)


# ---- WakuMessage codec ----

MESSAGES = [
    WakuMessage(b"x", "/a/1/b/c"),
    WakuMessage(PAYLOAD, DEFAULT_CONTENT, timestamp=TS, meta=META_12),
    WakuMessage(b"", DEFAULT_CONTENT, timestamp=0),
    WakuMessage(b"p" * 1000, "/a/1/b/c", timestamp=-5, version=2, meta=META_64, ephemeral=True,
                rate_limit_proof=b"\x01\x02"),
]  # fmt: skip


@pytest.mark.parametrize("msg", MESSAGES)
def test_waku_message_round_trip(msg: WakuMessage) -> None:
    data = msg.encode()
    assert WakuMessage.decode(data) == msg
    assert msg.encoded_size() == len(data)
    fields = wire.as_dict(data)
    assert fields.get(1, b"") == msg.payload
    assert fields[2] == msg.content_topic.encode()
    if msg.timestamp is None:
        assert 10 not in fields
    else:  # sint64: zigzag
        zz = fields[10]
        assert isinstance(zz, int)
        assert (zz >> 1) ^ -(zz & 1) == msg.timestamp
    assert fields.get(11, b"") == msg.meta
    assert bool(fields.get(31, 0)) == msg.ephemeral


def test_waku_message_decode_rejects_garbage() -> None:
    with pytest.raises(InvalidInput):
        WakuMessage.decode(b"\xff\xff\xff")


def test_create_stamps_nanoseconds() -> None:
    msg = WakuMessage.create(b"x", "/a/1/b/c")
    assert msg.timestamp is not None
    assert msg.timestamp > 1_600_000_000 * 10**9
    msg.check_publishable()


def test_check_publishable() -> None:
    good = WakuMessage(b"x", "/a/1/b/c", timestamp=TS, meta=bytes(MAX_META_BYTES))
    good.check_publishable()
    with pytest.raises(InvalidContentTopic):
        WakuMessage(b"x", "not-a-topic", timestamp=TS).check_publishable()
    with pytest.raises(InvalidInput, match="empty"):
        WakuMessage(b"", "/a/1/b/c", timestamp=TS).check_publishable()
    with pytest.raises(InvalidInput, match="meta"):
        WakuMessage(b"x", "/a/1/b/c", timestamp=TS, meta=bytes(65)).check_publishable()
    with pytest.raises(InvalidInput, match="timestamp"):
        WakuMessage(b"x", "/a/1/b/c").check_publishable()
    with pytest.raises(InvalidInput, match="timestamp"):
        WakuMessage(b"x", "/a/1/b/c", timestamp=0).check_publishable()


def test_check_publishable_size_limit() -> None:
    # The limit applies to the encoded WakuMessage: find the largest payload that fits.
    overhead = len(WakuMessage(b"", "/a/1/b/c", timestamp=TS).encode())
    # an empty payload is omitted; a ~150 KB one adds its key byte and a 3-byte length prefix
    payload = bytes(MAX_MESSAGE_BYTES - overhead - 4)
    fits = WakuMessage(payload, "/a/1/b/c", timestamp=TS)
    assert fits.encoded_size() == MAX_MESSAGE_BYTES
    fits.check_publishable()
    too_big = WakuMessage(payload + b"\x00", "/a/1/b/c", timestamp=TS)
    with pytest.raises(MessageTooLarge) as info:
        too_big.check_publishable()
    assert info.value.size == MAX_MESSAGE_BYTES + 1
    assert info.value.limit == MAX_MESSAGE_BYTES
    assert isinstance(info.value, InvalidInput)
    with pytest.raises(MessageTooLarge):
        WakuMessage(b"x" * 200, "/a/1/b/c", timestamp=TS).check_publishable(limit=100)
