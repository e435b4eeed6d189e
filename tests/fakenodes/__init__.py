"""Fake Waku nodes speaking the nwaku or go-waku REST API, for tests (no mocks of aiohttp).

``make_fake_node(flavour="nwaku" | "go-waku", network=...)`` returns a :class:`FakeNode`; serve
``node.app`` with pytest-aiohttp's ``aiohttp_server`` (or ``node.make_app()`` again after stopping a
server, to bring the "same" node back on the same port). Nodes sharing a :class:`FakeNetwork`
relay to each other and share one store archive, like peers of one Waku network.

Behaviour follows /work/shared/reference/waku-rest-api.md and real-waku-nodes.md:

- relay: destructive GET of the node's REST cache; nwaku's cache is global with capacity
  ``relay_cache_capacity`` (default 50), evicts the message with the smallest timestamp, and a
  second POST /relay/v1/subscriptions is a no-op. A node's own messages are echoed into its cache.
  ``OK`` (nwaku, text/plain) vs ``true`` (go-waku); ``[]`` vs ``null``; nwaku refuses a publish on
  a topic it is not subscribed to (400).
- go-waku v0.10 relay, as observed on real nodes: **every POST /relay/v1/subscriptions adds one
  more subscription**, a queue (Go channel) of ``relay_cache_capacity`` (default 1000) that every
  message goes into; a GET drains one of them picked at random (so two subscriptions deliver every
  message twice), reading up to capacity + 1 messages, and answers 404 "no subscription found for
  pubsubTopic" when there is none (also after a restart, and for topics the node only joined with
  ``--pubsub-topic``: ``preset_pubsub_topics``). **A full queue stalls the node**: what arrives
  then waits in the relay pipeline (``relay_pipeline_capacity``, gossipsub's 1024) and beyond it
  is dropped (:attr:`FakeNode.relay_dropped`), for every consumer -- REST queues, filter cache and,
  when the node is its network's ``store_node``, its store. A publish needs no REST subscription
  (500 with an empty body only without peers: ``relay_peers=0``). DELETE removes every
  subscription of the topic and the node leaves the shard.
- /health: nwaku JSON; go-waku 501. /debug/v1/version: nwaku text/plain, go-waku a JSON string.
- store v3 with real cursor paging: nwaku camelCase with 0x-hex hashes, go-waku snake_case with
  standard base64 hashes that parses cursors as URL-safe base64; legacy store v1 in both styles.
  go-waku's store server is legacy-only: with ``store_v3=False`` (a go-waku network) its v3
  endpoint answers a fast 500 ``no suitable peers found`` (``protocols not supported:
  [/vac/waku/store-query/3.0.0]`` with a ``peerAddr``); without a store, v1 answers 500 ``no
  suitable peers found`` too; a ``peerAddr`` that is the node itself is 500 ``failed to dial: dial
  to self attempted``.
- filter v2 (subscribe, ping with 404 once the service peer forgot us, poll: nwaku
  ``/filter/v2/messages/{ct}`` with 400 when unknown, go-waku ``.../{pubsub}/{ct}`` with 404).
- lightpush v3 (nwaku: JSON ``relayPeerCount`` / ``statusDesc``, 505 without peers, 500 for a
  duplicate) and v1 (both; the only one on go-waku).
- an "initialising" phase answering 404 ``/<ns> endpoints are not available while initializing.``
- strict nwaku request parsing: unknown JSON keys are 400, a foreign ``Origin`` is 403.

Fault knobs: :meth:`FakeNode.fail` (N answers with a status), :meth:`FakeNode.respond` (canned
body: non-JSON, wrong shapes), :meth:`FakeNode.hang` (never answer), :meth:`FakeNode.delay`
(handle the request, then answer late: the client times out although the node acted),
:meth:`FakeNode.restart` (forget subscriptions and caches, optionally initialising). Every
request is recorded in :attr:`FakeNode.requests`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from umbra_waku.waku.message import MessageHash, WakuMessage
from umbra_waku.waku.topics import pubsub_topic_for

Flavour = Literal["nwaku", "go-waku"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = [
    "FakeNetwork",
    "FakeNode",
    "Flavour",
    "RecordedRequest",
    "StoredMessage",
    "make_fake_node",
]

NWAKU_MAX_MSG = 153_600
GOWAKU_MAX_MSG = 150_000
_NWAKU_MESSAGE_KEYS = frozenset(
    {"payload", "contentTopic", "version", "timestamp", "meta", "ephemeral", "proof"}
)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # decoded
    raw_path: str  # as sent, with the query string
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class StoredMessage:
    pubsub_topic: str
    message: WakuMessage
    hash: MessageHash
    store_time: int


@dataclass
class _Fault:
    prefix: str
    method: str | None
    remaining: int | None  # None: until cleared
    status: int
    body: str
    content_type: str
    skip: int = 0  # matching requests to let through first

    def matches(self, request: web.Request) -> bool:
        if self.method is not None and request.method != self.method:
            return False
        return request.path.startswith(self.prefix)


class _BadRequest(Exception):
    """Raised by body parsing; the handler turns it into the flavour's 400."""


