"""The REST transport adapter (``umbra_waku.transport.connect("http://...")``) against real
go-waku nodes, with a js-waku relay peer as a second, independent Waku implementation.

Topology (see conftest.py): go-waku A (store, filter, lightpush) <-> go-waku B (client of A),
js-waku peer dialled to A; all on /waku/2/rs/42/0.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from umbra_waku.transport import (
    HistoryQuery,
    ReceivedMessage,
    Subscription,
    Transport,
    connect,
    fetch_history,
)
from umbra_waku.waku.message import MessageHash, WakuMessage

from .harness import (
    CLUSTER_ID,
    PUBSUB_TOPIC,
    GoWakuBinary,
    GoWakuConfig,
    GoWakuNode,
    GoWakuPair,
    JsReceived,
    JsWakuError,
    JsWakuPeer,
    Sandbox,
    wait_until,
)

pytestmark = [pytest.mark.gowaku]

DELIVERY_TIMEOUT = 30.0
RECOVERY_TIMEOUT = 90.0


def same_payload(msg: WakuMessage) -> Callable[[JsReceived], bool]:
    return lambda received: received.message.payload == msg.payload


def content_topic() -> str:
    return f"/umbra-it/1/{uuid.uuid4().hex[:12]}/proto"


def message(ct: str, text: str, **kwargs: Any) -> WakuMessage:
    return WakuMessage.create(text.encode(), ct, **kwargs)


def transport(node: GoWakuNode, **options: Any) -> Transport:
    """The adapter for ``node``: static shard 42/0, fast polling, quick recovery."""
    settings: dict[str, Any] = {
        "pubsub_topic": PUBSUB_TOPIC,
        "cluster_id": CLUSTER_ID,
        "poll_interval": 0.1,
        "retry_max_backoff": 1.0,
        "relay_cache_capacity": node.config.rest_relay_cache_capacity,
        "filter_cache_capacity": node.config.rest_filter_cache_capacity,
        "start_timeout": 30.0,
    }
    settings.update(options)
    return connect(node.rest_url, **settings)


class Collector:
    """Reads a subscription in the background, keeping everything (duplicates included)."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.items: list[ReceivedMessage] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for received in self.subscription:
            self.items.append(received)

    def counts(self) -> Counter[MessageHash]:
        return Counter(r.hash for r in self.items)

    async def wait_for(
        self, hashes: Iterable[MessageHash], time_limit: float = DELIVERY_TIMEOUT
    ) -> None:
        wanted = set(hashes)

        async def check() -> bool:
            return wanted <= set(self.counts())

        def missing() -> str:
            lacking = wanted - set(self.counts())
            return f"{len(lacking)} of {len(wanted)} messages missing; got {len(self.items)} items"

        await wait_until(
            check,
            time_limit=time_limit,
            interval=0.05,
            what="messages on the subscription",
            details=missing,
        )

    async def settle(self, seconds: float = 1.0) -> None:
        """Give late duplicates (a second poll, a gap fill) the chance to show up."""
        await asyncio.sleep(seconds)

    def assert_exactly_once(self, hashes: Iterable[MessageHash]) -> None:
        wanted = set(hashes)
        counts = self.counts()
        duplicates = {h: n for h, n in counts.items() if n > 1}
        assert not duplicates, f"delivered more than once: {duplicates}"
        assert set(counts) == wanted, (
            f"missing {len(wanted - set(counts))}, unexpected {len(set(counts) - wanted)}"
        )

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def collecting(t: Transport, topics: list[str]) -> AsyncIterator[Collector]:
    subscription = await t.subscribe(topics)
    collector = Collector(subscription)
    try:
        yield collector
    finally:
        await subscription.close()
        await collector.stop()


# ---------------------------------------------------------------------------------------------


async def test_node_info_reports_gowaku(gowaku_pair: GoWakuPair) -> None:
    async with transport(gowaku_pair.a) as t:
        info = await t.node_info()
        assert info.implementation == "go-waku"
        assert info.version == gowaku_pair.a.binary.version
        assert any(gowaku_pair.a.peer_id in address for address in info.listen_addresses)
        assert await t.ready()


