"""Store REST: ``/store/v3/messages`` and legacy ``/store/v1/messages``, whichever the node serves.

go-waku's store *server* speaks only the legacy protocol, and its v3 REST endpoint is a client of
v3 servers (nwaku): asked for v3, a go-waku node answers a fast 500 ``no suitable peers found``
(or ``protocols not supported: [/vac/waku/store-query/3.0.0]``). With ``store_api="auto"`` the
adapter therefore starts with v1 on go-waku and with v3 on nwaku, takes such an answer (or a
404/405/501: no route) as "this API is not served here" at once -- no retries -- and tries the
other one; whichever works is remembered. Both APIs' cursors are turned into one opaque string
(:mod:`umbra_waku_rest.codec`), so callers never see the difference.

Always sent: ``pubsubTopic`` and ``contentTopics`` (go-waku requires both), ``includeData=true``,
``pageSize`` <= 100 and ``ascending``; times as Unix nanoseconds. ``peerAddr`` only when
``store_peer`` is set and is not the node itself: a node asked to dial itself fails (go-waku: 500
``failed to dial: dial to self attempted``), while without ``peerAddr`` a store node answers from
its own archive.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from umbra_waku.errors import NodeHTTPError, TransportError
from umbra_waku_rest.client import NodeClient, peer_id_of
from umbra_waku_rest.codec import (
    Cursor,
    LegacyCursor,
    StorePage,
    StoreV3Cursor,
    parse_store_v1,
    parse_store_v3,
)

log = logging.getLogger("umbra_waku.rest")

MAX_PAGE_SIZE = 100
V3 = "/store/v3/messages"
V1 = "/store/v1/messages"

Api = Literal["v3", "v1"]

#: 5xx answer bodies that say "no peer serves this store protocol" (go-waku): final at once.
_UNSUPPORTED_MARKERS = ("no suitable peers found", "protocols not supported")
#: A 5xx answer body that says "peerAddr is the node itself" (go-waku).
_DIAL_SELF = "dial to self attempted"


def unsupported(error: NodeHTTPError) -> bool:
    """The node does not serve this store API (no route, or no peer speaking the protocol)."""
    if error.status in (404, 405, 501):
        return True
    body = error.body.lower()
    return error.status >= 500 and any(marker in body for marker in _UNSUPPORTED_MARKERS)


def dialled_itself(error: NodeHTTPError) -> bool:
    return _DIAL_SELF in error.body.lower()


def final_store_error(error: NodeHTTPError) -> bool:
    """Store answers that no retry can change, although their status is a 5xx."""
    return unsupported(error) or dialled_itself(error)


class StoreApi:
    def __init__(self, client: NodeClient) -> None:
        self._client = client
        #: The API to use: fixed by the ``store_api`` option, or learnt from the first success.
        self._api: Api | None = (
            None if client.options.store_api == "auto" else client.options.store_api
        )
        self._fixed = self._api is not None
        #: ``store_peer`` unless it turned out to be the node itself (then None).
        self._peer_addr = client.options.store_peer
        self._peer_checked = self._peer_addr is None
        #: Set once a query succeeded: the node reaches a store.
        self.reachable = False

    async def query(
        self,
        pubsub_topic: str,
        content_topics: Sequence[str],
        *,
        start_time: int | None = None,
        end_time: int | None = None,
        cursor: Cursor | None = None,
        page_size: int = MAX_PAGE_SIZE,
        ascending: bool = True,
    ) -> StorePage:
        page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        common: list[tuple[str, str]] = [
            ("pubsubTopic", pubsub_topic),
            ("contentTopics", ",".join(content_topics)),
            ("pageSize", str(page_size)),
            ("ascending", "true" if ascending else "false"),
        ]
        if start_time is not None:
            common.append(("startTime", str(start_time)))
        if end_time is not None:
            common.append(("endTime", str(end_time)))

        if isinstance(cursor, LegacyCursor):
            page = await self._ask("v1", pubsub_topic, common, cursor)
        elif isinstance(cursor, StoreV3Cursor):
            page = await self._ask("v3", pubsub_topic, common, cursor)
        else:
            page = await self._first_page(pubsub_topic, common)
        self.reachable = True
        return page

    async def _first_page(self, pubsub_topic: str, common: list[tuple[str, str]]) -> StorePage:
        order = await self._order()
        first_error: NodeHTTPError | None = None
        for api in order:
            try:
                page = await self._ask(api, pubsub_topic, common, None)
            except NodeHTTPError as exc:
                if self._fixed or not unsupported(exc):
                    raise
                log.info("store %s is not served here (HTTP %d)", api, exc.status)
                first_error = first_error or exc
                continue
            if not self._fixed and self._api != api:
                log.info("using the store %s REST API", api)
                self._api = api
            return page
        assert first_error is not None
        raise first_error

    async def _order(self) -> list[Api]:
        if self._fixed:
            assert self._api is not None
            return [self._api]
        implementation = await self._client.implementation()
        preferred: list[Api] = ["v1", "v3"] if implementation == "go-waku" else ["v3", "v1"]
        if self._api is not None:  # what worked last time, then the other
            preferred.sort(key=lambda api: api != self._api)
        return preferred

    async def _ask(
        self, api: Api, pubsub_topic: str, common: list[tuple[str, str]], cursor: Cursor | None
    ) -> StorePage:
        peer = await self._store_peer()
        params = [*common, ("peerAddr", peer)] if peer else list(common)
        try:
            return await self._send(api, pubsub_topic, params, cursor)
        except NodeHTTPError as exc:
            if not (peer and dialled_itself(exc)):
                raise
            log.info("store_peer %s is the node itself: querying without peerAddr", peer)
            self._peer_addr = None
            return await self._send(api, pubsub_topic, list(common), cursor)

    async def _send(
        self, api: Api, pubsub_topic: str, params: list[tuple[str, str]], cursor: Cursor | None
    ) -> StorePage:
        time_limit = self._client.options.long_timeout
        if api == "v3":
            params = [("includeData", "true"), *params]
            if isinstance(cursor, StoreV3Cursor):
                params.append(("cursor", cursor.for_node(await self._client.implementation())))
            reply = await self._client.call(
                "GET", V3, params=params, time_limit=time_limit, final=final_store_error
            )
            return parse_store_v3(reply.json(), pubsub_topic, f"GET {V3}")
        if isinstance(cursor, LegacyCursor):
            params += cursor.params(await self._client.implementation())
        reply = await self._client.call(
            "GET", V1, params=params, time_limit=time_limit, final=final_store_error
        )
        return parse_store_v1(reply.json(), pubsub_topic, f"GET {V1}")

    async def _store_peer(self) -> str | None:
        """``store_peer``, or None once it is known to be the node's own address."""
        if not self._peer_checked and self._peer_addr is not None:
            try:
                own = await self._client.own_peer_ids()
            except TransportError as exc:
                log.debug("could not learn the node's own peer id: %s", exc)
                return self._peer_addr  # ask again next time
            self._peer_checked = True
            if peer_id_of(self._peer_addr) in own:
                log.info(
                    "store_peer %s is the node itself: its store is queried without peerAddr",
                    self._peer_addr,
                )
                self._peer_addr = None
        return self._peer_addr
