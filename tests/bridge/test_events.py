"""The event stream: resumable by cursor, in order, once; long-poll; slow readers."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from umbra_waku.bridge import api
from umbra_waku.bridge.store import EventRecord

from .conftest import StartBridge, eventually


async def test_reconnecting_with_the_cursor_gets_exactly_what_was_missed(
    start_bridge: StartBridge,
) -> None:
    h = await start_bridge()
    alice, bob = await h.create_bot(), await h.create_bot()
    conversation = await h.start_conversation(alice, bob, "m0")

    async with h.http.ws_connect("/v1/events?after=0", headers=bob.auth) as ws:
        first = [await ws.receive_json(timeout=5) for _ in range(2)]
        assert [e["type"] for e in first] == ["conversation_started", "message"]
        for i in (1, 2):
            await h.send(alice, conversation, f"m{i}")
        seen = first + [await ws.receive_json(timeout=5) for _ in range(2)]
    cursor = seen[-1]["seq"]
    assert [e["seq"] for e in seen] == [1, 2, 3, 4]

    # disconnected: more arrives
    for i in range(3, 8):
        await h.send(alice, conversation, f"m{i}")
    await eventually(lambda: h.bridge.client.status()["publishing"] == 0)

    async with h.http.ws_connect(f"/v1/events?after={cursor}", headers=bob.auth) as ws:
        missed = [await ws.receive_json(timeout=5) for _ in range(5)]
        assert [e["text"] for e in missed] == [f"m{i}" for i in range(3, 8)]
        assert [e["seq"] for e in missed] == list(range(cursor + 1, cursor + 6))
        with pytest.raises(TimeoutError):  # nothing twice, nothing extra
            await ws.receive_json(timeout=0.3)
        await h.send(alice, conversation, "live")
        live = await ws.receive_json(timeout=5)
        assert (live["text"], live["seq"]) == ("live", cursor + 6)

    # the same from the long-poll endpoint, in pages
    page = await (
        await h.http.get("/v1/events/poll", params={"after": 2, "limit": 3}, headers=bob.auth)
    ).json()
    assert [e["seq"] for e in page["events"]] == [3, 4, 5]
    assert page["next"] == 5
    page = await (
        await h.http.get("/v1/events/poll", params={"after": 5, "timeout": 0}, headers=bob.auth)
    ).json()
    assert [e["seq"] for e in page["events"]] == [6, 7, 8, 9, 10]
    assert page["next"] == 10


async def test_long_poll_waits_for_the_next_event(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, bob = await h.create_bot(), await h.create_bot()
    conversation = await h.start_conversation(alice, bob, "hi")
    await h.wait_events(bob, 2)

    poll = asyncio.ensure_future(
        h.http.get("/v1/events/poll", params={"after": 2, "timeout": 10}, headers=bob.auth)
    )
    await asyncio.sleep(0.2)
    assert not poll.done()
    await h.send(alice, conversation, "wake up")
    response = await asyncio.wait_for(poll, 5)
    page = await response.json()
    assert [e["text"] for e in page["events"]] == ["wake up"]
    assert page["next"] == 3

    empty = await (
        await h.http.get("/v1/events/poll", params={"after": 3, "timeout": 0.2}, headers=bob.auth)
    ).json()
    assert empty == {"events": [], "next": 3}


async def test_a_slow_websocket_reader_is_fed_with_backpressure(
    start_bridge: StartBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that does not read: the bridge reads events a page at a time and waits on the
    socket, so it stops fetching pages once the socket is full; later the reader gets every
    event, in order."""
    monkeypatch.setattr(api, "PAGE_SIZE", 4)
    h = await start_bridge()
    alice, bob = await h.create_bot(), await h.create_bot()
    conversation = await h.start_conversation(alice, bob, "start")
    big = "x" * 140_000
    count = 160  # about 22 MB of events: more than the kernel buffers of a loopback socket
    for _ in range(count):
        await h.send(alice, conversation, big)
    await h.wait_events(bob, count + 2, within=30)

    pages: list[int] = []
    fetch = h.bridge.events

    async def counting(bot_id: str, after: int, limit: int) -> list[EventRecord]:
        pages.append(after)
        return await fetch(bot_id, after, limit)

    monkeypatch.setattr(h.bridge, "events", counting)
    async with h.http.ws_connect("/v1/events?after=0", headers=bob.auth, max_msg_size=0) as ws:
        await asyncio.sleep(1.0)  # the server fills the socket, then waits on it
        stalled_at = len(pages)
        assert stalled_at * 4 < count, "the bridge read every event while nobody was reading"
        got: list[dict[str, Any]] = []
        while len(got) < count + 2:
            got.append(await ws.receive_json(timeout=5))
    assert [e["seq"] for e in got] == list(range(1, count + 3))
    assert len(pages) > stalled_at


async def test_shutdown_closes_streams_with_going_away(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    bot = await h.create_bot()
    ws = await h.http.ws_connect("/v1/events", headers=bot.auth)
    closing = asyncio.ensure_future(h.http.server.close())  # what SIGTERM does to the HTTP side
    message = await ws.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
    await ws.close()
    await closing
    assert h.bridge.draining
