"""End to end over the embedded network: bot to bot through one bridge process.

Both bots are written as a user writes one: ``umbra_waku.bot.Bot.via_bridge`` (the bot SDK).
Bot A calls ``bot.send(conversation_id, text)``; the SDK sends a lone message with ``POST
/v1/conversations/{id}/messages`` and coalesces the sends made while a request is in flight into
one ``POST /v1/messages`` batch. Bot B's ``@on_message`` handler records the arrival; the SDK
reads the WebSocket event stream (``/v1/events?batch=true``: a frame carries the events of one
page). Both bots live in one bridge on ``memory://``, so a batch goes HTTP -> seal -> SQLite
(sealed, one transaction) -> embedded relay -> classify -> SQLite (received, one transaction
per batch the client's queue held) -> WebSocket. The bridge runs in its own process (``python
-m umbra_waku.bridge``), the bots in this one, as in a deployment.

- throughput: ``concurrency`` requests in flight until ``count`` messages arrived at B;
- latency: an open-loop sender at half that rate; latency is from the POST being issued to the
  event arriving on B's WebSocket. Also at a light fixed load (50 messages/s), where nothing
  queues: the cost of one message through the bridge.

Measured side by side (interleaved rounds, median), with the same client code:

- ``floor``: benchmarks/floor_server.py, the same routes (the batch route too) with nothing behind
  them (no auth, crypto, storage or Waku), driven by the same SDK: the most the HTTP requests in
  and WebSocket frames out allow on this machine. ``e2e_embedded_vs_floor`` is the bridge's
  share of that.
- ``tmpfs`` (full run only): the bridge with its data directory on /dev/shm, where an fsync costs
  nothing: ``e2e_embedded_disk_vs_tmpfs`` is what the durable writes cost (``synchronous=FULL``;
  per batch, group-committed: sealed, published, received).

During the throughput rounds the CPU time of the server process (every thread) and of this one
(the bots' SDK) is read from /proc: ``e2e_bridge_cpu_us_per_msg``, ``e2e_sdk_cpu_us_per_msg`` and
``e2e_floor_cpu_us_per_msg`` (rate x CPU per message = the share of a core the bridge used).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Protocol

from benchmarks.common import (
    BridgeClient,
    CpuMeter,
    commit_ms,
    database_bytes,
    percentile,
    running_bridge,
    running_floor,
    scaled,
    scratch_dir,
)
from umbra_waku.bot import Bot, Conversation, Message

#: Messages per second of the light-load latency run.
LIGHT_RATE = 50.0
#: A run ends when its last message arrived, or when none arrived for this many seconds: the
#: missing ones count as lost (and are reported), instead of hanging the benchmark.
IDLE = 8.0


class Arrivals:
    """When each numbered message arrived (``perf_counter``), and a way to wait for a run."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}
        self.lost = 0
        self._changed = asyncio.Event()
        self._watch: range | None = None
        self._remaining = 0

    def arrived(self, number: int) -> None:
        if number in self.times:
            return
        self.times[number] = time.perf_counter()
        if self._watch is not None and number in self._watch:
            self._remaining -= 1
        self._changed.set()

    async def settle(self, numbers: range, idle: float = IDLE) -> list[int]:
        """Wait until every message in ``numbers`` arrived, or none arrived for ``idle`` seconds;
        the numbers that arrived."""
        self._watch = numbers
        self._remaining = sum(1 for n in numbers if n not in self.times)
        try:
            while self._remaining > 0:
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), idle)
                except TimeoutError:
                    break
        finally:
            self._watch = None
        arrived = [n for n in numbers if n in self.times]
        self.lost += len(numbers) - len(arrived)
        return arrived


class Sender(Protocol):
    arrivals: Arrivals

    async def send(self, number: int) -> None: ...


