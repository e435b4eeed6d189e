"""Fixtures for the bridge tests: bridges on a fresh memory:// network per test, fast timings."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from umbra_waku.bridge.api import make_app
from umbra_waku.bridge.service import Bridge
from umbra_waku.bridge.settings import ENV_PREFIX, BridgeSettings
from umbra_waku.client import ClientOptions
from umbra_waku.transport import Transport

from .process import BotHandle

#: Timings small enough for a fast suite; production defaults are in ClientOptions.
FAST_CLIENT = ClientOptions(
    checkpoint_interval=0.05,
    health_interval=0.1,
    resubscribe_max_backoff=0.2,
    publish_backoff=0.01,
    publish_max_backoff=0.05,
    republish_interval=0.2,
    close_timeout=2.0,
    backfill_margin=2.0,
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's UMBRA_WAKU_* variables must not change what a test sees."""
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture
def network_name() -> str:
    """A memory:// network of this test's own."""
    return f"bridge-test-{uuid.uuid4().hex}"


@dataclass
class Harness:
    bridge: Bridge
    http: TestClient[Any, Any]
    admin_token: str
    closed: bool = field(default=False)

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    async def create_bot(self, name: str | None = None) -> BotHandle:
        body = {} if name is None else {"name": name}
        response = await self.http.post("/v1/bots", json=body, headers=self.admin)
        assert response.status == 201, await response.text()
        data = await response.json()
        return BotHandle(data["bot_id"], data["token"], data["client_address"])

    async def start_conversation(self, bot: BotHandle, peer: BotHandle, text: str) -> str:
        response = await self.http.post(
            "/v1/conversations", json={"peer": peer.client_address, "text": text}, headers=bot.auth
        )
        assert response.status in (201, 202), await response.text()
        conversation_id: str = (await response.json())["conversation"]["id"]
        return conversation_id

    async def send(self, bot: BotHandle, conversation_id: str, text: str) -> dict[str, Any]:
        response = await self.http.post(
            f"/v1/conversations/{conversation_id}/messages", json={"text": text}, headers=bot.auth
        )
        assert response.status in (201, 202), await response.text()
        result: dict[str, Any] = await response.json()
        return result

    async def poll(self, bot: BotHandle, after: int = 0, wait: float = 0) -> list[dict[str, Any]]:
        response = await self.http.get(
            "/v1/events/poll", params={"after": after, "timeout": wait}, headers=bot.auth
        )
        assert response.status == 200, await response.text()
        events: list[dict[str, Any]] = (await response.json())["events"]
        return events

    async def wait_events(
        self, bot: BotHandle, count: int, after: int = 0, within: float = 5.0
    ) -> list[dict[str, Any]]:
        """Exactly the first ``count`` events after ``after`` (fails if they do not come)."""
        deadline = time.monotonic() + within
        events: list[dict[str, Any]] = []
        while len(events) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"expected {count} events, got {len(events)}: {events}")
            cursor = events[-1]["seq"] if events else after
            events += await self.poll(bot, cursor, wait=min(left, 1.0))
        return events

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.http.close()
            await self.bridge.stop()


StartBridge = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start_bridge(
    tmp_path: Path, network_name: str, aiohttp_client: Any
) -> AsyncIterator[StartBridge]:
    """``await start_bridge(data_dir=..., network=..., **settings)``: a started bridge with its
    API client; stopped at teardown."""
    started: list[Harness] = []

    async def start(
        data_dir: Path | None = None,
        network: str | None = None,
        client_options: ClientOptions = FAST_CLIENT,
        transport: Transport | None = None,
        ready: bool = True,
        **settings: Any,
    ) -> Harness:
        values: dict[str, Any] = {
            "node": f"memory://{network or network_name}",
            "data_dir": data_dir or tmp_path / "data",
            "publish_wait": 2.0,
            **settings,
        }
        bridge = Bridge(
            BridgeSettings(**values), client_options=client_options, transport=transport
        )
        await bridge.start()
        http = await aiohttp_client(make_app(bridge))
        token_file = Path(values["data_dir"]) / "admin.token"
        admin = (
            settings["admin_token"] if "admin_token" in settings else token_file.read_text().strip()
        )
        harness = Harness(bridge, http, admin)
        started.append(harness)
        if ready:
            await wait_ready(harness)
        return harness

    yield start
    for harness in reversed(started):
        await harness.close()


async def wait_ready(harness: Harness, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while True:
        response = await harness.http.get("/v1/health")
        if response.status == 200:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"bridge not ready: {await response.text()}")
        await asyncio.sleep(0.02)


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        await asyncio.sleep(0.01)
