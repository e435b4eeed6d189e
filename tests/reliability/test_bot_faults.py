"""Bots that misbehave: one that reads its event stream slowly (the bridge must apply
backpressure, not buffer), one that disappears for a long time and comes back (nothing lost,
nothing twice, in order). Real go-waku nodes; the peer talks to the bot from node A."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from realnodes.conftest import PairFactory

from umbra_waku.client import Backfilled, Classified

from .conftest import RealBridge, StartProcess
from .helpers import FAST_CLIENT, BotApi, Peer, report, settle

pytestmark = [pytest.mark.gowaku]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class RssSampler:
    """Samples a process's resident memory every 0.1 s."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                self.samples.append(rss_bytes(self.pid))
            except FileNotFoundError:  # the process is gone
                return
            await asyncio.sleep(0.1)

    def peak(self) -> int:
        return max(self.samples)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


MB = 1024 * 1024


async def flood(
    peer: Peer,
    conversations: list[str],
    texts: list[str],
    ws: aiohttp.ClientWebSocketResponse,
    *,
    stall: bool,
    stored: Callable[[], Awaitable[int]],
) -> tuple[list[dict[str, Any]], int]:
    """Send ``texts`` to the bot; it reads its stream at once (``stall=False``) or only once
    everything was sent and stored. Returns the events read and the most events that were
    stored but not yet read at one time."""
    received: list[dict[str, Any]] = []

    async def read() -> None:
        while len(received) < len(texts):
            message = await ws.receive(timeout=60)
            assert message.type is aiohttp.WSMsgType.TEXT, message
            received.append(json.loads(message.data))

    unread = 0
    if stall:
        await peer.send_spread(conversations, texts)
        for _ in range(600):  # until all are stored (at most 2 minutes)
            unread = await stored()
            if unread >= len(texts):
                break
            await asyncio.sleep(0.2)
        await read()
        return received, unread
    reader = asyncio.create_task(read())
    await peer.send_spread(conversations, texts)
    while not reader.done():
        unread = max(unread, await stored() - len(received))
        await asyncio.wait({reader}, timeout=0.25)
    await reader
    return received, unread


