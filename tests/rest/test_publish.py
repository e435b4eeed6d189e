"""publish(): relay and lightpush, request bodies, pre-send validation, rejections, retries."""

from __future__ import annotations

import json

import pytest

from umbra_waku.errors import (
    InvalidContentTopic,
    InvalidInput,
    MessageTooLarge,
    NodeHTTPError,
    PublishRejected,
)
from umbra_waku.waku.message import WakuMessage

from .conftest import CT, OpenTransport, ServeNode, message

RELAY_PATH = "/relay/v1/messages/%2Fwaku%2F2%2Frs%2F0%2F0"


@pytest.mark.parametrize("flavour", ["nwaku", "go-waku"])
async def test_relay_publish_returns_the_hash_the_network_computes(
    serve_node: ServeNode, open_transport: OpenTransport, flavour: str
) -> None:
    served = await serve_node(flavour)
    transport = await open_transport(served.url)
    sent = message(b"\x00\x01 payload", meta=b"m")
    digest = await transport.publish(sent)
    ((topic, received),) = served.node.published
    assert topic == "/waku/2/rs/0/0"
    assert received == sent  # timestamp, meta, payload all arrived unchanged
    assert digest == sent.hash("/waku/2/rs/0/0") == served.node.network.archive[0].hash
    posts = [r for r in served.node.requests if r.method == "POST"]
    if flavour == "nwaku":
        # Subscribed first (nwaku refuses a publish otherwise), then posted to the encoded topic.
        assert [r.raw_path for r in posts] == ["/relay/v1/subscriptions", RELAY_PATH]
        assert json.loads(posts[0].body) == ["/waku/2/rs/0/0"]
    else:
        # go-waku needs no subscription to publish, and one nobody drains would stall it.
        assert [r.raw_path for r in posts] == [RELAY_PATH]


async def test_relay_body_has_only_documented_keys(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")  # the fake, like nwaku, answers 400 to unknown keys
    transport = await open_transport(served.url)
    await transport.publish(message(b"plain"))
    await transport.publish(message(b"with meta", meta=b"\x01\x02", ephemeral=True))
    bodies = [json.loads(r.body) for r in served.node.requests_to("/relay/v1/messages", "POST")]
    plain, rich = bodies
    assert set(plain) == {"payload", "contentTopic", "version", "timestamp"}
    assert plain["payload"] == "cGxhaW4="  # standard base64
    assert isinstance(plain["timestamp"], int)
    assert plain["timestamp"] > 10**18
    assert rich["meta"] == "AQI="
    assert rich["ephemeral"] is True
    assert (
        served.node.requests_to("/relay/v1/messages", "POST")[0]
        .headers.get("Content-Type", "")
        .startswith("application/json")
    )


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (WakuMessage.create(b"x" * 150_001, CT), MessageTooLarge),
        (WakuMessage.create(b"x", "not/a topic"), InvalidContentTopic),
        (WakuMessage.create(b"x", "/a/1/b"), InvalidContentTopic),
        (WakuMessage.create(b"", CT), InvalidInput),
        (WakuMessage(b"x", CT, timestamp=None), InvalidInput),
        (WakuMessage.create(b"x", CT, meta=b"m" * 65), InvalidInput),
    ],
)
@pytest.mark.parametrize("mode", ["relay", "light"])
async def test_invalid_messages_are_rejected_before_anything_is_sent(
    serve_node: ServeNode,
    open_transport: OpenTransport,
    bad: WakuMessage,
    error: type[Exception],
    mode: str,
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, mode=mode)
    seen_before = len(served.node.requests)
    with pytest.raises(error):
        await transport.publish(bad)
    assert len(served.node.requests) == seen_before  # the node saw nothing at all
    assert served.node.published == []


async def test_max_message_bytes_is_configurable(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, max_message_bytes=100)
    with pytest.raises(MessageTooLarge) as caught:
        await transport.publish(message(b"y" * 200))
    assert caught.value.limit == 100
    assert served.node.requests_to("/relay") == []


