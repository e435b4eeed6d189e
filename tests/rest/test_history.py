"""query_history(): store v3 in both styles, cursors, legacy v1 fallback, late subscribers."""

from __future__ import annotations

import base64
import time

import pytest
from fakenodes import FakeNetwork
from umbra_waku_rest.codec import (
    LegacyCursor,
    StoreV3Cursor,
    decode_cursor,
    encode_cursor,
    parse_store_v1,
    parse_store_v3,
)

from umbra_waku.errors import InvalidInput, InvalidPubsubTopic, NodeHTTPError
from umbra_waku.transport import HistoryQuery, fetch_history
from umbra_waku.waku.message import MessageHash, WakuMessage

from .conftest import CT, CT2, OpenTransport, ServeNode, message

TOPIC = "/waku/2/rs/0/0"
VECTOR_HEX = "cccab07fed94181c83937c8ca8340c9108492b7ede354a6d95421ad34141fd37"
VECTOR_B64 = "zMqwf+2UGByDk3yMqDQMkQhJK37eNUptlUIa00FB/Tc="
VECTOR_B64URL = "zMqwf-2UGByDk3yMqDQMkQhJK37eNUptlUIa00FB_Tc="


def _history(network: FakeNetwork, count: int, content_topic: str = CT) -> list[WakuMessage]:
    base = time.time_ns() - 5_000_000_000
    sent = [
        WakuMessage.create(f"old {i}".encode(), content_topic, timestamp=base + i * 1000)
        for i in range(count)
    ]
    for m in sent:
        network.publish(TOPIC, m)
    return sent


@pytest.mark.parametrize("flavour", ["nwaku", "go-waku"])
async def test_a_late_subscriber_gets_earlier_messages_from_history(
    serve_node: ServeNode, open_transport: OpenTransport, network: FakeNetwork, flavour: str
) -> None:
    early = await serve_node("nwaku", network=network)
    late = await serve_node(flavour, network=network)
    publisher = await open_transport(early.url)
    sent = [message(f"before {i}".encode()) for i in range(7)]
    for m in sent:
        await publisher.publish(m)
    newcomer = await open_transport(late.url)
    query = HistoryQuery([CT], page_size=3)
    got = [r async for r in fetch_history(newcomer, query)]
    assert [r.message for r in got] == sent
    assert [r.hash for r in got] == [m.hash(TOPIC) for m in sent]
    assert {r.source for r in got} == {"store"}
    # Three pages, each asked with the previous page's cursor (go-waku: legacy v1 only).
    store = "/store/v3/messages" if flavour == "nwaku" else "/store/v1/messages"
    assert len(late.node.requests_to(store)) == 3
    assert len(late.node.requests_to("/store")) == 3


async def test_nwaku_cursor_is_sent_as_0x_hex(
    serve_node: ServeNode, open_transport: OpenTransport, network: FakeNetwork
) -> None:
    served = await serve_node("nwaku", network=network)
    sent = _history(network, 5)
    transport = await open_transport(served.url)
    first = await transport.query_history(HistoryQuery([CT], page_size=2))
    assert first.cursor is not None
    second = await transport.query_history(HistoryQuery([CT], page_size=2, cursor=first.cursor))
    assert [r.message for r in first.messages + second.messages] == sent[:4]
    request = served.node.requests_to("/store/v3/messages")[1]
    assert request.query["cursor"] == sent[1].hash(TOPIC).hex0x()
    assert request.query["includeData"] == "true"
    assert request.query["pubsubTopic"] == TOPIC
    assert request.query["contentTopics"] == CT
    assert request.query["ascending"] == "true"
    assert request.query["pageSize"] == "2"


async def test_go_waku_cursor_is_sent_url_safe(
    serve_node: ServeNode, open_transport: OpenTransport, network: FakeNetwork
) -> None:
    # store v3 through go-waku works when its store peer is a v3 server (nwaku).
    served = await serve_node("go-waku", network=network)
    # 40 random hashes: many contain '+' or '/' in standard base64, which go-waku would refuse.
    sent = _history(network, 40)
    transport = await open_transport(served.url, store_api="v3")
    got = [r async for r in fetch_history(transport, HistoryQuery([CT], page_size=1))]
    assert [r.message for r in got] == sent
    cursors = [
        r.query["cursor"] for r in served.node.requests_to("/store/v3") if "cursor" in r.query
    ]
    assert len(cursors) == 39  # every page but the first was asked with a cursor
    assert all("+" not in c and "/" not in c for c in cursors)
    assert any("-" in c or "_" in c for c in cursors)
    assert cursors[0] == sent[0].hash(TOPIC).b64url()


