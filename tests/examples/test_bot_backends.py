"""The same bot code on both backends: embedded (memory://) and through a real bridge."""

from __future__ import annotations

import argparse
import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest

from umbra_waku.bot import (
    Bot,
    BridgeError,
    Conversation,
    ConversationClosed,
    EnvelopeClassified,
    Message,
    network_options,
    provision,
)
from umbra_waku.errors import ConfigError, ConversationError
from umbra_waku.frames import Content, State
from umbra_waku.identity import Identity

from .conftest import RunningBridge


def echo(bot: Bot) -> Bot:
    @bot.on_message
    async def answer(message: Message) -> None:
        await message.reply(message.content if message.text is None else "echo: " + message.text)

    return bot


class Recorder:
    """Collects what a bot's handlers see."""

    def __init__(self, bot: Bot) -> None:
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.conversations: list[Conversation] = []
        bot.on_message(self._message)
        bot.on_conversation(self._conversation)

    async def _message(self, message: Message) -> None:
        await self.messages.put(message)

    async def _conversation(self, conversation: Conversation) -> None:
        self.conversations.append(conversation)

    async def next(self) -> Message:
        return await asyncio.wait_for(self.messages.get(), 10)


async def converse(echo_bot: Bot, visitor: Bot) -> None:
    """The visitor invites the echo bot with a first message, then sends text and binary."""
    seen = Recorder(visitor)
    async with echo_bot, visitor:
        conversation_id = await visitor.invite(echo_bot.client_address, "hello")
        first = await seen.next()
        assert first.text == "echo: hello"
        assert first.sender == echo_bot.client_address
        assert first.conversation_id == conversation_id
        await visitor.send(conversation_id, "second")
        assert (await seen.next()).text == "echo: second"
        binary = Content(b"\x00\x01\xff", "app.example", 7)
        await visitor.send(conversation_id, binary)
        answer = await seen.next()
        assert answer.text is None
        assert (answer.content.data, answer.content.domain, answer.content.tag) == (
            binary.data,
            binary.domain,
            binary.tag,
        )
    assert [(c.conversation_id, c.initiated_by_me) for c in seen.conversations] == [
        (conversation_id, True)
    ]


async def test_embedded_bots_on_the_memory_network(tmp_path: Path) -> None:
    node = f"memory://bots-{secrets.token_hex(4)}"
    key_file = tmp_path / "echo.key"
    echo_bot = echo(Bot.embedded(key_file, node, name="echo"))
    assert key_file.exists()  # created with the identity
    assert Identity.load(key_file).client_address == echo_bot.client_address
    await converse(echo_bot, Bot.embedded(Identity.generate(), node, name="visitor"))


async def test_bots_through_a_bridge(running_bridge: RunningBridge) -> None:
    echo_token, echo_address = await running_bridge.create_bot("echo")
    visitor_token, _ = await running_bridge.create_bot("visitor")
    echo_bot = echo(Bot.via_bridge(running_bridge.url, echo_token, name="echo"))
    visitor = Bot.via_bridge(running_bridge.url, visitor_token, name="visitor")
    await converse(echo_bot, visitor)
    assert echo_bot.client_address == echo_address


async def test_a_bridge_bot_talks_with_an_embedded_bot(running_bridge: RunningBridge) -> None:
    token, _ = await running_bridge.create_bot("echo")
    echo_bot = echo(Bot.via_bridge(running_bridge.url, token))
    visitor = Bot.embedded(Identity.generate(), running_bridge.node, name="visitor")
    await converse(echo_bot, visitor)


async def leave(closer: Bot, peer: Bot) -> None:
    """The closer leaves after a last message: the peer reads the message, then the close with
    its reason, in that order; the closer can no longer send there."""
    seen: asyncio.Queue[str] = asyncio.Queue()

    @peer.on_message
    async def message(message: Message) -> None:
        await seen.put(f"message {message.text}")

    @peer.on_closed
    async def closed(event: ConversationClosed) -> None:
        await seen.put(f"closed {event.reason}")

    async with closer, peer:
        conversation_id = await closer.invite(peer.client_address, "hello")
        await closer.send(conversation_id, "last")
        await closer.close_conversation(conversation_id, "done")
        got = [await asyncio.wait_for(seen.get(), 10) for _ in range(3)]
        assert got == ["message hello", "message last", "closed done"]
        with pytest.raises((ConversationError, BridgeError)) as refused:
            await closer.send(conversation_id, "after")
        if isinstance(refused.value, BridgeError):
            assert (refused.value.status, refused.value.code) == (409, "conversation_closed")
        await closer.forget_conversation(conversation_id)
        with pytest.raises((ConversationError, BridgeError)) as unknown:
            await closer.forget_conversation(conversation_id)
        if isinstance(unknown.value, BridgeError):
            assert (unknown.value.status, unknown.value.code) == (404, "not_found")


