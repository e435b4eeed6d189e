"""Fixtures of the reliability suite: the realnodes fixtures (go-waku pairs; missing nodes skip,
or fail under CI=true) and the bridge fixtures of tests/bridge, reused as they are."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bridge.conftest import _clean_environment, network_name, start_bridge
from bridge.process import BridgeProcess
from realnodes.conftest import (  # the hook too: a failed test gets the nodes' log tails
    gowaku_bin,
    gowaku_pair,
    gowaku_pair_factory,
    pytest_runtest_makereport,
    realnode_logs,
    realnode_sandbox,
)
from realnodes.harness import CLUSTER_ID, SHARD, GoWakuNode

from .helpers import RESULTS, Harness, start_real_bridge

RealBridge = Callable[..., Awaitable[Harness]]
StartProcess = Callable[..., Awaitable[BridgeProcess]]

__all__ = [
    "RealBridge",
    "StartProcess",
    "_clean_environment",
    "gowaku_bin",
    "gowaku_pair",
    "gowaku_pair_factory",
    "network_name",
    "pytest_runtest_makereport",
    "realnode_logs",
    "realnode_sandbox",
    "start_bridge",
]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RESULTS:
        terminalreporter.section("reliability figures")
        for line in RESULTS:
            terminalreporter.write_line(line)


@pytest.fixture
async def real_bridge(
    gowaku_pair_factory: Any, aiohttp_client: Any, tmp_path: Path
) -> AsyncIterator[RealBridge]:
    """``await real_bridge(node, data_dir=None, **options)``: an in-process bridge on a go-waku
    node (helpers.start_real_bridge); stopped at teardown, before the nodes are."""
    started: list[Harness] = []

    async def start(node: GoWakuNode, data_dir: Path | None = None, **options: Any) -> Harness:
        path = data_dir or tmp_path / f"bridge{len(started)}"
        harness = await start_real_bridge(aiohttp_client, node, path, **options)
        started.append(harness)
        return harness

    yield start
    for harness in reversed(started):
        await harness.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def bridge_process(
    gowaku_pair_factory: Any, http: aiohttp.ClientSession
) -> AsyncIterator[StartProcess]:
    """``await bridge_process(node, data_dir, port=None)``: a bridge process on a go-waku node,
    ready; killed at teardown (before the nodes stop)."""
    started: list[BridgeProcess] = []

    async def start(node: GoWakuNode, data_dir: Path, port: int | None = None) -> BridgeProcess:
        args = ("--shard", str(SHARD), "--cluster-id", str(CLUSTER_ID))
        extra = {"port": port} if port else {}
        process = BridgeProcess(node.rest_url, data_dir, args=args, **extra)
        started.append(await process.start())
        await process.wait_ready(http, within=60)
        return process

    yield start
    for process in started:
        await process.kill()
