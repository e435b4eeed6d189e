"""Filter v2 REST endpoints, for light mode: the node is a filter *client* of a service peer.

- Subscribe with a UUID ``requestId`` and an explicit ``pubsubTopic`` (static sharding needs it;
  go-waku's own autosharding is hard-wired to cluster 1 / 8 shards).
- Poll ``/filter/v2/messages/{contentTopic}`` on nwaku, ``/filter/v2/messages/{pubsub}/{content}``
  on go-waku (its one-segment route derives the pubsub topic by its hard-wired autosharding).
- Service peers drop a subscription after 5 minutes without a ping: ping regularly and
  re-subscribe when the ping answers 404 / ``NOT_FOUND``.
- A service node that restarts forgets our subscription, but the node we talk to keeps its local
  filter cache: polls go on answering 200 (empty). Only a ping tells, so a successful ping (or
  subscribe) is the only proof that nothing was missed up to the moment it was sent.
- A ping asks whether the service peer has *any* subscription of this node, so one lost
  subscription is reported to every receiver sharing the :class:`FilterApi` (:attr:`losses`):
  another topic's fresh subscription must not make a ping look good for a lost one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection

from umbra_waku.errors import NodeHTTPError, NodeProtocolError, TransportError
from umbra_waku.waku.message import WakuMessage
from umbra_waku_rest.client import NodeClient, Reply, encode_json, segment
from umbra_waku_rest.codec import message_list_from_json

log = logging.getLogger("umbra_waku.rest")

SUBSCRIPTIONS = "/filter/v2/subscriptions"


class FilterApi:
    def __init__(self, client: NodeClient) -> None:
        self._client = client
        #: How many times a ping found the service peer without our subscriptions.
        self.losses = 0

    async def subscribe(self, pubsub_topic: str, content_topics: Collection[str]) -> str:
        """Subscribe and return the request id (usable for pings)."""
        request_id = str(uuid.uuid4())
        body = {
            "requestId": request_id,
            "contentFilters": sorted(content_topics),
            "pubsubTopic": pubsub_topic,
        }
        reply = await self._client.call(
            "POST",
            SUBSCRIPTIONS,
            body=encode_json(body),
            time_limit=self._client.options.long_timeout,
        )
        _check_status(reply)
        return request_id

    async def unsubscribe(
        self, pubsub_topic: str, content_topics: Collection[str], *, time_limit: float
    ) -> None:
        body = {
            "requestId": str(uuid.uuid4()),
            "contentFilters": sorted(content_topics),
            "pubsubTopic": pubsub_topic,
        }
        reply = await self._client.send(
            "DELETE", SUBSCRIPTIONS, body=encode_json(body), time_limit=time_limit
        )
        _check_status(reply)

    async def ping(self, request_id: str) -> bool:
        """Whether the service peer still has our subscriptions (False on 404 / NOT_FOUND)."""
        path = f"{SUBSCRIPTIONS}/{segment(request_id)}"
        try:
            reply = await self._client.call(
                "GET", path, time_limit=self._client.options.long_timeout
            )
        except NodeHTTPError as exc:
            if exc.status == 404 or "NOT_FOUND" in exc.body:
                self.losses += 1
                return False
            raise
        if "NOT_FOUND" in reply.text:
            self.losses += 1
            return False
        return True

    async def poll(
        self, pubsub_topic: str, content_topic: str, *, go_waku: bool
    ) -> list[WakuMessage]:
        """Drain the node's filter cache for one content topic (destructive read)."""
        if go_waku:
            path = f"/filter/v2/messages/{segment(pubsub_topic)}/{segment(content_topic)}"
        else:
            path = f"/filter/v2/messages/{segment(content_topic)}"
        reply = await self._client.send(
            "GET", path, time_limit=self._client.options.request_timeout
        )
        return message_list_from_json(reply.json(), f"GET {path}")


def lost_subscription(error: TransportError) -> bool:
    """nwaku answers 400 "Not subscribed to topic", go-waku 404, to a poll it has no
    subscription for."""
    if not isinstance(error, NodeHTTPError):
        return False
    return error.status == 404 or (error.status == 400 and "subscribed" in error.body.lower())


def _check_status(reply: Reply) -> None:
    """200 carries ``{"requestId", "statusDesc"}``: "OK" (or "" before nwaku PR #2529) is
    success; go-waku reports a partial failure as 200 with the error text."""
    value = reply.json()
    if not isinstance(value, dict):
        raise NodeProtocolError(f"{reply.method} {reply.path}: expected a JSON object")
    desc = value.get("statusDesc", "")
    if not isinstance(desc, str):
        raise NodeProtocolError(f"{reply.method} {reply.path}: statusDesc must be a string")
    if desc not in ("OK", ""):
        raise TransportError(
            f"{reply.method} {reply.path}: filter service answered {desc[:200]!r}", retriable=True
        )


class PingClock:
    """When the next keep-alive ping is due (monotonic time, testable)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.interval

    def reset(self) -> None:
        self._last = time.monotonic()
