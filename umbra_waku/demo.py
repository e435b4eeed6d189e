"""Watch two bots hold an end-to-end encrypted conversation through a bridge.

Everything runs in this process: an embedded Waku network (memory://), an umbra-waku bridge
serving its HTTP API on a loopback port (state in a temporary directory), and two bots, alice and
bob, that use the bridge exactly as external programs would (HTTP requests and the WebSocket event
stream). Alice invites bob, then they exchange a few messages both ways.

For each envelope the transcript shows who sent what, where it travelled, and how every party
classified it: the recipient reads it (readable), the sender's own session and eve, an outsider
watching every envelope on the network, get not_for_me. The demo records the classifications by
looking over the bridge's shoulder at each bot's session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from umbra_waku.bot import Bot, Message
from umbra_waku.bridge.api import make_app
from umbra_waku.bridge.service import Bridge
from umbra_waku.bridge.settings import load_settings
from umbra_waku.conversations.private import PRIVATE_TOPIC
from umbra_waku.frames import BadlyFormed, Classification, Invitation, NotForMe, Readable
from umbra_waku.identity import Identity, inbox_address_of, inbox_content_topic
from umbra_waku.session import Session
from umbra_waku.transport import Subscription, connect

WAIT = 15.0  # seconds any one step may take before the demo gives up

SCRIPT: tuple[tuple[str, str], ...] = (
    ("alice", "Hi Bob, it's Alice. Shall we talk privately?"),
    ("bob", "Hello Alice! Yes: only the two of us can read this."),
    ("alice", "Everyone on the network sees our envelopes, but not who they are for."),
    ("bob", "And each one carries a fresh hint, so they cannot even be linked."),
    ("alice", "Perfect. Talk soon!"),
    ("bob", "Bye for now."),
)

PARTIES = ("alice", "bob", "eve")


def _message_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value < len(SCRIPT):
        raise argparse.ArgumentTypeError(f"must be a number from 1 to {len(SCRIPT) - 1}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--messages",
        type=_message_count,
        default=4,
        metavar="N",
        help=f"messages exchanged after the invitation (1 to {len(SCRIPT) - 1}; default: 4)",
    )


async def run(args: argparse.Namespace) -> int:
    messages: int = args.messages
    try:
        return await Demo(SCRIPT[: messages + 1]).run()
    except TimeoutError as exc:
        print(f"umbra-waku demo: gave up waiting ({exc})", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------------------
# Observing classifications
# ---------------------------------------------------------------------------------------------


def _digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def describe(result: Classification) -> str:
    if isinstance(result, Readable):
        return f"readable ({result.conversation_type})"
    if isinstance(result, BadlyFormed):
        return f"badly_formed ({result.reason})"
    return "not_for_me"


@dataclass
class Envelope:
    """One envelope seen on the network, and each party's classification of it."""

    number: int
    content_topic: str
    size: int
    outcomes: dict[str, Classification] = field(default_factory=dict)

    @property
    def hint(self) -> str:
        """The envelope's conversation hint (every party's result carries it)."""
        for outcome in self.outcomes.values():
            if outcome.hint:
                return outcome.hint
        return "?"


