"""Two bots on one bridge hold a conversation both ways, through the API and the WebSocket."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from umbra_waku.bridge.models import Event

from .conftest import StartBridge


async def test_invite_then_messages_both_ways(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, bob = await h.create_bot("alice"), await h.create_bot("bob")

    conversation = await h.start_conversation(alice, bob, "hello bob")

    # bob learns of the conversation (and its first message) from his stream
    started, first = await h.wait_events(bob, 2)
    assert started["type"] == "conversation_started"
    assert started["conversation_id"] == conversation
    assert started["peer"] == alice.client_address
    assert (first["type"], first["text"], first["peer"]) == (
        "message",
        "hello bob",
        alice.client_address,
    )
    assert [started["seq"], first["seq"]] == [1, 2]

    # it is in his conversation list, as not initiated by him
    listed = await (await h.http.get("/v1/conversations", headers=bob.auth)).json()
    [item] = listed["conversations"]
    assert item["id"] == conversation
    assert item["peer"] == alice.client_address
    assert item["initiated_by_me"] is False
    assert item["closed"] is False

    # bob answers over the API; alice reads it from the WebSocket stream
    async with h.http.ws_connect("/v1/events?after=0", headers=alice.auth) as ws:
        sent = await h.send(bob, conversation, "hi alice")
        assert sent["delivery"] == "published"
        assert sent["message_hash"].startswith("0x")
        event = await ws.receive_json(timeout=5)
        assert event["type"] == "message"
        assert event["text"] == "hi alice"
        assert event["seq"] == 1
        assert event["message_hash"] == sent["message_hash"]

        # binary content with a domain and a tag
        data = bytes(range(256))
        response = await h.http.post(
            f"/v1/conversations/{conversation}/messages",
            json={"domain": "example.bin", "tag": 7, "data_b64": base64.b64encode(data).decode()},
            headers=bob.auth,
        )
        assert response.status == 201, await response.text()
        event = await ws.receive_json(timeout=5)
        assert (event["domain"], event["tag"]) == ("example.bin", 7)
        assert base64.b64decode(event["data_b64"]) == data
        assert "text" not in event

    # and alice keeps talking
    await h.send(alice, conversation, "how are you?")
    [reply] = await h.wait_events(bob, 1, after=2)
    assert reply["text"] == "how are you?"
    assert reply["seq"] == 3


async def test_conversations_page_by_page(start_bridge: StartBridge) -> None:
    """With ``limit``, the list comes a page at a time: each page's ``next`` is the ``after`` of
    the following one, and the pages together are the whole list, oldest first, once each."""
    h = await start_bridge()
    hub = await h.create_bot("hub")
    for n in range(7):  # several start within one millisecond: the id breaks the tie
        await h.start_conversation(hub, await h.create_bot(f"peer{n}"), f"hello {n}")

    async def page(**query: Any) -> tuple[list[dict[str, Any]], str | None]:
        response = await h.http.get("/v1/conversations", params=query, headers=hub.auth)
        assert response.status == 200, await response.text()
        body = await response.json()
        return body["conversations"], body["next"]

    everything, end = await page()
    assert len(everything) == 7
    assert end is None
    assert everything == sorted(everything, key=lambda c: (c["created_at_ms"], c["id"]))

    pages, cursor = [], None
    while True:
        items, cursor = await page(limit=3, **({} if cursor is None else {"after": cursor}))
        pages.append(items)
        if cursor is None:
            break
        assert cursor == f"{items[-1]['created_at_ms']}.{items[-1]['id']}"
    assert [len(items) for items in pages] == [3, 3, 1]
    assert [c for items in pages for c in items] == everything

    assert await page(limit=7) == (everything, None)  # exactly one full page: no next
    assert await page(limit=6) == (
        everything[:6],
        f"{everything[5]['created_at_ms']}.{everything[5]['id']}",
    )
    first, _ = await page(limit=2)
    rest, end = await page(after=f"{first[-1]['created_at_ms']}.{first[-1]['id']}")  # limit 100
    assert (rest, end) == (everything[2:], None)
    assert await page(limit=5, after=f"9999999999999.{'f' * 64}") == ([], None)

    for query in (
        {"limit": 0},
        {"limit": 1001},
        {"limit": "x"},
        {"after": "12"},
        {"after": f"1.{'A' * 64}"},
        {"after": f"{'9' * 20}.{'0' * 64}"},
    ):
        response = await h.http.get("/v1/conversations", params=query, headers=hub.auth)
        assert response.status == 422, query
        error = (await response.json())["error"]
        assert error["field"] == next(iter(query))


async def test_many_messages_arrive_in_order_once(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, bob = await h.create_bot(), await h.create_bot()
    conversation = await h.start_conversation(alice, bob, "0")
    for i in range(1, 30):
        await h.send(alice, conversation, str(i))
    events = await h.wait_events(bob, 31)
    for event in events:  # what the API sends is what the OpenAPI document describes
        Event.model_validate(event)
    texts = [e["text"] for e in events if e["type"] == "message"]
    assert texts == [str(i) for i in range(30)]
    assert [e["seq"] for e in events] == list(range(1, 32))
    assert await h.poll(bob, after=31) == []


async def test_me_describes_the_bot(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    bot = await h.create_bot("me")
    me: dict[str, Any] = await (await h.http.get("/v1/me", headers=bot.auth)).json()
    assert me["client_address"] == bot.client_address
    assert me["name"] == "me"
    assert me["topics"] == [f"/umbra/1/inbox-{me['inbox_address']}/proto", "/umbra/1/private/proto"]
    assert me["last_seq"] == 0


async def test_admin_lists_and_deletes_bots(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    a, b = await h.create_bot("a"), await h.create_bot("b")
    listed = await (await h.http.get("/v1/bots", headers=h.admin)).json()
    assert [bot["bot_id"] for bot in listed["bots"]] == [a.bot_id, b.bot_id]
    assert all("token" not in bot for bot in listed["bots"])

    async with h.http.ws_connect("/v1/events", headers=a.auth) as ws:
        response = await h.http.delete(f"/v1/bots/{a.bot_id}", headers=h.admin)
        assert response.status == 204
        message = await ws.receive(timeout=5)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION

    assert (await h.http.get("/v1/me", headers=a.auth)).status == 401
    assert (await h.http.delete(f"/v1/bots/{a.bot_id}", headers=h.admin)).status == 404
    listed = await (await h.http.get("/v1/bots", headers=h.admin)).json()
    assert [bot["bot_id"] for bot in listed["bots"]] == [b.bot_id]


async def test_a_bot_closes_a_conversation(start_bridge: StartBridge, tmp_path: Path) -> None:
    """POST .../close: the peer's bot gets conversation_closed with the reason; the conversation
    stays, closed, on both sides (sends refused with 409), and so it is after a restart; what
    the peer sent before it learnt is still delivered."""
    data = tmp_path / "data"
    h = await start_bridge(data_dir=data)
    alice, bob = await h.create_bot("alice"), await h.create_bot("bob")
    conversation = await h.start_conversation(alice, bob, "hi")
    await h.wait_events(bob, 2)
    # bob's message crosses alice's close: sent before he learnt of it
    await h.send(bob, conversation, "one more thing")
    [late] = await h.wait_events(alice, 1)
    assert late["text"] == "one more thing"

    response = await h.http.post(
        f"/v1/conversations/{conversation}/close", json={"reason": "bye"}, headers=alice.auth
    )
    assert response.status == 201, await response.text()
    closing = await response.json()
    assert closing["conversation_id"] == conversation
    assert closing["delivery"] == "published"
    [closed] = await h.wait_events(bob, 1, after=2)
    assert closed["type"] == "conversation_closed"
    assert closed["reason"] == "bye"
    assert closed["conversation_id"] == conversation

    async def refused(bot: Any) -> None:
        response = await h.http.post(
            f"/v1/conversations/{conversation}/messages", json={"text": "?"}, headers=bot.auth
        )
        assert response.status == 409
        assert (await response.json())["error"]["code"] == "conversation_closed"
        again = await h.http.post(f"/v1/conversations/{conversation}/close", headers=bot.auth)
        assert again.status == 409
        got = await h.http.get(f"/v1/conversations/{conversation}", headers=bot.auth)
        assert (await got.json())["closed"] is True

    await refused(alice)
    await refused(bob)
    await h.close()
    h = await start_bridge(data_dir=data)
    await refused(alice)
    await refused(bob)


async def test_a_bot_forgets_a_conversation(start_bridge: StartBridge, tmp_path: Path) -> None:
    """DELETE /v1/conversations/{id}: the state goes (not listed, 404, also after a restart) and
    nothing more of the conversation reaches the bot; the peer is not told."""
    data = tmp_path / "data"
    h = await start_bridge(data_dir=data)
    alice, bob = await h.create_bot("alice"), await h.create_bot("bob")
    kept = await h.start_conversation(alice, bob, "kept")
    forgotten = await h.start_conversation(alice, bob, "forgotten")
    await h.wait_events(bob, 4)
    path = f"/v1/conversations/{forgotten}"
    response = await h.http.delete(path, headers=bob.auth)
    assert response.status == 204
    assert (await h.http.get(path, headers=bob.auth)).status == 404
    assert (await h.http.delete(path, headers=bob.auth)).status == 404
    listed = await (await h.http.get("/v1/conversations", headers=bob.auth)).json()
    assert [c["id"] for c in listed["conversations"]] == [kept]
    # alice was not told: she still sends in it, and it reaches nobody
    await h.send(alice, forgotten, "anyone there?")
    await h.send(alice, kept, "still here")
    [event] = await h.wait_events(bob, 1, after=4)
    assert (event["conversation_id"], event["text"]) == (kept, "still here")
    assert await h.poll(bob, event["seq"], wait=0.3) == []
    await h.close()
    h = await start_bridge(data_dir=data)
    assert (await h.http.get(path, headers=bob.auth)).status == 404
    listed = await (await h.http.get("/v1/conversations", headers=bob.auth)).json()
    assert [c["id"] for c in listed["conversations"]] == [kept]


async def test_closing_refuses_what_it_cannot_send(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, bob = await h.create_bot(), await h.create_bot()
    conversation = await h.start_conversation(alice, bob, "hi")
    path = f"/v1/conversations/{conversation}/close"
    for body, status in (({"reason": "x" * 1025}, 422), ({"why": "?"}, 422), ("[", 400)):
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, str) else {"json": body}
        response = await h.http.post(path, headers=alice.auth, **kwargs)
        assert response.status == status, await response.text()
    other = await h.http.post(f"/v1/conversations/{'0' * 64}/close", headers=alice.auth)
    assert other.status == 404
    assert (await h.http.post(path, headers=bob.auth)).status == 201  # no body: no reason
    [closed] = await h.wait_events(alice, 1)
    assert (closed["type"], closed["reason"]) == ("conversation_closed", "")


async def test_over_a_rest_node(start_bridge: StartBridge, aiohttp_server: Any) -> None:
    """The same conversation through a (fake) nwaku REST node, with adapter options passed on."""
    fakenodes = pytest.importorskip("fakenodes")
    node = fakenodes.make_fake_node("nwaku")
    server = await aiohttp_server(node.app)
    url = str(server.make_url("")).rstrip("/")
    h = await start_bridge(node=url, mode="relay", cluster_id=0, num_shards=1)
    alice, bob = await h.create_bot(), await h.create_bot()
    conversation = await h.start_conversation(alice, bob, "over rest")
    assert [e["type"] for e in await h.wait_events(bob, 2)] == ["conversation_started", "message"]
    await h.send(bob, conversation, "back")
    [reply] = await h.wait_events(alice, 1)
    assert reply["text"] == "back"
    assert node.requests_to("/relay/v1/auto/messages", "POST") or node.requests_to(
        "/relay/v1/messages", "POST"
    )
