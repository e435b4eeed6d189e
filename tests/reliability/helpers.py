"""Shared pieces of the reliability suite: bridges on real go-waku nodes, peers that talk to
their bots, and the machine-readable summary line every scenario prints.

Each scenario ends with :func:`report`, which prints (and collects, for the terminal summary and
for ``UMBRA_WAKU_RELIABILITY_OUT``) one line::

    RELIABILITY scenario=<name> sent=N delivered=N lost=0 duplicates=0 [key=value ...]

``tests/reliability/report.py`` turns those lines into the table of docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from bridge.conftest import FAST_CLIENT, BotHandle, Harness, wait_ready
from bridge.process import BridgeProcess, request
from realnodes.harness import CLUSTER_ID, PUBSUB_TOPIC, GoWakuNode

from umbra_waku.bridge.api import make_app
from umbra_waku.bridge.service import Bridge
from umbra_waku.bridge.settings import BridgeSettings
from umbra_waku.client import ClientOptions, Delivery, MessageReceived, UmbraClient
from umbra_waku.identity import Identity
from umbra_waku.transport import Transport, connect

__all__ = [
    "FAST_CLIENT",
    "PUBSUB_TOPIC",
    "BotHandle",
    "Harness",
    "Peer",
    "Tally",
    "node_transport",
    "report",
    "start_real_bridge",
]

#: Every RELIABILITY line printed in this test session (the terminal summary shows them).
RESULTS: list[str] = []
#: Also appended to this file, if set. Read at import: tests/bridge's autouse fixture removes
#: every UMBRA_WAKU_* variable from the environment while a test runs.
RESULTS_FILE = os.environ.get("UMBRA_WAKU_RELIABILITY_OUT")


def report(scenario: str, sent: int, delivered: int, duplicates: int = 0, **extra: Any) -> str:
    """Print and collect the scenario's summary line; ``lost`` is ``sent - delivered``."""
    parts = [
        f"scenario={scenario}",
        f"sent={sent}",
        f"delivered={delivered}",
        f"lost={sent - delivered}",
        f"duplicates={duplicates}",
    ]
    parts += [f"{key}={str(value).replace(' ', '_')}" for key, value in extra.items()]
    line = "RELIABILITY " + " ".join(parts)
    print(line, flush=True)
    RESULTS.append(line)
    if RESULTS_FILE:
        with Path(RESULTS_FILE).open("a", encoding="utf-8") as sink:
            sink.write(line + "\n")
    return line


def node_transport(node: GoWakuNode, **options: Any) -> Transport:
    """The REST adapter for a go-waku node of the realnodes harness: static shard 42/0, its cache
    capacity, quick polling and recovery (each scenario overrides what it probes)."""
    settings: dict[str, Any] = {
        "pubsub_topic": PUBSUB_TOPIC,
        "cluster_id": CLUSTER_ID,
        "poll_interval": 0.1,
        "retry_max_backoff": 1.0,
        "relay_cache_capacity": node.config.rest_relay_cache_capacity,
        "start_timeout": 30.0,
    }
    settings.update(options)
    return connect(node.rest_url, **settings)


async def start_real_bridge(
    aiohttp_client: Any,
    node: GoWakuNode,
    data_dir: Path,
    *,
    client_options: ClientOptions = FAST_CLIENT,
    transport: Transport | None = None,
    wait: bool = True,
    **settings: Any,
) -> Harness:
    """An in-process bridge on ``node`` with its HTTP API (the Harness of tests/bridge)."""
    values: dict[str, Any] = {
        "node": node.rest_url,
        "data_dir": data_dir,
        "publish_wait": 5.0,
        "backfill_margin": client_options.backfill_margin,
        **settings,
    }
    bridge = Bridge(
        BridgeSettings(**values),
        transport=transport if transport is not None else node_transport(node),
        client_options=client_options,
    )
    await bridge.start()
    http = await aiohttp_client(make_app(bridge))
    admin = settings.get("admin_token") or (data_dir / "admin.token").read_text().strip()
    harness = Harness(bridge, http, admin)
    if wait:
        await wait_ready(harness, within=60.0)
    return harness


@dataclass
class Tally:
    """What one bot received, by text: delivered (distinct) and duplicated texts."""

    texts: Counter[str] = field(default_factory=Counter)
    last_seq: int = 0
    seqs: list[int] = field(default_factory=list)

    def add(self, events: Iterable[dict[str, Any]], prefix: str = "") -> None:
        for event in events:
            self.seqs.append(event["seq"])
            self.last_seq = max(self.last_seq, event["seq"])
            text = event.get("text")
            if event["type"] == "message" and text is not None and text.startswith(prefix):
                self.texts[text] += 1

    def delivered(self, sent: Iterable[str]) -> int:
        return len(set(sent) & set(self.texts))

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.texts.values() if n > 1)

    def missing(self, sent: Iterable[str]) -> list[str]:
        return [text for text in sent if text not in self.texts]


async def settle(check: Callable[[], bool], within: float, interval: float = 0.1) -> bool:
    """Poll ``check`` until it is true or ``within`` seconds pass; returns its last value."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


async def poll_events(
    h: Harness, bot: BotHandle, after: int = 0, wait: float = 0.0, limit: int = 1000
) -> list[dict[str, Any]]:
    """One page of a bot's events after ``after`` (long-polling up to ``wait`` seconds)."""
    response = await h.http.get(
        "/v1/events/poll",
        params={"after": after, "timeout": f"{max(wait, 0.0):.3f}", "limit": limit},
        headers=bot.auth,
    )
    assert response.status == 200, await response.text()
    events: list[dict[str, Any]] = (await response.json())["events"]
    return events