class Observer:
    """Records how each bot's session (inside the bridge) and eve classify each envelope.

    The bridge's client asks a session to classify an envelope only when it may concern it, and
    stops at the first session that reads it. To show every party's view, the first time the
    client consults any bot's session about an envelope, the observer has every bot's session
    classify it (each exactly once, as the client would) and hands each session's result to the
    client when it asks.
    """

    def __init__(self) -> None:
        self.envelopes: dict[bytes, Envelope] = {}
        self.changed = asyncio.Event()
        self._classify: dict[str, Callable[[bytes, str | None], Classification]] = {}
        self._waiting: dict[tuple[bytes, str], Classification] = {}

    def envelope(self, payload: bytes, content_topic: str) -> Envelope:
        key = _digest(payload)
        found = self.envelopes.get(key)
        if found is None:
            found = Envelope(len(self.envelopes) + 1, content_topic, len(payload))
            self.envelopes[key] = found
        return found

    def watch(self, name: str, session: Session) -> None:
        original = session.classify
        self._classify[name] = original
        # Session.classify is an instance attribute (its native fast path): replaced for this one.
        session.classify = functools.partial(self._classified, name)

    def _classified(
        self, name: str, data: bytes, content_topic: str | None = None
    ) -> Classification:
        key = _digest(data)
        result = self._waiting.pop((key, name), None)
        if result is not None:
            return result
        envelope = self.envelope(data, content_topic or "")
        for other, classify in self._classify.items():
            outcome = classify(data, content_topic)
            envelope.outcomes[other] = outcome
            if other != name:
                self._waiting[key, other] = outcome
        self.changed.set()
        return envelope.outcomes[name]

    def record(self, name: str, payload: bytes, content_topic: str, result: Classification) -> None:
        self.envelope(payload, content_topic).outcomes[name] = result
        self.changed.set()

    async def wait_for(self, number: int) -> Envelope:
        """Envelope ``number`` once every party has classified it."""
        async with asyncio.timeout(WAIT):
            while True:
                for envelope in self.envelopes.values():
                    if envelope.number == number and set(envelope.outcomes) >= set(PARTIES):
                        return envelope
                self.changed.clear()
                await self.changed.wait()


async def watch_network(eve: Session, subscription: Subscription, observer: Observer) -> None:
    """Eve: an outsider who sees every envelope on the topics the bots use."""
    async for received in subscription:
        message = received.message
        result = eve.classify(message.payload, message.content_topic)
        observer.record("eve", message.payload, message.content_topic, result)


# ---------------------------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------------------------


class Inbox:
    """What one bot received (its on_message handler)."""

    def __init__(self, bot: Bot) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        bot.on_message(self.queue.put)

    async def next(self) -> Message:
        async with asyncio.timeout(WAIT):
            return await self.queue.get()


def short(value: str, head: int = 8) -> str:
    value = value.removeprefix("0x")
    return f"{value[:head]}...{value[-4:]}"


def short_topic(content_topic: str) -> str:
    """``/umbra/1/inbox-<64 hex>/proto`` -> ``/umbra/1/inbox-a867f2e6...b153/proto``."""
    prefix = "/umbra/1/inbox-"
    if content_topic.startswith(prefix):
        return f"{prefix}{short(content_topic[len(prefix) : -len('/proto')])}/proto"
    return content_topic


def say(text: str = "") -> None:
    print(text, flush=True)


@contextlib.contextmanager
def _data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="umbra-waku-demo-") as directory:
        yield Path(directory)


