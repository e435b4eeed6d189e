"""Regressions for what real go-waku v0.10.1 nodes showed (tests/realnodes), reproduced against
the fake nodes, which model each behaviour (see tests/fakenodes):

1. light mode: after the filter *service* node forgets us, polls of the local filter cache still
   succeed; completeness may only advance as far as the last successful ping;
2. go-waku: every POST /relay/v1/subscriptions is one more subscription (duplicates, stalls);
3. go-waku: a full relay queue stalls the node; polls drain everything; capacity per node kind;
4. go-waku's store server is legacy-only: straight to store v1, fast and without retries;
5. a ``store_peer`` that is the node itself is dropped (go-waku: "dial to self attempted");
6. DELETE /relay/v1/subscriptions is never sent;
7. go-waku ``node_info().has_store`` comes from a one-message store probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import pytest
from fakenodes import FakeNetwork
from umbra_waku_rest import RestOptions

from umbra_waku.transport import HistoryQuery
from umbra_waku.waku.message import WakuMessage

from .conftest import CT, CT2, OpenTransport, ServeNode, collect, eventually, message, no_more

TOPIC = "/waku/2/rs/0/0"
SUBSCRIPTIONS = "/relay/v1/subscriptions"
RELAY_GET = "/relay/v1/messages"
PINGS = "/filter/v2/subscriptions/"


async def _raw(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, json=body) as response,
    ):
        text = await response.text()
        try:
            return response.status, await response.json(content_type=None)
        except ValueError:
            return response.status, text


# -- 1. light mode: completeness only up to the last successful ping ---------------------------


@pytest.mark.parametrize("flavour", ["nwaku", "go-waku"])
async def test_light_mode_refills_from_the_last_good_ping_after_the_service_node_forgot_us(
    serve_node: ServeNode, open_transport: OpenTransport, flavour: str
) -> None:
    """The service node restarts (forgets our filter subscription) right after a good ping;
    polls of the local cache keep answering 200 for a whole ping interval, much longer than
    gap_fill_margin. What the service node got meanwhile is in the store and must arrive."""
    served = await serve_node(flavour)
    transport = await open_transport(
        served.url, mode="light", shard=0, filter_ping_interval=0.6, gap_fill_margin=0.0
    )
    sub = await transport.subscribe([CT])
    first = message(b"before")
    served.node.inject(TOPIC, first)
    assert [r.message for r in await collect(sub, 1)] == [first]

    pings = len(served.node.requests_to(PINGS, "GET"))
    await eventually(lambda: len(served.node.requests_to(PINGS, "GET")) > pings)
    served.node.drop_filter_service_subscriptions()  # the service node restarted
    lost = [message(f"lost {i}".encode()) for i in range(3)]
    for m in lost:
        served.node.inject(TOPIC, m)  # archived by the network, never pushed to us
    polls = len(served.node.requests_to("/filter/v2/messages"))
    await asyncio.sleep(0.3)
    assert len(served.node.requests_to("/filter/v2/messages")) > polls + 3  # polls go on: 200

    got = await collect(sub, 3, within=3.0)
    assert {r.message for r in got} == set(lost)
    assert {r.source for r in got} == {"store"}
    assert len(served.node.requests_to("/filter/v2/subscriptions", "POST")) == 2
    # The store was asked from no later than the ping before the loss.
    (fill,) = [r for r in served.node.requests_to("/store") if "startTime" in r.query]
    assert int(fill.query["startTime"]) <= min(m.timestamp or 0 for m in lost)

    after = message(b"after")
    served.node.inject(TOPIC, after)
    (got_after,) = await collect(sub, 1)
    assert (got_after.message, got_after.source) == (after, "filter")
    assert await no_more(sub) == []


async def test_a_lost_filter_subscription_seen_on_one_shard_is_repaired_on_every_shard(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    """A ping asks "does the service peer have *any* subscription of ours": once one feed has
    re-subscribed, the other feed's ping succeeds although its own subscription was lost."""
    served = await serve_node("nwaku")
    transport = await open_transport(
        served.url,
        mode="light",
        cluster_id=1,
        num_shards=8,
        filter_ping_interval=0.4,
        gap_fill_margin=0.0,
    )
    topics = {
        "/toychat/2/huilong/proto": "/waku/2/rs/1/3",
        "/statusim/1/community/cbor": ("/waku/2/rs/1/4"),
    }
    sub = await transport.subscribe(list(topics))
    await eventually(lambda: len(served.node.requests_to(PINGS, "GET")) >= 2)
    served.node.drop_filter_service_subscriptions()
    lost = [WakuMessage.create(b"lost", ct) for ct in topics]
    for m in lost:
        served.node.inject(topics[m.content_topic], m)
    got = await collect(sub, 2, within=3.0)
    assert {r.message for r in got} == set(lost)
    assert {r.source for r in got} == {"store"}


