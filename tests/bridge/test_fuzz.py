"""Property test of the whole API from its OpenAPI document (schemathesis): whatever a client
sends, valid or not, the bridge never answers with a server error, and every error it answers
is the documented JSON shape."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings

from umbra_waku.bridge.api import make_app
from umbra_waku.bridge.openapi import openapi_document
from umbra_waku.bridge.service import Bridge
from umbra_waku.bridge.settings import BridgeSettings

from .conftest import FAST_CLIENT
from .process import free_port

schema = schemathesis.openapi.from_dict(openapi_document())


class LiveBridge:
    """A bridge with its API on a loopback port, run by an event loop in its own thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop = asyncio.Event()
        self.tokens: dict[str, str] = {}
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.run(),))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def run(self) -> None:
        self.stop = asyncio.Event()
        settings_ = BridgeSettings(
            node=f"memory://fuzz-{uuid.uuid4().hex}",
            data_dir=self.data_dir,
            admin_token="fuzzing-admin-token",
            publish_wait=1.0,
        )
        bridge = Bridge(settings_, client_options=FAST_CLIENT)
        await bridge.start()
        runner = web.AppRunner(make_app(bridge), shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        _, token = await bridge.create_bot("fuzz")
        await bridge.create_bot("peer")
        self.tokens = {"adminToken": "fuzzing-admin-token", "botToken": token}
        await bridge.client.wait_live(5)
        self.ready.set()
        await self.stop.wait()
        await runner.cleanup()
        await bridge.stop()

    def __enter__(self) -> LiveBridge:
        self.thread.start()
        assert self.ready.wait(20), "the bridge did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(20)
        self.loop.close()


@pytest.fixture(scope="module")
def live_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveBridge]:
    with LiveBridge(tmp_path_factory.mktemp("fuzz")) as bridge:
        yield bridge


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_makes_a_server_error(case: Any, live_bridge: LiveBridge) -> None:
    security = case.operation.definition.raw.get("security") or []
    headers = {}
    if security:
        (scheme,) = security[0]
        headers["Authorization"] = f"Bearer {live_bridge.tokens[scheme]}"
    if case.operation.path == "/v1/events/poll":
        query = case.query if case.query is not None else {}
        value = query.get("timeout")
        values = value if isinstance(value, list) else [value]
        try:
            # an absent or empty timeout means the default, 25 s; waiting only makes the test
            # slow (and outlasts its 10 s read timeout); invalid values stay
            if all(v in (None, "") or float(v) >= 0 for v in values):
                query["timeout"] = 0
        except (TypeError, ValueError):
            pass
        case.query = query
    response = case.call(base_url=live_bridge.url, headers=headers, timeout=10)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"code", "message", "field"}, body
