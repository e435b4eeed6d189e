"""Over real go-waku REST nodes: the bridge beside a minimal direct REST client.

Two go-waku v0.10.1 nodes, A and B, relay-peered on loopback inside a private network namespace,
started by the real-node test harness (tests/realnodes/harness.py: ``Sandbox``,
``start_gowaku_pair``); each also relays a second shard, so that both contenders run on the same
two nodes without draining each other's REST cache (a relay GET is a destructive read):

- bridge: bridge X on node A hosts bot A, bridge Y on node B hosts bot B (``--cluster-id 42
  --shard 0``); bot A POSTs to X, bot B reads Y's WebSocket event stream. X seals, stores and
  publishes with POST /relay/v1/messages to A; gossipsub carries it to B; Y polls B with GET
  /relay/v1/messages, classifies, decrypts, stores and pushes the event.
- direct: plain aiohttp, on shard 1: POST /relay/v1/messages to A with a payload of the size of
  the bridge's envelopes, GET /relay/v1/messages on B every 0.2 s (the REST adapter's default
  poll interval, which the bridge uses).

The bots are run by the bot SDK (``Bot.via_bridge``, benchmarks/e2e.py's ``Pair``), which coalesces
concurrent sends into ``POST /v1/messages`` batches; the direct client is one POST per message.

Throughput: 16 concurrent senders (16 requests in flight for the direct client), until the last
message arrived; median of interleaved rounds.
A message that has not arrived after 8 s without any arrival counts as lost (``*_lost_messages``)
and the run's rate counts the ones that arrived.
Latency: both at the same open-loop rate (half the bridge's throughput), from the POST being
issued to the arrival at the receiving end; the added p50 comes with a 95% bootstrap interval,
because the 0.2 s poll phase spreads both distributions over 200 ms.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import statistics
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from benchmarks.common import (
    CpuMeter,
    percentile,
    repo_on_path,
    running_bridge,
    scaled,
    scratch_dir,
)
from benchmarks.e2e import Arrivals, Pair, Sender, latencies, throughput
from umbra_waku import Content, Identity, Session
from umbra_waku.conversations.private import PRIVATE_TOPIC
from umbra_waku.waku.message import WakuMessage

POLL_INTERVAL = 0.2  # umbra_waku_rest.RestOptions.poll_interval, the bridge's (not configurable)
DIRECT_SHARD = 1


class Unavailable(Exception):
    """go-waku cannot run here (no binary, no network namespace): the suite is skipped."""


class DirectPair:
    """The direct client: publish on node A, poll node B, both over plain aiohttp."""

    def __init__(self, publish_url: str, poll_url: str, pubsub_topic: str, size: int) -> None:
        self.publish_url = publish_url
        self.poll_url = poll_url
        self.pubsub_topic = pubsub_topic
        self.topic = quote(pubsub_topic, safe="")
        self.size = size
        self.arrivals = Arrivals()
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=30)
        )
        self._poller: asyncio.Task[None] | None = None
        self.polls = 0

    async def setup(self) -> None:
        for url in (self.publish_url, self.poll_url):
            async with self.http.post(
                url + "/relay/v1/subscriptions", json=[self.pubsub_topic]
            ) as response:
                if response.status != 200:
                    raise RuntimeError(f"subscribe {url}: {response.status}")
        self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        url = f"{self.poll_url}/relay/v1/messages/{self.topic}"
        while True:
            async with self.http.get(url) as response:
                body = await response.json(content_type=None) if response.status == 200 else None
            self.polls += 1
            for item in body or []:
                payload = base64.b64decode(item.get("payload") or "")
                if len(payload) >= 8:
                    self.arrivals.arrived(struct.unpack_from(">Q", payload)[0])
            await asyncio.sleep(POLL_INTERVAL)

    async def send(self, number: int) -> None:
        repo_on_path()
        from tests.realnodes.harness import message_to_rest

        payload = struct.pack(">Q", number) + random.randbytes(self.size - 8)
        message = WakuMessage.create(payload, PRIVATE_TOPIC)
        async with self.http.post(
            f"{self.publish_url}/relay/v1/messages/{self.topic}", json=message_to_rest(message)
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"publish: {response.status} {await response.text()}")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(BaseException):
                await self._poller
        await self.http.close()


def envelope_size() -> int:
    """Bytes of the envelope the bridge publishes for the benchmark's text messages."""
    alice, bob = Session(Identity.generate()), Session(Identity.generate())
    conversation, _ = alice.invite(bob.identity.client_address)
    out = alice.send(conversation.conversation_id, Content.text("1000 " + "x" * 64))
    return len(out.payload)


def _bootstrap_median_diff(
    a: Sequence[float], b: Sequence[float], rounds: int = 1000
) -> tuple[float, float]:
    """95% interval of median(a) - median(b), by resampling both."""
    rng = random.Random(7)
    diffs = sorted(
        statistics.median(rng.choices(a, k=len(a))) - statistics.median(rng.choices(b, k=len(b)))
        for _ in range(rounds)
    )
    return diffs[int(0.025 * rounds)], diffs[int(0.975 * rounds)]