async def test_descending_queries_page_backwards(
    serve_node: ServeNode, open_transport: OpenTransport, network: FakeNetwork
) -> None:
    served = await serve_node("nwaku", network=network)
    sent = _history(network, 5)
    transport = await open_transport(served.url)
    first = await transport.query_history(HistoryQuery([CT], page_size=2, ascending=False))
    assert [r.message for r in first.messages] == sent[3:]  # newest page, chronological
    second = await transport.query_history(
        HistoryQuery([CT], page_size=2, ascending=False, cursor=first.cursor)
    )
    assert [r.message for r in second.messages] == sent[1:3]
    assert served.node.requests_to("/store/v3")[0].query["ascending"] == "false"


async def test_time_range_and_store_peer_are_sent(
    serve_node: ServeNode, open_transport: OpenTransport, network: FakeNetwork
) -> None:
    served = await serve_node("nwaku", network=network)
    sent = _history(network, 5)
    peer = "/ip4/10.0.0.1/tcp/60000/p2p/16Uiu2HAmPeer"
    transport = await open_transport(served.url, store_peer=peer)
    start, end = sent[1].timestamp, sent[3].timestamp
    page = await transport.query_history(HistoryQuery([CT], start_time=start, end_time=end))
    assert [r.message for r in page.messages] == sent[1:4]  # both ends inclusive
    assert page.cursor is None
    query = served.node.requests_to("/store/v3")[0].query
    assert query["startTime"] == str(start)
    assert query["endTime"] == str(end)
    assert query["peerAddr"] == peer


async def test_go_waku_goes_straight_to_legacy_store_v1_and_converts_cursors(
    serve_node: ServeNode, open_transport: OpenTransport, network: FakeNetwork
) -> None:
    served = await serve_node("go-waku", network=network, store_v3=False)
    sent = _history(network, 5)
    transport = await open_transport(served.url)
    got = [r async for r in fetch_history(transport, HistoryQuery([CT], page_size=2))]
    assert [r.message for r in got] == sent
    assert [r.hash for r in got] == [m.hash(TOPIC) for m in sent]
    # v3 was never asked (go-waku's store server is legacy-only); every page went to v1 with a
    # URL-safe digest.
    assert served.node.requests_to("/store/v3") == []
    legacy = served.node.requests_to("/store/v1")
    assert len(legacy) == 3
    assert legacy[1].query["digest"] == sent[1].hash(TOPIC).b64url()
    assert legacy[1].query["senderTime"] == str(sent[1].timestamp)


async def test_nwaku_legacy_store_cursor_round_trip(
    serve_node: ServeNode, open_transport: OpenTransport, network: FakeNetwork
) -> None:
    served = await serve_node("nwaku", network=network, legacy_store=True)
    sent = _history(network, 3)
    transport = await open_transport(served.url, store_api="v1")
    got = [r async for r in fetch_history(transport, HistoryQuery([CT], page_size=2))]
    assert [r.message for r in got] == sent
    assert served.node.requests_to("/store/v3") == []
    assert served.node.requests_to("/store/v1")[1].query["digest"] == sent[1].hash(TOPIC).b64()


