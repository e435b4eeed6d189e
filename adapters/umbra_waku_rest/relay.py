"""Relay REST endpoints: ``/relay/v1/subscriptions`` and ``/relay/v1/messages/{pubsubTopic}``.

The two node kinds differ where it matters most:

- **nwaku**: POST /relay/v1/subscriptions is idempotent (a topic already in the REST cache is
  skipped), the node must be subscribed before it accepts a publish (400 "Node not subscribed"),
  and the REST cache is one bounded cache that evicts the oldest messages when full.
- **go-waku**: every POST adds *another* subscription with its own queue (a Go channel of
  ``--rest-relay-cache-capacity``); every message goes into every queue, and a GET drains one of
  them, picked at random. Two POSTs therefore mean every message twice, and the queue nobody reads
  fills up -- and a full queue blocks the node's whole relay pipeline (its store and filter
  service then miss messages too). A publish needs no REST subscription (the node joins the topic
  itself). So on go-waku the adapter POSTs only after a GET answered 404 ("no subscription found
  for pubsubTopic"), never on a timeout, a connection error or an ambiguous 500, and it does not
  subscribe in order to publish.

A GET is a destructive read, so what a GET made to *check* the subscription returns is kept and
handed out by the next :meth:`RelayApi.poll`.

The adapter never sends DELETE /relay/v1/subscriptions (see :meth:`RelayApi.subscribe`).
"""

from __future__ import annotations

import logging

from umbra_waku.errors import (
    NodeHTTPError,
    NodeProtocolError,
    PublishRejected,
    TransportError,
)
from umbra_waku.waku.message import WakuMessage
from umbra_waku_rest.client import NodeClient, encode_json, segment
from umbra_waku_rest.codec import message_list_from_json

log = logging.getLogger("umbra_waku.rest")

SUBSCRIPTIONS = "/relay/v1/subscriptions"
#: A poll reads again at once while the node keeps answering full pages, at most this many times.
MAX_DRAIN_READS = 100


def messages_path(pubsub_topic: str) -> str:
    return f"/relay/v1/messages/{segment(pubsub_topic)}"


