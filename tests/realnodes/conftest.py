"""Fixtures for tests against real Waku nodes (go-waku and js-waku) on loopback.

- ``gowaku_pair``: go-waku node A (``--store`` on sqlite, ``--filter``, ``--lightpush``) and node B
  (``--staticnode/--storenode/--filternode/--lightpushnode`` = A), relay-peered on
  ``/waku/2/rs/42/0``; handles have ``rest_url``, ``multiaddr``, ``peer_id``, ``log_path``,
  ``start()``, ``stop()``, ``kill()``, ``restart()`` (same ports, key and database).
- ``gowaku_pair_factory``: the same with options (``rest_relay_cache_capacity=...`` etc.).
- ``jswaku_peer``: a js-waku relay peer dialled to A (and in A's and its own mesh), with
  ``publish(WakuMessage)``, ``queue`` / ``received`` / ``wait_for(...)`` of received messages.

Prerequisites (``scripts/setup-realnodes.sh``): the go-waku binary (``UMBRA_WAKU_GOWAKU_BIN``,
default ``~/.cache/umbra-waku/go-waku-v0.10.1/waku``), Node.js >= 20 (``UMBRA_WAKU_NODE_BIN``) and
``npm ci`` in ``tools/jswaku-peer`` (``UMBRA_WAKU_JSWAKU_DIR``). Missing: skipped with a hint, or
failed when ``CI=true``. Node logs go to the test's tmp_path; their tails are printed when a test
fails. ``UMBRA_WAKU_REALNODES_NETNS`` chooses the network isolation (see harness.Sandbox).
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    REGISTRY,
    GoWakuBinary,
    GoWakuPair,
    JsWakuPeer,
    JsWakuTool,
    Sandbox,
    require_gowaku,
    require_jswaku,
    start_gowaku_pair,
)

_failed = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        item.stash[_failed] = True
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    return bool(request.node.stash.get(_failed, False))


@pytest.fixture(scope="session")
def gowaku_bin() -> GoWakuBinary:
    binary = require_gowaku()
    if REGISTRY.gowaku is None:
        REGISTRY.gowaku = binary
        print(f"[realnodes] go-waku {binary.version} at {binary.path}")
    return binary


@pytest.fixture(scope="session")
def jswaku_tool() -> JsWakuTool:
    tool = require_jswaku()
    if REGISTRY.jswaku is None:
        REGISTRY.jswaku = tool
        print(f"[realnodes] js-waku @waku/sdk {tool.sdk_version} on Node.js {tool.node_version}")
    return tool


@pytest.fixture
async def realnode_sandbox() -> AsyncIterator[Sandbox]:
    sandbox = await Sandbox.create()
    REGISTRY.sandboxes.add(sandbox.description.split(",")[0])
    print(f"[realnodes] network: {sandbox.description}")
    try:
        yield sandbox
    finally:
        await sandbox.close()


@pytest.fixture
def realnode_logs(tmp_path: Path) -> Path:
    path = tmp_path / "nodes"
    path.mkdir(exist_ok=True)
    return path


PairFactory = Callable[..., Awaitable[GoWakuPair]]


@pytest.fixture
async def gowaku_pair_factory(
    request: pytest.FixtureRequest,
    gowaku_bin: GoWakuBinary,
    realnode_sandbox: Sandbox,
    realnode_logs: Path,
) -> AsyncIterator[PairFactory]:
    pairs: list[GoWakuPair] = []

    async def factory(**options: Any) -> GoWakuPair:
        workdir = realnode_logs / f"pair{len(pairs)}" if pairs else realnode_logs
        pair = await start_gowaku_pair(gowaku_bin, realnode_sandbox, workdir, **options)
        pairs.append(pair)
        return pair

    try:
        yield factory
    finally:
        for pair in pairs:
            await pair.close()
        if _test_failed(request):
            for pair in pairs:
                for node in pair.nodes:
                    print(f"\n----- tail of go-waku {node.name} log ({node.log_path}) -----")
                    print(node.tail(80))


@pytest.fixture
async def gowaku_pair(gowaku_pair_factory: PairFactory) -> GoWakuPair:
    return await gowaku_pair_factory()


JsFactory = Callable[..., Awaitable[JsWakuPeer]]


@pytest.fixture
async def jswaku_peer_factory(
    request: pytest.FixtureRequest,
    jswaku_tool: JsWakuTool,
    realnode_sandbox: Sandbox,
    realnode_logs: Path,
) -> AsyncIterator[JsFactory]:
    peers: list[JsWakuPeer] = []

    async def factory(dial: str | None = None, name: str | None = None) -> JsWakuPeer:
        peer = JsWakuPeer(jswaku_tool, realnode_sandbox, realnode_logs, name or f"js{len(peers)}")
        peers.append(peer)
        await peer.start()
        if dial:
            await peer.dial(dial)
        return peer

    try:
        yield factory
    finally:
        for peer in peers:
            await peer.stop()
        if _test_failed(request):
            for peer in peers:
                print(f"\n----- tail of js-waku {peer.name} log ({peer.log_path}) -----")
                print(peer.tail(80))


@pytest.fixture
async def jswaku_peer(gowaku_pair: GoWakuPair, jswaku_peer_factory: JsFactory) -> JsWakuPeer:
    """A js-waku relay peer dialled to go-waku A: A is in its gossipsub mesh, A lists it as a
    connected relay peer, and a probe published on A has reached it."""
    peer = await jswaku_peer_factory(dial=gowaku_pair.a.multiaddr, name="js")
    await gowaku_pair.a.wait_relay_peer(peer.peer_id)
    await peer.wait_reached_by(gowaku_pair.a)
    return peer


def _timing(starts: list[float], none: str) -> str:
    if not starts:
        return none
    median, worst = statistics.median(starts), max(starts)
    return f"{len(starts)} starts, median {median:.2f} s, max {worst:.2f} s"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    r = REGISTRY
    if r.gowaku is None and r.jswaku is None:
        return
    write = terminalreporter.write_line
    terminalreporter.section("real Waku nodes")
    if r.gowaku is not None:
        timing = _timing(r.gowaku_starts, "no node started")
        write(f"go-waku {r.gowaku.version} ({r.gowaku.path}): {timing}")
    if r.jswaku is not None:
        timing = _timing(r.jswaku_starts, "no peer started")
        write(
            f"js-waku @waku/sdk {r.jswaku.sdk_version} on Node.js {r.jswaku.node_version} "
            f"({r.jswaku.directory}): {timing}"
        )
    for description in sorted(r.sandboxes):
        write(f"network: {description}")