class Pair:
    """Bot A on ``sender`` and bot B on ``receiver`` (the same bridge, or two) in one conversation,
    both run by the bot SDK (:class:`umbra_waku.bot.Bot`), B's handler recording arrivals.
    Messages are numbered by their text."""

    def __init__(self, sender: BridgeClient, receiver: BridgeClient | None = None) -> None:
        self.sender = sender
        self.receiver = receiver or sender
        self.arrivals = Arrivals()
        self.conversation = ""
        self._bots: list[Bot] = []

    async def setup(self, within: float = 30) -> None:
        self.a = await self.sender.create_bot()
        self.b = await self.receiver.create_bot()
        ready = asyncio.get_running_loop().create_future()
        bot_a = Bot.via_bridge(self.sender.url, self.a.token, name="bench-a")
        bot_b = Bot.via_bridge(self.receiver.url, self.b.token, name="bench-b")
        arrived = self.arrivals.arrived

        @bot_b.on_conversation
        async def started(conversation: Conversation) -> None:
            if not ready.done():
                ready.set_result(None)

        @bot_b.on_message
        async def message(message: Message) -> None:
            arrived(int((message.text or "0").split(" ", 1)[0]))

        for bot in (bot_a, bot_b):
            await bot.start()
            self._bots.append(bot)
        self.bot = bot_a
        self.conversation = await bot_a.invite(self.b.client_address)
        await asyncio.wait_for(ready, within)

    async def send(self, number: int) -> None:
        await self.bot.send(self.conversation, f"{number} " + "x" * 64)

    async def close(self) -> None:
        for bot in self._bots:
            with contextlib.suppress(Exception):
                await bot.stop()


async def throughput(pair: Sender, first: int, count: int, concurrency: int) -> float:
    """Messages per second that arrived, from the first POST to the last arrival."""
    numbers = iter(range(first, first + count))

    async def worker() -> None:
        for number in numbers:
            await pair.send(number)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    arrived = await pair.arrivals.settle(range(first, first + count))
    if not arrived:
        raise RuntimeError("no message arrived")
    return len(arrived) / (max(pair.arrivals.times[n] for n in arrived) - started)


async def latencies(pair: Sender, first: int, count: int, per_second: float) -> list[float]:
    """Seconds from POST to arrival of the messages (of ``count``) that arrived, sent open-loop at
    ``per_second``."""
    sent: dict[int, float] = {}
    tasks = []

    async def one(number: int) -> None:
        sent[number] = time.perf_counter()
        await pair.send(number)

    began = time.perf_counter()
    for i in range(count):
        delay = began + i / per_second - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(first + i)))
    await asyncio.gather(*tasks)
    arrived = await pair.arrivals.settle(range(first, first + count))
    return [pair.arrivals.times[n] - sent[n] for n in arrived]