class RelayApi:
    """The node's relay, addressed by pubsub topic (static shard or autosharding-derived)."""

    def __init__(self, client: NodeClient) -> None:
        self._client = client
        #: Topics the node is known to hold our REST subscription for.
        self._subscribed: set[str] = set()
        #: Messages a subscription check read (destructively) before the poll loop did.
        self._unread: dict[str, list[WakuMessage]] = {}
        self._unread_full: set[str] = set()

    async def capacity(self) -> int:
        """The node's relay cache capacity (configured, else the node kind's default)."""
        return self._client.options.relay_capacity(await self._client.implementation())

    async def subscribe(self, pubsub_topic: str) -> None:
        """Make sure the node holds a REST subscription for the topic (remembered once known).

        There is deliberately no unsubscribe: the adapter never sends
        DELETE /relay/v1/subscriptions. On go-waku it removes every subscription of the topic,
        the node's own one for its configured --pubsub-topic included, so the node leaves the
        shard for everyone (its store, its filter and lightpush clients, other REST clients).
        """
        if pubsub_topic in self._subscribed:
            return
        if await self._client.implementation() == "go-waku":
            await self._subscribe_go_waku(pubsub_topic)
        else:
            # nwaku skips a topic already subscribed: resending after a timeout is harmless.
            await self._post(pubsub_topic, retry=True)
        self._subscribed.add(pubsub_topic)

    async def _subscribe_go_waku(self, pubsub_topic: str) -> None:
        """POST only when a GET says there is no subscription: each POST adds one more.

        A POST that failed without an answer (timeout, connection reset) may have been applied,
        so it is never simply resent: every attempt asks first."""

        async def attempt() -> None:
            if not await self.check(pubsub_topic):
                await self._post(pubsub_topic, retry=False)

        await self._client.retrying(attempt)

    async def _post(self, pubsub_topic: str, *, retry: bool) -> None:
        body = encode_json([pubsub_topic])
        time_limit = self._client.options.request_timeout
        if retry:
            reply = await self._client.call("POST", SUBSCRIPTIONS, body=body, time_limit=time_limit)
        else:
            reply = await self._client.send("POST", SUBSCRIPTIONS, body=body, time_limit=time_limit)
        if not reply.is_ok():
            raise NodeProtocolError(f"POST {SUBSCRIPTIONS}: unexpected answer {reply.text[:80]!r}")

    async def check(self, pubsub_topic: str) -> bool:
        """Whether the node holds a REST subscription for the topic: one GET (200 or 404).
        What the GET read is kept for the next :meth:`poll`."""
        try:
            messages = await self._get(pubsub_topic)
        except NodeHTTPError as exc:
            if lost_subscription(exc):
                return False
            raise
        self._keep_unread(pubsub_topic, messages, len(messages) >= await self.capacity())
        return True

    def forget(self, pubsub_topic: str) -> None:
        """The node lost this subscription (a GET answered 404): subscribe again next time."""
        self._subscribed.discard(pubsub_topic)

    def discard_unread(self, pubsub_topic: str) -> None:
        """Nobody polls the topic any more: drop what a check read for it."""
        self._unread.pop(pubsub_topic, None)
        self._unread_full.discard(pubsub_topic)

    async def publish(self, pubsub_topic: str, body: bytes) -> None:
        """POST one message (``body`` is the serialised RelayWakuMessage, resent verbatim)."""
        go_waku = await self._client.implementation() == "go-waku"
        if not go_waku:
            await self.subscribe(pubsub_topic)  # nwaku refuses a publish on a topic it lacks
        path = messages_path(pubsub_topic)
        time_limit = self._client.options.request_timeout

        async def attempt() -> None:
            resubscribed = False
            while True:
                try:
                    reply = await self._client.send("POST", path, body=body, time_limit=time_limit)
                except NodeHTTPError as exc:
                    if not go_waku and not resubscribed and _not_subscribed(exc):
                        # nwaku forgot the topic (restart); its POST is idempotent.
                        resubscribed = True
                        log.info("relay publish on %s refused; re-subscribing once", pubsub_topic)
                        self.forget(pubsub_topic)
                        await self.subscribe(pubsub_topic)
                        continue
                    mapped = _publish_error(exc)
                    if mapped is exc:
                        raise
                    raise mapped from exc
                if not reply.is_ok():
                    raise NodeProtocolError(f"POST {path}: unexpected answer {reply.text[:80]!r}")
                return

        await self._client.retrying(attempt)

    async def poll(self, pubsub_topic: str) -> tuple[list[WakuMessage], bool]:
        """Drain the node's cache for this topic (destructive reads; ``null`` means none).

        Reads again at once while a read returns a full cache's worth (go-waku returns up to
        capacity + 1 per GET; a full queue stalls the node), so one poll empties what is there.
        Returns the messages and whether the cache was full at some point (some may be lost)."""
        capacity = await self.capacity()
        read: list[WakuMessage] = []
        full = False
        for _ in range(MAX_DRAIN_READS):
            try:
                batch = await self._get(pubsub_topic)
            except TransportError:
                # What earlier reads took is gone from the node: hand it out next time.
                self._keep_unread(pubsub_topic, read, full)
                raise
            read.extend(batch)
            if len(batch) < capacity:
                break
            full = True
        messages = self._unread.pop(pubsub_topic, [])
        messages.extend(read)
        full = full or pubsub_topic in self._unread_full
        self._unread_full.discard(pubsub_topic)
        return messages, full

    async def _get(self, pubsub_topic: str) -> list[WakuMessage]:
        path = messages_path(pubsub_topic)
        reply = await self._client.send(
            "GET", path, time_limit=self._client.options.request_timeout
        )
        return message_list_from_json(reply.json(), f"GET {path}")

    def _keep_unread(self, pubsub_topic: str, messages: list[WakuMessage], full: bool) -> None:
        if messages:
            self._unread.setdefault(pubsub_topic, []).extend(messages)
        if full:
            self._unread_full.add(pubsub_topic)


def lost_subscription(error: TransportError) -> bool:
    """Both nwaku and go-waku answer 404 to a GET on a topic they are not subscribed to."""
    return isinstance(error, NodeHTTPError) and error.status == 404


def _not_subscribed(error: NodeHTTPError) -> bool:
    # nwaku: 400 "Failed to publish: Node not subscribed to topic: ...".
    return error.status == 400 and "not subscribed" in error.body.lower()


def _publish_error(error: NodeHTTPError) -> TransportError:
    """A refused publish: 4xx can never succeed as sent; 5xx (timeout, no peers) may later.
    go-waku answers every publish failure, "not enough peers to publish" included, with an
    empty 500."""
    if error.status == 429:
        return error
    return PublishRejected(
        f"the node refused the message: HTTP {error.status} {error.body[:200]!r}",
        retriable=error.retriable,
    )
