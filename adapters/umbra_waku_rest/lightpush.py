"""Lightpush REST: ``/lightpush/v3/message`` (nwaku) with a remembered fallback to the legacy
``/lightpush/v1/message`` (go-waku has only v1; a route missing answers 404 or 405).

v3 answers carry the lightpush status code as the HTTP status (nwaku ``toHttpCode``):

====  ==============================================================  ==========================
HTTP  meaning                                                         maps to
====  ==============================================================  ==========================
200   ``{"relayPeerCount": N}``                                       success
400   bad request / invalid message                                   PublishRejected
413   payload too large                                               PublishRejected
421   unsupported pubsub topic                                        PublishRejected
429   rate limited                                                    NodeHTTPError (retriable)
500   with ``statusDesc``: 420 INVALID_MESSAGE (e.g. duplicate)      PublishRejected
500   without a JSON ``statusDesc``                                   NodeHTTPError (retriable)
503   no service peer / push timed out                                PublishRejected, retriable
504   out of RLN proofs on the service node                           PublishRejected, retriable
505   NO_PEERS_TO_RELAY                                               PublishRejected, retriable
====  ==============================================================  ==========================

A duplicate ("already-seen") answer to a *retry* means an earlier attempt got through (the
request timed out after the node accepted it), so it counts as success.
"""

from __future__ import annotations

import json
import logging
from typing import Literal

from umbra_waku.errors import NodeHTTPError, NodeProtocolError, PublishRejected, TransportError
from umbra_waku_rest.client import NodeClient, Reply, encode_json

log = logging.getLogger("umbra_waku.rest")

Version = Literal["v3", "v1"]
_RETRIABLE_REJECTIONS = frozenset({503, 504, 505})


class LightpushApi:
    def __init__(self, client: NodeClient) -> None:
        self._client = client
        self._version: Version | None = None

    async def push(self, pubsub_topic: str, message: dict[str, object]) -> int | None:
        """Push one message; returns the relay peer count when the node reports it (v3)."""
        body = encode_json({"pubsubTopic": pubsub_topic, "message": message})
        attempts = 0

        async def attempt() -> int | None:
            nonlocal attempts
            attempts += 1
            while True:
                version = await self._pick_version()
                path = f"/lightpush/{version}/message"
                try:
                    reply = await self._client.send(
                        "POST", path, body=body, time_limit=self._client.options.long_timeout
                    )
                except NodeHTTPError as exc:
                    if version == "v3" and exc.status in (404, 405):
                        log.info("the node has no lightpush v3 (HTTP %d); using v1", exc.status)
                        self._version = "v1"
                        continue
                    if attempts > 1 and "already-seen" in exc.body:
                        return None
                    mapped = _push_error(version, exc)
                    if mapped is exc:
                        raise
                    raise mapped from exc
                return _success(version, reply)

        return await self._client.retrying(attempt)

    async def _pick_version(self) -> Version:
        if self._version is None:
            implementation = await self._client.implementation()
            self._version = "v1" if implementation == "go-waku" else "v3"
        return self._version


def _status_desc(body: str) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    desc = value.get("statusDesc") if isinstance(value, dict) else None
    return desc if isinstance(desc, str) else None


def _push_error(version: Version, error: NodeHTTPError) -> TransportError:
    status = error.status
    desc = _status_desc(error.body) if version == "v3" else None
    reason = desc if desc is not None else error.body[:200]
    if status in _RETRIABLE_REJECTIONS:
        return PublishRejected(f"lightpush {version}: HTTP {status} {reason!r}", retriable=True)
    if status == 500 and desc is not None:
        # nwaku maps 420 INVALID_MESSAGE (invalid, duplicate) to 500 with a statusDesc.
        return PublishRejected(f"lightpush {version}: HTTP {status} {reason!r}")
    if 400 <= status < 500 and status != 429:
        return PublishRejected(f"lightpush {version}: HTTP {status} {reason!r}")
    return error  # 429 and internal errors keep NodeHTTPError's own retriable verdict


def _success(version: Version, reply: Reply) -> int | None:
    if version == "v1":
        if not reply.is_ok():
            raise NodeProtocolError(f"{reply.path}: unexpected answer {reply.text[:80]!r}")
        return None
    value = reply.json()
    count = value.get("relayPeerCount") if isinstance(value, dict) else None
    if not isinstance(count, int) or isinstance(count, bool):
        raise NodeProtocolError(f"{reply.path}: expected {{'relayPeerCount': N}}")
    return count