class FakeNetwork:
    """Peers of one Waku network: what one publishes reaches every subscribed node, and the
    network's store node archives it (non-ephemeral, timestamp within +/- variance)."""

    def __init__(self, *, store_time_variance: float | None = 20.0) -> None:
        self.nodes: list[FakeNode] = []
        self.archive: list[StoredMessage] = []
        self.seen: set[MessageHash] = set()
        self.store_time_variance = store_time_variance
        #: The node whose store is the archive: it archives what passes through its relay
        #: pipeline (a stalled go-waku node misses what it drops). None: everything is archived.
        self.store_node: FakeNode | None = None
        self._last_store_time = 0

    def publish(self, pubsub_topic: str, message: WakuMessage) -> bool:
        """Deliver like gossipsub would; False for a duplicate (already seen)."""
        digest = message.hash(pubsub_topic)
        if digest in self.seen:
            return False
        self.seen.add(digest)
        for node in self.nodes:
            node.on_relay(pubsub_topic, message)
        if self.store_node is None:
            self.archive_message(pubsub_topic, message)
        return True

    def archive_message(self, pubsub_topic: str, message: WakuMessage) -> None:
        if not message.ephemeral and self._storable(message):
            now = max(time.time_ns(), self._last_store_time + 1)
            self._last_store_time = now
            self.archive.append(
                StoredMessage(pubsub_topic, message, message.hash(pubsub_topic), now)
            )

    def _storable(self, message: WakuMessage) -> bool:
        if self.store_time_variance is None:
            return True
        if message.timestamp is None:
            return False
        return abs(message.timestamp - time.time_ns()) <= self.store_time_variance * 1e9

    def stored(
        self, pubsub_topic: str, content_topics: Iterable[str], start: int | None, end: int | None
    ) -> list[StoredMessage]:
        wanted = set(content_topics)
        found = [
            entry
            for entry in self.archive
            if entry.pubsub_topic == pubsub_topic
            and (not wanted or entry.message.content_topic in wanted)
            and (start is None or (entry.message.timestamp or 0) >= start)
            and (end is None or (entry.message.timestamp or 0) <= end)
        ]
        return sorted(found, key=lambda e: (e.message.timestamp or 0, bytes(e.hash)))


