"""Fixtures: a real bridge (its HTTP API on loopback) on a fresh embedded network."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from bridge.process import free_port

from umbra_waku.bridge.api import make_app
from umbra_waku.bridge.service import Bridge
from umbra_waku.bridge.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@dataclass
class RunningBridge:
    bridge: Bridge
    url: str
    node: str
    admin_token: str

    async def create_bot(self, name: str) -> tuple[str, str]:
        """A new bot on this bridge: (token, client_address)."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.post(f"{self.url}/v1/bots", json={"name": name}) as response,
        ):
            assert response.status == 201, await response.text()
            body = await response.json()
        return body["token"], body["client_address"]


@pytest.fixture
async def running_bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    node = f"memory://examples-{secrets.token_hex(4)}"
    admin_token = secrets.token_urlsafe(24)
    port = free_port()
    settings = load_settings(
        {
            "node": node,
            "data_dir": tmp_path / "bridge",
            "listen": f"127.0.0.1:{port}",
            "admin_token": admin_token,
        }
    )
    bridge = Bridge(settings)
    await bridge.start()
    runner = web.AppRunner(make_app(bridge), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield RunningBridge(bridge, f"http://127.0.0.1:{port}", node, admin_token)
    finally:
        bridge.begin_drain()
        await runner.cleanup()
        await bridge.stop()