async def _measure(
    quick: bool, scale: float, node: str, data_dirs: dict[str, Path]
) -> dict[str, float]:
    count = scaled(400 if quick else 3_000, scale, 10)
    rounds = scaled(2 if quick else 3, scale, 1)
    latency_seconds = (2.0 if quick else 8.0) * scale
    warm_up = scaled(100, scale, 5)
    concurrency = 16
    async with contextlib.AsyncExitStack() as stack:
        pairs: dict[str, Pair] = {}
        servers = {
            label: running_bridge(f"memory://{node}-{label}", data_dir)
            for label, data_dir in data_dirs.items()
        }
        servers["floor"] = running_floor()
        meters: dict[str, CpuMeter] = {}
        for label, server in servers.items():
            client = await stack.enter_async_context(server)
            pair = Pair(client)
            stack.push_async_callback(pair.close)
            await pair.setup()
            pairs[label] = pair
            # CPU of the server process and of this one (the bots' SDK) during throughput rounds
            meters[label] = CpuMeter({"server": [client.pid], "client": [os.getpid()]})
        next_number = dict.fromkeys(pairs, 1)

        def take(label: str, n: int) -> int:
            first = next_number[label]
            next_number[label] += n
            return first

        # warm-up: first requests pay for connections and lazily built objects
        for label, pair in pairs.items():
            await throughput(pair, take(label, warm_up), warm_up, concurrency)

        db_before = database_bytes(pairs["disk"].sender.data_dir)
        first_measured = next_number["disk"]
        rates: dict[str, list[float]] = {label: [] for label in pairs}
        for _ in range(rounds):  # interleaved: disk, tmpfs, floor, disk, tmpfs, floor, ...
            for label, pair in pairs.items():
                n = count * 3 if label == "floor" else count
                meters[label].start()
                rates[label].append(await throughput(pair, take(label, n), n, concurrency))
                meters[label].stop()
        rate = {label: statistics.median(values) for label, values in rates.items()}
        measured = {label: (count * 3 if label == "floor" else count) * rounds for label in pairs}
        cpu = {
            label: {name: used / measured[label] * 1e6 for name, used in meter.used.items()}
            for label, meter in meters.items()
        }

        lat: dict[str, list[float]] = {}
        for label, pair in pairs.items():
            target = rate["disk"] / 2  # every server at the same load: half the bridge's rate
            n = max(scaled(100, scale, 10), int(target * latency_seconds))
            lat[label] = await latencies(pair, take(label, n), n, target)
        # and at a light, fixed load: what one message costs when nothing queues
        n = max(scaled(100, scale, 10), int(LIGHT_RATE * latency_seconds))
        light = await latencies(pairs["disk"], take("disk", n), n, LIGHT_RATE)
        sent = next_number["disk"] - first_measured
        grown = database_bytes(pairs["disk"].sender.data_dir) - db_before

    out = {
        "e2e_disk_commit_ms": commit_ms(data_dirs["disk"].parent),
        "e2e_embedded_msgs_per_s": rate["disk"],
        "e2e_embedded_p50_ms": percentile(lat["disk"], 0.5) * 1000,
        "e2e_embedded_p99_ms": percentile(lat["disk"], 0.99) * 1000,
        "e2e_embedded_latency_at_per_s": rate["disk"] / 2,
        "e2e_embedded_light_p50_ms": percentile(light, 0.5) * 1000,
        "e2e_embedded_light_p99_ms": percentile(light, 0.99) * 1000,
        "e2e_floor_msgs_per_s": rate["floor"],
        "e2e_embedded_vs_floor": rate["disk"] / rate["floor"],
        "e2e_floor_p99_ms": percentile(lat["floor"], 0.99) * 1000,
        "db_bytes_per_1k_messages": grown / sent * 1000,
        "e2e_lost_messages": float(pairs["disk"].arrivals.lost),
        # CPU per message during the throughput rounds: the bridge process (every thread), the
        # benchmark process (both bots' SDK); and the floor server's, for scale
        "e2e_bridge_cpu_us_per_msg": cpu["disk"]["server"],
        "e2e_sdk_cpu_us_per_msg": cpu["disk"]["client"],
        "e2e_floor_cpu_us_per_msg": cpu["floor"]["server"],
    }
    if "tmpfs" in rate:
        out["e2e_embedded_tmpfs_msgs_per_s"] = rate["tmpfs"]
        out["e2e_embedded_disk_vs_tmpfs"] = rate["disk"] / rate["tmpfs"]
        out["e2e_embedded_tmpfs_p99_ms"] = percentile(lat["tmpfs"], 0.99) * 1000
    return out


def run(*, quick: bool, scale: float = 1.0, tmpfs: bool | None = None) -> dict[str, float]:
    """``tmpfs``: also measure a bridge whose data directory is on /dev/shm (default: not in
    --quick, to stay under a minute)."""
    if tmpfs is None:
        tmpfs = not quick
    node = f"bench-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        dirs = {"disk": stack.enter_context(scratch_dir()) / "data"}
        if tmpfs and Path("/dev/shm").is_dir():
            dirs["tmpfs"] = stack.enter_context(scratch_dir("/dev/shm")) / "data"
        return asyncio.run(_measure(quick, scale, node, dirs))