class FakeNode:
    """One fake node; see the module docstring."""

    def __init__(
        self,
        flavour: Flavour = "nwaku",
        *,
        network: FakeNetwork | None = None,
        relay_cache_capacity: int | None = None,
        filter_cache_capacity: int | None = None,
        store: bool = True,
        store_v3: bool = True,
        legacy_store: bool | None = None,
        lightpush_v3: bool | None = None,
        lightpush_peers: int = 1,
        relay_peers: int = 1,
        relay_pipeline_capacity: int = 1024,
        filter_ttl: float | None = 300.0,
        preset_pubsub_topics: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
        version: str | None = None,
        initializing: bool = False,
        initializing_requests: int = 0,
    ) -> None:
        if flavour not in ("nwaku", "go-waku"):
            raise ValueError(f"unknown flavour {flavour!r}")
        self.flavour: Flavour = flavour
        self.network = network if network is not None else FakeNetwork()
        self.network.nodes.append(self)
        nwaku = flavour == "nwaku"
        self.relay_cache_capacity = relay_cache_capacity or (50 if nwaku else 1000)
        self.filter_cache_capacity = filter_cache_capacity or (50 if nwaku else 30)
        self.store = store
        self.store_v3 = store_v3
        self.legacy_store = (not nwaku) if legacy_store is None else legacy_store
        self.lightpush_v3 = nwaku if lightpush_v3 is None else lightpush_v3
        self.lightpush_peers = lightpush_peers
        self.relay_peers = relay_peers
        self.relay_pipeline_capacity = relay_pipeline_capacity
        #: go-waku: messages dropped because the relay pipeline was stalled and full.
        self.relay_dropped = 0
        self._random = random.Random(0)
        self.filter_ttl = filter_ttl
        self.preset_pubsub_topics = tuple(preset_pubsub_topics)
        self.allowed_origins = frozenset(allowed_origins)
        self.version = version or ("v0.36.0" if nwaku else "v0.10.1")
        self.peer_id = "16Uiu2HAm" + secrets.token_hex(20)
        self.max_msg_size = NWAKU_MAX_MSG if nwaku else GOWAKU_MAX_MSG

        self.requests: list[RecordedRequest] = []
        self.published: list[tuple[str, WakuMessage]] = []
        self.initializing = initializing
        self._initializing_left = initializing_requests
        self._faults: list[_Fault] = []
        self._hangs: list[tuple[str, str | None]] = []
        self._delays: list[list[Any]] = []  # [prefix, method, seconds, remaining]
        self._release = asyncio.Event()
        self._reset_state()
        self.app = self.make_app()

    # -- state ----------------------------------------------------------------------------

    def _reset_state(self) -> None:
        nwaku = self.flavour == "nwaku"
        #: Topics with a REST relay cache (nwaku) / at least one REST subscription (go-waku).
        self.relay_topics: set[str] = set(self.preset_pubsub_topics) if nwaku else set()
        #: go-waku: the gossipsub topics the node is subscribed to (--pubsub-topic and REST).
        self.relay_joined: set[str] = set(self.preset_pubsub_topics)
        # nwaku: one global cache of (pubsub, message).
        self._relay_global: list[tuple[str, WakuMessage]] = []
        # go-waku: one queue per REST subscription (each POST adds one), and the relay pipeline
        # in front of them, where messages wait while a queue is full.
        self._relay_subs: dict[str, list[deque[WakuMessage]]] = {}
        self._pipeline: deque[tuple[str, WakuMessage]] = deque()
        # filter service side: what the service peer pushes to us.
        self.filter_criteria: set[tuple[str, str]] = set()
        self._filter_refreshed = time.monotonic()
        # REST filter cache: nwaku keyed by content topic (global capacity), go-waku per pair.
        self._filter_topics: set[str] = set()
        self._filter_global: list[tuple[str, WakuMessage]] = []
        self._filter_pairs: dict[tuple[str, str], deque[WakuMessage]] = {}

    def restart(self, *, initializing: bool = False, initializing_requests: int = 0) -> None:
        """Forget subscriptions and caches, as a restarted node does; optionally answer
        "not available while initializing" until :meth:`finish_initializing` or for the next
        ``initializing_requests`` requests."""
        self._reset_state()
        self.initializing = initializing
        self._initializing_left = initializing_requests

    def finish_initializing(self) -> None:
        self.initializing = False
        self._initializing_left = 0

    def drop_filter_service_subscriptions(self) -> None:
        """The service peer forgot us (its restart, our TTL): pings now answer 404, and nothing
        is pushed to us any more; our own REST filter cache is untouched, so polls still answer
        200 (that is what go-waku does when its filter service node restarts)."""
        self.filter_criteria.clear()

    def relay_subscriptions(self, pubsub_topic: str) -> int:
        """How many REST relay subscriptions the node holds for the topic (nwaku: 0 or 1)."""
        if self.flavour == "nwaku":
            return int(pubsub_topic in self.relay_topics)
        return len(self._relay_subs.get(pubsub_topic, []))

    @property
    def stalled(self) -> bool:
        """go-waku: a full REST queue blocks the relay pipeline; messages wait or are dropped."""
        return bool(self._pipeline) or self._queue_full()

    def _queue_full(self) -> bool:
        return any(
            len(queue) >= self.relay_cache_capacity
            for queues in self._relay_subs.values()
            for queue in queues
        )

    # -- fault knobs ------------------------------------------------------------------------

    def fail(
        self,
        prefix: str,
        *,
        times: int | None = 1,
        status: int = 500,
        body: str = "",
        method: str | None = None,
        content_type: str = "text/plain",
        skip: int = 0,
    ) -> None:
        """Answer the next ``times`` matching requests (None: all until cleared) with ``status``,
        after letting ``skip`` of them through."""
        self._faults.append(_Fault(prefix, method, times, status, body, content_type, skip))

    def respond(
        self,
        prefix: str,
        body: str,
        *,
        status: int = 200,
        method: str | None = None,
        content_type: str = "application/json",
        times: int | None = None,
    ) -> None:
        """Answer matching requests with a canned body (non-JSON, wrong shapes, ...)."""
        self.fail(
            prefix, times=times, status=status, body=body, method=method, content_type=content_type
        )

    def hang(self, prefix: str, *, method: str | None = None) -> None:
        """Never answer matching requests (until :meth:`release_hangs` or shutdown)."""
        self._hangs.append((prefix, method))

    def delay(
        self, prefix: str, seconds: float, *, times: int = 1, method: str | None = None
    ) -> None:
        """Handle the next ``times`` matching requests normally but answer ``seconds`` late."""
        self._delays.append([prefix, method, seconds, times])

    def clear_faults(self) -> None:
        self._faults.clear()
        self._hangs.clear()
        self._delays.clear()

    def release_hangs(self) -> None:
        self._hangs.clear()
        self._release.set()

    def requests_to(self, prefix: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.path.startswith(prefix) and (method is None or r.method == method)
        ]

    # -- network side -----------------------------------------------------------------------

    def inject(self, pubsub_topic: str, message: WakuMessage) -> bool:
        """A message arriving from some other peer of the network."""
        return self.network.publish(pubsub_topic, message)

    def on_relay(self, pubsub_topic: str, message: WakuMessage) -> None:
        if self.flavour == "nwaku":
            if pubsub_topic in self.relay_topics:
                _add_evicting_oldest(
                    self._relay_global, (pubsub_topic, message), self.relay_cache_capacity
                )
            self._dispatch_filter(pubsub_topic, message)
            if self.network.store_node is self:
                self.network.archive_message(pubsub_topic, message)
            return
        # go-waku: relay and filter pushes both go through the node's broadcaster.
        self._expire_filter()
        wanted = (pubsub_topic, message.content_topic) in self.filter_criteria
        if pubsub_topic not in self.relay_joined and not wanted:
            return
        if self.stalled:
            if len(self._pipeline) >= self.relay_pipeline_capacity:
                self.relay_dropped += 1  # gossipsub drops for a subscriber too slow
                return
            self._pipeline.append((pubsub_topic, message))
            return
        self._dispatch_go_waku(pubsub_topic, message)

    def _dispatch_go_waku(self, pubsub_topic: str, message: WakuMessage) -> None:
        for queue in self._relay_subs.get(pubsub_topic, []):
            queue.append(message)
        self._dispatch_filter(pubsub_topic, message)
        if self.network.store_node is self:
            self.network.archive_message(pubsub_topic, message)

    def _flow(self) -> None:
        """go-waku: a queue has room again; the blocked pipeline moves on."""
        while self._pipeline and not self._queue_full():
            self._dispatch_go_waku(*self._pipeline.popleft())

    def _dispatch_filter(self, pubsub_topic: str, message: WakuMessage) -> None:
        self._expire_filter()
        if (pubsub_topic, message.content_topic) in self.filter_criteria:
            if self.flavour == "nwaku":
                if message.content_topic in self._filter_topics:
                    _add_evicting_oldest(
                        self._filter_global,
                        (message.content_topic, message),
                        self.filter_cache_capacity,
                    )
            else:
                pair = (pubsub_topic, message.content_topic)
                if pair in self._filter_pairs:
                    queue = self._filter_pairs[pair]
                    queue.append(message)
                    while len(queue) > self.filter_cache_capacity:
                        queue.popleft()

    def _expire_filter(self) -> None:
        if (
            self.filter_ttl is not None
            and time.monotonic() - self._filter_refreshed > self.filter_ttl
        ):
            self.filter_criteria.clear()

    # -- the web app ------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """A fresh aiohttp Application over this node's state (one per server run)."""
        self._release = asyncio.Event()
        app = web.Application(middlewares=[self._middleware])
        route = app.router
        route.add_get("/health", self._health)
        route.add_get("/debug/v1/info", self._info)
        route.add_get("/debug/v1/version", self._version)
        if self.flavour == "nwaku":
            route.add_get("/info", self._info)
            route.add_get("/version", self._version)
        route.add_post("/relay/v1/subscriptions", self._relay_subscribe)
        route.add_delete("/relay/v1/subscriptions", self._relay_unsubscribe)
        route.add_get("/relay/v1/messages/{topic}", self._relay_get)
        route.add_post("/relay/v1/messages/{topic}", self._relay_post)
        route.add_post("/filter/v2/subscriptions", self._filter_subscribe)
        if self.flavour == "nwaku":
            route.add_put("/filter/v2/subscriptions", self._filter_subscribe)
        route.add_delete("/filter/v2/subscriptions", self._filter_unsubscribe)
        route.add_delete("/filter/v2/subscriptions/all", self._filter_unsubscribe_all)
        route.add_get("/filter/v2/subscriptions/{request_id}", self._filter_ping)
        route.add_get("/filter/v2/messages/{content_topic}", self._filter_get)
        if self.flavour == "go-waku":
            route.add_get("/filter/v2/messages/{topic}/{content_topic}", self._filter_get)
        if self.lightpush_v3:
            route.add_post("/lightpush/v3/message", self._lightpush_v3)
        route.add_post("/lightpush/v1/message", self._lightpush_v1)
        route.add_get("/store/v3/messages", self._store_v3)
        route.add_get("/store/v1/messages", self._store_v1)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        self._release.set()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                request.raw_path,
                dict(request.query),
                dict(request.headers),
                body,
            )
        )
        if self.flavour == "nwaku":
            origins = request.headers.getall("Origin", [])
            if len(origins) > 1:
                return _text(400, "Only one Origin header is allowed")
            if origins and origins[0] not in self.allowed_origins:
                return _text(403, "Origin not allowed")
        for prefix, method in self._hangs:
            if request.path.startswith(prefix) and method in (None, request.method):
                await asyncio.wait_for(self._release.wait(), timeout=3600)
                return _text(503, "released")
        if request.path != "/health" and (self.initializing or self._initializing_left > 0):
            self._initializing_left = max(0, self._initializing_left - 1)
            namespace = request.path.strip("/").split("/")[0]
            return _text(404, f"/{namespace} endpoints are not available while initializing.")
        for fault in list(self._faults):
            if fault.matches(request):
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return web.Response(
                    status=fault.status, text=fault.body, content_type=fault.content_type
                )
        late = 0.0
        for entry in list(self._delays):
            prefix, method, seconds, remaining = entry
            if request.path.startswith(prefix) and method in (None, request.method):
                late = seconds
                entry[3] = remaining - 1
                if entry[3] <= 0:
                    self._delays.remove(entry)
                break
        try:
            response = await handler(request)
            if late:
                await asyncio.sleep(late)
            return response
        except web.HTTPNotFound:
            if self.flavour == "nwaku":  # unknown path or method
                return _text(400, "Bad request initiated. Invalid path or method used.")
            return _text(404, "404 page not found")
        except web.HTTPMethodNotAllowed:
            if self.flavour == "nwaku":
                return _text(400, "Bad request initiated. Invalid path or method used.")
            return _text(405, "")

    # -- health / debug ----------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.StreamResponse:
        if self.flavour == "go-waku":
            return _json(501, "Non RLN healthcheck is not implemented")
        if self.initializing or self._initializing_left > 0:
            return _json(200, {"nodeHealth": "INITIALIZING", "protocolsHealth": []})
        store = "READY" if self.store else "NOT_MOUNTED"
        return _json(
            200,
            {
                "nodeHealth": "READY",
                "protocolsHealth": [
                    {"Relay": "READY"},
                    {"Store": store},
                    {"Filter Client": "READY"},
                    {"Lightpush Client": "READY"},
                ],
            },
        )

    async def _info(self, request: web.Request) -> web.StreamResponse:
        return _json(
            200,
            {
                "listenAddresses": [f"/ip4/127.0.0.1/tcp/60000/p2p/{self.peer_id}"],
                "enrUri": "enr:-fake" + self.peer_id[-8:],
            },
        )

    async def _version(self, request: web.Request) -> web.StreamResponse:
        if self.flavour == "nwaku":
            return _text(200, self.version)
        return _json(200, self.version)

    # -- relay --------------------------------------------------------------------------------

    def _ok(self) -> web.Response:
        return _text(200, "OK") if self.flavour == "nwaku" else _json(200, True)

    async def _relay_subscribe(self, request: web.Request) -> web.StreamResponse:
        topics = await self._topic_list(request)
        if isinstance(topics, web.Response):
            return topics
        for topic in topics:
            if self.flavour == "nwaku":
                self.relay_topics.add(topic)  # idempotent: a cached topic is skipped
            else:
                topic = topic or "/waku/2/default-waku/proto"
                # Every POST is one more subscription with its own queue.
                self._relay_subs.setdefault(topic, []).append(deque())
                self.relay_topics.add(topic)
                self.relay_joined.add(topic)
        return self._ok()

    async def _relay_unsubscribe(self, request: web.Request) -> web.StreamResponse:
        topics = await self._topic_list(request)
        if isinstance(topics, web.Response):
            return topics
        for topic in topics:
            self.relay_topics.discard(topic)
            self._relay_global = [e for e in self._relay_global if e[0] != topic]
            # go-waku: every subscription of the topic goes, the node's own one for
            # --pubsub-topic included: the node leaves the shard.
            self._relay_subs.pop(topic, None)
            self.relay_joined.discard(topic)
        self._flow()
        return self._ok()

    async def _topic_list(self, request: web.Request) -> list[str] | web.Response:
        value = _loads(await request.read())
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            if self.flavour == "nwaku":
                return _text(400, "Invalid content body, could not decode.")
            return _text(400, "")
        if self.flavour == "nwaku":
            bad = [t for t in value if not _is_static_pubsub(t)]
            if bad:
                return _text(400, f"Invalid pubsub topic(s): {bad}")
        return value

    async def _relay_get(self, request: web.Request) -> web.StreamResponse:
        topic = request.match_info["topic"]
        if self.flavour == "nwaku":
            if topic not in self.relay_topics:
                return _text(404, "")
            taken = [m for t, m in self._relay_global if t == topic]
            self._relay_global = [e for e in self._relay_global if e[0] != topic]
            return _json(200, [self._message_json(m) for m in taken])
        subs = self._relay_subs.get(topic)
        if not subs:
            return _text(404, "no subscription found for pubsubTopic")
        queue = self._random.choice(subs)  # Go map iteration: any one of them
        taken = []
        while queue and len(taken) <= self.relay_cache_capacity:  # up to capacity + 1
            taken.append(queue.popleft())
            self._flow()
        self._flow()
        return _json(200, [self._message_json(m) for m in taken] if taken else None)

    async def _relay_post(self, request: web.Request) -> web.StreamResponse:
        topic = request.match_info["topic"]
        nwaku = self.flavour == "nwaku"
        if nwaku and topic not in self.relay_topics:
            return _text(400, f"Failed to publish: Node not subscribed to topic: {topic}")
        try:
            message = self._parse_message(_loads(await request.read()), fill_timestamp=nwaku)
        except _BadRequest as exc:
            return _text(400, str(exc))
        if not nwaku and self.relay_peers < 1:
            return _text(500, "")  # "not enough peers to publish", as every publish error
        if len(message.encode()) > self.max_msg_size:
            if nwaku:
                return _text(
                    400,
                    f"Failed to publish: Message size exceeded maximum of {NWAKU_MAX_MSG} bytes",
                )
            return _text(500, "")
        self.published.append((topic, message))
        self.network.publish(topic, message)
        return self._ok()

    # -- filter -------------------------------------------------------------------------------

    async def _filter_subscribe(self, request: web.Request) -> web.StreamResponse:
        parsed = self._filter_request(request, await request.read(), need_filters=True)
        if isinstance(parsed, web.Response):
            return parsed
        request_id, pubsub_topic, content_topics = parsed
        for content_topic in content_topics:
            topic = pubsub_topic or self._autoshard(content_topic)
            self.filter_criteria.add((topic, content_topic))
            if self.flavour == "nwaku":
                self._filter_topics.add(content_topic)
            else:
                self._filter_pairs.setdefault((topic, content_topic), deque())
        self._filter_refreshed = time.monotonic()
        return _json(200, {"requestId": request_id, "statusDesc": "OK"})

    async def _filter_unsubscribe(self, request: web.Request) -> web.StreamResponse:
        parsed = self._filter_request(request, await request.read(), need_filters=True)
        if isinstance(parsed, web.Response):
            return parsed
        request_id, pubsub_topic, content_topics = parsed
        for content_topic in content_topics:
            topic = pubsub_topic or self._autoshard(content_topic)
            self.filter_criteria.discard((topic, content_topic))
            self._filter_topics.discard(content_topic)
            self._filter_pairs.pop((topic, content_topic), None)
        return _json(200, {"requestId": request_id, "statusDesc": "OK"})

    async def _filter_unsubscribe_all(self, request: web.Request) -> web.StreamResponse:
        value = _loads(await request.read())
        request_id = value.get("requestId") if isinstance(value, dict) else None
        if not isinstance(request_id, str):
            return _json(400, {"requestId": "unknown", "statusDesc": "BAD_REQUEST"})
        self.filter_criteria.clear()
        self._filter_topics.clear()
        self._filter_global.clear()
        self._filter_pairs.clear()
        return _json(200, {"requestId": request_id, "statusDesc": "OK"})

    def _filter_request(
        self, request: web.Request, raw: bytes, *, need_filters: bool
    ) -> tuple[str, str | None, list[str]] | web.Response:
        def bad(reason: str) -> web.Response:
            return _json(
                400,
                {
                    "requestId": "unknown",
                    "statusDesc": f"BAD_REQUEST: Failed to decode request: {reason}",
                },
            )

        if self.flavour == "nwaku" and request.content_type != "application/json":
            return bad("wrong content type")
        value = _loads(raw)
        if not isinstance(value, dict):
            return bad("not an object")
        if self.flavour == "nwaku" and set(value) - {"requestId", "contentFilters", "pubsubTopic"}:
            return bad("unknown field")
        request_id = value.get("requestId")
        filters = value.get("contentFilters")
        pubsub_topic = value.get("pubsubTopic")
        if not isinstance(request_id, str):
            return bad("requestId must be a string")
        if need_filters and (
            not isinstance(filters, list)
            or not filters
            or not all(isinstance(f, str) for f in filters)
        ):
            return bad("contentFilters must be a non-empty list")
        if pubsub_topic is not None and not isinstance(pubsub_topic, str):
            return bad("pubsubTopic must be a string")
        return request_id, pubsub_topic or None, list(filters or [])

    async def _filter_ping(self, request: web.Request) -> web.StreamResponse:
        request_id = request.match_info["request_id"]
        self._expire_filter()
        if not self.filter_criteria:
            if self.flavour == "nwaku":
                return _json(
                    404,
                    {"requestId": request_id, "statusDesc": "NOT_FOUND: peer has no subscriptions"},
                )
            return _text(404, "peer has no subscription")
        self._filter_refreshed = time.monotonic()
        return _json(200, {"requestId": request_id, "statusDesc": "OK"})

    async def _filter_get(self, request: web.Request) -> web.StreamResponse:
        content_topic = request.match_info["content_topic"]
        if self.flavour == "nwaku":
            if content_topic not in self._filter_topics:
                return _text(400, f"Not subscribed to topic: {content_topic}")
            taken = [m for t, m in self._filter_global if t == content_topic]
            self._filter_global = [e for e in self._filter_global if e[0] != content_topic]
            return _json(200, [self._message_json(m) for m in taken])
        topic = request.match_info.get("topic") or pubsub_topic_for(content_topic, 1, 8)
        queue = self._filter_pairs.get((topic, content_topic))
        if queue is None:
            return _text(
                404, f"not subscribed to pubsubTopic:{topic} contentTopic: {content_topic}"
            )
        taken = list(queue)
        queue.clear()
        return _json(200, [self._message_json(m) for m in taken] if taken else None)

    # -- lightpush ----------------------------------------------------------------------------

    def _push_request(self, raw: bytes) -> tuple[str, WakuMessage]:
        value = _loads(raw)
        if not isinstance(value, dict) or "message" not in value:
            raise _BadRequest("Invalid push request! message is required")
        if self.flavour == "nwaku" and set(value) - {"pubsubTopic", "message"}:
            raise _BadRequest("Invalid push request! unknown field")
        message = self._parse_message(value["message"], fill_timestamp=self.flavour == "nwaku")
        topic = value.get("pubsubTopic") or self._autoshard(message.content_topic)
        if not isinstance(topic, str):
            raise _BadRequest("pubsubTopic must be a string")
        return topic, message

    async def _lightpush_v3(self, request: web.Request) -> web.StreamResponse:
        try:
            topic, message = self._push_request(await request.read())
        except _BadRequest as exc:
            return _json(400, {"statusDesc": str(exc)})
        if len(message.encode()) > NWAKU_MAX_MSG:
            return _json(
                500, {"statusDesc": f"Message size exceeded maximum of {NWAKU_MAX_MSG} bytes"}
            )
        if message.hash(topic) in self.network.seen:
            return _json(500, {"statusDesc": "Dropping already-seen message"})
        if self.lightpush_peers <= 0:
            return _json(505, {"statusDesc": "No peers for topic, skipping publish"})
        self.published.append((topic, message))
        self.network.publish(topic, message)
        return _json(200, {"relayPeerCount": self.lightpush_peers})

    async def _lightpush_v1(self, request: web.Request) -> web.StreamResponse:
        nwaku = self.flavour == "nwaku"
        try:
            topic, message = self._push_request(await request.read())
        except _BadRequest as exc:
            return _text(400 if nwaku else 503, str(exc))
        if len(message.encode()) > self.max_msg_size:
            return _text(400 if nwaku else 503, "Invalid message: size exceeded")
        if self.lightpush_peers <= 0:
            return _text(503, "Lightpush request has not been published to any peers")
        self.published.append((topic, message))
        self.network.publish(topic, message)
        return self._ok()

    # -- store --------------------------------------------------------------------------------

    async def _store_v3(self, request: web.Request) -> web.StreamResponse:
        nwaku = self.flavour == "nwaku"
        q = request.query
        refused = self._store_peer_refusal(q.get("peerAddr"))
        if refused is not None:
            return refused
        if not self.store:
            if nwaku:
                return _text(412, "No suitable service peer & no discovery method")
            return _go_store_error("no suitable peers found")
        if not self.store_v3:  # go-waku's store server speaks only the legacy protocol
            if nwaku:
                return _json(
                    500,
                    {"status_code": 500, "status_desc": "failed to dial: protocols not supported"},
                )
            if q.get("peerAddr"):
                return _go_store_error(
                    "failed to negotiate protocol: protocols not supported: "
                    "[/vac/waku/store-query/3.0.0]"
                )
            return _go_store_error("no suitable peers found")
        pubsub_topic = q.get("pubsubTopic", "")
        content_topics = [t for t in q.get("contentTopics", "").split(",") if t]
        if not nwaku and (not pubsub_topic or not content_topics):
            return _json(
                400,
                {"status_code": 400, "status_desc": "pubsubTopic and contentTopics are required"},
            )
        try:
            include_data = _parse_bool(q.get("includeData", "false"))
            page_size = min(int(q.get("pageSize", "20")), 100)
            start = _positive(q.get("startTime"))
            end = _positive(q.get("endTime"))
            if nwaku:
                forward = q.get("ascending", "true") == "true"
            else:
                forward = _parse_bool(q.get("ascending", "true"))
            cursor = self._parse_v3_cursor(q.get("cursor"))
        except ValueError as exc:
            if nwaku:
                return _text(400, f"parameter parsing error: {exc}")
            return _json(400, {"status_code": 400, "status_desc": str(exc)})
        entries = self.network.stored(pubsub_topic, content_topics, start, end)
        try:
            page, more = _paginate(entries, cursor, page_size, forward)
        except KeyError:
            if nwaku:
                return _text(400, "cursor not found")
            return _json(400, {"status_code": 400, "status_desc": "cursor not found"})
        next_cursor = None
        if more and page:
            edge = page[-1] if forward else page[0]
            next_cursor = edge.hash.hex0x() if nwaku else edge.hash.b64()
        if nwaku:
            items: list[dict[str, Any]] = []
            for entry in page:
                item: dict[str, Any] = {"messageHash": entry.hash.hex0x()}
                if include_data:
                    item["message"] = self._message_json(entry.message)
                    item["pubsubTopic"] = entry.pubsub_topic
                items.append(item)
            body: dict[str, Any] = {
                "requestId": "",
                "statusCode": 200,
                "statusDesc": "OK",
                "messages": items,
            }
            if next_cursor:
                body["paginationCursor"] = next_cursor
            return _json(200, body)
        go_items: list[dict[str, Any]] = []
        for entry in page:
            go_item: dict[str, Any] = {"message_hash": entry.hash.b64()}
            if include_data:
                go_item["message"] = _gowaku_proto_json(entry.message)
                go_item["pubsub_topic"] = entry.pubsub_topic
            go_items.append(go_item)
        go_body: dict[str, Any] = {
            "request_id": secrets.token_hex(8),
            "status_code": 200,
            "status_desc": "OK",
        }
        if go_items:
            go_body["messages"] = go_items
        if next_cursor:
            go_body["pagination_cursor"] = next_cursor
        return _json(200, go_body)

    def _store_peer_refusal(self, peer_addr: str | None) -> web.Response | None:
        """go-waku cannot dial itself: a peerAddr with its own peer id is a 500."""
        if self.flavour == "go-waku" and peer_addr and peer_addr.endswith("/p2p/" + self.peer_id):
            return _go_store_error("failed to dial: dial to self attempted")
        return None

    def _parse_v3_cursor(self, text: str | None) -> MessageHash | None:
        if not text:
            return None
        if self.flavour == "nwaku":
            body = text[2:] if text.startswith("0x") else text
            try:
                raw = bytes.fromhex(body)
            except ValueError as exc:
                raise ValueError(f"Exception converting hex string to bytes: {text}") from exc
            if len(raw) != 32:
                raise ValueError(
                    f"waku message hash parsing error: invalid hash length: {len(raw)}"
                )
            if not any(raw):
                raise ValueError("all zeroes cursor hash")
            return MessageHash(raw)
        return MessageHash(_urlsafe_b64(text))

    async def _store_v1(self, request: web.Request) -> web.StreamResponse:
        nwaku = self.flavour == "nwaku"
        q = request.query
        refused = self._store_peer_refusal(q.get("peerAddr"))
        if refused is not None:
            return refused
        if not self.store or not self.legacy_store:
            if nwaku:
                return _text(412, "No suitable service peer & no discovery method")
            return _go_store_error("no suitable peers found")
        pubsub_topic = q.get("pubsubTopic", "")
        content_topics = [t for t in q.get("contentTopics", "").split(",") if t]
        try:
            page_size = min(int(q.get("pageSize", "20")), 100)
            start = _positive(q.get("startTime"))
            end = _positive(q.get("endTime"))
            forward = _parse_bool(q.get("ascending", "true"))
            cursor: MessageHash | None = None
            if q.get("digest"):
                digest = q["digest"]
                cursor = MessageHash(_std_b64(digest) if nwaku else _urlsafe_b64(digest))
                int(q.get("senderTime", "0"))
                int(q.get("storeTime", "0"))
        except ValueError as exc:
            if nwaku:
                return _text(400, str(exc))
            return _json(400, {"messages": None, "error_message": str(exc)})
        entries = self.network.stored(pubsub_topic, content_topics, start, end)
        try:
            page, more = _paginate(entries, cursor, page_size, forward)
        except KeyError:
            return _text(400, "cursor not found")
        body: dict[str, Any] = {
            "messages": [_legacy_message_json(e.message, nwaku) for e in page]
            or ([] if nwaku else None)
        }
        if more and page:
            edge = page[-1] if forward else page[0]
            if nwaku:
                body["cursor"] = {
                    "pubsubTopic": edge.pubsub_topic,
                    "senderTime": edge.message.timestamp or 0,
                    "storeTime": edge.store_time,
                    "digest": {"data": edge.hash.b64()},
                }
            else:
                body["cursor"] = {
                    "pubsubTopic": edge.pubsub_topic,
                    "senderTime": str(edge.message.timestamp or 0),
                    "storeTime": str(edge.store_time),
                    "digest": edge.hash.b64(),
                }
        return _json(200, body)

    # -- messages -----------------------------------------------------------------------------

    def _autoshard(self, content_topic: str) -> str:
        # nwaku >= v0.37 defaults: cluster 0, one shard; go-waku: hard-wired cluster 1, 8 shards.
        if self.flavour == "nwaku":
            return pubsub_topic_for(content_topic, 0, 1)
        return pubsub_topic_for(content_topic, 1, 8)

    def _parse_message(self, value: object, *, fill_timestamp: bool) -> WakuMessage:
        if not isinstance(value, dict):
            raise _BadRequest("Invalid content body, could not decode: not an object")
        if self.flavour == "nwaku":
            unknown = set(value) - _NWAKU_MESSAGE_KEYS
            if unknown:
                raise _BadRequest(f"Invalid content body, could not decode: unknown {unknown}")
        payload_text = value.get("payload")
        if not isinstance(payload_text, str) or not payload_text:
            raise _BadRequest(
                "Field `payload` is missing or empty"
                if self.flavour == "nwaku"
                else "missing Payload field"
            )
        content_topic = value.get("contentTopic")
        if not isinstance(content_topic, str) or not content_topic.strip():
            raise _BadRequest(
                "Field `contentTopic` is missing or empty"
                if self.flavour == "nwaku"
                else "missing ContentTopic field"
            )
        decode = _std_b64 if self.flavour == "nwaku" else _any_b64
        try:
            payload = decode(payload_text)
            meta = decode(value["meta"]) if value.get("meta") else b""
            proof = decode(value["proof"]) if value.get("proof") else b""
        except ValueError as exc:
            raise _BadRequest("Incorrect base64 string") from exc
        version = value.get("version", 0)
        timestamp = value.get("timestamp")
        ephemeral = value.get("ephemeral", False)
        if not _is_int(version) or version < 0:
            raise _BadRequest("Invalid content body, could not decode: version")
        if timestamp is not None and (not _is_int(timestamp) or not -(2**63) <= timestamp < 2**63):
            raise _BadRequest("Invalid content body, could not decode: timestamp")
        if ephemeral is not None and not isinstance(ephemeral, bool):
            raise _BadRequest("Invalid content body, could not decode: ephemeral")
        if len(meta) > 64 and self.flavour == "go-waku":
            raise _BadRequest("invalid length for Meta field")
        if fill_timestamp and not timestamp:
            timestamp = time.time_ns()
        return WakuMessage(
            payload=payload,
            content_topic=content_topic,
            timestamp=timestamp,
            version=version,
            meta=meta,
            ephemeral=bool(ephemeral),
            rate_limit_proof=proof,
        )

    def _message_json(self, message: WakuMessage) -> dict[str, Any]:
        if self.flavour == "nwaku":
            out: dict[str, Any] = {
                "payload": _b64(message.payload),
                "contentTopic": message.content_topic,
                "version": message.version,
                "timestamp": message.timestamp or 0,
                "ephemeral": message.ephemeral,
                "proof": _b64(message.rate_limit_proof),
            }
            if message.meta:
                out["meta"] = _b64(message.meta)
            return out
        out = {"payload": _b64(message.payload), "contentTopic": message.content_topic}
        if message.version:
            out["version"] = message.version
        if message.timestamp is not None:
            out["timestamp"] = message.timestamp
        if message.meta:
            out["meta"] = _b64(message.meta)
        out["ephemeral"] = True if message.ephemeral else None
        return out