# -- 2. go-waku: never a second relay subscription ---------------------------------------------


async def test_fake_go_waku_stacks_relay_subscriptions_like_the_real_one(
    serve_node: ServeNode,
) -> None:
    """The model itself: two POSTs, two queues; every message comes out twice; the unread queue
    fills up and stalls the node, which then drops what its pipeline cannot hold."""
    served = await serve_node("go-waku", relay_cache_capacity=3, relay_pipeline_capacity=2)
    for _ in range(2):
        assert await _raw(served.url, "POST", SUBSCRIPTIONS, [TOPIC]) == (200, True)
    assert served.node.relay_subscriptions(TOPIC) == 2
    sent = [message(f"m{i}".encode()) for i in range(2)]
    for m in sent:
        served.node.inject(TOPIC, m)
    read: list[str] = []
    for _ in range(20):
        _, body = await _raw(served.url, "GET", f"{RELAY_GET}/%2Fwaku%2F2%2Frs%2F0%2F0")
        read += [item["payload"] for item in body or []]
    assert sorted(read) == sorted(["bTA=", "bTE="] * 2)  # every message twice
    for i in range(8):  # nobody reads: a queue fills (3), the pipeline holds 2, 3 are dropped
        served.node.inject(TOPIC, message(f"x{i}".encode()))
    assert served.node.stalled
    assert served.node.relay_dropped == 3


@pytest.mark.parametrize(
    ("fault", "knobs"),
    [
        ("timeout", {"request_timeout": 0.2}),
        ("unreachable", {}),
        ("5xx", {}),
        ("garbage", {}),
    ],
)
async def test_go_waku_relay_subscription_is_not_posted_again_after_poll_errors(
    serve_node: ServeNode,
    open_transport: OpenTransport,
    aiohttp_server: Any,
    fault: str,
    knobs: dict[str, Any],
) -> None:
    served = await serve_node("go-waku")
    transport = await open_transport(served.url, **knobs)
    sub = await transport.subscribe([CT])
    assert served.node.relay_subscriptions(TOPIC) == 1
    if fault == "timeout":
        served.node.hang(RELAY_GET, method="GET")
    elif fault == "5xx":
        served.node.fail(RELAY_GET, times=None, status=503, body="busy", method="GET")
    elif fault == "garbage":
        served.node.respond(RELAY_GET, "<html>", content_type="text/html", method="GET")
    else:
        port = served.server.port
        await served.server.close()
    await asyncio.sleep(0.6)
    if fault == "unreachable":
        back = await aiohttp_server(served.node.make_app(), port=port)
        assert back.port == port
    else:
        served.node.release_hangs()
        served.node.clear_faults()
    sent = [message(f"after {fault} {i}".encode()) for i in range(3)]
    for m in sent:
        served.node.inject(TOPIC, m)
    got = await collect(sub, 3)
    assert [r.message for r in got] == sent
    assert await no_more(sub) == []
    assert served.node.relay_subscriptions(TOPIC) == 1
    assert len(served.node.requests_to(SUBSCRIPTIONS, "POST")) == 1