async def _start_nodes(stack: contextlib.AsyncExitStack, workdir: Path) -> Any:
    repo_on_path()
    import pytest

    from tests.realnodes import harness

    shard = f"/waku/2/rs/{harness.CLUSTER_ID}/{DIRECT_SHARD}"
    try:
        binary = harness.require_gowaku()
        sandbox = await harness.Sandbox.create()
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        raise Unavailable(str(exc)) from None
    stack.push_async_callback(sandbox.close)
    extra = [f"--pubsub-topic={shard}"]
    pair = await harness.start_gowaku_pair(
        binary, sandbox, workdir, log_level="ERROR", a_extra_args=extra, b_extra_args=extra
    )
    stack.push_async_callback(pair.close)
    return harness, pair, shard, sandbox


async def _measure(quick: bool, scale: float) -> dict[str, float]:
    count = scaled(1_500 if quick else 6_000, scale, 10)
    rounds = scaled(2 if quick else 3, scale, 1)
    latency_seconds = (2.0 if quick else 20.0) * scale
    warm_up = scaled(50, scale, 5)
    concurrency = 16
    size = envelope_size()
    async with contextlib.AsyncExitStack() as stack:
        workdir = stack.enter_context(scratch_dir())
        harness, nodes, shard, sandbox = await _start_nodes(stack, workdir)
        args = ("--cluster-id", str(harness.CLUSTER_ID), "--shard", str(harness.SHARD))
        x = await stack.enter_async_context(running_bridge(nodes.a.rest_url, workdir / "x", *args))
        y = await stack.enter_async_context(running_bridge(nodes.b.rest_url, workdir / "y", *args))
        bridge = Pair(x, y)
        stack.push_async_callback(bridge.close)
        direct = DirectPair(nodes.a.rest_url, nodes.b.rest_url, shard, size)
        stack.push_async_callback(direct.close)
        await asyncio.gather(bridge.setup(within=60), direct.setup())
        pairs: dict[str, Sender] = {"bridge": bridge, "direct": direct}
        next_number = dict.fromkeys(pairs, 1)

        def take(label: str, n: int) -> int:
            first = next_number[label]
            next_number[label] += n
            return first

        for label, pair in pairs.items():  # warm-up
            await throughput(pair, take(label, warm_up), warm_up, concurrency)
        # CPU time of every process involved, per contender's throughput rounds
        groups = {
            "bridges": [x.pid, y.pid],
            "nodes": [node.process.pid for node in (nodes.a, nodes.b) if node.process],
            "forwarder": [pid for pid in (sandbox.forwarder_pid,) if pid],
            "client": [os.getpid()],  # the bots' SDK, or the direct client
        }
        meters = {label: CpuMeter(groups) for label in pairs}
        rates: dict[str, list[float]] = {label: [] for label in pairs}
        for _ in range(rounds):
            for label, pair in pairs.items():
                meters[label].start()
                rates[label].append(await throughput(pair, take(label, count), count, concurrency))
                meters[label].stop()
        rate = {label: statistics.median(values) for label, values in rates.items()}
        cpu: dict[str, float] = {}
        for label, meter in meters.items():
            per_message = {name: used / (count * rounds) * 1e6 for name, used in meter.used.items()}
            cpu[f"gowaku_{label}_cpu_us_per_msg"] = sum(per_message.values())
            for name, value in per_message.items():
                cpu[f"gowaku_{label}_cpu_us_per_msg_{name}"] = value

        target = rate["bridge"] / 2
        n = max(scaled(100, scale, 10), int(target * latency_seconds))
        lat: dict[str, list[float]] = {label: [] for label in pairs}
        for _ in range(2):  # interleaved halves, so that drift hits both alike
            for label, pair in pairs.items():
                lat[label] += await latencies(pair, take(label, n // 2), n // 2, target)

        lost = {label: pair.arrivals.lost for label, pair in pairs.items()}
    ms = {label: [v * 1000 for v in values] for label, values in lat.items()}
    low, high = _bootstrap_median_diff(ms["bridge"], ms["direct"])
    return {
        "gowaku_bridge_msgs_per_s": rate["bridge"],
        "gowaku_direct_msgs_per_s": rate["direct"],
        "gowaku_bridge_vs_direct_throughput": rate["bridge"] / rate["direct"],
        "gowaku_latency_at_per_s": target,
        "gowaku_bridge_p50_ms": percentile(ms["bridge"], 0.5),
        "gowaku_direct_p50_ms": percentile(ms["direct"], 0.5),
        "gowaku_added_p50_ms": percentile(ms["bridge"], 0.5) - percentile(ms["direct"], 0.5),
        "gowaku_added_p50_ci95_low_ms": low,
        "gowaku_added_p50_ci95_high_ms": high,
        "gowaku_bridge_p99_ms": percentile(ms["bridge"], 0.99),
        "gowaku_direct_p99_ms": percentile(ms["direct"], 0.99),
        "gowaku_bridge_lost_messages": float(lost["bridge"]),
        "gowaku_direct_lost_messages": float(lost["direct"]),
        **cpu,
    }


def run(*, quick: bool, scale: float = 1.0) -> dict[str, float]:
    """Raises :class:`Unavailable` when go-waku cannot run on this machine."""
    return asyncio.run(_measure(quick, scale))