async def test_no_store_is_a_typed_http_error(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku", store=False)
    transport = await open_transport(served.url)
    with pytest.raises(NodeHTTPError) as caught:
        await transport.query_history(HistoryQuery([CT]))
    assert caught.value.status == 412
    assert not caught.value.retriable


async def test_invalid_history_queries_fail_before_sending(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, num_shards=8, cluster_id=1)
    with pytest.raises(InvalidInput):
        await transport.query_history(HistoryQuery([]))
    with pytest.raises(InvalidInput, match="different shards"):
        await transport.query_history(
            HistoryQuery(["/toychat/2/huilong/proto", "/statusim/1/community/cbor"])
        )
    with pytest.raises(InvalidInput, match="cursor"):
        await transport.query_history(HistoryQuery([CT], cursor="0xnot-ours"))
    with pytest.raises(InvalidPubsubTopic):
        await transport.query_history(HistoryQuery([CT], pubsub_topic="/waku/2/default-waku/proto"))
    with pytest.raises(InvalidInput):
        await transport.query_history(HistoryQuery([CT], page_size=0))
    assert served.node.requests_to("/store") == []


async def test_a_query_for_two_topics_on_an_explicit_pubsub_topic(
    serve_node: ServeNode, open_transport: OpenTransport, network: FakeNetwork
) -> None:
    served = await serve_node("go-waku", network=network)
    a = _history(network, 2, CT)
    b = _history(network, 2, CT2)
    transport = await open_transport(served.url, num_shards=8, cluster_id=1)
    page = await transport.query_history(HistoryQuery([CT, CT2], pubsub_topic=TOPIC))
    assert {r.message for r in page.messages} == set(a + b)
    assert served.node.requests_to("/store/v1")[0].query["contentTopics"] == f"{CT},{CT2}"


# -- codec, without a node ----------------------------------------------------------------------


def test_reference_hash_vector_in_every_encoding() -> None:
    h = MessageHash(bytes.fromhex(VECTOR_HEX))
    assert MessageHash.parse(VECTOR_B64) == h == MessageHash.parse("0x" + VECTOR_HEX)
    assert StoreV3Cursor(h).for_node("nwaku") == "0x" + VECTOR_HEX
    assert StoreV3Cursor(h).for_node("go-waku") == VECTOR_B64URL


def test_opaque_cursors_round_trip() -> None:
    v3 = StoreV3Cursor(MessageHash(bytes.fromhex(VECTOR_HEX)))
    legacy = LegacyCursor(TOPIC, 1_700_000_000_000_000_000, 1_700_000_000_000_000_001, b"\xfb" * 32)
    for cursor in (v3, legacy):
        text = encode_cursor(cursor)
        assert decode_cursor(text) == cursor
        assert text.isascii()
        assert " " not in text
    assert legacy.params("nwaku")[2] == ("digest", base64.b64encode(b"\xfb" * 32).decode())
    assert legacy.params("go-waku")[2] == (
        "digest",
        base64.urlsafe_b64encode(b"\xfb" * 32).decode(),
    )
    for garbage in (
        "",
        "v3.zz",
        "v1.!!",
        "v9.abc",
        "v1." + base64.urlsafe_b64encode(b"{}").decode(),
    ):
        with pytest.raises(InvalidInput):
            decode_cursor(garbage)


def test_store_v3_both_key_styles_parse_to_the_same_page() -> None:
    payload = "AQIDBFRFU1QFBgcI"
    ct = "/waku/2/default-content/proto"
    nwaku = {
        "requestId": "",
        "statusCode": 200,
        "statusDesc": "OK",
        "messages": [
            {
                "messageHash": "0x" + VECTOR_HEX,
                "message": {
                    "payload": payload,
                    "contentTopic": ct,
                    "version": 0,
                    "timestamp": 1681964442000000000,
                    "ephemeral": False,
                },
                "pubsubTopic": TOPIC,
            }
        ],
        "paginationCursor": "0x" + VECTOR_HEX,
    }
    go = {
        "request_id": "x",
        "status_code": 200,
        "messages": [
            {
                "message_hash": VECTOR_B64,
                "message": {
                    "payload": payload,
                    "content_topic": ct,
                    "timestamp": 1681964442000000000,
                },
                "pubsub_topic": TOPIC,
            }
        ],
        "pagination_cursor": VECTOR_B64,
    }
    a = parse_store_v3(nwaku, TOPIC, "test")
    b = parse_store_v3(go, TOPIC, "test")
    assert a == b
    assert a.messages[0].hash.hex() == VECTOR_HEX  # computed locally, equals the reference
    assert a.cursor == StoreV3Cursor(MessageHash(bytes.fromhex(VECTOR_HEX)))


def test_legacy_store_both_cursor_styles() -> None:
    nwaku = {
        "messages": [],
        "cursor": {
            "pubsubTopic": TOPIC,
            "senderTime": 5,
            "storeTime": 6,
            "digest": {"data": VECTOR_B64},
        },
    }
    go = {
        "messages": None,
        "cursor": {"pubsubTopic": TOPIC, "senderTime": "5", "storeTime": "6", "digest": VECTOR_B64},
    }
    assert parse_store_v1(nwaku, TOPIC, "t") == parse_store_v1(go, TOPIC, "t")
    assert parse_store_v1(go, TOPIC, "t").cursor == LegacyCursor(
        TOPIC, 5, 6, bytes.fromhex(VECTOR_HEX)
    )