class Demo:
    def __init__(self, script: tuple[tuple[str, str], ...]) -> None:
        self.script = script
        self.node = f"memory://umbra-demo-{secrets.token_hex(4)}"
        self.observer = Observer()

    async def run(self) -> int:
        with _data_dir() as data_dir:
            async with self._bridge(data_dir) as (bridge, url, admin_token):
                return await self._converse(bridge, url, admin_token)

    @contextlib.asynccontextmanager
    async def _bridge(self, data_dir: Path) -> AsyncIterator[tuple[Bridge, str, str]]:
        admin_token = secrets.token_urlsafe(24)
        settings = load_settings(
            {
                "node": self.node,
                "data_dir": data_dir / "bridge",
                "listen": "127.0.0.1:0",
                "admin_token": admin_token,
                "log_level": "WARNING",
            }
        )
        bridge = Bridge(settings)
        await bridge.start()
        runner = web.AppRunner(make_app(bridge), handle_signals=False, access_log=None)
        try:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            yield bridge, f"http://{host}:{port}", admin_token
        finally:
            bridge.begin_drain()
            await runner.cleanup()
            await bridge.stop()

    async def _converse(self, bridge: Bridge, url: str, admin_token: str) -> int:
        observer = self.observer
        tokens: dict[str, str] = {}
        addresses: dict[str, str] = {}
        headers = {"Authorization": f"Bearer {admin_token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for name in ("alice", "bob"):
                async with http.post(f"{url}/v1/bots", json={"name": name}) as response:
                    response.raise_for_status()
                    created = await response.json()
                tokens[name] = created["token"]
                addresses[name] = created["client_address"]
        for name in ("alice", "bob"):
            observer.watch(name, bridge.client.sessions[addresses[name]])

        eve = Session(Identity.generate())
        topics = sorted(
            {inbox_content_topic(inbox_address_of(a)) for a in addresses.values()} | {PRIVATE_TOPIC}
        )
        async with connect(self.node) as transport:
            subscription = await transport.subscribe(topics)
            watcher = asyncio.create_task(watch_network(eve, subscription, observer))
            bots = {name: Bot.via_bridge(url, tokens[name], name=name) for name in tokens}
            inboxes = {name: Inbox(bot) for name, bot in bots.items()}
            try:
                async with bots["alice"], bots["bob"]:
                    self._header(url, addresses, eve.identity.client_address)
                    await self._exchange(bots, inboxes, addresses)
            finally:
                await subscription.close()
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        self._summary()
        return 0

    def _header(self, url: str, addresses: dict[str, str], eve: str) -> None:
        say("umbra-waku demo: two bots, one bridge, end-to-end encrypted over Waku")
        say()
        say(f"  network  {self.node:<34} in-process Waku relay and store")
        say(f"  bridge   {url:<34} HTTP API + WebSocket events, SQLite")
        for name in ("alice", "bob"):
            say(f"  {name:<7}  {short(addresses[name]):<34} a bot using the bridge")
        say(f"  eve      {short(eve):<34} an outsider who sees every envelope")

    async def _exchange(
        self, bots: dict[str, Bot], inboxes: dict[str, Inbox], addresses: dict[str, str]
    ) -> None:
        conversation: dict[str, str] = {}
        for number, (sender, text) in enumerate(self.script, start=1):
            recipient = "bob" if sender == "alice" else "alice"
            say()
            if number == 1:
                say(f'[{number}] {sender} -> {recipient}: invitation with "{text}"')
                conversation[sender] = await bots[sender].invite(addresses[recipient], text)
            else:
                say(f'[{number}] {sender} -> {recipient}: "{text}"')
                await bots[sender].send(conversation[sender], text)
            received = await inboxes[recipient].next()
            conversation.setdefault(recipient, received.conversation_id)
            envelope = await self.observer.wait_for(number)
            say(
                f"    envelope #{envelope.number}: {envelope.size} bytes on "
                f"{short_topic(envelope.content_topic)}, hint {short(envelope.hint)}"
            )
            for party in PARTIES:
                say(f"      {party:<6} {self._outcome(envelope.outcomes[party])}")
            names = {address: name for name, address in addresses.items()}
            sender_name = names.get(received.sender or "", "?")
            say(f'    {recipient} received "{received.text}" from {sender_name} (authenticated)')

    @staticmethod
    def _outcome(result: Classification) -> str:
        line = describe(result)
        if isinstance(result, Readable) and isinstance(result.frame, Invitation):
            line += f", new conversation {short(result.frame.conversation_id.rsplit('/', 1)[-1])}"
        return line

    def _summary(self) -> None:
        envelopes = list(self.observer.envelopes.values())
        counts = {
            party: sum(isinstance(e.outcomes.get(party), Readable) for e in envelopes)
            for party in PARTIES
        }
        unreadable = sum(
            isinstance(e.outcomes.get("eve"), NotForMe | BadlyFormed) for e in envelopes
        )
        say()
        say(
            f"summary: {len(envelopes)} envelopes; alice read {counts['alice']}, "
            f"bob read {counts['bob']}, eve read {counts['eve']} "
            f"({unreadable} not_for_me)"
        )
