"""subscribe(): relay polling and filter in light mode, fan-out, dedupe, keep-alive, close."""

from __future__ import annotations

import asyncio

import pytest
from fakenodes import FakeNetwork

from umbra_waku.transport import Subscription

from .conftest import CT, CT2, OpenTransport, ServeNode, collect, eventually, message, no_more


@pytest.mark.parametrize("mode", ["relay", "light"])
@pytest.mark.parametrize(("a", "b"), [("nwaku", "go-waku"), ("go-waku", "nwaku")])
async def test_publish_through_one_client_reaches_every_subscriber_exactly_once(
    serve_node: ServeNode,
    open_transport: OpenTransport,
    network: FakeNetwork,
    mode: str,
    a: str,
    b: str,
) -> None:
    node_a = await serve_node(a, network=network)
    node_b = await serve_node(b, network=network)
    # Static sharding: the only setting go-waku and nwaku agree on.
    publisher = await open_transport(node_a.url, mode=mode, shard=0, cluster_id=16)
    other = await open_transport(node_b.url, mode=mode, shard=0, cluster_id=16)
    subs = [
        await publisher.subscribe([CT]),
        await other.subscribe([CT]),
        await other.subscribe([CT, CT2]),
    ]
    sent = [message(f"m{i}".encode()) for i in range(5)]
    hashes = [await publisher.publish(m) for m in sent]
    for sub in subs:
        got = await collect(sub, 5)
        assert [r.hash for r in got] == hashes  # each once, in order
        assert [r.message for r in got] == sent
        assert {r.pubsub_topic for r in got} == {"/waku/2/rs/16/0"}
        assert {r.source for r in got} == {"relay" if mode == "relay" else "filter"}
    for sub in subs:
        assert await no_more(sub, 0.1) == []


async def test_own_messages_echoed_by_the_node_are_delivered_once(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url)
    sub = await transport.subscribe([CT])
    sent = message()
    await transport.publish(sent)
    # The echo comes back through the cache; later the store also has it.
    (got,) = await collect(sub, 1)
    assert got.message == sent
    assert await no_more(sub) == []


