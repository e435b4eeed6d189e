"""Store REST: ``/store/v3/messages`` with a fallback to legacy ``/store/v1/messages``.

go-waku's store *server* speaks only the legacy protocol, so a go-waku node asked for v3 fails
(its v3 code is a client and needs a v3 server such as nwaku). With ``store_api="auto"`` the
adapter then tries v1 and, when that works, keeps using it. Both APIs' cursors are turned into one
opaque string (:mod:`umbra_waku_rest.codec`), so callers never see the difference.

Always sent: ``pubsubTopic`` and ``contentTopics`` (go-waku requires both), ``includeData=true``,
``pageSize`` <= 100 and ``ascending``; times as Unix nanoseconds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from umbra_waku.errors import NodeHTTPError
from umbra_waku_rest.client import NodeClient
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


class StoreApi:
    def __init__(self, client: NodeClient) -> None:
        self._client = client
        self._api: Literal["v3", "v1"] | None = (
            None if client.options.store_api == "auto" else client.options.store_api
        )
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
        if self._client.options.store_peer:
            common.append(("peerAddr", self._client.options.store_peer))

        if isinstance(cursor, LegacyCursor) or self._api == "v1":
            legacy = cursor if isinstance(cursor, LegacyCursor) else None
            page = await self._query_v1(pubsub_topic, common, legacy)
        else:
            try:
                page = await self._query_v3(pubsub_topic, common, cursor)
            except NodeHTTPError as exc:
                if self._api is not None or not await self._may_be_legacy_only(exc):
                    raise
                log.info("store v3 failed (HTTP %d); trying legacy store v1", exc.status)
                try:
                    page = await self._query_v1(pubsub_topic, common, None)
                except NodeHTTPError as legacy_exc:
                    log.info("legacy store v1 failed too (HTTP %d)", legacy_exc.status)
                    raise exc from legacy_exc
                self._api = "v1"
        self.reachable = True
        return page

    async def _query_v3(
        self, pubsub_topic: str, common: list[tuple[str, str]], cursor: Cursor | None
    ) -> StorePage:
        params = [("includeData", "true"), *common]
        if isinstance(cursor, StoreV3Cursor):
            params.append(("cursor", cursor.for_node(await self._client.implementation())))
        reply = await self._client.call(
            "GET", V3, params=params, time_limit=self._client.options.long_timeout
        )
        return parse_store_v3(reply.json(), pubsub_topic, f"GET {V3}")

    async def _query_v1(
        self, pubsub_topic: str, common: list[tuple[str, str]], cursor: LegacyCursor | None
    ) -> StorePage:
        params = list(common)
        if cursor is not None:
            params += cursor.params(await self._client.implementation())
        reply = await self._client.call(
            "GET", V1, params=params, time_limit=self._client.options.long_timeout
        )
        return parse_store_v1(reply.json(), pubsub_topic, f"GET {V1}")

    async def _may_be_legacy_only(self, error: NodeHTTPError) -> bool:
        if error.status in (404, 405, 501):
            return True  # no v3 route on this node
        # go-waku's v3 client fails against its (legacy-only) store server with 5xx.
        return error.status >= 500 and await self._client.implementation() == "go-waku"
