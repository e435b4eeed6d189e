"""A bridge restarted on the same data directory keeps identities, conversations and ratchets,
and catches up from the node's store on what it missed while it was down."""

from __future__ import annotations

from pathlib import Path

from umbra_waku.client import MessageReceived, UmbraClient
from umbra_waku.identity import Identity
from umbra_waku.transport import connect

from .conftest import FAST_CLIENT, StartBridge


async def test_restart_keeps_identities_conversations_and_ratchets(
    start_bridge: StartBridge, tmp_path: Path
) -> None:
    data = tmp_path / "state"
    first = await start_bridge(data_dir=data)
    alice, bob = await first.create_bot("alice"), await first.create_bot("bob")
    conversation = await first.start_conversation(alice, bob, "before")
    await first.send(bob, conversation, "reply before")
    before_bob = await first.wait_events(bob, 2)
    before_alice = await first.wait_events(alice, 1)
    await first.close()

    second = await start_bridge(data_dir=data)
    # same bots, same tokens, same addresses
    me = await (await second.http.get("/v1/me", headers=alice.auth)).json()
    assert me["client_address"] == alice.client_address
    assert me["last_seq"] == 1
    listed = await (await second.http.get("/v1/conversations", headers=bob.auth)).json()
    assert [c["id"] for c in listed["conversations"]] == [conversation]
    # the event history and its cursor survive
    assert await second.poll(bob) == before_bob
    assert await second.poll(alice) == before_alice

    # the ratchets continue both ways
    await second.send(alice, conversation, "after")
    await second.send(bob, conversation, "reply after")
    [after] = await second.wait_events(bob, 1, after=2)
    [reply] = await second.wait_events(alice, 1, after=1)
    assert (after["text"], after["seq"]) == ("after", 3)
    assert (reply["text"], reply["seq"]) == ("reply after", 2)


async def test_messages_sent_while_down_are_backfilled_from_the_store(
    start_bridge: StartBridge, tmp_path: Path, network_name: str
) -> None:
    data = tmp_path / "state"
    first = await start_bridge(data_dir=data)
    bot = await first.create_bot()

    # an outside client (its own identity, on the same network) talks to the bot
    outsider = UmbraClient(
        Identity.generate(), connect(f"memory://{network_name}"), options=FAST_CLIENT
    )
    async with outsider:
        sent = await outsider.invite(bot.client_address, "are you there?")
        await first.wait_events(bot, 2)
        await first.close()

        # the bridge is down: an invitation and messages arrive at the node only
        await outsider.send(sent.conversation_id, "one")
        second_invite = await outsider.invite(bot.client_address, "another conversation")
        await outsider.send(sent.conversation_id, "two")
        for item in (second_invite,):
            await item.wait(2)

        second = await start_bridge(data_dir=data)
        caught_up = await second.wait_events(bot, 4, after=2)
        assert [(e["type"], e.get("text")) for e in caught_up] == [
            ("message", "one"),
            ("conversation_started", None),
            ("message", "another conversation"),
            ("message", "two"),
        ]
        # nothing twice, even though the store also returns what the first run had seen
        assert await second.poll(bot, after=6) == []

        # and the bot answers on the restored conversation
        short = sent.conversation_id.rsplit("/", 1)[-1]
        events = outsider.events()
        await second.send(bot, short, "back online")
        reply = await anext(events)
        assert isinstance(reply, MessageReceived)
        assert reply.content.as_text() == "back online"