def make_fake_node(flavour: Flavour = "nwaku", **knobs: Any) -> FakeNode:
    """A fake node of ``flavour``; ``knobs`` are :class:`FakeNode` keyword arguments."""
    return FakeNode(flavour, **knobs)


# -- helpers ------------------------------------------------------------------------------------


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


def _json(status: int, value: object) -> web.Response:
    return web.Response(status=status, text=json.dumps(value), content_type="application/json")


def _go_store_error(text: str) -> web.Response:
    """go-waku's store REST errors (v3 and v1 alike): the legacy response with error_message."""
    return _json(500, {"messages": None, "error_message": text})


def _loads(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return _INVALID


_INVALID = object()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_static_pubsub(topic: str) -> bool:
    parts = topic.split("/")
    return (
        len(parts) == 6
        and parts[:4] == ["", "waku", "2", "rs"]
        and all(p.isdigit() and int(p) <= 0xFFFF for p in parts[4:])
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _std_b64(text: str) -> bytes:
    """nwaku decodes with stew Base64Pad: standard alphabet, padded."""
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"Incorrect base64 string: {text[:20]}") from exc


def _urlsafe_b64(text: str) -> bytes:
    """go-waku's base64.URLEncoding: URL-safe alphabet with padding; '+' or '/' is an error."""
    if "+" in text or "/" in text or len(text) % 4:
        raise ValueError(f"illegal base64 data: {text[:20]}")
    try:
        return base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"illegal base64 data: {text[:20]}") from exc