async def test_slow_bot_memory_stays_bounded(
    gowaku_pair_factory: PairFactory,
    bridge_process: StartProcess,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """The same flood twice on one bridge process: 800 messages of 32 KiB (25 MiB of events)
    over 20 conversations. First the bot reads its WebSocket stream as the events come (the
    control); then it stalls -- holds the stream open and reads nothing -- until all 800 are
    stored, and only then reads. The bridge sends a page at a time and waits for the socket to
    drain, so the backlog waits in the database: the bridge's peak resident memory with the
    stalled bot stays within a few MiB of the control's, far below the 25 MiB it was behind.
    (The stall lasts less than the WebSocket heartbeat, 30 s.) Every event arrives, in order,
    once, both times."""
    pair = await gowaku_pair_factory()
    process = await bridge_process(pair.b, tmp_path / "data")
    assert process.process is not None
    pid = process.process.pid
    bot = await BotApi.create(http, process, "slow")
    count, size, spread = 800, 32 * 1024, 20
    results: dict[str, Any] = {}

    async def last_seq() -> int:
        _, me = await _me(http, process.url, bot.auth)
        return int(me["last_seq"])

    async with Peer(pair.a) as peer, aiohttp.ClientSession() as ws_http:
        conversations = await peer.invite_many(bot.handle, spread)
        ws = await ws_http.ws_connect(
            process.url + "/v1/events", headers=bot.auth, max_msg_size=4 * MB
        )
        for _ in range(2 * spread):  # conversation_started + the invitation's text, each
            assert (await ws.receive(timeout=30)).type is aiohttp.WSMsgType.TEXT
        for phase in ("reading", "stalled"):
            texts = [f"{phase}-{i:05d}-" + "x" * (size - 16) for i in range(count)]
            base = await last_seq()
            sampler = RssSampler(pid)
            began = time.monotonic()

            async def stored(base: int = base) -> int:
                return await last_seq() - base

            received, unread = await flood(
                peer, conversations, texts, ws, stall=phase == "stalled", stored=stored
            )
            await sampler.stop()
            got = Counter(e.get("text") for e in received if e["type"] == "message")
            results[phase] = {
                "seqs_ok": [e["seq"] for e in received] == list(range(base + 1, base + count + 1)),
                "delivered": sum(1 for text in texts if got[text] >= 1),
                "duplicates": sum(n - 1 for n in got.values() if n > 1),
                "peak": sampler.peak(),
                "unread": unread,
                "seconds": time.monotonic() - began,
            }
        await ws.close()
    reading, stalled = results["reading"], results["stalled"]
    extra = stalled["peak"] - reading["peak"]
    backlog = stalled["unread"] * size
    report(
        "slow_bot_backpressure",
        count,
        stalled["delivered"],
        stalled["duplicates"],
        payload_kib=size // 1024,
        unread_events=stalled["unread"],
        unread_mib=f"{backlog / MB:.1f}",
        rss_peak_reading_bot_mib=f"{reading['peak'] / MB:.1f}",
        rss_peak_stalled_bot_mib=f"{stalled['peak'] / MB:.1f}",
        stall_seconds=f"{stalled['seconds']:.1f}",
    )
    for phase in ("reading", "stalled"):
        assert results[phase]["seqs_ok"], phase
        assert results[phase]["delivered"] == count, phase
        assert results[phase]["duplicates"] == 0, phase
    assert backlog >= 20 * MB
    assert extra < backlog / 3, f"{extra / MB:.1f} MiB more with the stalled bot"


async def _me(http: aiohttp.ClientSession, url: str, auth: dict[str, str]) -> tuple[int, Any]:
    async with http.get(url + "/v1/me", headers=auth) as response:
        return response.status, await response.json()


async def test_bot_away_for_minutes_resumes_without_loss(
    gowaku_pair_factory: PairFactory, real_bridge: RealBridge
) -> None:
    """A bot reads its WebSocket stream, then vanishes (its connection is dropped without a
    close frame, as when its process dies) while 2,000 messages arrive over 10 conversations,
    the node's REST cache overflows (capacity 50), the node restarts once and the bridge
    re-subscribes and backfills. The bot comes back with ``after=<last seq it processed>`` and
    gets everything that followed, in order, once.

    Time is compressed, not skipped: what minutes do to a bridge is run its periodic work --
    checkpoints (every 5 s in production; 0.05 s here, FAST_CLIENT), health probes (5 s; 0.1 s),
    resubscribe backoff (up to 30 s; 0.2 s) -- and let traffic pile up. ~15 s here run as many
    checkpoint cycles as ~25 minutes in production, with 2,000 messages of traffic, a cache
    overflow and a node restart in between. Nothing in the bridge waits on a bot or expires
    events by age, so wall-clock minutes add nothing else."""
    pair = await gowaku_pair_factory(rest_relay_cache_capacity=50, min_relay_peers_to_publish=0)
    h = await real_bridge(pair.b)
    bot = await h.create_bot("away")
    backfills: Counter[str] = Counter()

    def listen(event: object) -> None:
        if isinstance(event, Backfilled):
            backfills["client_backfills"] += 1
        elif isinstance(event, Classified) and event.source == "store" and not event.backfill:
            backfills["adapter_gap_fill_messages"] += 1

    h.bridge.client.add_listener(listen)
    texts = [f"away-{i:05d}" for i in range(2000)]
    url = h.http.make_url("/v1/events")
    async with Peer(pair.a) as peer:
        conversations = await peer.invite_many(bot, 10)
        first = aiohttp.ClientSession()
        ws = await first.ws_connect(url, headers=bot.auth)
        seen: list[dict[str, Any]] = []
        while len(seen) < 20:  # the 10 invitations (conversation_started + text)
            seen.append(json.loads((await ws.receive(timeout=30)).data))
        await peer.send_spread(conversations, texts[:100])
        while len(seen) < 120:
            seen.append(json.loads((await ws.receive(timeout=30)).data))
        # the bot process dies: its connection goes, no close frame
        await first.close()
        away_from = time.monotonic()
        checkpoints_before = dict(await h.bridge.store.checkpoints())

        async def restart_b() -> None:
            await pair.b.stop()
            await asyncio.sleep(2.0)
            await pair.b.start()

        restart = None
        for index in range(100, len(texts), 100):
            if index == 1000:
                restart = asyncio.create_task(restart_b())
            await peer.send_spread(conversations, texts[index : index + 100])
        assert restart is not None
        await restart
        expected_last = 20 + len(texts)
        registry = h.bridge.metrics.registry

        def stored_messages() -> float:
            found = registry.get_sample_value("umbra_bridge_events_total", {"type": "message"})
            return found or 0.0

        await settle(lambda: stored_messages() >= expected_last - 10, within=90)
        away = time.monotonic() - away_from
        gauge_after_drop = registry.get_sample_value("umbra_bridge_websockets")
        checkpoints_after = dict(await h.bridge.store.checkpoints())
        # the bot is back: resume after the last event it processed
        cursor = seen[-1]["seq"]
        async with aiohttp.ClientSession() as second:
            ws = await second.ws_connect(
                url.with_query(after=str(cursor)), headers=bot.auth, max_msg_size=1 << 20
            )
            resumed: list[dict[str, Any]] = []
            while len(resumed) < expected_last - cursor:
                message = await ws.receive(timeout=60)
                assert message.type is aiohttp.WSMsgType.TEXT, message
                resumed.append(json.loads(message.data))
            with pytest.raises(TimeoutError):
                await ws.receive(timeout=1.0)  # and nothing more
            await ws.close()
    events = seen + resumed
    got = Counter(e.get("text") for e in events if e["type"] == "message")
    advanced = sum(
        1 for topic, until in checkpoints_after.items() if until > checkpoints_before.get(topic, 0)
    )
    report(
        "bot_away_then_resumes",
        len(texts),
        sum(1 for text in texts if got[text] >= 1),
        sum(n - 1 for t, n in got.items() if t and t.startswith("away-") and n > 1),
        away_s=f"{away:.0f}",
        checkpoint_cycles=f"~{away / FAST_CLIENT.checkpoint_interval:.0f}",
        client_backfills=backfills["client_backfills"],
        adapter_gap_fill_messages=backfills["adapter_gap_fill_messages"],
        node_restarts=1,
    )
    assert [e["seq"] for e in events] == list(range(1, expected_last + 1))
    assert all(got[text] == 1 for text in texts), [t for t in texts if got[t] != 1][:10]
    assert gauge_after_drop == 0, "the dropped WebSocket was not noticed"
    assert advanced >= 1, "no checkpoint advanced while the bot was away"
    assert backfills["client_backfills"] >= 1
