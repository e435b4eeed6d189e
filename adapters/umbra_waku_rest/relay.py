"""Relay REST endpoints: ``/relay/v1/subscriptions`` and ``/relay/v1/messages/{pubsubTopic}``.

The node must be subscribed to a pubsub topic before it accepts a publish on it (nwaku 400
"Node not subscribed", go-waku 500 with an empty body) and before GET returns anything (404),
and a restarted node has forgotten those subscriptions: :meth:`RelayApi.publish` re-subscribes
once when an answer may mean "not subscribed", then resends the same bytes.
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


def messages_path(pubsub_topic: str) -> str:
    return f"/relay/v1/messages/{segment(pubsub_topic)}"


class RelayApi:
    """The node's relay, addressed by pubsub topic (static shard or autosharding-derived)."""

    def __init__(self, client: NodeClient) -> None:
        self._client = client
        self._subscribed: set[str] = set()

    async def subscribe(self, pubsub_topic: str, *, force: bool = False) -> None:
        """Subscribe the node (idempotent on the node; remembered here unless ``force``)."""
        if pubsub_topic in self._subscribed and not force:
            return
        reply = await self._client.call(
            "POST",
            SUBSCRIPTIONS,
            body=encode_json([pubsub_topic]),
            time_limit=self._client.options.request_timeout,
        )
        if not reply.is_ok():
            raise NodeProtocolError(f"POST {SUBSCRIPTIONS}: unexpected answer {reply.text[:80]!r}")
        self._subscribed.add(pubsub_topic)

    def forget(self, pubsub_topic: str) -> None:
        """The node may have lost this subscription (restart): subscribe again next time."""
        self._subscribed.discard(pubsub_topic)

    async def publish(self, pubsub_topic: str, body: bytes) -> None:
        """POST one message (``body`` is the serialised RelayWakuMessage, resent verbatim)."""
        await self.subscribe(pubsub_topic)
        path = messages_path(pubsub_topic)
        time_limit = self._client.options.request_timeout

        async def attempt() -> None:
            resubscribed = False
            while True:
                try:
                    reply = await self._client.send("POST", path, body=body, time_limit=time_limit)
                except NodeHTTPError as exc:
                    if not resubscribed and _may_mean_not_subscribed(exc):
                        resubscribed = True
                        log.info("relay publish on %s refused; re-subscribing once", pubsub_topic)
                        await self.subscribe(pubsub_topic, force=True)
                        continue
                    mapped = _publish_error(exc)
                    if mapped is exc:
                        raise
                    raise mapped from exc
                if not reply.is_ok():
                    raise NodeProtocolError(f"POST {path}: unexpected answer {reply.text[:80]!r}")
                return

        await self._client.retrying(attempt)

    async def poll(self, pubsub_topic: str) -> list[WakuMessage]:
        """Drain the node's cache for this topic (destructive read; ``null`` means none)."""
        path = messages_path(pubsub_topic)
        reply = await self._client.send(
            "GET", path, time_limit=self._client.options.request_timeout
        )
        return message_list_from_json(reply.json(), f"GET {path}")


def lost_subscription(error: TransportError) -> bool:
    """Both nwaku and go-waku answer 404 to a GET on a topic they are not subscribed to."""
    return isinstance(error, NodeHTTPError) and error.status == 404


def _may_mean_not_subscribed(error: NodeHTTPError) -> bool:
    body = error.body.strip().lower()
    # nwaku: 400 "Failed to publish: Node not subscribed to topic: ..."; go-waku: 500, empty body
    # (or "cannot publish to unsubscribed topic"), which can also mean "not enough peers".
    return error.status in (400, 500) and ("subscribed" in body or body == "")


def _publish_error(error: NodeHTTPError) -> TransportError:
    """A refused publish: 4xx can never succeed as sent; 5xx (timeout, no peers) may later."""
    if error.status == 429:
        return error
    return PublishRejected(
        f"the node refused the message: HTTP {error.status} {error.body[:200]!r}",
        retriable=error.retriable,
    )