async def test_only_subscribed_content_topics_are_delivered(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("go-waku")
    transport = await open_transport(served.url)
    chat = await transport.subscribe([CT])
    other = await transport.subscribe([CT2])
    await transport.publish(message(b"for chat"))
    await transport.publish(message(b"for other", content_topic=CT2))
    await transport.publish(message(b"nobody", content_topic="/umbra/1/nobody/proto"))
    assert [r.message.payload for r in await collect(chat, 1)] == [b"for chat"]
    assert [r.message.payload for r in await collect(other, 1)] == [b"for other"]
    assert await no_more(chat) == []
    assert await no_more(other) == []


async def test_autosharded_topics_on_different_shards_get_their_own_poll_loops(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, cluster_id=1, num_shards=8)
    topics = ["/toychat/2/huilong/proto", "/statusim/1/community/cbor"]  # shards 3 and 4
    sub = await transport.subscribe(topics)
    for topic in topics:
        await transport.publish(message(b"x", content_topic=topic))
    got = await collect(sub, 2)
    assert {r.pubsub_topic for r in got} == {"/waku/2/rs/1/3", "/waku/2/rs/1/4"}
    polled = {r.raw_path for r in served.node.requests_to("/relay/v1/messages", "GET")}
    assert polled == {
        "/relay/v1/messages/%2Fwaku%2F2%2Frs%2F1%2F3",
        "/relay/v1/messages/%2Fwaku%2F2%2Frs%2F1%2F4",
    }


async def test_closing_a_subscription_ends_iteration_and_stops_polling(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url)
    sub = await transport.subscribe([CT])
    assert isinstance(sub, Subscription)
    await eventually(lambda: len(served.node.requests_to("/relay/v1/messages", "GET")) >= 2)
    await sub.close()
    await sub.close()  # idempotent
    assert [m async for m in sub] == []
    polls = len(served.node.requests_to("/relay/v1/messages", "GET"))
    await asyncio.sleep(0.1)
    assert len(served.node.requests_to("/relay/v1/messages", "GET")) == polls


@pytest.mark.parametrize("flavour", ["nwaku", "go-waku"])
async def test_light_mode_filter_requests_follow_each_flavour(
    serve_node: ServeNode, open_transport: OpenTransport, flavour: str
) -> None:
    served = await serve_node(flavour)
    transport = await open_transport(served.url, mode="light", pubsub_topic="/waku/2/rs/16/2")
    sub = await transport.subscribe([CT])
    served.node.inject("/waku/2/rs/16/2", message(b"pushed"))
    (got,) = await collect(sub, 1)
    assert got.message.payload == b"pushed"
    assert got.source == "filter"
    (subscribe,) = served.node.requests_to("/filter/v2/subscriptions", "POST")
    import json
    import uuid

    body = json.loads(subscribe.body)
    assert set(body) == {"requestId", "contentFilters", "pubsubTopic"}
    assert uuid.UUID(body["requestId"]).version == 4
    assert body["pubsubTopic"] == "/waku/2/rs/16/2"
    assert body["contentFilters"] == [CT]
    polls = {r.raw_path for r in served.node.requests_to("/filter/v2/messages")}
    if flavour == "nwaku":
        assert polls == {"/filter/v2/messages/%2Fumbra%2F1%2Fchat%2Fproto"}
    else:
        assert polls == {
            "/filter/v2/messages/%2Fwaku%2F2%2Frs%2F16%2F2/%2Fumbra%2F1%2Fchat%2Fproto"
        }


@pytest.mark.parametrize("flavour", ["nwaku", "go-waku"])
async def test_filter_pings_keep_the_subscription_and_404_triggers_resubscribe(
    serve_node: ServeNode, open_transport: OpenTransport, flavour: str
) -> None:
    served = await serve_node(flavour)
    transport = await open_transport(served.url, mode="light", shard=0, filter_ping_interval=0.05)
    sub = await transport.subscribe([CT])
    await eventually(lambda: len(served.node.requests_to("/filter/v2/subscriptions/", "GET")) >= 2)
    # The service peer forgets us: the next ping answers 404 and the adapter re-subscribes.
    served.node.drop_filter_service_subscriptions()
    await eventually(lambda: len(served.node.requests_to("/filter/v2/subscriptions", "POST")) >= 2)
    served.node.inject("/waku/2/rs/0/0", message(b"after resubscribe"))
    (got,) = await collect(sub, 1)
    assert got.message.payload == b"after resubscribe"


async def test_filter_ttl_without_pings_would_expire_but_pings_prevent_it(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku", filter_ttl=0.3)
    transport = await open_transport(served.url, mode="light", shard=0, filter_ping_interval=0.05)
    sub = await transport.subscribe([CT])
    await asyncio.sleep(0.6)  # two TTLs
    served.node.inject("/waku/2/rs/0/0", message(b"still there"))
    (got,) = await collect(sub, 1)
    assert got.message.payload == b"still there"
    assert len(served.node.requests_to("/filter/v2/subscriptions", "POST")) == 1


async def test_closing_a_light_subscription_unsubscribes_the_filter(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, mode="light", shard=0)
    first = await transport.subscribe([CT])
    second = await transport.subscribe([CT2])
    assert served.node.filter_criteria == {("/waku/2/rs/0/0", CT), ("/waku/2/rs/0/0", CT2)}
    await second.close()
    await eventually(lambda: served.node.filter_criteria == {("/waku/2/rs/0/0", CT)})
    await transport.close()
    assert served.node.filter_criteria == set()
    assert [m async for m in first] == []


async def test_subscribe_errors_reach_the_caller(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    from umbra_waku.errors import NodeHTTPError

    served = await serve_node("nwaku")
    transport = await open_transport(served.url, mode="light", retry_attempts=2)
    served.node.fail(
        "/filter/v2/subscriptions",
        times=None,
        status=503,
        method="POST",
        body='{"requestId":"x","statusDesc":"No suitable service peer & no discovery method"}',
        content_type="application/json",
    )
    with pytest.raises(NodeHTTPError) as caught:
        await transport.subscribe([CT])
    assert caught.value.status == 503
    assert len(served.node.requests_to("/filter/v2/subscriptions", "POST")) == 2
    assert served.node.requests_to("/filter/v2/messages") == []  # no loop was left behind


async def test_go_waku_partial_filter_failure_in_a_200_is_an_error(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    from umbra_waku.errors import TransportError

    served = await serve_node("go-waku")
    served.node.respond(
        "/filter/v2/subscriptions",
        '{"requestId":"x","statusDesc":"subscription failed for some topics"}',
        method="POST",
    )
    transport = await open_transport(served.url, mode="light", retry_attempts=1)
    with pytest.raises(TransportError, match="subscription failed"):
        await transport.subscribe([CT])