async def collect_events(
    h: Harness,
    bot: BotHandle,
    tally: Tally,
    expected: list[str],
    *,
    within: float,
    prefix: str = "",
) -> None:
    """Poll the bot's events until every expected text arrived (or ``within`` passes), then
    once more briefly to catch late duplicates."""
    deadline = time.monotonic() + within
    while tally.missing(expected) and time.monotonic() < deadline:
        page = await poll_events(h, bot, tally.last_seq, min(1.0, deadline - time.monotonic()))
        tally.add(page, prefix)
    await asyncio.sleep(1.0)
    tally.add(await poll_events(h, bot, tally.last_seq), prefix)


class Peer:
    """An application on another node that talks to bots: an UmbraClient of its own."""

    def __init__(self, node: GoWakuNode, **transport_options: Any) -> None:
        self.identity = Identity.generate()
        self.client = UmbraClient(
            self.identity, node_transport(node, **transport_options), options=FAST_CLIENT
        )
        self.received: list[MessageReceived] = []
        self._remove = self.client.add_listener(self._on_event)

    def _on_event(self, event: object) -> None:
        if isinstance(event, MessageReceived):
            self.received.append(event)

    def texts(self) -> Counter[str]:
        return Counter(event.content.as_text() or "" for event in self.received)

    async def __aenter__(self) -> Peer:
        await self.client.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.client.close()

    async def invite(self, bot: BotHandle, text: str) -> str:
        sent = await self.client.invite(bot.client_address, text)
        assert await sent.wait(30) is Delivery.PUBLISHED
        return sent.conversation_id

    async def invite_many(self, bot: BotHandle, count: int, text: str = "hello") -> list[str]:
        return [await self.invite(bot, f"{text} {i}") for i in range(count)]

    async def send_spread(
        self, conversations: list[str], texts: Iterable[str], *, interval: float = 0.0
    ) -> None:
        """Send ``texts`` round-robin over ``conversations``, each published before the next
        (a bot with many conversations, as a busy bot has)."""
        for index, text in enumerate(texts):
            await self.send_all(conversations[index % len(conversations)], [text])
            if interval:
                await asyncio.sleep(interval)

    async def send_all(
        self, conversation_id: str, texts: Iterable[str], *, interval: float = 0.0
    ) -> None:
        """Send one by one, each published (accepted by the node) before the next."""
        for text in texts:
            sent = await self.client.send(conversation_id, text)
            delivery = await sent.wait(60)
            assert delivery is Delivery.PUBLISHED, (text, delivery)
            if interval:
                await asyncio.sleep(interval)


class BotApi:
    """A bot's view of a bridge process: its token, and the bridge's URL (which may restart)."""

    def __init__(self, http: aiohttp.ClientSession, url: str, created: dict[str, Any]) -> None:
        self.http = http
        self.url = url
        self.bot_id: str = created["bot_id"]
        self.address: str = created["client_address"]
        self.auth = {"Authorization": f"Bearer {created['token']}"}
        self.token: str = created["token"]

    @classmethod
    async def create(cls, http: aiohttp.ClientSession, process: BridgeProcess, name: str) -> BotApi:
        status, body = await request(
            http, "POST", process.url + "/v1/bots", json={"name": name}, headers=process.admin()
        )
        assert status == 201, body
        return cls(http, process.url, body)

    async def poll(self, after: int, wait: float = 1.0, limit: int = 1000) -> list[dict[str, Any]]:
        status, body = await request(
            self.http,
            "GET",
            self.url + "/v1/events/poll",
            params={"after": after, "timeout": wait, "limit": limit},
            headers=self.auth,
        )
        assert status == 200, body
        events: list[dict[str, Any]] = body["events"]
        return events

    async def send(self, conversation: str, text: str) -> int:
        status, _ = await request(
            self.http,
            "POST",
            f"{self.url}/v1/conversations/{conversation}/messages",
            json={"text": text},
            headers=self.auth,
        )
        return status

    async def all_events(
        self, expect: Callable[[list[dict[str, Any]]], bool], within: float
    ) -> list[dict[str, Any]]:
        """Every event from seq 1, re-read until ``expect(events)`` or ``within`` passes."""
        deadline = time.monotonic() + within
        while True:
            events: list[dict[str, Any]] = []
            while True:
                page = await self.poll(events[-1]["seq"] if events else 0, wait=0)
                events += page
                if len(page) < 1000:
                    break
            if expect(events) or time.monotonic() > deadline:
                return events
            await asyncio.sleep(0.5)

    @property
    def handle(self) -> BotHandle:
        """The same bot as tests/bridge's BotHandle (what Peer.invite takes)."""
        return BotHandle(self.bot_id, self.token, self.address)


def texts_of(events: list[dict[str, Any]], prefix: str) -> Counter[str]:
    return Counter(
        e["text"] for e in events if e["type"] == "message" and e.get("text", "").startswith(prefix)
    )


async def conversation_of(bot: BotApi, within: float = 30) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for event in await bot.poll(0, wait=1):
            if event["type"] == "conversation_started":
                conversation: str = event["conversation_id"]
                return conversation
    raise AssertionError("the invitation never arrived")