def _any_b64(text: str) -> bytes:
    """go-waku message payloads: standard or URL-safe, padded or not."""
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error as exc:
        raise ValueError("illegal base64 data") from exc


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on", "t"):
        return True
    if lowered in ("false", "0", "no", "off", "f"):
        return False
    raise ValueError(f"invalid bool {text!r}")


def _positive(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    value = int(text)
    return value if value > 0 else None


def _add_evicting_oldest(
    cache: list[tuple[str, WakuMessage]], entry: tuple[str, WakuMessage], capacity: int
) -> None:
    """nwaku's MessageCache: no duplicates; when full, evict the smallest timestamp."""
    if entry in cache:
        return
    cache.append(entry)
    while len(cache) > capacity:
        oldest = min(range(len(cache)), key=lambda i: cache[i][1].timestamp or 0)
        del cache[oldest]


def _paginate(
    entries: list[StoredMessage], cursor: MessageHash | None, page_size: int, forward: bool
) -> tuple[list[StoredMessage], bool]:
    """One page (chronological) and whether more remain; KeyError for an unknown cursor."""
    hashes = [e.hash for e in entries]
    if forward:
        begin = hashes.index(cursor) + 1 if cursor is not None else 0
        if cursor is not None and cursor not in hashes:
            raise KeyError(cursor)
        page = entries[begin : begin + page_size]
        return page, begin + page_size < len(entries)
    if cursor is not None and cursor not in hashes:
        raise KeyError(cursor)
    stop = hashes.index(cursor) if cursor is not None else len(entries)
    first = max(0, stop - page_size)
    return entries[first:stop], first > 0


def _gowaku_proto_json(message: WakuMessage) -> dict[str, Any]:
    """A pb.WakuMessage through Go's encoding/json: snake_case, omitempty."""
    out: dict[str, Any] = {"payload": _b64(message.payload), "content_topic": message.content_topic}
    if message.version:
        out["version"] = message.version
    if message.timestamp is not None:
        out["timestamp"] = message.timestamp
    if message.meta:
        out["meta"] = _b64(message.meta)
    if message.ephemeral:
        out["ephemeral"] = True
    if message.rate_limit_proof:
        out["rate_limit_proof"] = _b64(message.rate_limit_proof)
    return out


def _legacy_message_json(message: WakuMessage, nwaku: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"payload": _b64(message.payload), "contentTopic": message.content_topic}
    if nwaku:
        out["version"] = message.version
        out["timestamp"] = message.timestamp or 0
        out["ephemeral"] = message.ephemeral
    else:
        if message.version:
            out["version"] = message.version
        if message.timestamp is not None:
            out["timestamp"] = message.timestamp
    if message.meta:
        out["meta"] = _b64(message.meta)
    return out
