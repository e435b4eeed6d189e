"""Gap filling: cache overflow, node restarts and outages are repaired from the store."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestServer
from fakenodes import FakeNetwork

from umbra_waku.waku.message import WakuMessage

from .conftest import CT, CT2, OpenTransport, ServeNode, collect, eventually, message, no_more

TOPIC = "/waku/2/rs/0/0"


@pytest.mark.parametrize("flavour", ["nwaku", "go-waku"])
async def test_cache_overflow_is_filled_from_the_store_without_loss_or_duplicates(
    serve_node: ServeNode, open_transport: OpenTransport, flavour: str
) -> None:
    # go-waku: a full queue stalls the node; 2 more wait in its relay pipeline, the rest drop.
    served = await serve_node(flavour, relay_cache_capacity=5, relay_pipeline_capacity=2)
    transport = await open_transport(served.url, relay_cache_capacity=5, poll_interval=0.05)
    sub = await transport.subscribe([CT])
    await eventually(lambda: bool(served.node.requests_to("/relay/v1/messages", "GET")))
    # A burst between two polls: the node's cache keeps 5 of the 12 (nwaku: the newest).
    base = time.time_ns()
    burst = [WakuMessage.create(f"b{i}".encode(), CT, timestamp=base + i) for i in range(12)]
    for m in burst:
        served.node.inject(TOPIC, m)
    got = await collect(sub, 12)
    assert sorted(r.hash for r in got) == sorted(m.hash(TOPIC) for m in burst)
    assert len({r.hash for r in got}) == 12
    assert {r.source for r in got} == {"relay", "store"}
    # nwaku: store v3; go-waku: straight to legacy v1 (its store server speaks nothing else).
    assert served.node.requests_to("/store/v3" if flavour == "nwaku" else "/store/v1")
    assert await no_more(sub) == []


async def test_light_mode_filter_cache_overflow_is_filled_from_the_store(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("go-waku", filter_cache_capacity=3)
    transport = await open_transport(
        served.url, mode="light", shard=0, filter_cache_capacity=3, poll_interval=0.05
    )
    sub = await transport.subscribe([CT])
    burst = [message(f"f{i}".encode()) for i in range(8)]
    for m in burst:
        served.node.inject(TOPIC, m)
    got = await collect(sub, 8)
    assert {r.message for r in got} == set(burst)
    assert await no_more(sub) == []


@pytest.mark.parametrize("flavour", ["nwaku", "go-waku"])
@pytest.mark.parametrize("mode", ["relay", "light"])
async def test_node_restart_resubscribes_and_backfills(
    serve_node: ServeNode,
    open_transport: OpenTransport,
    network: FakeNetwork,
    flavour: str,
    mode: str,
) -> None:
    sender = await serve_node("nwaku", network=network)
    receiver = await serve_node(flavour, network=network)
    publisher = await open_transport(sender.url, mode=mode, shard=0)
    transport = await open_transport(receiver.url, mode=mode, shard=0)
    sub = await transport.subscribe([CT])
    first = message(b"before restart")
    await publisher.publish(first)
    assert [r.message for r in await collect(sub, 1)] == [first]

    receiver.node.restart()  # forgets every subscription and cache
    during = message(b"while the node had forgotten us")
    await publisher.publish(during)  # reaches the store, not the receiver's cache
    got = await collect(sub, 1)
    assert [r.message for r in got] == [during]
    assert got[0].source == "store"

    after = message(b"after resubscribe")
    await publisher.publish(after)
    assert [r.message for r in await collect(sub, 1)] == [after]
    assert await no_more(sub) == []


async def test_restart_with_an_initialising_phase_recovers(
    serve_node: ServeNode, open_transport: OpenTransport, network: FakeNetwork
) -> None:
    sender = await serve_node("nwaku", network=network)
    receiver = await serve_node("nwaku", network=network)
    publisher = await open_transport(sender.url)
    transport = await open_transport(receiver.url)
    sub = await transport.subscribe([CT])
    receiver.node.restart(initializing=True)
    missed = message(b"sent while initialising")
    await publisher.publish(missed)
    await asyncio.sleep(0.2)
    receiver.node.finish_initializing()
    (got,) = await collect(sub, 1)
    assert got.message == missed
    # Subscribed again once a GET answered 404 (not while the node answered "initialising").
    await eventually(lambda: receiver.node.relay_topics == {TOPIC})


async def test_node_down_and_back_on_the_same_port(
    serve_node: ServeNode,
    open_transport: OpenTransport,
    network: FakeNetwork,
    aiohttp_server: object,
) -> None:
    sender = await serve_node("nwaku", network=network)
    receiver = await serve_node("go-waku", network=network)
    publisher = await open_transport(sender.url)
    transport = await open_transport(receiver.url)
    sub = await transport.subscribe([CT, CT2])
    port = receiver.server.port
    await receiver.server.close()
    receiver.node.restart()
    missed = [message(b"down 1"), message(b"down 2", content_topic=CT2)]
    for m in missed:
        await publisher.publish(m)
    await asyncio.sleep(0.2)  # polls fail with connection refused meanwhile
    assert not await transport.ready()
    back = TestServer(receiver.node.make_app(), port=port)
    await back.start_server()
    try:
        got = await collect(sub, 2)
        assert {r.message for r in got} == set(missed)
        later = message(b"back to normal")
        await publisher.publish(later)
        assert [r.message for r in await collect(sub, 1)] == [later]
        assert await transport.ready()
    finally:
        await transport.close()
        await back.close()


async def test_without_gap_fill_the_store_is_never_asked(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku", relay_cache_capacity=3)
    transport = await open_transport(served.url, relay_cache_capacity=3, gap_fill=False)
    sub = await transport.subscribe([CT])
    await eventually(lambda: bool(served.node.requests_to("/relay/v1/messages", "GET")))
    base = time.time_ns()
    for i in range(6):
        served.node.inject(TOPIC, WakuMessage.create(b"x%d" % i, CT, timestamp=base + i))
    got = await collect(sub, 3)
    assert [r.message.payload for r in got] == [b"x3", b"x4", b"x5"]  # nwaku kept the newest
    assert await no_more(sub) == []
    assert served.node.requests_to("/store") == []


async def test_a_store_that_fails_does_not_stop_delivery(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku", relay_cache_capacity=2, store=False)
    transport = await open_transport(served.url, relay_cache_capacity=2)
    sub = await transport.subscribe([CT])
    await eventually(lambda: bool(served.node.requests_to("/relay/v1/messages", "GET")))
    for i in range(4):
        served.node.inject(TOPIC, message(b"o%d" % i))
    assert len(await collect(sub, 2)) == 2
    await transport.publish(message(b"later"))
    (got,) = await collect(sub, 1)
    assert got.message.payload == b"later"
    assert len(served.node.requests_to("/store/v3")) == 1  # 412 is final: no hammering
