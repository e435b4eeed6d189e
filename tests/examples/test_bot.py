"""The Bot runtime on a scripted backend: dispatch, ordering, failures, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from umbra_waku.bot import (
    Bot,
    BotEvent,
    Conversation,
    ConversationClosed,
    ConversationStarted,
    EnvelopeClassified,
    Message,
    MessageReceived,
)
from umbra_waku.frames import Content, State

PEER = "ab" * 32


class ScriptedBackend:
    """A BotBackend whose events the test pushes, and which records what the bot sends."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[BotEvent | None] = asyncio.Queue()
        self.sent: list[tuple[str, Content]] = []
        self.invited: list[tuple[str, Content | None]] = []
        self.left: list[tuple[str, str]] = []
        self.started = False
        self.closed = 0

    @property
    def client_address(self) -> str:
        return "cd" * 32

    async def start(self) -> None:
        self.started = True

    async def events(self) -> AsyncIterator[BotEvent]:
        while (event := await self.queue.get()) is not None:
            yield event

    async def invite(self, client_address: str, initial: Content | None) -> str:
        self.invited.append((client_address, initial))
        return "conv-new"

    async def send(self, conversation_id: str, content: Content) -> None:
        self.sent.append((conversation_id, content))

    async def close_conversation(self, conversation_id: str, reason: str) -> None:
        self.left.append((conversation_id, reason))

    async def forget_conversation(self, conversation_id: str) -> None:
        self.left.append((conversation_id, "forgotten"))

    async def close(self) -> None:
        self.closed += 1


def text(conversation_id: str, body: str) -> MessageReceived:
    return MessageReceived(conversation_id, PEER, Content.text(body))


async def until(predicate: object) -> None:
    """Poll ``predicate`` until true (the handlers run in tasks of their own)."""
    assert callable(predicate)
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 -- polling the handlers' side effects
            await asyncio.sleep(0.001)


async def test_message_handler_gets_text_and_replies() -> None:
    backend = ScriptedBackend()
    bot = Bot(backend)
    seen: list[Message] = []

    @bot.on_message
    async def echo(message: Message) -> None:
        seen.append(message)
        await message.reply(message.text or "")

    async with bot:
        assert backend.started
        backend.queue.put_nowait(text("c1", "hi"))
        await until(lambda: backend.sent)
    assert (seen[0].text, seen[0].sender, seen[0].conversation_id) == ("hi", PEER, "c1")
    assert backend.sent == [("c1", Content.text("hi"))]
    assert backend.closed == 1


async def test_a_conversation_handler_can_leave() -> None:
    backend = ScriptedBackend()
    bot = Bot(backend)

    @bot.on_conversation
    async def started(conversation: Conversation) -> None:
        await conversation.close("not today")

    async with bot:
        backend.queue.put_nowait(ConversationStarted("c1", PEER, False))
        await until(lambda: backend.left)
        await bot.close_conversation("c2")
        await bot.forget_conversation("c1")
    assert backend.left == [("c1", "not today"), ("c2", ""), ("c1", "forgotten")]


async def test_conversation_handler_can_reply() -> None:
    backend = ScriptedBackend()
    bot = Bot(backend)
    calls: list[str] = []

    @bot.on_conversation
    async def started(conversation: Conversation) -> None:
        calls.append(f"{conversation.conversation_id} mine={conversation.initiated_by_me}")
        await conversation.reply("welcome")

    @bot.on_message
    async def message(message: Message) -> None:
        calls.append(f"message {message.text}")

    async with bot:
        backend.queue.put_nowait(ConversationStarted("c1", PEER, False))
        backend.queue.put_nowait(text("c1", "hello"))  # an initial message follows its start
        backend.queue.put_nowait(ConversationStarted("c2", PEER, True))
        await until(lambda: len(calls) == 3)
    assert sorted(calls) == ["c1 mine=False", "c2 mine=True", "message hello"]
    assert calls.index("c1 mine=False") < calls.index("message hello")  # in order within c1
    assert sorted(backend.sent) == [
        ("c1", Content.text("welcome")),
        ("c2", Content.text("welcome")),
    ]


async def test_closed_and_envelope_events() -> None:
    backend = ScriptedBackend()
    bot = Bot(backend)
    closed: list[ConversationClosed] = []
    envelopes: list[str] = []

    @bot.on_closed
    async def on_closed(event: ConversationClosed) -> None:
        closed.append(event)

    @bot.on_envelope
    async def on_envelope(event: EnvelopeClassified) -> None:
        envelopes.append(event.describe())

    async with bot:
        backend.queue.put_nowait(ConversationClosed("c1", "bye"))
        backend.queue.put_nowait(EnvelopeClassified(State.READABLE, "c1", "private/v1"))
        backend.queue.put_nowait(EnvelopeClassified(State.NOT_FOR_ME))
        backend.queue.put_nowait(EnvelopeClassified(State.BADLY_FORMED, reason="replay"))
        await until(lambda: len(envelopes) == 3)
    assert closed == [ConversationClosed("c1", "bye")]
    assert envelopes == ["readable (private/v1)", "not_for_me", "badly_formed (replay)"]


