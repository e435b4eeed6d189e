"""Fixtures for the REST adapter tests: fake nodes served on loopback, fast transport options."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from fakenodes import FakeNetwork, FakeNode, make_fake_node
from umbra_waku_rest import RestTransport, connect

from umbra_waku.transport import ReceivedMessage, Subscription
from umbra_waku.waku.message import WakuMessage

#: Small numbers so that the whole suite stays fast; individual tests override what they probe.
FAST: dict[str, Any] = {
    "poll_interval": 0.02,
    "request_timeout": 2.0,
    "long_timeout": 2.0,
    "start_timeout": 3.0,
    "retry_attempts": 3,
    "retry_backoff": 0.01,
    "retry_max_backoff": 0.05,
    "filter_ping_interval": 0.1,
}

CT = "/umbra/1/chat/proto"
CT2 = "/umbra/1/other/proto"


@dataclass
class Served:
    node: FakeNode
    server: TestServer

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


ServeNode = Callable[..., Awaitable[Served]]
OpenTransport = Callable[..., Awaitable[RestTransport]]


@pytest.fixture
async def serve_node(aiohttp_server: Any) -> ServeNode:
    """``await serve_node("nwaku", network=..., **knobs)``: a fake node on a loopback port."""

    async def serve(flavour: str = "nwaku", **knobs: Any) -> Served:
        node = make_fake_node(flavour, **knobs)  # type: ignore[arg-type]
        server = await aiohttp_server(node.app)
        return Served(node, server)

    return serve


@pytest.fixture
async def open_transport() -> AsyncIterator[OpenTransport]:
    """``await open_transport(url, start=True, **options)``: a transport closed at teardown."""
    opened: list[RestTransport] = []

    async def open_(url: str, *, start: bool = True, **options: Any) -> RestTransport:
        transport = connect(url, **{**FAST, **options})
        opened.append(transport)
        if start:
            await transport.start()
        return transport

    yield open_
    for transport in opened:
        await transport.close()


@pytest.fixture
def network() -> FakeNetwork:
    return FakeNetwork()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def message(payload: bytes = b"hello", content_topic: str = CT, **kw: Any) -> WakuMessage:
    return WakuMessage.create(payload, content_topic, **kw)


async def collect(sub: Subscription, count: int, within: float = 3.0) -> list[ReceivedMessage]:
    """Exactly ``count`` messages from ``sub`` (fails the test if they do not come in time)."""
    got: list[ReceivedMessage] = []

    async def read() -> None:
        async for received in sub:
            got.append(received)
            if len(got) == count:
                return

    try:
        await asyncio.wait_for(read(), within)
    except TimeoutError:
        pytest.fail(f"expected {count} messages within {within} s, got {len(got)}")
    return got


async def no_more(sub: Subscription, wait: float = 0.2) -> list[ReceivedMessage]:
    """Whatever else arrives within ``wait`` seconds (tests expect an empty list)."""
    extra: list[ReceivedMessage] = []

    async def read() -> None:
        async for received in sub:
            extra.append(received)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), wait)
    return extra


async def eventually(check: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        await asyncio.sleep(0.01)