async def test_an_embedded_bot_leaves_a_conversation() -> None:
    node = f"memory://bots-{secrets.token_hex(4)}"
    await leave(Bot.embedded(Identity.generate(), node), Bot.embedded(Identity.generate(), node))


async def test_a_bridge_bot_leaves_a_conversation(running_bridge: RunningBridge) -> None:
    closer, _ = await running_bridge.create_bot("closer")
    peer = Bot.embedded(Identity.generate(), running_bridge.node, name="peer")
    await leave(Bot.via_bridge(running_bridge.url, closer), peer)


async def test_the_event_stream_resumes_after_a_restart(
    running_bridge: RunningBridge, tmp_path: Path
) -> None:
    """With a cursor file, what arrived while the bot was down is delivered when it is back."""
    token, address = await running_bridge.create_bot("patient")
    cursor = tmp_path / "patient.cursor"
    visitor = Bot.embedded(Identity.generate(), running_bridge.node, name="visitor")
    async with visitor:
        first = Bot.via_bridge(running_bridge.url, token, cursor_file=cursor)
        seen = Recorder(first)
        async with first:
            conversation_id = await visitor.invite(address, "one")
            assert (await seen.next()).text == "one"
        saved = int(cursor.read_text())
        await visitor.send(conversation_id, "two")  # the bot is down
        await visitor.send(conversation_id, "three")
        await asyncio.sleep(0.2)
        again = Bot.via_bridge(running_bridge.url, token, cursor_file=cursor)
        seen_again = Recorder(again)
        async with again:
            assert (await seen_again.next()).text == "two"
            assert (await seen_again.next()).text == "three"
        assert int(cursor.read_text()) == saved + 2


async def test_concurrent_sends_through_a_bridge_go_in_batches(
    running_bridge: RunningBridge,
) -> None:
    """Sends made while a request is in flight are coalesced into POST /v1/messages batches;
    each sender hears its own outcome, and the receiver gets one conversation in order."""
    client = running_bridge.bridge.client
    batches: list[int] = []
    real_send_many = client.send_many

    async def counting(items: Any, **kwargs: Any) -> Any:
        batches.append(len(items))
        return await real_send_many(items, **kwargs)

    client.send_many = counting  # type: ignore[method-assign]
    token_a, _ = await running_bridge.create_bot("a")
    token_b, address_b = await running_bridge.create_bot("b")
    sender = Bot.via_bridge(running_bridge.url, token_a, name="a")
    receiver = Bot.via_bridge(running_bridge.url, token_b, name="b")
    seen = Recorder(receiver)
    async with sender, receiver:
        conversation_id = await sender.invite(address_b)
        await sender.send(conversation_id, "alone")  # nothing in flight: the one-message route
        assert batches == []
        assert (await seen.next()).text == "alone"
        await asyncio.gather(*(sender.send(conversation_id, f"m{i}") for i in range(60)))
        texts = [(await seen.next()).text for _ in range(60)]
        assert texts == [f"m{i}" for i in range(60)]  # the order the sends were made in
        assert sum(batches) <= 60
        assert max(batches) > 1
        # a send to a conversation that does not exist fails alone
        results = await asyncio.gather(
            sender.send(conversation_id, "ok 1"),
            sender.send(conversation_id, "ok 2"),
            sender.send("f" * 64, "nowhere"),
            sender.send(conversation_id, "ok 3"),
            return_exceptions=True,
        )
        assert [r is None for r in results] == [True, True, False, True]
        error = results[2]
        assert isinstance(error, BridgeError)
        assert error.status == 404
        assert [(await seen.next()).text for _ in range(3)] == ["ok 1", "ok 2", "ok 3"]