async def test_failing_handler_is_logged_and_the_bot_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ScriptedBackend()
    bot = Bot(backend, name="fragile")
    handled: list[str] = []

    @bot.on_message
    async def explode(message: Message) -> None:
        if message.text == "boom":
            raise RuntimeError("handler bug")
        handled.append(message.text or "")

    with caplog.at_level(logging.ERROR, logger="umbra_waku.bot"):
        async with bot:
            backend.queue.put_nowait(text("c1", "boom"))
            backend.queue.put_nowait(text("c1", "after"))
            backend.queue.put_nowait(text("c2", "other"))
            await until(lambda: len(handled) == 2)
    assert sorted(handled) == ["after", "other"]
    assert "handler" in caplog.text
    assert "explode" in caplog.text
    assert "handler bug" in caplog.text


async def test_events_of_one_conversation_are_handled_in_order() -> None:
    backend = ScriptedBackend()
    bot = Bot(backend)
    order: list[str] = []
    release = asyncio.Event()

    @bot.on_message
    async def slow_first(message: Message) -> None:
        if message.text == "1":
            await release.wait()  # the first message of c1 takes long
        order.append(f"{message.conversation_id}:{message.text}")

    async with bot:
        backend.queue.put_nowait(text("c1", "1"))
        backend.queue.put_nowait(text("c1", "2"))
        backend.queue.put_nowait(text("c2", "x"))
        await until(lambda: order == ["c2:x"])  # another conversation is not held up
        release.set()
        await until(lambda: len(order) == 3)
    assert order == ["c2:x", "c1:1", "c1:2"]


async def test_stop_lets_in_flight_handlers_finish() -> None:
    backend = ScriptedBackend()
    bot = Bot(backend)
    entered = asyncio.Event()
    finished: list[str] = []

    @bot.on_message
    async def slow(message: Message) -> None:
        entered.set()
        await asyncio.sleep(0.2)
        finished.append(message.text or "")
        await message.reply("done")

    @bot.on_shutdown
    async def shutdown() -> None:
        finished.append("shutdown hook")

    await bot.start()
    backend.queue.put_nowait(text("c1", "work"))
    await entered.wait()
    await bot.stop()
    assert finished == ["work", "shutdown hook"]
    assert backend.sent == [("c1", Content.text("done"))]  # sent before the backend closed
    assert backend.closed == 1
    await bot.stop()  # idempotent
    assert backend.closed == 1


async def test_shutdown_timeout_cancels_stuck_handlers(caplog: pytest.LogCaptureFixture) -> None:
    backend = ScriptedBackend()
    bot = Bot(backend, shutdown_timeout=0.1)
    entered = asyncio.Event()
    cancelled: list[bool] = []

    @bot.on_message
    async def stuck(message: Message) -> None:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    await bot.start()
    backend.queue.put_nowait(text("c1", "x"))
    await entered.wait()
    with caplog.at_level(logging.WARNING, logger="umbra_waku.bot"):
        await bot.stop()
    assert cancelled == [True]
    assert "cancelled" in caplog.text
    assert backend.closed == 1


async def test_serve_returns_after_request_stop_and_when_the_stream_ends() -> None:
    backend = ScriptedBackend()
    bot = Bot(backend)

    @bot.on_message
    async def stop_on_command(message: Message) -> None:
        if message.text == "/stop":
            bot.request_stop()

    server = asyncio.create_task(bot.serve(handle_signals=False))
    backend.queue.put_nowait(text("c1", "/stop"))
    await asyncio.wait_for(server, 5)
    assert backend.closed == 1

    ended = ScriptedBackend()
    ended.queue.put_nowait(None)  # the backend's stream is over: serve returns
    await asyncio.wait_for(Bot(ended).serve(handle_signals=False), 5)
    assert ended.closed == 1


async def test_invite_and_send_wrap_text() -> None:
    backend = ScriptedBackend()
    async with Bot(backend) as bot:
        assert await bot.invite(PEER, "hello") == "conv-new"
        await bot.invite(PEER)
        await bot.send("c1", Content(b"\x00", "app.binary", 7))
    assert backend.invited == [(PEER, Content.text("hello")), (PEER, None)]
    assert backend.sent == [("c1", Content(b"\x00", "app.binary", 7))]
    assert bot.client_address == "cd" * 32


def test_run_blocks_until_the_stream_ends() -> None:
    backend = ScriptedBackend()
    backend.queue.put_nowait(text("c1", "hi"))
    backend.queue.put_nowait(None)
    bot = Bot(backend)
    seen: list[str] = []

    @bot.on_message
    async def record(message: Message) -> None:
        seen.append(message.text or "")

    bot.run(handle_signals=False)
    assert seen == ["hi"]
    assert backend.closed == 1