async def test_go_waku_relay_resubscribes_once_after_a_404(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("go-waku")
    transport = await open_transport(served.url)
    sub = await transport.subscribe([CT])
    served.node.restart()  # the GET now answers 404 "no subscription found for pubsubTopic"
    await eventually(lambda: served.node.relay_subscriptions(TOPIC) == 1)
    m = message(b"after the restart")
    served.node.inject(TOPIC, m)
    assert [r.message for r in await collect(sub, 1)] == [m]
    await asyncio.sleep(0.2)
    assert served.node.relay_subscriptions(TOPIC) == 1
    assert len(served.node.requests_to(SUBSCRIPTIONS, "POST")) == 2


async def test_go_waku_subscribe_whose_answer_was_lost_is_not_posted_twice(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    """The node made the subscription but the answer came too late (timeout): the retry asks
    with a GET first and finds it."""
    served = await serve_node("go-waku")
    transport = await open_transport(served.url, request_timeout=0.3)
    served.node.delay(SUBSCRIPTIONS, 0.6, method="POST")
    sub = await transport.subscribe([CT])
    assert served.node.relay_subscriptions(TOPIC) == 1
    assert len(served.node.requests_to(SUBSCRIPTIONS, "POST")) == 1
    m = message(b"once")
    served.node.inject(TOPIC, m)
    assert [r.message for r in await collect(sub, 1)] == [m]


async def test_go_waku_a_new_transport_adopts_the_subscription_it_finds(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    """A client restart must not stack a second subscription on the node (nothing would drain
    the first one)."""
    served = await serve_node("go-waku")
    first = await open_transport(served.url)
    await first.subscribe([CT])
    await first.close()
    waiting = message(b"arrived between the two clients")
    served.node.inject(TOPIC, waiting)
    second = await open_transport(served.url)
    sub = await second.subscribe([CT])
    assert served.node.relay_subscriptions(TOPIC) == 1
    assert len(served.node.requests_to(SUBSCRIPTIONS, "POST")) == 1
    # What the adopting GET read is not lost: the first poll hands it out.
    assert [r.message for r in await collect(sub, 1)] == [waiting]
    m = message(b"new")
    served.node.inject(TOPIC, m)
    assert [r.message for r in await collect(sub, 1)] == [m]


@pytest.mark.parametrize("flavour", ["nwaku", "go-waku"])
async def test_delete_relay_subscriptions_is_never_sent(
    serve_node: ServeNode, open_transport: OpenTransport, flavour: str
) -> None:
    served = await serve_node(flavour)
    transport = await open_transport(served.url)
    sub = await transport.subscribe([CT, CT2])
    await transport.publish(message())
    await collect(sub, 1)
    await sub.close()
    await transport.close()
    assert served.node.requests_to(SUBSCRIPTIONS, "DELETE") == []
    assert served.node.relay_subscriptions(TOPIC) == 1


# -- 3. go-waku: drain fully, capacity per node kind, never leave a queue undrained -------------


async def test_go_waku_one_poll_drains_a_stalled_queue_completely(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    """17 messages between two polls, queue capacity 5: the queue is full (the node stalls) and
    12 wait in the pipeline. One GET reads at most capacity + 1, so the poll reads again at
    once until a read is short -- all 17 within one poll, none dropped."""
    served = await serve_node("go-waku", relay_cache_capacity=5)
    transport = await open_transport(served.url, relay_cache_capacity=5, poll_interval=1.0)
    sub = await transport.subscribe([CT])
    await eventually(lambda: bool(served.node.requests_to(RELAY_GET, "GET")))
    gets = len(served.node.requests_to(RELAY_GET, "GET"))
    burst = [message(f"b{i}".encode()) for i in range(17)]
    for m in burst:
        served.node.inject(TOPIC, m)
    assert served.node.stalled
    got = await collect(sub, 17, within=1.8)  # one poll interval, not three
    assert [r.message for r in got] == burst
    assert not served.node.stalled
    assert served.node.relay_dropped == 0
    assert len(served.node.requests_to(RELAY_GET, "GET")) - gets >= 4  # 6 + 6 + 5 + 0


async def test_a_read_failing_in_the_middle_of_a_drain_loses_nothing(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    """The first GET of a poll took 6 messages off the node; the second fails. The 6 are gone
    from the node, so the adapter keeps them for the next poll (no store to fall back on)."""
    served = await serve_node("go-waku", relay_cache_capacity=5)
    transport = await open_transport(
        served.url, relay_cache_capacity=5, poll_interval=0.5, gap_fill=False
    )
    sub = await transport.subscribe([CT])
    await eventually(lambda: bool(served.node.requests_to(RELAY_GET, "GET")))
    served.node.fail(RELAY_GET, method="GET", skip=1, times=1, status=503, body="busy")
    burst = [message(f"b{i}".encode()) for i in range(12)]
    for m in burst:
        served.node.inject(TOPIC, m)
    got = await collect(sub, 12)
    assert [r.message for r in got] == burst
    assert served.node.requests_to("/store") == []


def test_relay_cache_capacity_defaults_to_the_node_kind() -> None:
    options = RestOptions()
    assert options.relay_cache_capacity is None
    assert options.relay_capacity("go-waku") == 1000
    assert options.relay_capacity("nwaku") == 50
    assert options.relay_capacity(None) == 50
    assert RestOptions(relay_cache_capacity=200).relay_capacity("go-waku") == 200


async def test_go_waku_sixty_messages_in_a_poll_are_not_a_cache_overflow(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("go-waku")  # --rest-relay-cache-capacity 1000, the default
    transport = await open_transport(served.url, poll_interval=0.1)
    sub = await transport.subscribe([CT])
    await eventually(lambda: bool(served.node.requests_to(RELAY_GET, "GET")))
    burst = [message(f"b{i}".encode()) for i in range(60)]
    for m in burst:
        served.node.inject(TOPIC, m)
    got = await collect(sub, 60)
    assert {r.source for r in got} == {"relay"}
    await asyncio.sleep(0.3)  # a gap would be filled at the next poll
    assert served.node.requests_to("/store") == []  # 60 < 1000: no gap to fill


async def test_go_waku_relay_keeps_draining_after_the_last_subscription_closed(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("go-waku", relay_cache_capacity=5, relay_pipeline_capacity=5)
    transport = await open_transport(served.url, relay_cache_capacity=5)
    sub = await transport.subscribe([CT])
    await sub.close()
    for i in range(20):  # nobody listens; unread, this would stall the node and drop 10
        served.node.inject(TOPIC, message(f"unheard {i}".encode()))
        await asyncio.sleep(0.005)
    await eventually(lambda: not served.node.stalled)
    await asyncio.sleep(0.1)  # a few more polls: the queue is empty
    assert served.node.relay_dropped == 0
    again = await transport.subscribe([CT])
    m = message(b"heard")
    served.node.inject(TOPIC, m)
    assert [r.message for r in await collect(again, 1)] == [m]  # nothing from before
    assert served.node.relay_subscriptions(TOPIC) == 1
    await transport.close()


async def test_go_waku_publish_only_client_leaves_no_subscription_to_fill_up(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("go-waku", relay_cache_capacity=3)
    transport = await open_transport(served.url)
    for i in range(10):
        await transport.publish(message(f"p{i}".encode()))
    assert served.node.relay_subscriptions(TOPIC) == 0
    assert not served.node.stalled
    assert len(served.node.network.archive) == 10


async def test_fake_go_waku_store_node_misses_what_a_stall_drops(
    serve_node: ServeNode, network: FakeNetwork
) -> None:
    served = await serve_node(
        "go-waku",
        network=network,
        relay_cache_capacity=2,
        relay_pipeline_capacity=1,
        preset_pubsub_topics=[TOPIC],
    )
    network.store_node = served.node
    assert await _raw(served.url, "POST", SUBSCRIPTIONS, [TOPIC]) == (200, True)
    for i in range(5):
        served.node.inject(TOPIC, message(f"s{i}".encode()))
    assert served.node.relay_dropped == 2
    assert len(network.archive) == 2  # the third waits in the pipeline, two are gone
    await _raw(served.url, "GET", f"{RELAY_GET}/%2Fwaku%2F2%2Frs%2F0%2F0")
    assert len(network.archive) == 3


# -- 4. store: straight to v1 on go-waku, no retries of "not served" answers --------------------


async def test_go_waku_store_uses_v1_at_once_and_v3_only_where_v1_is_not_served(
    serve_node: ServeNode,
    open_transport: OpenTransport,
    network: FakeNetwork,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="umbra_waku.rest")
    # A go-waku node whose store peer is an nwaku without the legacy store: only v3 works.
    served = await serve_node("go-waku", network=network, legacy_store=False)
    m = message(b"stored")
    network.publish(TOPIC, m)
    transport = await open_transport(served.url, retry_attempts=4, retry_backoff=0.5)
    began = time.monotonic()
    page = await transport.query_history(HistoryQuery([CT]))
    assert time.monotonic() - began < 0.4  # no backoff: "no suitable peers found" is final
    assert [r.message for r in page.messages] == [m]
    assert len(served.node.requests_to("/store/v1")) == 1
    assert len(served.node.requests_to("/store/v3")) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    await transport.query_history(HistoryQuery([CT]))  # remembered: v3 straight away
    assert len(served.node.requests_to("/store/v1")) == 1
    assert len(served.node.requests_to("/store/v3")) == 2


@pytest.mark.parametrize(
    "body",
    [
        "no suitable peers found",
        "failed to negotiate protocol: protocols not supported: [/vac/waku/store-query/3.0.0]",
    ],
)
async def test_go_waku_v3_unsupported_answers_are_final_and_fall_back_to_v1(
    serve_node: ServeNode, open_transport: OpenTransport, network: FakeNetwork, body: str
) -> None:
    served = await serve_node("go-waku", network=network, store_v3=False)
    network.publish(TOPIC, m := message(b"legacy"))
    transport = await open_transport(served.url, store_api="v3", retry_attempts=4)
    served.node.respond("/store/v3", f'{{"messages": null, "error_message": "{body}"}}', status=500)
    from umbra_waku.errors import NodeHTTPError

    with pytest.raises(NodeHTTPError) as caught:
        await transport.query_history(HistoryQuery([CT]))
    assert not caught.value.retriable  # store_api="v3" fixed: no fallback, and no retries
    assert len(served.node.requests_to("/store/v3")) == 1
    auto = await open_transport(served.url, implementation="go-waku", retry_attempts=4)
    page = await auto.query_history(HistoryQuery([CT]))
    assert [r.message for r in page.messages] == [m]


async def test_nwaku_store_uses_v3(
    serve_node: ServeNode, open_transport: OpenTransport, network: FakeNetwork
) -> None:
    served = await serve_node("nwaku", network=network, legacy_store=True)
    transport = await open_transport(served.url)
    await transport.query_history(HistoryQuery([CT]))
    assert len(served.node.requests_to("/store/v3")) == 1
    assert served.node.requests_to("/store/v1") == []


# -- 5. store_peer = the node itself ------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["nwaku", "go-waku"])
async def test_store_peer_that_is_the_node_itself_is_not_sent(
    serve_node: ServeNode, open_transport: OpenTransport, network: FakeNetwork, flavour: str
) -> None:
    served = await serve_node(flavour, network=network)
    network.publish(TOPIC, m := message(b"own archive"))
    own = f"/ip4/10.1.2.3/tcp/60000/p2p/{served.node.peer_id}"  # another address, same peer
    transport = await open_transport(served.url, store_peer=own)
    page = await transport.query_history(HistoryQuery([CT]))
    assert [r.message for r in page.messages] == [m]
    assert all("peerAddr" not in r.query for r in served.node.requests_to("/store"))
    assert (await transport.node_info()).has_store


async def test_go_waku_dial_to_self_is_final_and_retried_without_peer_addr(
    serve_node: ServeNode, open_transport: OpenTransport, network: FakeNetwork
) -> None:
    served = await serve_node("go-waku", network=network)
    network.publish(TOPIC, m := message(b"own archive"))
    own = f"/ip4/127.0.0.1/tcp/60000/p2p/{served.node.peer_id}"
    transport = await open_transport(
        served.url, start=False, implementation="go-waku", store_peer=own, retry_attempts=1
    )
    served.node.fail("/debug/v1/info", times=None, status=503)  # cannot tell who it is
    page = await transport.query_history(HistoryQuery([CT]))
    assert [r.message for r in page.messages] == [m]
    asked = [r.query.get("peerAddr") for r in served.node.requests_to("/store")]
    assert asked == [own, None]  # the 500 "dial to self attempted" was not retried


async def test_another_store_peer_is_sent(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("go-waku")
    peer = "/ip4/127.0.0.1/tcp/60001/p2p/16Uiu2HAmSomeoneElse"
    transport = await open_transport(served.url, store_peer=peer)
    await transport.query_history(HistoryQuery([CT]))
    await transport.query_history(HistoryQuery([CT]))
    assert [r.query.get("peerAddr") for r in served.node.requests_to("/store")] == [peer] * 2


# -- 7. go-waku has_store ---------------------------------------------------------------------


@pytest.mark.parametrize("store", [True, False])
async def test_go_waku_has_store_is_probed_once(
    serve_node: ServeNode, open_transport: OpenTransport, store: bool
) -> None:
    served = await serve_node("go-waku", store=store)
    transport = await open_transport(served.url, retry_attempts=4)
    assert (await transport.node_info()).has_store is store
    assert (await transport.node_info()).has_store is store
    probes = served.node.requests_to("/store")
    assert len(probes) == (1 if store else 2)  # v1, then v3, both "no suitable peers found"
    assert probes[0].path == "/store/v1/messages"
    assert probes[0].query["pageSize"] == "1"


async def test_go_waku_has_store_probe_failing_for_now_is_asked_again(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("go-waku")
    transport = await open_transport(served.url, retry_attempts=1)
    served.node.fail("/store", times=1, status=503, body="busy")
    assert not (await transport.node_info()).has_store
    assert (await transport.node_info()).has_store
