"""Smoke tests with plain REST calls (no umbra-waku adapter): the real nodes start, peer, and
carry messages between go-waku and js-waku in both directions, byte for byte."""

from __future__ import annotations

import time
import uuid
from urllib.parse import quote

import pytest

from umbra_waku.waku.message import WakuMessage

from .harness import PUBSUB_TOPIC, GoWakuNode, GoWakuPair, JsWakuPeer, message_to_rest, wait_until

pytestmark = [pytest.mark.gowaku]

TOPIC_PATH = quote(PUBSUB_TOPIC, safe="")


def make_message(tag: str, **kwargs: object) -> WakuMessage:
    return WakuMessage.create(
        f"{tag}-{uuid.uuid4().hex}".encode(),
        "/umbra-smoke/1/interop/proto",
        **kwargs,  # type: ignore[arg-type]
    )


async def subscribe(node: GoWakuNode) -> None:
    status, body = await node.request("POST", "/relay/v1/subscriptions", [PUBSUB_TOPIC])
    assert (status, body) == (200, True)


async def publish(node: GoWakuNode, message: WakuMessage) -> None:
    status, body = await node.request(
        "POST", f"/relay/v1/messages/{TOPIC_PATH}", message_to_rest(message)
    )
    assert (status, body) == (200, True), node.tail(20)


async def wait_relay(node: GoWakuNode, message: WakuMessage, time_limit: float = 30) -> WakuMessage:
    seen: list[WakuMessage] = []

    async def check() -> WakuMessage | None:
        seen.extend(await node.relay_messages())
        return next((m for m in seen if m.payload == message.payload), None)

    return await wait_until(
        check, time_limit=time_limit, what=f"the message on go-waku {node.name}"
    )


async def test_gowaku_pair_relays_both_ways(gowaku_pair: GoWakuPair) -> None:
    a, b = gowaku_pair.nodes
    await subscribe(a)
    await subscribe(b)
    status, version = await a.request("GET", "/debug/v1/version")
    assert status == 200
    assert version.startswith("v0.10")

    to_b = make_message("a-to-b", meta=b"meta!")
    await publish(a, to_b)
    assert await wait_relay(b, to_b) == to_b

    to_a = make_message("b-to-a")
    await publish(b, to_a)
    assert await wait_relay(a, to_a) == to_a


@pytest.mark.jswaku
async def test_jswaku_and_gowaku_interoperate(
    gowaku_pair: GoWakuPair, jswaku_peer: JsWakuPeer
) -> None:
    a, b = gowaku_pair.nodes
    await subscribe(a)
    await subscribe(b)

    # js-waku -> go-waku A (direct) and B (forwarded by A); the exact ns timestamp survives.
    from_js = make_message("js", timestamp=time.time_ns() // 1000 * 1000 + 123)
    recipients = await jswaku_peer.publish(from_js)
    assert a.peer_id in recipients
    assert await wait_relay(a, from_js) == from_js
    assert await wait_relay(b, from_js) == from_js

    # go-waku B -> A -> js-waku.
    from_b = make_message("gowaku-b")
    await publish(b, from_b)
    got = await jswaku_peer.wait_for(lambda r: r.message.payload == from_b.payload)
    assert got.message == from_b
    assert got.pubsub_topic == PUBSUB_TOPIC
    assert got.hash() == from_b.hash(PUBSUB_TOPIC)
    # go-waku's REST publish encodes `version: 0` explicitly (field 3), so the bytes (and the
    # gossipsub message id, sha256 of them) differ from a publisher that omits it; the Waku
    # message hash, which leaves version out, does not.
    assert got.raw != from_b.encode()
    assert WakuMessage.decode(got.raw) == WakuMessage.decode(from_b.encode())


async def test_legacy_store_answers_through_b(gowaku_pair: GoWakuPair) -> None:
    """go-waku's store server is legacy store (2.0.0-beta4): B's /store/v1 reaches A's archive."""
    a, b = gowaku_pair.nodes
    await subscribe(b)
    sent = [make_message(f"stored{i}") for i in range(3)]
    for message in sent:
        await publish(b, message)
    query = (
        f"/store/v1/messages?peerAddr={quote(a.multiaddr, safe='')}&pubsubTopic={TOPIC_PATH}"
        f"&contentTopics={quote(sent[0].content_topic, safe='')}&pageSize=20&ascending=true"
    )

    async def stored() -> list[dict[str, object]] | None:
        status, body = await b.request("GET", query)
        assert status == 200, body
        messages = body.get("messages") or []
        return messages if len(messages) >= len(sent) else None

    messages = await wait_until(stored, time_limit=30, what="3 messages in A's store")
    payloads = {m["payload"] for m in messages}
    assert payloads == {message_to_rest(m)["payload"] for m in sent}
