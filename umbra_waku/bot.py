"""A small API for bots: decorator handlers, one event loop, graceful shutdown.

::

    from umbra_waku.bot import Bot, Message

    bot = Bot.embedded("echo.key", "memory://demo")      # or Bot.via_bridge(url, token)

    @bot.on_message
    async def echo(message: Message) -> None:
        await message.reply(message.text or "(not text)")

    bot.run()                                            # until SIGINT or SIGTERM

The same handlers run on two backends, kept behind the small :class:`BotBackend` protocol:

- **embedded** (:meth:`Bot.embedded`): the protocol runs in this process, on
  :mod:`umbra_waku.client` and a transport from :func:`umbra_waku.transport.connect`
  (``memory://name`` for the in-process network, ``http://host:8645`` for a Waku node, whose
  cluster, shard and mode :meth:`Bot.from_arguments` takes from the bridge's variables, e.g.
  ``set -a; . deploy/bridge.env; set +a``);
- **bridge** (:meth:`Bot.via_bridge`): the protocol runs in an ``umbra-waku bridge`` process; the
  bot talks to its HTTP API with a bearer token and follows its WebSocket event stream, resuming
  from the last cursor it saw after a reconnection.

Handlers are coroutines. ``@bot.on_conversation`` runs for every new conversation (an invitation
this bot accepted, or one it started with :meth:`Bot.invite`); ``@bot.on_message`` runs for every
incoming :class:`~umbra_waku.frames.Content`; ``@bot.on_closed`` when the peer leaves. A bot
leaves with :meth:`Bot.close_conversation` (or ``Conversation.close``). Events of one
conversation are handled in the order they arrived; different conversations are handled
concurrently. A handler that raises is logged
(``umbra_waku.bot``) and the bot goes on.

Shutdown (SIGINT, SIGTERM, :meth:`Bot.stop` or leaving ``async with``), in the style of aiogram's
``start_polling`` and faststream: stop receiving, let in-flight handlers finish (up to
``shutdown_timeout`` seconds, then cancel them), run the ``on_shutdown`` hooks, close the backend.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp

from umbra_waku import client as _client
from umbra_waku.conversations.inbox import INBOX_V1
from umbra_waku.conversations.private import PRIVATE_TOPIC, PRIVATE_V1
from umbra_waku.errors import (
    ConfigError,
    ConversationError,
    NodeUnreachable,
    PublishRejected,
    TransportError,
    UmbraWakuError,
)
from umbra_waku.frames import TEXT_DOMAIN, Content, State
from umbra_waku.identity import Identity
from umbra_waku.transport import connect

__all__ = [
    "Bot",
    "BotBackend",
    "BotEvent",
    "BridgeBackend",
    "BridgeError",
    "Conversation",
    "ConversationClosed",
    "ConversationStarted",
    "EmbeddedBackend",
    "EnvelopeClassified",
    "Message",
    "MessageReceived",
    "run_program",
]

log = logging.getLogger("umbra_waku.bot")

DEFAULT_SHUTDOWN_TIMEOUT = 10.0
DEFAULT_NODE = "memory://demo"


# ---------------------------------------------------------------------------------------------
# Events: what a backend yields
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationStarted:
    """A conversation exists: this bot accepted an invitation or sent one.

    An invitation's initial message, if any, follows as a :class:`MessageReceived`.
    """

    conversation_id: str
    peer: str | None  # the peer's client_address, when known
    initiated_by_me: bool


@dataclass(frozen=True, slots=True)
class MessageReceived:
    conversation_id: str
    sender: str | None  # client_address, authenticated by the conversation
    content: Content


@dataclass(frozen=True, slots=True)
class ConversationClosed:
    conversation_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class EnvelopeClassified:
    """How this bot classified one received envelope (diagnostics, and the demo's transcript).

    Backends report it when they can; the three outcomes are those of
    :class:`~umbra_waku.frames.State`.
    """

    state: State
    conversation_id: str | None = None
    conversation_type: str | None = None
    reason: str | None = None
    content_topic: str | None = None

    def describe(self) -> str:
        """``readable (private/v1)``, ``not_for_me``, ``badly_formed (replay)``."""
        detail = self.conversation_type if self.state is State.READABLE else self.reason
        return f"{self.state.value} ({detail})" if detail else self.state.value


BotEvent = ConversationStarted | MessageReceived | ConversationClosed | EnvelopeClassified


class BotBackend(Protocol):
    """What a :class:`Bot` needs from the machinery that runs the protocol for it."""

    @property
    def client_address(self) -> str:
        """The bot's client_address; valid after :meth:`start`."""

    async def start(self) -> None:
        """Connect; after it returns, :meth:`events` yields everything from now on."""

    def events(self) -> AsyncIterator[BotEvent]:
        """The bot's events, in order, until :meth:`close` (or cancellation)."""

    async def invite(self, client_address: str, initial: Content | None) -> str:
        """Start a conversation with ``client_address``; returns its conversation_id."""

    async def send(self, conversation_id: str, content: Content) -> None: ...

    async def close_conversation(self, conversation_id: str, reason: str) -> None:
        """Leave a conversation (after the sends made before): the peer is told ``reason``."""

    async def forget_conversation(self, conversation_id: str) -> None:
        """Delete a conversation's state: nothing more of it is read (the peer is not told)."""

    async def close(self) -> None:
        """Release everything; idempotent."""


# ---------------------------------------------------------------------------------------------
# What handlers receive
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """An incoming message, as ``@bot.on_message`` handlers get it."""

    bot: Bot = field(repr=False)
    conversation_id: str
    sender: str | None
    content: Content

    @property
    def text(self) -> str | None:
        """The text of an ``umbra.text`` message (None for other domains or invalid UTF-8)."""
        return self.content.as_text()

    async def reply(self, text: str | Content) -> None:
        """Send ``text`` (or any Content) back in the same conversation."""
        await self.bot.send(self.conversation_id, text)


@dataclass(frozen=True, slots=True)
class Conversation:
    """A new conversation, as ``@bot.on_conversation`` handlers get it."""

    bot: Bot = field(repr=False)
    conversation_id: str
    peer: str | None
    initiated_by_me: bool

    async def reply(self, text: str | Content) -> None:
        """Send ``text`` (or any Content) in this conversation."""
        await self.bot.send(self.conversation_id, text)

    send = reply

    async def close(self, reason: str = "") -> None:
        """Leave this conversation (see :meth:`Bot.close_conversation`)."""
        await self.bot.close_conversation(self.conversation_id, reason)


MessageHandler = Callable[[Message], Awaitable[None]]
ConversationHandler = Callable[[Conversation], Awaitable[None]]
ClosedHandler = Callable[[ConversationClosed], Awaitable[None]]
EnvelopeHandler = Callable[[EnvelopeClassified], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]

M = TypeVar("M", bound=MessageHandler)
C = TypeVar("C", bound=ConversationHandler)
X = TypeVar("X", bound=ClosedHandler)
E = TypeVar("E", bound=EnvelopeHandler)
H = TypeVar("H", bound=Hook)
A = TypeVar("A")


# ---------------------------------------------------------------------------------------------
# The bot
# ---------------------------------------------------------------------------------------------


class Bot:
    """Handlers plus a backend (see the module docstring). Build one with :meth:`embedded` or
    :meth:`via_bridge`, or pass any :class:`BotBackend`."""

    def __init__(
        self,
        backend: BotBackend,
        *,
        name: str = "bot",
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> None:
        self.backend = backend
        self.name = name
        self.shutdown_timeout = shutdown_timeout
        self._message_handlers: list[MessageHandler] = []
        self._conversation_handlers: list[ConversationHandler] = []
        self._closed_handlers: list[ClosedHandler] = []
        self._envelope_handlers: list[EnvelopeHandler] = []
        self._startup_hooks: list[Hook] = []
        self._shutdown_hooks: list[Hook] = []
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._receiver: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        # key (conversation id, "" for classification reports) -> its events not yet handled,
        # while a worker task of that key runs (one task per run of events, not per event)
        self._backlog: dict[str, deque[BotEvent]] = {}
        self._stop_lock = asyncio.Lock()

    # ---- construction ----

    @classmethod
    def embedded(
        cls,
        identity: Identity | str | os.PathLike[str],
        node_url: str = "memory://default",
        *,
        name: str = "bot",
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        transport_options: Mapping[str, object] | None = None,
    ) -> Bot:
        """A bot that runs the protocol in this process.

        ``identity`` is an :class:`~umbra_waku.identity.Identity` or the path of a key file
        (created with mode 0600 if missing). ``node_url`` picks the transport
        (``memory://name`` or ``http://host:port``); ``transport_options`` go to it.
        """
        backend = EmbeddedBackend(identity, node_url, transport_options)
        return cls(backend, name=name, shutdown_timeout=shutdown_timeout)

    @classmethod
    def via_bridge(
        cls,
        base_url: str,
        token: str,
        *,
        cursor_file: str | os.PathLike[str] | None = None,
        name: str = "bot",
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> Bot:
        """A bot that uses an ``umbra-waku bridge`` at ``base_url`` with its bearer ``token``.

        With ``cursor_file``, events that arrive while the bot is down are delivered when it
        starts again (see :class:`BridgeBackend`).
        """
        backend = BridgeBackend(base_url, token, cursor_file=cursor_file)
        return cls(backend, name=name, shutdown_timeout=shutdown_timeout)

    # ---- command-line wiring (the examples use it) ----

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add ``--node``, ``--identity``, ``--bridge``, ``--token`` and ``--token-file``.

        Defaults come from the environment: ``UMBRA_WAKU_BOT_NODE``, ``UMBRA_WAKU_BOT_IDENTITY``,
        ``UMBRA_WAKU_BOT_BRIDGE``, ``UMBRA_WAKU_BOT_TOKEN`` and ``UMBRA_WAKU_BOT_TOKEN_FILE``.
        """
        env = os.environ.get
        group = parser.add_argument_group("where the bot runs (embedded, or through a bridge)")
        group.add_argument(
            "--node",
            metavar="URL",
            default=env("UMBRA_WAKU_BOT_NODE", DEFAULT_NODE),
            help="embedded: the Waku network, memory://NAME (in-process) or http://HOST:PORT "
            f"(a node's REST API) (default: {DEFAULT_NODE}; env UMBRA_WAKU_BOT_NODE)",
        )
        group.add_argument(
            "--identity",
            metavar="FILE",
            default=env("UMBRA_WAKU_BOT_IDENTITY"),
            help="embedded: key file of the bot, created if missing (default: a new identity "
            "each run; env UMBRA_WAKU_BOT_IDENTITY)",
        )
        group.add_argument(
            "--bridge",
            metavar="URL",
            default=env("UMBRA_WAKU_BOT_BRIDGE"),
            help="use the umbra-waku bridge at URL instead of running the protocol here "
            "(env UMBRA_WAKU_BOT_BRIDGE)",
        )
        group.add_argument(
            "--token",
            metavar="TOKEN",
            default=env("UMBRA_WAKU_BOT_TOKEN"),
            help="with --bridge: the bot's bearer token (env UMBRA_WAKU_BOT_TOKEN)",
        )
        group.add_argument(
            "--token-file",
            metavar="FILE",
            default=env("UMBRA_WAKU_BOT_TOKEN_FILE"),
            help="with --bridge: read the token from FILE instead (env UMBRA_WAKU_BOT_TOKEN_FILE; "
            "'python -m umbra_waku.bot provision' creates one)",
        )

    @classmethod
    def from_arguments(
        cls,
        args: argparse.Namespace,
        *,
        name: str = "bot",
        token: str | None = None,
        identity: Identity | str | None = None,
    ) -> Bot:
        """The bot ``args`` (see :meth:`add_arguments`) describe. ``token`` and ``identity``
        override ``args.token`` and ``args.identity`` (for a second bot in the same process)."""
        if args.bridge:
            token = token or args.token
            if not token and getattr(args, "token_file", None):
                token = read_token_file(args.token_file)
            if not token:
                raise ConfigError(
                    "token", "--bridge needs --token or --token-file (or UMBRA_WAKU_BOT_TOKEN)"
                )
            return cls.via_bridge(args.bridge, token, name=name)
        chosen = identity if identity is not None else args.identity
        if chosen is None:
            chosen = Identity.generate()
        options = network_options(args.node)
        return cls.embedded(chosen, args.node, name=name, transport_options=options)

    # ---- handler registration (decorators) ----

    def on_message(self, handler: M) -> M:
        """Register a handler for incoming messages: ``async def h(message: Message)``."""
        self._message_handlers.append(handler)
        return handler

    def on_conversation(self, handler: C) -> C:
        """Register a handler for new conversations: ``async def h(conv: Conversation)``."""
        self._conversation_handlers.append(handler)
        return handler

    def on_closed(self, handler: X) -> X:
        """Register a handler for conversations the peer closed."""
        self._closed_handlers.append(handler)
        return handler

    def on_envelope(self, handler: E) -> E:
        """Register a handler for classification outcomes (when the backend reports them)."""
        self._envelope_handlers.append(handler)
        return handler

    def on_startup(self, hook: H) -> H:
        """Run ``hook()`` once the bot is connected, before it handles any event."""
        self._startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: H) -> H:
        """Run ``hook()`` during shutdown, after in-flight handlers, before the backend closes."""
        self._shutdown_hooks.append(hook)
        return hook

    # ---- actions ----

    @property
    def client_address(self) -> str:
        """Where others invite this bot; valid once it has started."""
        return self.backend.client_address

    async def invite(self, client_address: str, text: str | Content | None = None) -> str:
        """Start a conversation with ``client_address`` (optionally with a first message);
        returns its conversation_id. ``on_conversation`` handlers run for it too."""
        return await self.backend.invite(client_address, _content(text))

    async def send(self, conversation_id: str, text: str | Content) -> None:
        """Send text (``umbra.text``) or any Content in a conversation."""
        content = _content(text)
        assert content is not None
        await self.backend.send(conversation_id, content)

    async def close_conversation(self, conversation_id: str, reason: str = "") -> None:
        """Leave a conversation: the peer is told, with ``reason``, after the messages sent
        before. The conversation stays, closed: later sends in it fail (ConversationError, or
        BridgeError 409 ``conversation_closed`` through a bridge), and what the peer sent before
        it learnt still reaches ``on_message``."""
        await self.backend.close_conversation(conversation_id, reason)

    async def forget_conversation(self, conversation_id: str) -> None:
        """Forget a conversation: its state is deleted, nothing more of it reaches the handlers,
        and the peer is not told (close it first for that). A bot that has many short
        conversations forgets the closed ones to keep its memory and storage bounded."""
        await self.backend.forget_conversation(conversation_id)

    # ---- lifecycle ----

    async def start(self) -> None:
        """Connect the backend and start dispatching events to the handlers."""
        if self._started:
            return
        self._started = True
        await self.backend.start()
        for hook in self._startup_hooks:
            await hook()
        self._receiver = asyncio.create_task(self._receive(), name=f"{self.name}-receive")
        log.info("%s started as %s", self.name, self.backend.client_address)

    async def stop(self) -> None:
        """Stop gracefully (see the module docstring); idempotent."""
        async with self._stop_lock:
            if self._stopped.is_set():
                return
            self._stopping = True
            self._stop_requested.set()
            try:
                await self._shutdown()
            finally:
                self._stopped.set()

    def request_stop(self) -> None:
        """Ask :meth:`serve` to stop (safe from a signal handler or a handler coroutine)."""
        self._stop_requested.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Start, run until SIGINT/SIGTERM or :meth:`request_stop`, then stop gracefully."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                # Windows (NotImplementedError) and non-main threads (RuntimeError/ValueError)
                # cannot install handlers: Ctrl+C then raises KeyboardInterrupt as usual.
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    installed.append(sig)
        try:
            await self.start()
            waiter = asyncio.create_task(self._stop_requested.wait())
            receiver = self._receiver
            assert receiver is not None
            await asyncio.wait({waiter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        finally:
            await self.stop()
            for sig in installed:
                loop.remove_signal_handler(sig)

    def run(self, *, handle_signals: bool = True) -> None:
        """Blocking: :meth:`serve` under ``asyncio.run``."""
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.serve(handle_signals=handle_signals))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---- internals ----

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s: %s received, stopping", self.name, sig.name)
        self.request_stop()

    async def _shutdown(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=self.shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "%s: %d handler(s) still running after %.1fs were cancelled",
                    self.name,
                    len(pending),
                    self.shutdown_timeout,
                )
                await asyncio.wait(pending)
        for hook in self._shutdown_hooks:
            try:
                await hook()
            except Exception:
                log.exception("%s: on_shutdown hook failed", self.name)
        if self._started:
            await self.backend.close()
        log.info("%s stopped", self.name)

    async def _receive(self) -> None:
        try:
            async for event in self.backend.events():
                self._dispatch(event)
        except asyncio.CancelledError:
            raise
        except UmbraWakuError as exc:
            log.error("%s: the event stream failed: %s", self.name, exc)
        except Exception:
            log.exception("%s: the event stream failed", self.name)

    def _dispatch(self, event: BotEvent) -> None:
        if self._stopping:
            return
        if isinstance(event, EnvelopeClassified) and not self._envelope_handlers:
            return  # the common case on a busy network: nobody asked
        # Events of one conversation are handled in order; classification reports form their own
        # ordered stream.
        key = "" if isinstance(event, EnvelopeClassified) else event.conversation_id
        backlog = self._backlog.get(key)
        if backlog is not None:  # the key's worker runs: it handles this one after the others
            backlog.append(event)
            return
        self._backlog[key] = deque((event,))
        task = asyncio.create_task(self._work(key), name=f"{self.name}-handler")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _work(self, key: str) -> None:
        """Handle the key's events in order (its handlers one after the other), until none is
        left; events of other keys are handled concurrently by their own workers."""
        backlog = self._backlog[key]
        try:
            while backlog:
                await self._handle(backlog.popleft())
        finally:
            if self._backlog.get(key) is backlog:
                del self._backlog[key]

    async def _handle(self, event: BotEvent) -> None:
        if isinstance(event, MessageReceived):
            message = Message(self, event.conversation_id, event.sender, event.content)
            for on_message in self._message_handlers:
                await self._call(on_message, message)
        elif isinstance(event, ConversationStarted):
            conversation = Conversation(
                self, event.conversation_id, event.peer, event.initiated_by_me
            )
            for on_conversation in self._conversation_handlers:
                await self._call(on_conversation, conversation)
        elif isinstance(event, ConversationClosed):
            for on_closed in self._closed_handlers:
                await self._call(on_closed, event)
        else:
            for on_envelope in self._envelope_handlers:
                await self._call(on_envelope, event)

    async def _call(self, handler: Callable[[A], Awaitable[None]], argument: A) -> None:
        try:
            await handler(argument)
        except asyncio.CancelledError:
            raise
        except Exception:
            name = getattr(handler, "__qualname__", repr(handler))
            log.exception("%s: handler %s failed", self.name, name)


# ---------------------------------------------------------------------------------------------
# Backend: embedded (umbra_waku.client in this process)
# ---------------------------------------------------------------------------------------------

#: How long a send waits for the node to accept the envelope before the handler goes on (the
#: client keeps retrying in the background).
PUBLISH_WAIT = 10.0
#: How long start() waits for the subscription to be live before going on with a warning.
LIVE_WAIT = 30.0


class EmbeddedBackend:
    """A :class:`BotBackend` that runs the protocol here: an :class:`~umbra_waku.client.UmbraClient`
    on the transport ``node_url`` names."""

    def __init__(
        self,
        identity: Identity | str | os.PathLike[str],
        node_url: str,
        transport_options: Mapping[str, object] | None = None,
        *,
        client_options: _client.ClientOptions | None = None,
    ) -> None:
        self.identity = (
            identity if isinstance(identity, Identity) else Identity.load_or_create(identity)
        )
        self.node_url = node_url
        self._transport_options = dict(transport_options or {})
        self._client_options = client_options
        self.client: _client.UmbraClient | None = None
        self._queue: asyncio.Queue[BotEvent | None] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    @property
    def client_address(self) -> str:
        return self.identity.client_address

    async def start(self) -> None:
        transport = connect(self.node_url, **self._transport_options)
        client = _client.UmbraClient(self.identity, transport, options=self._client_options)
        stream = client.events(operational=True)  # before start: nothing can be missed
        await client.start()
        self.client = client
        self._pump = asyncio.create_task(self._forward(stream), name="bot-embedded-events")
        if not await client.wait_live(LIVE_WAIT):
            log.warning("%s: not live after %.0fs; going on", self.node_url, LIVE_WAIT)

    async def _forward(self, stream: _client.EventStream) -> None:
        c = _client
        try:
            async for event in stream:
                translated: BotEvent | None = None
                if isinstance(event, c.MessageReceived):
                    translated = MessageReceived(event.conversation_id, event.sender, event.content)
                elif isinstance(event, c.ConversationStarted):
                    started = ConversationStarted(event.conversation_id, event.peer, False)
                    self._queue.put_nowait(started)
                    if event.initial_content is not None:
                        translated = MessageReceived(
                            event.conversation_id, event.peer, event.initial_content
                        )
                elif isinstance(event, c.ConversationClosed):
                    translated = ConversationClosed(event.conversation_id, event.reason)
                elif isinstance(event, c.Classified) and event.state != "duplicate":
                    translated = EnvelopeClassified(
                        State(event.state),
                        conversation_type=_conversation_type(event.content_topic),
                        reason=event.reason,
                        content_topic=event.content_topic,
                    )
                elif isinstance(event, c.Published) and event.delivery != c.Delivery.PUBLISHED:
                    log.warning(
                        "envelope %s for %s: %s (%s)",
                        event.message_hash,
                        event.conversation_id,
                        event.delivery.value,
                        event.error,
                    )
                if translated is not None:
                    self._queue.put_nowait(translated)
        finally:
            await stream.aclose()
            self._queue.put_nowait(None)

    async def events(self) -> AsyncIterator[BotEvent]:
        while (event := await self._queue.get()) is not None:
            yield event

    def _require_client(self) -> _client.UmbraClient:
        if self.client is None:
            raise ConversationError("the bot has not started")
        return self.client

    async def invite(self, client_address: str, initial: Content | None) -> str:
        sent = await self._require_client().invite(client_address, initial)
        self._queue.put_nowait(
            ConversationStarted(sent.conversation_id, client_address.strip().lower(), True)
        )
        await _delivered(sent)
        return sent.conversation_id

    async def send(self, conversation_id: str, content: Content) -> None:
        await _delivered(await self._require_client().send(conversation_id, content))

    async def close_conversation(self, conversation_id: str, reason: str) -> None:
        client = self._require_client()
        await _delivered(await client.close_conversation(conversation_id, reason))

    async def forget_conversation(self, conversation_id: str) -> None:
        await self._require_client().forget_conversation(conversation_id)

    async def close(self) -> None:
        # The bot has stopped reading events: stop forwarding first, then close the client
        # (which finishes in-flight publishes).
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        client, self.client = self.client, None
        if client is not None:
            await client.close()
        self._queue.put_nowait(None)


async def _delivered(sent: _client.Sent) -> None:
    delivery = await sent.wait(PUBLISH_WAIT)
    if delivery == _client.Delivery.FAILED:
        raise PublishRejected(f"the node refused the envelope {sent.message_hash}")
    if delivery == _client.Delivery.PENDING:
        log.warning("envelope %s not published yet; still retrying", sent.message_hash)


def _conversation_type(content_topic: str) -> str:
    return PRIVATE_V1.name if content_topic == PRIVATE_TOPIC else INBOX_V1.name


# ---------------------------------------------------------------------------------------------
# Backend: an umbra-waku bridge (HTTP API + WebSocket event stream)
# ---------------------------------------------------------------------------------------------

#: How long start() keeps trying to reach the bridge (it may still be starting).
BRIDGE_CONNECT_WAIT = 30.0
#: Ceiling of the pause between reconnections of the event stream, in seconds.
BRIDGE_RECONNECT_MAX = 10.0
#: Attempts of one request the bridge answered 503 (not connected to its node yet, or draining).
BRIDGE_ATTEMPTS = 5
#: Most queued sends in one batch request (the bridge takes up to 1,000).
BRIDGE_MAX_BATCH = 256
#: Requests carrying sends that may be in flight at once; further sends queue and go together.
BRIDGE_PIPELINE = 2
_WS_HEARTBEAT = 20.0


class BridgeError(UmbraWakuError):
    """The bridge refused a request; ``status`` and ``code`` are its answer's."""

    def __init__(self, status: int, code: str, message: str, *, retriable: bool = False) -> None:
        super().__init__(f"bridge answered {status} {code}: {message}", retriable=retriable)
        self.status = status
        self.code = code


class BridgeBackend:
    """A :class:`BotBackend` that uses an ``umbra-waku bridge``: requests to its HTTP API with the
    bot's bearer token, events from its WebSocket stream ``/v1/events?after=CURSOR``.

    The cursor is the ``seq`` of the last event received. After a disconnection the stream is
    reopened after that cursor, so nothing is missed or repeated. With ``cursor_file`` the cursor
    also survives restarts (events that arrived while the bot was down are delivered on start);
    without it, a new run starts with the events that arrive from then on.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        cursor_file: str | os.PathLike[str] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError("bridge", f"{base_url!r} is not an http(s):// URL")
        if not token or not token.strip():
            raise ConfigError("token", "the bot token is empty")
        self.base_url = base_url.rstrip("/")
        self._token = token.strip()
        self._cursor_file = None if cursor_file is None else Path(cursor_file)
        self._session = session
        self._own_session = session is None
        self._address: str | None = None
        self.cursor = 0
        self._queue: asyncio.Queue[BotEvent | BaseException | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._outgoing: list[_Outgoing] = []
        self._senders: set[asyncio.Task[None]] = set()
        self._batches = True  # whether the bridge has POST /v1/messages

    @property
    def client_address(self) -> str:
        if self._address is None:
            raise ConversationError("the bot has not started")
        return self._address

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ConversationError("the bot has not started")
        return self._session

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=aiohttp.ClientTimeout(total=60, sock_connect=10),
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BRIDGE_CONNECT_WAIT
        delay = 0.2
        while True:
            try:
                me = await self._request("GET", "/v1/me")
                break
            except UmbraWakuError as exc:
                if not exc.retriable or loop.time() + delay > deadline:
                    await self._close_session()
                    raise
                log.info("bridge %s not ready (%s); retrying", self.base_url, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._address = str(me["client_address"])
        saved = self._load_cursor()
        self.cursor = int(me["last_seq"]) if saved is None else saved
        self._reader = asyncio.create_task(self._read_events(), name="bot-bridge-events")

    async def events(self) -> AsyncIterator[BotEvent]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def invite(self, client_address: str, initial: Content | None) -> str:
        body: dict[str, object] = {"peer": client_address.strip().lower()}
        if initial is not None:
            if initial.domain == TEXT_DOMAIN and initial.as_text() is not None and not initial.tag:
                body["text"] = initial.as_text()
            else:
                body["content"] = _content_json(initial)
        answer = await self._request("POST", "/v1/conversations", body)
        conversation = answer["conversation"]
        conversation_id = str(conversation["id"])
        self._queue.put_nowait(
            ConversationStarted(conversation_id, str(conversation["peer"]), True)
        )
        return conversation_id

    async def send(self, conversation_id: str, content: Content) -> None:
        """Send one message. A send goes at once, alone, when fewer than
        ``BRIDGE_PIPELINE`` requests are in flight; otherwise it is queued, and what queued goes
        as ONE batch request (``POST /v1/messages``) when a request returns: concurrent handlers
        get the bridge's batch throughput, and a lone send is not delayed."""
        text = content.as_text()
        body: dict[str, object] = (
            {"text": text} if text is not None and not content.tag else _content_json(content)
        )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outgoing.append((conversation_id, body, future))
        if len(self._senders) < BRIDGE_PIPELINE:
            self._senders.add(asyncio.create_task(self._send_queued(), name="bot-bridge-send"))
        await future

    async def close_conversation(self, conversation_id: str, reason: str) -> None:
        await self._after_sends()
        path = f"/v1/conversations/{quote(conversation_id, safe='')}/close"
        await self._request("POST", path, {"reason": reason})

    async def forget_conversation(self, conversation_id: str) -> None:
        await self._after_sends()
        await self._request("DELETE", f"/v1/conversations/{quote(conversation_id, safe='')}")

    async def _after_sends(self) -> None:
        """Wait until what was sent before has gone: the senders drain the queue, then end."""
        while self._senders:
            await asyncio.wait(set(self._senders))

    async def _send_queued(self) -> None:
        """Send what is queued, one request at a time, each carrying everything queued."""
        try:
            while self._outgoing:
                batch = self._outgoing[:BRIDGE_MAX_BATCH]
                del self._outgoing[:BRIDGE_MAX_BATCH]
                try:
                    if len(batch) == 1 or not self._batches:
                        await asyncio.gather(*(self._send_one(*item) for item in batch))
                    else:
                        await self._send_batch(batch)
                except BaseException as exc:  # cancelled: no sender may wait for ever
                    _fail_all(
                        batch,
                        exc
                        if isinstance(exc, Exception)
                        else ConversationError("the bot is stopping"),
                    )
                    raise
        finally:
            # at once, not in a done callback: a send queued from now on starts a new sender
            task = asyncio.current_task()
            if task is not None:
                self._senders.discard(task)

    async def _send_one(
        self, conversation_id: str, body: dict[str, object], future: asyncio.Future[None]
    ) -> None:
        path = f"/v1/conversations/{quote(conversation_id, safe='')}/messages"
        try:
            await self._request("POST", path, body)
        except Exception as exc:  # noqa: BLE001 -- that sender's error
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(None)

    async def _send_batch(self, batch: list[_Outgoing]) -> None:
        messages = [{"conversation_id": c.strip().lower(), **body} for c, body, _ in batch]
        try:
            answer = await self._request("POST", "/v1/messages", {"messages": messages})
        except BridgeError as exc:
            if exc.status in (404, 405) and exc.code in ("not_found", "method_not_allowed"):
                self._batches = False  # an older bridge: one request per message
            if exc.status in (404, 405, 422):
                # no batch route, or one message made the whole batch invalid: each message
                # alone, so that each sender gets its own answer
                await asyncio.gather(*(self._send_one(*item) for item in batch))
                return
            _fail_all(batch, exc)
            return
        except Exception as exc:  # noqa: BLE001 -- every sender of the batch gets it
            _fail_all(batch, exc)
            return
        results = answer.get("results")
        if not isinstance(results, list) or len(results) != len(batch):
            error = TransportError(f"bridge {self.base_url}: a malformed batch answer")
            _fail_all(batch, error)
            return
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            status = int(result.get("status", 500)) if isinstance(result, dict) else 500
            if status < 400:
                future.set_result(None)
            else:
                future.set_exception(_bridge_error(status, result))

    async def close(self) -> None:
        self._closing = True
        if self._senders:  # what was queued goes out
            await asyncio.gather(*self._senders, return_exceptions=True)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        self._save_cursor()
        await self._close_session()
        self._queue.put_nowait(None)

    async def _close_session(self) -> None:
        session = self._session
        if session is not None and self._own_session:
            self._session = None
            await session.close()

    # ---- HTTP ----

    async def _request(
        self, method: str, path: str, body: dict[str, object] | None = None
    ) -> dict[str, Any]:
        """One API call; 503 answers are retried (the bridge saved nothing), other errors raise."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._request_once(method, path, body)
            except BridgeError as exc:
                if exc.status != 503 or attempt >= BRIDGE_ATTEMPTS:
                    raise
                await asyncio.sleep(min(0.25 * 2**attempt, 5.0))

    async def _request_once(
        self, method: str, path: str, body: dict[str, object] | None
    ) -> dict[str, Any]:
        try:
            async with self._http().request(method, self._url(path), json=body) as response:
                data: object = None
                if response.content_type == "application/json":
                    data = await response.json()
                if response.status >= 400:
                    raise _bridge_error(response.status, data)
                if response.status == 204:  # done, nothing to say (a DELETE)
                    return {}
        except aiohttp.ClientConnectorError as exc:
            raise NodeUnreachable(f"bridge {self.base_url} unreachable: {exc}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Sent, but the answer was lost: not retried (the bridge may have acted on it).
            raise TransportError(f"bridge {self.base_url}: {type(exc).__name__}: {exc}") from None
        if not isinstance(data, dict):
            raise TransportError(f"bridge {self.base_url}: {method} {path} did not answer JSON")
        return data

    # ---- the event stream ----

    async def _read_events(self) -> None:
        delay = 0.2
        try:
            while not self._closing:
                try:
                    received = await self._stream_once()
                except BridgeError as exc:
                    if exc.status in (401, 403, 404):
                        self._queue.put_nowait(exc)  # the token is not (or no longer) valid
                        return
                    received = False
                    log.warning("event stream refused (%s); reconnecting in %.1fs", exc, delay)
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    received = False
                    log.warning("event stream lost (%s); reconnecting in %.1fs", exc, delay)
                if received:
                    delay = 0.2
                await asyncio.sleep(delay)
                delay = min(delay * 2, BRIDGE_RECONNECT_MAX)
        finally:
            self._queue.put_nowait(None)

    async def _stream_once(self) -> bool:
        """Follow the stream from the cursor until it closes; whether any event came."""
        received = False
        url = self._url("/v1/events")
        try:
            ws = await self._http().ws_connect(
                url, params={"after": str(self.cursor), "batch": "true"}, heartbeat=_WS_HEARTBEAT
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise BridgeError(exc.status, "handshake", exc.message) from None
        async with ws:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    if message.type is aiohttp.WSMsgType.ERROR:
                        break
                    continue
                frame = json.loads(message.data)
                # batch=true: a frame is a list of events (an older bridge sends one object)
                records = frame if isinstance(frame, list) else [frame]
                moved = False
                for record in records:
                    seq = int(record["seq"])
                    if seq <= self.cursor:
                        continue  # already seen (never expected; cheap to guard)
                    event = _bridge_event(record)
                    self.cursor = seq
                    moved = received = True
                    if event is not None:
                        self._queue.put_nowait(event)
                if moved:
                    self._save_cursor()
            if ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION:
                raise BridgeError(404, "bot_deleted", "the bridge deleted this bot")
        return received

    # ---- the cursor file ----

    def _load_cursor(self) -> int | None:
        path = self._cursor_file
        if path is None:
            return None
        try:
            return int(path.read_text().strip() or "0")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError("cursor_file", f"{path}: {exc}") from None

    def _save_cursor(self) -> None:
        path = self._cursor_file
        if path is None:
            return
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(f"{self.cursor}\n")
        temporary.replace(path)


_Outgoing = tuple[str, dict[str, object], "asyncio.Future[None]"]


def _fail_all(batch: list[_Outgoing], error: BaseException) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(error)


def _content_json(content: Content) -> dict[str, object]:
    return {
        "domain": content.domain,
        "tag": content.tag,
        "data_b64": base64.b64encode(content.data).decode("ascii"),
    }


def _bridge_error(status: int, data: object) -> BridgeError:
    code, message = "http_error", f"HTTP {status}"
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        error = data["error"]
        code = str(error.get("code", code))
        message = str(error.get("message", message))
        if error.get("field"):
            message += f" (field {error['field']})"
    return BridgeError(status, code, message, retriable=status in (429, 503) or status >= 500)


def _bridge_event(record: dict[str, Any]) -> BotEvent | None:
    kind = record.get("type")
    conversation_id = str(record["conversation_id"])
    peer = record.get("peer")
    if kind == "message":
        data = base64.b64decode(record.get("data_b64") or "")
        content = Content(
            data,
            str(record.get("domain") or TEXT_DOMAIN),
            int(record.get("tag") or 0),
            int(record.get("sent_at_ms") or 0),
        )
        return MessageReceived(conversation_id, peer, content)
    if kind == "conversation_started":
        return ConversationStarted(conversation_id, peer, False)
    if kind == "conversation_closed":
        return ConversationClosed(conversation_id, str(record.get("reason") or ""))
    log.debug("ignoring an event of unknown type %r", kind)
    return None


def run_program(main: Coroutine[Any, Any, int], prog: str | None = None) -> int:
    """Run a bot program's ``async def main() -> int``; its exit status.

    An :class:`~umbra_waku.errors.UmbraWakuError` (a wrong token, an unreachable bridge or node,
    an invalid setting) becomes one line on stderr and status 1, not a traceback.
    """
    name = prog or Path(sys.argv[0]).name
    try:
        return asyncio.run(main)
    except UmbraWakuError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------------------------------------
# Bot tokens in files, and provisioning them (python -m umbra_waku.bot provision)
# ---------------------------------------------------------------------------------------------


#: Network settings an embedded bot on a Waku node's REST API takes from the environment: the same
#: variables as the bridge's (deploy/bridge.env), so that both join the same cluster and shard.
NETWORK_SETTINGS = {"mode": str, "cluster_id": int, "shard": int, "num_shards": int}


def network_options(node_url: str) -> dict[str, object]:
    """REST transport options from ``UMBRA_WAKU_MODE``, ``UMBRA_WAKU_CLUSTER_ID``,
    ``UMBRA_WAKU_SHARD`` and ``UMBRA_WAKU_NUM_SHARDS`` (http(s) nodes only)."""
    if urlsplit(node_url).scheme.lower() not in ("http", "https"):
        return {}
    options: dict[str, object] = {}
    for name, kind in NETWORK_SETTINGS.items():
        variable = "UMBRA_WAKU_" + name.upper()
        text = os.environ.get(variable, "").strip()
        if not text:
            continue
        try:
            options[name] = kind(text)
        except ValueError:
            raise ConfigError(name, f"{variable}={text!r} is not a number") from None
    return options


def read_token_file(path: str | os.PathLike[str]) -> str:
    """A bot token from a file (surrounding whitespace ignored)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError("token_file", f"{path}: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError("token_file", f"{path} is empty")
    return token


async def provision(
    base_url: str, admin_token: str, name: str, token_file: str | os.PathLike[str]
) -> bool:
    """Make sure ``token_file`` holds a bot token: if it does not exist, create a bot called
    ``name`` on the bridge (with its admin token) and write its token there, mode 0600.
    Returns whether a bot was created. Used by compose.yaml's ``bot-tokens`` service."""
    path = Path(token_file)
    if path.exists():  # noqa: ASYNC240 -- one stat of a local file
        read_token_file(path)
        return False
    headers = {"Authorization": f"Bearer {admin_token.strip()}"}
    url = base_url.rstrip("/") + "/v1/bots"
    try:
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.post(url, json={"name": name}) as response,
        ):
            data = await response.json() if response.content_type == "application/json" else None
            if response.status != 201:
                raise _bridge_error(response.status, data)
    except aiohttp.ClientError as exc:
        raise NodeUnreachable(f"bridge {base_url}: {exc}") from None
    assert isinstance(data, dict)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(str(data["token"]) + "\n")
    temporary.replace(path)
    log.info("bot %s (%s) created; token in %s", name, data["client_address"], path)
    return True


def _provision_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m umbra_waku.bot provision",
        description="Create a bot on a bridge unless FILE already holds its token. The admin "
        "token comes from --admin-token-file or the environment (UMBRA_WAKU_ADMIN_TOKEN).",
    )
    parser.add_argument("--bridge", metavar="URL", required=True, help="the bridge's base URL")
    parser.add_argument("--name", required=True, help="the new bot's name")
    parser.add_argument("--token-file", metavar="FILE", required=True, help="where to keep it")
    parser.add_argument("--admin-token-file", metavar="FILE", help="read the admin token from FILE")
    args = parser.parse_args(argv)
    admin_token = (
        read_token_file(args.admin_token_file)
        if args.admin_token_file
        else os.environ.get("UMBRA_WAKU_ADMIN_TOKEN", "")
    )
    if not admin_token.strip():
        parser.error("no admin token: give --admin-token-file or set UMBRA_WAKU_ADMIN_TOKEN")

    async def main() -> int:
        created = await provision(args.bridge, admin_token, args.name, args.token_file)
        print(f"{args.token_file}: {'bot created' if created else 'exists'}", flush=True)
        return 0

    return run_program(main(), "provision")


def _content(text: str | Content | None) -> Content | None:
    if text is None or isinstance(text, Content):
        return text
    return Content.text(text)


if __name__ == "__main__":
    if sys.argv[1:2] != ["provision"]:
        sys.exit("usage: python -m umbra_waku.bot provision --help")
    sys.exit(_provision_main(sys.argv[2:]))
