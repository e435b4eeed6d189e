"""RestTransport: umbra_waku's Transport over one nwaku or go-waku node's REST API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from umbra_waku.errors import (
    InvalidInput,
    NodeNotReady,
    NodeProtocolError,
    NodeTimeout,
    NodeUnreachable,
    TransportClosed,
    TransportError,
    UmbraWakuError,
)
from umbra_waku.transport import HistoryPage, HistoryQuery, NodeInfo
from umbra_waku.waku.message import MessageHash, WakuMessage
from umbra_waku.waku.topics import parse_content_topic, parse_pubsub_topic, pubsub_topic_for
from umbra_waku_rest.client import NodeClient, Reply, detect_implementation, encode_json
from umbra_waku_rest.codec import decode_cursor, encode_cursor, message_to_json
from umbra_waku_rest.filter import FilterApi
from umbra_waku_rest.lightpush import LightpushApi
from umbra_waku_rest.options import RestOptions
from umbra_waku_rest.relay import RelayApi
from umbra_waku_rest.store import MAX_PAGE_SIZE, StoreApi
from umbra_waku_rest.subscription import (
    FilterReceiver,
    Receiver,
    RelayReceiver,
    RestSubscription,
    TopicFeed,
)

log = logging.getLogger("umbra_waku.rest")

#: nwaku /health statuses (normalised: upper case, spaces as "_") that mean "not yet".
_NOT_READY = frozenset({"INITIALIZING", "SYNCHRONIZING", "NOT_READY", "SHUTTING_DOWN"})
_STORE_PROTOCOLS = frozenset({"STORE", "STORE_CLIENT", "LEGACY_STORE", "LEGACY_STORE_CLIENT"})
#: The content topic of node_info()'s one-message store probe (go-waku).
_STORE_PROBE_CONTENT_TOPIC = "/umbra-waku/1/store-probe/proto"


class RestTransport:
    """A Waku node reached over REST, in relay mode (the node's own relay) or light mode
    (lightpush + filter through the node's service peers). Create it with
    :func:`umbra_waku_rest.connect`; use it as ``async with``."""

    def __init__(self, url: str, options: RestOptions | None = None) -> None:
        self.url = url
        self.options = options or RestOptions()
        self._client = NodeClient(url, self.options)
        self._relay = RelayApi(self._client)
        self._filters = FilterApi(self._client)
        self._lightpush = LightpushApi(self._client)
        self._store = StoreApi(self._client)
        self._feeds: dict[str, TopicFeed] = {}
        self._feeds_lock = asyncio.Lock()
        self._subscriptions: set[RestSubscription] = set()
        self._closed = False
        self._store_probed: bool | None = None

    def __repr__(self) -> str:
        return f"RestTransport({self.url!r}, mode={self.options.mode!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Wait until the node answers and is ready, retrying connection errors, 5xx and nwaku's
        404 "not available while initializing" until ``start_timeout``."""
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.start_timeout
        delay = 0.05
        while True:
            try:
                await self._probe()
            except TransportError as exc:
                if not exc.retriable:
                    raise
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _start_error(exc, self.options.start_timeout) from exc
                log.info("node %s not ready yet: %s", self.url, exc)
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, 2.0)
            else:
                return

    async def close(self) -> None:
        """Close every subscription, release node-side filter subscriptions (best effort) and
        the HTTP session. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(sub.close() for sub in list(self._subscriptions)))
        feeds, self._feeds = list(self._feeds.values()), {}
        await asyncio.gather(*(feed.stop() for feed in feeds))
        await self._client.close()

    # -- Transport ----------------------------------------------------------------------------

    def pubsub_topic(self, content_topic: str) -> str:
        """The static shard if one is configured, otherwise the autosharding shard."""
        parse_content_topic(content_topic)
        static = self.options.static_pubsub_topic()
        if static is not None:
            return static
        return pubsub_topic_for(
            content_topic, self.options.cluster_id, self.options.shards_in_network()
        )

    async def publish(self, message: WakuMessage) -> MessageHash:
        """Publish and return the message hash computed with the pubsub topic used.

        Size, content topic, payload, meta and timestamp are checked before anything is sent
        (InvalidInput). A refusal is PublishRejected; its ``retriable`` tells whether trying
        again later can help."""
        self._check_open()
        message.check_publishable(self.options.max_message_bytes)
        topic = self.pubsub_topic(message.content_topic)
        body = message_to_json(message)
        if self.options.mode == "relay":
            await self._relay.publish(topic, encode_json(body))
        else:
            await self._lightpush.push(topic, body)
        return message.hash(topic)

    async def subscribe(self, content_topics: Sequence[str]) -> RestSubscription:
        """Subscribe the node and start polling; node errors while subscribing reach the
        caller, later ones are retried in the background."""
        self._check_open()
        if isinstance(content_topics, str):
            raise InvalidInput("subscribe() takes a list of content topics, not a string")
        topics = list(dict.fromkeys(content_topics))
        if not topics:
            raise InvalidInput("subscribe() needs at least one content topic")
        by_pubsub: dict[str, list[str]] = {}
        for topic in topics:
            by_pubsub.setdefault(self.pubsub_topic(topic), []).append(topic)

        subscription = RestSubscription(topics)
        subscription.add_closer(self._detach)
        try:
            async with self._feeds_lock:
                for pubsub_topic, pubsub_content_topics in by_pubsub.items():
                    feed = self._feeds.get(pubsub_topic)
                    if feed is None:
                        feed = TopicFeed(
                            pubsub_topic, self._receiver(pubsub_topic), self._store, self.options
                        )
                        self._feeds[pubsub_topic] = feed
                    try:
                        await feed.add(subscription, pubsub_content_topics)
                    finally:
                        if feed.empty and not feed.running:
                            # ... when the first add failed: drop the feed it was for.
                            self._feeds.pop(pubsub_topic, None)
        except BaseException:
            await subscription.close()
            raise
        self._subscriptions.add(subscription)
        return subscription

    async def query_history(self, query: HistoryQuery) -> HistoryPage:
        """One page from the store: v3, or legacy v1 where v3 is not served. The cursor is an
        opaque string for the next page."""
        self._check_open()
        if isinstance(query.content_topics, str) or not query.content_topics:
            raise InvalidInput("a history query needs a list of content topics")
        topics = list(dict.fromkeys(query.content_topics))
        if query.pubsub_topic is not None:
            parse_pubsub_topic(query.pubsub_topic)
            pubsub_topic = query.pubsub_topic
            for topic in topics:
                parse_content_topic(topic)
        else:
            shards = {self.pubsub_topic(topic) for topic in topics}
            if len(shards) != 1:
                raise InvalidInput(
                    f"content topics {topics} are on different shards {sorted(shards)}; "
                    "query each shard separately"
                )
            (pubsub_topic,) = shards
        if query.page_size < 1:
            raise InvalidInput(f"page_size must be at least 1, got {query.page_size}")
        cursor = decode_cursor(query.cursor) if query.cursor else None
        page = await self._store.query(
            pubsub_topic,
            topics,
            start_time=query.start_time,
            end_time=query.end_time,
            cursor=cursor,
            page_size=min(query.page_size, MAX_PAGE_SIZE),
            ascending=query.ascending,
        )
        next_cursor = encode_cursor(page.cursor) if page.cursor is not None else None
        return HistoryPage(page.messages, next_cursor)

    async def node_info(self) -> NodeInfo:
        """Implementation (from /debug/v1/version), version, listen addresses and ENR
        (/debug/v1/info), and whether a store is reachable."""
        self._check_open()
        implementation = await self._client.implementation()
        reply = await self._client.call(
            "GET", "/debug/v1/info", time_limit=self.options.request_timeout
        )
        addresses, enr = _parse_info(reply)
        self._client.remember_addresses(addresses)
        has_store = self._store.reachable or self.options.store_peer is not None
        if not has_store and implementation == "nwaku":
            has_store = await self._health_says_store()
        elif not has_store:
            has_store = await self._probe_store()
        return NodeInfo(
            implementation=implementation,
            version=self._client.version,
            listen_addresses=addresses,
            enr=enr,
            has_store=has_store,
        )

    async def ready(self) -> bool:
        """Whether the node answers and reports itself ready, right now; never raises."""
        if self._closed:
            return False
        try:
            await self._probe()
        except Exception as exc:  # noqa: BLE001 - ready() is a yes/no question, by contract
            log.debug("node %s not ready: %s", self.url, exc)
            return False
        return True

    # -- internals ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed("the REST transport is closed")

    async def _probe_store(self) -> bool:
        """go-waku has no health report: ask the store once for one message. The answer is
        remembered, unless the question failed for a reason that may pass (then: False now)."""
        if self._store_probed is not None:
            return self._store_probed
        topic = self.pubsub_topic(_STORE_PROBE_CONTENT_TOPIC)
        try:
            await self._store.query(topic, [_STORE_PROBE_CONTENT_TOPIC], page_size=1)
        except TransportError as exc:
            log.info("no store reachable through %s: %s", self.url, exc)
            if not exc.retriable:
                self._store_probed = False
            return False
        self._store_probed = True
        return True

    def _receiver(self, pubsub_topic: str) -> Receiver:
        if self.options.mode == "relay":
            return RelayReceiver(self._relay, pubsub_topic, self.options)
        return FilterReceiver(self._filters, self._client, pubsub_topic, self.options)

    async def _detach(self, subscription: RestSubscription) -> None:
        self._subscriptions.discard(subscription)
        emptied: list[TopicFeed] = []
        keep_draining = self._drains_idle_feeds()
        for pubsub_topic, feed in list(self._feeds.items()):
            feed.remove(subscription)
            if feed.empty and not keep_draining:
                del self._feeds[pubsub_topic]
                emptied.append(feed)
        await asyncio.gather(*(feed.stop() for feed in emptied))

    def _drains_idle_feeds(self) -> bool:
        """go-waku relay: our REST subscription stays on the node (it is never DELETEd, see
        RelayApi.subscribe), and its queue fills up unless read -- and a full queue stalls the
        node's whole relay pipeline. So a feed whose last subscription closed keeps draining
        (discarding) until the transport closes; a later subscribe() on the topic reuses it, and
        a new transport reuses the node's subscription (it asks before POSTing)."""
        return self.options.mode == "relay" and self._client.known_implementation() == "go-waku"

    async def _probe(self) -> None:
        """One readiness check, without retries: the node must answer /debug/v1/version and
        /debug/v1/info, and nwaku's /health must not report a not-ready state (go-waku's
        /health is 501 without RLN, so /debug/v1/info is its readiness signal)."""
        time_limit = self.options.request_timeout
        if self._client.known_implementation() is None or not self._client.version:
            reply = await self._client.send("GET", "/debug/v1/version", time_limit=time_limit)
            self._client.remember(*detect_implementation(reply))
        info = await self._client.send("GET", "/debug/v1/info", time_limit=time_limit)
        self._client.remember_addresses(_parse_info(info)[0])
        if self._client.known_implementation() == "nwaku":
            health = await self._nwaku_health()
            if health is not None and health[0] in _NOT_READY:
                raise NodeNotReady(f"the node reports nodeHealth {health[0]}")

    async def _nwaku_health(self) -> tuple[str, dict[str, str]] | None:
        """(nodeHealth, {protocol: status}) normalised, or None for a pre-JSON health answer."""
        reply = await self._client.send("GET", "/health", time_limit=self.options.request_timeout)
        try:
            value = reply.json()
        except NodeProtocolError:
            return None  # e.g. the ancient text "Node is healthy"
        if not isinstance(value, dict) or not isinstance(value.get("nodeHealth"), str):
            return None
        protocols: dict[str, str] = {}
        entries = value.get("protocolsHealth")
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict):
                for key, status in entry.items():
                    if key != "desc" and isinstance(status, str):
                        protocols[_normalise(key)] = _normalise(status)
        return _normalise(value["nodeHealth"]), protocols

    async def _health_says_store(self) -> bool:
        try:
            health = await self._nwaku_health()
        except UmbraWakuError:
            return False
        if health is None:
            return False
        return any(health[1].get(name) == "READY" for name in _STORE_PROTOCOLS)


def _normalise(status: str) -> str:
    return status.strip().upper().replace(" ", "_")


def _parse_info(reply: Reply) -> tuple[list[str], str | None]:
    value = reply.json()
    if not isinstance(value, dict):
        raise NodeProtocolError(f"GET {reply.path}: expected a JSON object")
    addresses = value.get("listenAddresses") or []
    enr = value.get("enrUri")
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        raise NodeProtocolError(f"GET {reply.path}: listenAddresses must be a list of strings")
    if enr is not None and not isinstance(enr, str):
        raise NodeProtocolError(f"GET {reply.path}: enrUri must be a string")
    return list(addresses), enr


def _start_error(error: TransportError, waited: float) -> TransportError:
    if isinstance(error, NodeUnreachable):
        return NodeUnreachable(f"node not reachable within {waited:g} s: {error}")
    return NodeTimeout(f"node not ready within {waited:g} s: {error}")