async def test_retries_resend_identical_bytes_after_5xx(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, retry_attempts=4)
    served.node.fail("/relay/v1/messages", times=2, status=503, method="POST", body="busy")
    sent = message(b"retry me")
    assert await transport.publish(sent) == sent.hash("/waku/2/rs/0/0")
    attempts = served.node.requests_to("/relay/v1/messages", "POST")
    assert len(attempts) == 3
    assert len({r.body for r in attempts}) == 1  # byte-identical every time
    assert served.node.published == [("/waku/2/rs/0/0", sent)]


async def test_a_5xx_storm_ends_in_a_typed_retriable_error_after_the_configured_attempts(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, retry_attempts=3)
    served.node.fail("/relay/v1/messages", times=None, status=503, method="POST")
    with pytest.raises(PublishRejected) as caught:
        await transport.publish(message())
    assert caught.value.retriable
    assert len(served.node.requests_to("/relay/v1/messages", "POST")) == 3


async def test_a_400_is_rejected_at_once_without_retry(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, retry_attempts=5)
    served.node.fail(
        "/relay/v1/messages",
        times=None,
        status=400,
        method="POST",
        body="Failed to publish: validation failed",
    )
    with pytest.raises(PublishRejected) as caught:
        await transport.publish(message())
    assert not caught.value.retriable
    assert len(served.node.requests_to("/relay/v1/messages", "POST")) == 1


async def test_429_is_a_retriable_http_error(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, retry_attempts=2)
    served.node.fail("/relay/v1/messages", times=None, status=429, method="POST")
    with pytest.raises(NodeHTTPError) as caught:
        await transport.publish(message())
    assert caught.value.status == 429
    assert caught.value.retriable


@pytest.mark.parametrize("flavour", ["nwaku", "go-waku"])
async def test_relay_publish_after_the_node_restarted(
    serve_node: ServeNode, open_transport: OpenTransport, flavour: str
) -> None:
    served = await serve_node(flavour)
    transport = await open_transport(served.url, retry_attempts=1)
    await transport.publish(message(b"first"))
    served.node.restart()  # nwaku now answers 400 "not subscribed"; go-waku does not care
    await transport.publish(message(b"second"))
    assert [m.payload for _, m in served.node.published] == [b"first", b"second"]
    # nwaku: re-subscribed once (its POST is idempotent); go-waku: never subscribed to publish.
    expected = 2 if flavour == "nwaku" else 0
    assert len(served.node.requests_to("/relay/v1/subscriptions", "POST")) == expected


async def test_go_waku_empty_500_is_a_retriable_rejection_and_never_a_resubscribe(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("go-waku", relay_peers=0)  # 500 "" = "not enough peers to publish"
    transport = await open_transport(served.url, retry_attempts=2)
    with pytest.raises(PublishRejected) as caught:
        await transport.publish(message())
    assert caught.value.retriable
    # Tried twice with the same bytes; an empty 500 never makes the adapter POST a subscription
    # (on go-waku each POST is one more subscription).
    posts = served.node.requests_to("/relay/v1/messages", "POST")
    assert len(posts) == 2
    assert len({p.body for p in posts}) == 1
    assert served.node.requests_to("/relay/v1/subscriptions") == []


# -- lightpush ----------------------------------------------------------------------------------


async def test_lightpush_v3_on_nwaku(serve_node: ServeNode, open_transport: OpenTransport) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, mode="light", shard=0)
    sent = message(b"light")
    assert await transport.publish(sent) == sent.hash("/waku/2/rs/0/0")
    (request,) = served.node.requests_to("/lightpush", "POST")
    assert request.path == "/lightpush/v3/message"
    body = json.loads(request.body)
    assert body["pubsubTopic"] == "/waku/2/rs/0/0"
    assert set(body) == {"pubsubTopic", "message"}
    assert served.node.requests_to("/relay") == []