async def test_a_wrong_token_fails_at_start(running_bridge: RunningBridge) -> None:
    bot = Bot.via_bridge(running_bridge.url, "0123456789abcdef.not-a-token")
    with pytest.raises(BridgeError) as caught:
        await bot.start()
    assert caught.value.status == 401
    assert not caught.value.retriable


def test_bridge_urls_and_tokens_are_checked() -> None:
    with pytest.raises(ConfigError):
        Bot.via_bridge("ftp://bridge", "token")
    with pytest.raises(ConfigError):
        Bot.via_bridge("http://127.0.0.1:1", " ")


async def test_embedded_bots_report_classifications() -> None:
    node = f"memory://classify-{secrets.token_hex(4)}"
    alice = Bot.embedded(Identity.generate(), node, name="alice")
    bob = Bot.embedded(Identity.generate(), node, name="bob")
    outsider = Bot.embedded(Identity.generate(), node, name="outsider")
    seen: dict[str, list[str]] = {"bob": [], "outsider": []}
    got = Recorder(bob)

    @bob.on_envelope
    async def bob_saw(event: EnvelopeClassified) -> None:
        seen["bob"].append(event.describe())

    @outsider.on_envelope
    async def outsider_saw(event: EnvelopeClassified) -> None:
        seen["outsider"].append(event.describe())

    async with alice, bob, outsider:
        conversation_id = await alice.invite(bob.client_address)
        await alice.send(conversation_id, "psst")
        assert (await got.next()).text == "psst"
        await asyncio.sleep(0.1)
    assert seen["bob"] == ["readable (inbox/v1)", "readable (private/v1)"]
    # the outsider watches only the shared private topic: one envelope, not for it
    assert seen["outsider"] == [State.NOT_FOR_ME.value]


async def test_provision_creates_a_bot_once_and_its_token_file_works(
    running_bridge: RunningBridge, tmp_path: Path
) -> None:
    token_file = tmp_path / "echo.token"
    assert await provision(running_bridge.url, running_bridge.admin_token, "echo", token_file)
    assert token_file.stat().st_mode & 0o777 == 0o600
    first = token_file.read_text()
    assert not await provision(running_bridge.url, running_bridge.admin_token, "echo", token_file)
    assert token_file.read_text() == first  # kept, not replaced
    assert [bot.name for bot in running_bridge.bridge.bots()] == ["echo"]

    parser = argparse.ArgumentParser()
    Bot.add_arguments(parser)
    args = parser.parse_args(["--bridge", running_bridge.url, "--token-file", str(token_file)])
    async with Bot.from_arguments(args) as bot:
        assert bot.client_address == running_bridge.bridge.bots()[0].client_address


async def test_provision_with_a_wrong_admin_token(
    running_bridge: RunningBridge, tmp_path: Path
) -> None:
    with pytest.raises(BridgeError) as caught:
        await provision(running_bridge.url, "x" * 20, "echo", tmp_path / "t")
    assert caught.value.status == 401
    assert not (tmp_path / "t").exists()


def test_from_arguments_needs_a_token_with_a_bridge(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    Bot.add_arguments(parser)
    args = parser.parse_args(["--bridge", "http://127.0.0.1:9", "--token", ""])
    args.token_file = None
    with pytest.raises(ConfigError, match="token"):
        Bot.from_arguments(args)
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    args.token_file = str(empty)
    with pytest.raises(ConfigError, match="empty"):
        Bot.from_arguments(args)


def test_network_options_come_from_the_bridge_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UMBRA_WAKU_CLUSTER_ID", "42")
    monkeypatch.setenv("UMBRA_WAKU_SHARD", "0")
    monkeypatch.setenv("UMBRA_WAKU_MODE", "relay")
    monkeypatch.delenv("UMBRA_WAKU_NUM_SHARDS", raising=False)
    assert network_options("http://127.0.0.1:8645") == {
        "mode": "relay",
        "cluster_id": 42,
        "shard": 0,
    }
    assert network_options("memory://x") == {}  # the embedded network takes no options
    monkeypatch.setenv("UMBRA_WAKU_SHARD", "zero")
    with pytest.raises(ConfigError, match="shard"):
        network_options("https://node.example")