async def test_relay_clients_on_a_and_b_exchange_both_ways(gowaku_pair: GoWakuPair) -> None:
    ct = content_topic()
    async with (
        transport(gowaku_pair.a) as ta,
        transport(gowaku_pair.b) as tb,
        collecting(ta, [ct]) as on_a,
        collecting(tb, [ct]) as on_b,
    ):
        sent: dict[MessageHash, WakuMessage] = {}
        for i in range(5):
            for t, side in ((ta, "a"), (tb, "b")):
                msg = message(ct, f"{side}-{i}", meta=f"m{i}".encode() if i % 2 else b"")
                sent[await t.publish(msg)] = msg

        # Each client gets what the other published, and (the node echoes its own relay
        # traffic) what it published itself: every message, exactly once.
        for collector in (on_a, on_b):
            await collector.wait_for(sent)
        await on_a.settle()
        for collector in (on_a, on_b):
            collector.assert_exactly_once(sent)
            for received in collector.items:
                assert received.message == sent[received.hash]
                assert received.pubsub_topic == PUBSUB_TOPIC
                assert received.source == "relay"


@pytest.mark.jswaku
async def test_relay_client_and_jswaku_exchange_both_ways(
    gowaku_pair: GoWakuPair, jswaku_peer: JsWakuPeer
) -> None:
    ct = content_topic()
    async with transport(gowaku_pair.b) as tb, collecting(tb, [ct]) as on_b:
        # js-waku -> A -> B -> adapter, with a nanosecond timestamp that no Date could carry.
        from_js = [
            message(ct, f"js-{i}", timestamp=time.time_ns() // 10**6 * 10**6 + 123_457 + i)
            for i in range(3)
        ]
        for msg in from_js:
            assert await jswaku_peer.publish(msg)
        # adapter -> B -> A -> js-waku.
        from_b = [message(ct, f"b-{i}") for i in range(3)]
        hashes_b = [await tb.publish(msg) for msg in from_b]

        expected = {msg.hash(PUBSUB_TOPIC): msg for msg in from_js + from_b}
        await on_b.wait_for(expected)
        for msg, h in zip(from_b, hashes_b, strict=True):
            got = await jswaku_peer.wait_for(same_payload(msg))
            assert got.message == msg
            assert got.hash() == h
        await on_b.settle()
        on_b.assert_exactly_once(expected)
        for received in on_b.items:
            assert received.message == expected[received.hash]


@pytest.mark.jswaku
async def test_light_mode_filter_and_lightpush_on_b(
    gowaku_pair: GoWakuPair, jswaku_peer: JsWakuPeer
) -> None:
    """B in light mode: its filter client (service: A) receives what js-waku publishes, and its
    lightpush (service: A) reaches js-waku."""
    ct = content_topic()
    async with transport(gowaku_pair.b, mode="light") as tb, collecting(tb, [ct]) as on_b:
        from_js = [message(ct, f"js-{i}") for i in range(5)]
        for msg in from_js:
            await jswaku_peer.publish(msg)
        await on_b.wait_for(m.hash(PUBSUB_TOPIC) for m in from_js)

        pushed = [message(ct, f"lightpush-{i}", meta=b"via-lightpush") for i in range(3)]
        pushed_hashes = [await tb.publish(msg) for msg in pushed]
        for msg, h in zip(pushed, pushed_hashes, strict=True):
            got = await jswaku_peer.wait_for(same_payload(msg))
            assert got.message == msg
            assert got.hash() == h

        # A also pushes B's own lightpushed messages back to B's filter subscription.
        expected = {m.hash(PUBSUB_TOPIC): m for m in from_js + pushed}
        await on_b.wait_for(expected)
        await on_b.settle()
        on_b.assert_exactly_once(expected)
        assert {r.source for r in on_b.items} == {"filter"}
        for received in on_b.items:
            assert received.message == expected[received.hash]


@pytest.mark.jswaku
async def test_late_client_gets_history_from_the_store(
    gowaku_pair: GoWakuPair, jswaku_peer: JsWakuPeer
) -> None:
    """Messages sent before any client exists are read back from A's store (legacy store v2
    server): through A itself and through B (--storenode=A), page by page, both directions,
    with an inclusive time window."""
    ct = content_topic()
    base = time.time_ns()
    sent = [message(ct, f"hist-{i}", timestamp=base + i * 1_000_000) for i in range(7)]
    for msg in sent:
        await jswaku_peer.publish(msg)
    hashes = [m.hash(PUBSUB_TOPIC) for m in sent]

    for node in gowaku_pair.nodes:
        async with transport(node) as t:

            async def stored(t: Transport = t) -> list[ReceivedMessage] | None:
                got = [r async for r in fetch_history(t, HistoryQuery([ct], page_size=3))]
                return got if len(got) >= len(sent) else None

            # The archive is written asynchronously: poll until all 7 are there.
            forward = await wait_until(
                stored, time_limit=DELIVERY_TIMEOUT, what=f"7 messages in the store via {node.name}"
            )
            assert [r.hash for r in forward] == hashes
            assert [r.message for r in forward] == sent
            assert {r.source for r in forward} == {"store"}
            assert {r.pubsub_topic for r in forward} == {PUBSUB_TOPIC}

            backward = [
                r async for r in fetch_history(t, HistoryQuery([ct], page_size=3, ascending=False))
            ]
            assert sorted(r.hash for r in backward) == sorted(hashes)
            assert len(backward) == len(sent)

            window = [
                r
                async for r in fetch_history(
                    t,
                    HistoryQuery(
                        [ct], start_time=sent[2].timestamp, end_time=sent[4].timestamp, page_size=2
                    ),
                )
            ]
            assert [r.hash for r in window] == hashes[2:5]


async def publish_stream(
    peer: JsWakuPeer,
    messages: list[WakuMessage],
    *,
    interval: float,
    redial: str | None = None,
    on_index: dict[int, asyncio.Event] | None = None,
) -> list[WakuMessage]:
    """Publish one message every ``interval`` from js-waku; a message that finds no peer (the
    node it is connected to is restarting) is retried until it is accepted. Returns the
    messages in the order they were accepted."""
    accepted: list[WakuMessage] = []
    for index, msg in enumerate(messages):
        if on_index and index in on_index:
            on_index[index].set()
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while True:
            try:
                if await peer.publish(msg):
                    break
            except JsWakuError:
                if time.monotonic() > deadline:
                    raise
                if redial:
                    with contextlib.suppress(JsWakuError, TimeoutError):
                        await peer.dial(redial, time_limit=5)
            await asyncio.sleep(0.1)
        accepted.append(msg)
        await asyncio.sleep(interval)
    return accepted


@pytest.mark.jswaku
@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_subscriber_node_restart_mid_stream(
    gowaku_pair: GoWakuPair, jswaku_peer: JsWakuPeer, how: str
) -> None:
    """The client's node (B) goes down in the middle of a stream and comes back (same key,
    ports): the adapter re-subscribes and back-fills from the store (A's), and every message
    arrives exactly once."""
    b = gowaku_pair.b
    ct = content_topic()
    stream = [message(ct, f"stream-{i}") for i in range(40)]
    halfway = asyncio.Event()
    async with transport(b) as tb, collecting(tb, [ct]) as on_b:
        publisher = asyncio.create_task(
            publish_stream(jswaku_peer, stream, interval=0.075, on_index={12: halfway})
        )
        await halfway.wait()
        if how == "sigkill":
            await b.kill()
        else:
            await b.stop()
        await b.start()
        sent = await publisher
        expected = {m.hash(PUBSUB_TOPIC): m for m in sent}
        await on_b.wait_for(expected, time_limit=RECOVERY_TIMEOUT)
        await on_b.settle(2.0)
        on_b.assert_exactly_once(expected)
        sources = Counter(r.source for r in on_b.items)
        print(f"[realnodes] delivered after {how} restart of B: {dict(sources)}")
        assert sources["store"] >= 1, "nothing was back-filled: did the restart fall in a gap?"
        for received in on_b.items:
            assert received.message == expected[received.hash]
        await assert_live_again(on_b, jswaku_peer, ct)


async def assert_live_again(collector: Collector, peer: JsWakuPeer, ct: str) -> None:
    """After recovery, new messages arrive through the relay subscription again (not only by
    back-filling from the store): the adapter really re-subscribed the restarted node."""
    after = [message(ct, f"after-{i}") for i in range(3)]
    for msg in after:
        assert await peer.publish(msg)
    hashes = {m.hash(PUBSUB_TOPIC) for m in after}
    await collector.wait_for(hashes)
    assert {r.source for r in collector.items if r.hash in hashes} == {"relay"}


async def archived(node: GoWakuNode, ct: str) -> int:
    """How many messages on ``ct`` the store node ``node`` has archived (legacy store REST)."""
    from urllib.parse import quote

    status, body = await node.request(
        "GET",
        f"/store/v1/messages?pubsubTopic={quote(PUBSUB_TOPIC, safe='')}"
        f"&contentTopics={quote(ct, safe='')}&pageSize=100",
    )
    assert status == 200, body
    return len(body.get("messages") or [])


@pytest.mark.jswaku
@pytest.mark.slow
async def test_store_node_restart_mid_stream(
    gowaku_pair: GoWakuPair, jswaku_peer: JsWakuPeer
) -> None:
    """The client's node is A itself (relay + store; its sqlite DB survives the restart). A goes
    down while its REST cache still holds messages the client has not polled: after the restart
    the adapter re-subscribes and gets them back from A's store; nothing is delivered twice.

    The first part of the stream is archived before A stops (a message in flight at the moment
    a node dies is lost by the network itself, not by the client); while A is down the js-waku
    publisher has no peer and retries, re-dialling A, until A accepts each message."""
    a = gowaku_pair.a
    ct = content_topic()
    stream = [message(ct, f"stream-{i}") for i in range(30)]
    # Slow polling: the client has not polled the first part when A goes down.
    async with transport(a, poll_interval=2.0) as ta, collecting(ta, [ct]) as on_a:
        first = await publish_stream(jswaku_peer, stream[:12], interval=0.02)

        async def all_archived() -> bool:
            return await archived(a, ct) == len(first)

        await wait_until(all_archived, time_limit=DELIVERY_TIMEOUT, what="the first part archived")
        await a.restart()
        rest = await publish_stream(jswaku_peer, stream[12:], interval=0.075, redial=a.multiaddr)
        expected = {m.hash(PUBSUB_TOPIC): m for m in first + rest}
        await on_a.wait_for(expected, time_limit=RECOVERY_TIMEOUT)
        await on_a.settle(3.0)
        on_a.assert_exactly_once(expected)
        sources = Counter(r.source for r in on_a.items)
        print(f"[realnodes] delivered after restart of A: {dict(sources)}")
        assert sources["store"] >= 1, "nothing was back-filled from A's store"
        await assert_live_again(on_a, jswaku_peer, ct)


@pytest.mark.jswaku
@pytest.mark.slow
async def test_filter_service_node_restart_light_mode(
    gowaku_pair: GoWakuPair, jswaku_peer: JsWakuPeer
) -> None:
    """Light mode on B; its filter service node A restarts (filter subscriptions are in memory,
    so A forgets B's): every message published after the restart still reaches the client, from
    the filter or back-filled from A's store, exactly once.

    Polls of B's own filter cache keep answering 200 after A forgot B, so only the next ping
    tells; the adapter counts itself complete only up to its last successful ping, and fills
    the gap from there. The margin is kept far below the ping interval, so the margin alone
    could not cover what A received before the loss was noticed."""
    a = gowaku_pair.a
    ct = content_topic()
    options = {"mode": "light", "filter_ping_interval": 5.0, "gap_fill_margin": 1.0}
    async with transport(gowaku_pair.b, **options) as tb, collecting(tb, [ct]) as on_b:
        before = message(ct, "before")
        await jswaku_peer.publish(before)
        await on_b.wait_for([before.hash(PUBSUB_TOPIC)])
        await a.restart()
        await jswaku_peer.dial(a.multiaddr)
        await gowaku_pair.repeer()
        after = await publish_stream(
            jswaku_peer, [message(ct, f"after-{i}") for i in range(5)], interval=0.2
        )
        expected = {m.hash(PUBSUB_TOPIC): m for m in [before, *after]}
        await on_b.wait_for(expected, time_limit=15.0)
        await on_b.settle()
        on_b.assert_exactly_once(expected)
        sources = Counter(r.source for r in on_b.items)
        print(f"[realnodes] light mode after the filter service node restarted: {dict(sources)}")


# ---------------------------------------------------------------------------------------------
# go-waku behaviours the adapter must respect (see tests/rest/test_node_quirks.py for the fakes)


async def relay_get(node: GoWakuNode) -> tuple[int, Any]:
    from urllib.parse import quote

    return await node.request("GET", f"/relay/v1/messages/{quote(PUBSUB_TOPIC, safe='')}")


async def test_publish_only_client_leaves_no_relay_subscription_on_gowaku(
    gowaku_pair: GoWakuPair,
) -> None:
    """go-waku publishes without a REST subscription; one that nobody drains would fill up and
    stall the node's relay pipeline. So publishing must not create one."""
    ct = content_topic()
    async with transport(gowaku_pair.b) as tb:
        sent = [message(ct, f"p{i}") for i in range(3)]
        for msg in sent:
            await tb.publish(msg)
        status, body = await relay_get(gowaku_pair.b)
        assert status == 404, body  # "no subscription found for pubsubTopic"

        async def all_archived() -> bool:
            return await archived(gowaku_pair.a, ct) == len(sent)

        await wait_until(all_archived, time_limit=DELIVERY_TIMEOUT, what="A to archive them")


async def test_client_restarts_never_stack_relay_subscriptions_on_gowaku(
    gowaku_pair: GoWakuPair,
) -> None:
    """Each POST /relay/v1/subscriptions on go-waku adds a subscription (every message then
    comes twice, and the one nobody reads fills up): a second client of the same node adopts
    the subscription the first one left instead of posting another."""
    a, b = gowaku_pair.a, gowaku_pair.b
    ct = content_topic()
    for _ in range(2):  # two client lifetimes on B
        async with transport(b) as tb, collecting(tb, [ct]):
            pass
    async with transport(a) as ta:
        sent = [message(ct, f"once-{i}") for i in range(4)]
        for msg in sent:
            await ta.publish(msg)
    await asyncio.sleep(1.0)  # let them reach B
    payloads: list[str] = []
    for _ in range(40):  # GET picks one of B's subscriptions at random: read them all
        status, body = await relay_get(b)
        assert status == 200, body
        payloads += [item["payload"] for item in body or [] if item["contentTopic"] == ct]
        await asyncio.sleep(0.02)
    assert sorted(payloads) == sorted(base64.b64encode(msg.payload).decode() for msg in sent), (
        "a message came out of B's relay cache twice: two subscriptions"
    )


async def test_one_poll_drains_a_full_relay_queue(
    gowaku_pair_factory: Callable[..., Any],
) -> None:
    """B's REST queue holds 5; a burst of 25 arrives between two polls. go-waku blocks while the
    queue is full and returns at most capacity + 1 per GET, so the adapter reads again at once
    until a read is short: the whole burst arrives with the next poll, not over five.

    Polls are 10 s apart and the burst must be complete within 18 s: one poll. Without the drain
    loop it would take five polls (40 s or more), so the bound is about poll counts, not speed."""
    pair = await gowaku_pair_factory(rest_relay_cache_capacity=5)
    ct = content_topic()
    poll = 10.0
    async with (
        transport(pair.b, poll_interval=poll) as tb,
        collecting(tb, [ct]) as on_b,
        transport(pair.a) as ta,
    ):
        burst = [message(ct, f"burst-{i}") for i in range(25)]
        for msg in burst:
            await ta.publish(msg)
        published = time.monotonic()
        expected = {m.hash(PUBSUB_TOPIC): m for m in burst}
        await on_b.wait_for(expected, time_limit=poll + 8.0)  # one poll; five would be >= 40 s
        took = time.monotonic() - published
        await on_b.settle()
        on_b.assert_exactly_once(expected)
        print(f"[realnodes] a burst of 25 through a queue of 5 arrived in {took:.2f} s")


async def test_store_goes_straight_to_v1_and_has_store_is_probed(
    gowaku_pair: GoWakuPair,
    gowaku_bin: GoWakuBinary,
    realnode_sandbox: Sandbox,
    realnode_logs: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """go-waku's store server is legacy-only: the adapter asks v1 at once (no v3 attempts, no
    retried 500s, no warnings). node_info().has_store is true through A (the store) and B
    (--storenode=A), false through a node with neither."""
    caplog.set_level(logging.INFO, logger="umbra_waku.rest")
    ct = content_topic()
    async with transport(gowaku_pair.a) as ta:
        await ta.publish(msg := message(ct, "stored"))

        async def all_archived() -> bool:
            return await archived(gowaku_pair.a, ct) == 1

        await wait_until(all_archived, time_limit=DELIVERY_TIMEOUT, what="A to archive it")
    for node in gowaku_pair.nodes:
        async with transport(node) as t:
            page = await t.query_history(HistoryQuery([ct]))
            assert [r.message for r in page.messages] == [msg]
            assert (await t.node_info()).has_store
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text

    lone = GoWakuNode(gowaku_bin, realnode_sandbox, realnode_logs, GoWakuConfig(name="C"))
    await lone.start()
    try:
        async with transport(lone) as tc:
            assert not (await tc.node_info()).has_store
    finally:
        await lone.close()


async def test_store_peer_that_is_the_node_itself(gowaku_pair: GoWakuPair) -> None:
    """store_peer = A's own multiaddr: go-waku cannot dial itself (500 "dial to self
    attempted"), so the adapter queries A's own archive without peerAddr; through B the same
    store_peer is sent as peerAddr."""
    a = gowaku_pair.a
    ct = content_topic()
    async with transport(a, store_peer=a.multiaddr) as ta:
        await ta.publish(msg := message(ct, "self"))

        async def stored() -> list[ReceivedMessage] | None:
            page = await ta.query_history(HistoryQuery([ct]))
            return page.messages or None

        got = await wait_until(stored, time_limit=DELIVERY_TIMEOUT, what="A's own archive")
        assert [r.message for r in got] == [msg]
    async with transport(gowaku_pair.b, store_peer=a.multiaddr) as tb:
        page = await tb.query_history(HistoryQuery([ct]))
        assert [r.message for r in page.messages] == [msg]