async def test_go_waku_light_mode_uses_lightpush_v1(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("go-waku")
    transport = await open_transport(served.url, mode="light")
    await transport.publish(message(b"a"))
    await transport.publish(message(b"b"))
    assert [r.path for r in served.node.requests_to("/lightpush")] == ["/lightpush/v1/message"] * 2


@pytest.mark.parametrize("status", [404, 405])
async def test_lightpush_falls_back_to_v1_on_404_or_405_and_remembers(
    serve_node: ServeNode, open_transport: OpenTransport, status: int
) -> None:
    served = await serve_node("nwaku")
    served.node.fail("/lightpush/v3", times=None, status=status)
    transport = await open_transport(served.url, mode="light")
    await transport.publish(message(b"a"))
    await transport.publish(message(b"b"))
    paths = [r.path for r in served.node.requests_to("/lightpush")]
    assert paths == ["/lightpush/v3/message", "/lightpush/v1/message", "/lightpush/v1/message"]
    assert [m.payload for _, m in served.node.published] == [b"a", b"b"]


async def test_lightpush_505_no_peers_is_a_retriable_rejection(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku", lightpush_peers=0)
    transport = await open_transport(served.url, mode="light", retry_attempts=2)
    with pytest.raises(PublishRejected) as caught:
        await transport.publish(message())
    assert caught.value.retriable
    assert "No peers" in str(caught.value)
    assert len(served.node.requests_to("/lightpush/v3")) == 2


async def test_lightpush_503_is_retried_then_succeeds(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    served.node.fail(
        "/lightpush/v3",
        times=1,
        status=503,
        body='{"statusDesc":"No suitable service peer & none discovered"}',
        content_type="application/json",
    )
    transport = await open_transport(served.url, mode="light")
    await transport.publish(message())
    assert len(served.node.published) == 1
    assert len({r.body for r in served.node.requests_to("/lightpush/v3")}) == 1


async def test_lightpush_duplicate_is_a_non_retriable_rejection(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, mode="light", retry_attempts=3)
    sent = message(b"once")
    await transport.publish(sent)
    with pytest.raises(PublishRejected) as caught:
        await transport.publish(sent)
    assert not caught.value.retriable
    assert "already-seen" in str(caught.value)
    assert len(served.node.requests_to("/lightpush/v3")) == 2  # no retry of a verdict


async def test_lightpush_duplicate_on_a_retry_means_the_first_attempt_went_through(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, mode="light", retry_attempts=3)
    sent = message(b"lost answer")
    # The node accepted the message but the answer was lost (simulated with a 500 after the
    # publish reached the network).
    served.node.network.publish("/waku/2/rs/0/0", sent)
    served.node.fail("/lightpush/v3", times=1, status=500, body="")
    assert await transport.publish(sent) == sent.hash("/waku/2/rs/0/0")


@pytest.mark.parametrize(
    ("status", "body", "retriable"),
    [
        (400, '{"statusDesc":"Invalid push request! x"}', False),
        (413, '{"statusDesc":"too large"}', False),
        (421, '{"statusDesc":"unsupported pubsub topic"}', False),
        (504, '{"statusDesc":"out of RLN proofs"}', True),
    ],
)
async def test_lightpush_v3_status_table(
    serve_node: ServeNode, open_transport: OpenTransport, status: int, body: str, retriable: bool
) -> None:
    served = await serve_node("nwaku")
    served.node.fail(
        "/lightpush/v3", times=None, status=status, body=body, content_type="application/json"
    )
    transport = await open_transport(served.url, mode="light", retry_attempts=2)
    with pytest.raises(PublishRejected) as caught:
        await transport.publish(message())
    assert caught.value.retriable is retriable
    assert len(served.node.requests_to("/lightpush/v3")) == (2 if retriable else 1)


async def test_go_waku_lightpush_v1_503_is_a_retriable_rejection(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("go-waku", lightpush_peers=0)
    transport = await open_transport(served.url, mode="light", retry_attempts=2)
    with pytest.raises(PublishRejected) as caught:
        await transport.publish(message())
    assert caught.value.retriable
    assert [r.path for r in served.node.requests_to("/lightpush")] == ["/lightpush/v1/message"] * 2
