"""The bridge as a process: signals, crashes, invalid settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .process import BridgeProcess, bridge_env, request


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def processes() -> AsyncIterator[list[BridgeProcess]]:
    started: list[BridgeProcess] = []
    yield started
    for process in started:
        await process.kill()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "umbra_waku.bridge", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=bridge_env(),
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["--listen", "nowhere"], "listen"),
        (["--listen", "127.0.0.1:99999"], "listen"),
        (["--node", "ftp://x"], "node"),
        (["--node", "no-scheme"], "node"),
        (["--mode", "light"], "mode"),  # with the default memory:// node
        (["--node", "http://127.0.0.1:1", "--mode", "heavy"], "mode"),
        (["--cluster-id", "-1", "--node", "http://127.0.0.1:1"], "cluster_id"),
        (["--publish-wait", "soon"], "publish_wait"),
        (["--admin-token", "short"], "admin_token"),
        (["--log-level", "LOUD"], "log_level"),
        (["--config", "/nonexistent/bridge.toml"], "config"),
    ],
)
def test_an_invalid_setting_is_one_line_naming_it(
    args: list[str], setting: str, tmp_path: Path
) -> None:
    result = run_cli("--data-dir", str(tmp_path / "d"), *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"invalid setting {setting}" in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert "short" not in lines[0] or setting != "admin_token"  # secrets are never echoed


def test_invalid_environment_and_config_file(tmp_path: Path) -> None:
    env = bridge_env(UMBRA_WAKU_NUM_SHARDS="0", UMBRA_WAKU_NODE="http://127.0.0.1:1")
    result = subprocess.run(
        [sys.executable, "-m", "umbra_waku.bridge", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert "UMBRA_WAKU_NUM_SHARDS" in result.stderr

    config = tmp_path / "bridge.toml"
    config.write_text('listen = "127.0.0.1:1"\nunknown_key = 1\n')
    result = run_cli("--config", str(config))
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert "unknown_key" in result.stderr


def test_help_explains_every_setting() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    from umbra_waku.bridge.settings import BridgeSettings, env_name, flag_name

    for name in BridgeSettings.model_fields:
        assert flag_name(name) in result.stdout, name
        assert env_name(name) in result.stdout.replace("\n", " ").replace("  ", ""), name
    assert "--config" in result.stdout


async def test_sigterm_drains_and_exits_zero_within_10_s(
    tmp_path: Path, http: aiohttp.ClientSession, processes: list[BridgeProcess]
) -> None:
    bridge = await BridgeProcess(f"memory://{tmp_path.name}", tmp_path / "data").start()
    processes.append(bridge)
    await bridge.wait_ready(http)
    status, bot = await request(http, "POST", bridge.url + "/v1/bots", headers=bridge.admin())
    assert status == 201
    auth = {"Authorization": f"Bearer {bot['token']}"}
    ws = await http.ws_connect(bridge.url + "/v1/events", headers=auth)
    poll = asyncio.ensure_future(
        request(http, "GET", bridge.url + "/v1/events/poll?timeout=30", headers=auth)
    )
    await asyncio.sleep(0.2)

    started = time.monotonic()
    bridge.signal(signal.SIGTERM)
    message = await ws.receive(timeout=10)
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
    status, page = await asyncio.wait_for(poll, 10)  # the long-poll is answered, not cut
    assert status == 200
    assert page["events"] == []
    returncode = await bridge.wait(10)
    elapsed = time.monotonic() - started
    assert returncode == 0, bridge.output()
    assert elapsed < 10
    assert "Traceback" not in bridge.output()
    await ws.close()


@pytest.mark.slow
async def test_sigkill_at_any_moment_loses_nothing_acknowledged(
    tmp_path: Path, http: aiohttp.ClientSession, processes: list[BridgeProcess], aiohttp_server: Any
) -> None:
    """Two bots on one bridge talk over a (fake) nwaku node while the bridge is killed with
    SIGKILL at random moments and restarted on the same data directory. Afterwards every
    message whose send was acknowledged has arrived exactly once, and every event a bot had
    read keeps its sequence number."""
    fakenodes = pytest.importorskip("fakenodes")
    node = fakenodes.make_fake_node("nwaku")
    server = await aiohttp_server(node.app)
    node_url = str(server.make_url("")).rstrip("/")
    data = tmp_path / "data"
    port = None

    async def start() -> BridgeProcess:
        bridge = BridgeProcess(node_url, data, **({} if port is None else {"port": port}))
        processes.append(await bridge.start())
        await bridge.wait_ready(http)
        return bridge

    bridge = await start()
    port = bridge.port
    bots = {}
    for name in ("alice", "bob"):
        status, body = await request(
            http, "POST", bridge.url + "/v1/bots", json={"name": name}, headers=bridge.admin()
        )
        assert status == 201
        bots[name] = body
    auth = {name: {"Authorization": f"Bearer {b['token']}"} for name, b in bots.items()}
    status, started = await request(
        http,
        "POST",
        bridge.url + "/v1/conversations",
        json={"peer": bots["bob"]["client_address"], "text": "start"},
        headers=auth["alice"],
    )
    assert status in (201, 202)
    conversation = started["conversation"]["id"]

    acked: dict[str, list[str]] = {"alice": [], "bob": []}
    seen: dict[str, dict[int, Any]] = {"alice": {}, "bob": {}}
    # BRIDGE_CRASH_SEED reproduces a run (the kill moments still depend on timing)
    rng = random.Random(int(os.environ.get("BRIDGE_CRASH_SEED", "1234")))

    async def talk(name: str, round_: int) -> None:
        for i in range(10_000):
            text = f"{name}-{round_}-{i}"
            try:
                status, _ = await request(
                    http,
                    "POST",
                    f"{bridge.url}/v1/conversations/{conversation}/messages",
                    json={"text": text},
                    headers=auth[name],
                )
            except (TimeoutError, aiohttp.ClientError):
                return
            if status in (201, 202):
                acked[name].append(text)
            await asyncio.sleep(rng.uniform(0, 0.02))

    async def read(name: str) -> None:
        while True:
            after = max(seen[name], default=0)
            try:
                status, page = await request(
                    http,
                    "GET",
                    f"{bridge.url}/v1/events/poll",
                    params={"after": after, "timeout": 1},
                    headers=auth[name],
                )
            except (TimeoutError, aiohttp.ClientError):
                return
            if status == 200:
                for event in page["events"]:
                    seen[name][event["seq"]] = (event["type"], event.get("text"))

    bob_joined = False
    for round_ in range(4):
        if not bob_joined:  # bob can answer once he has the conversation
            await asyncio.sleep(0.5)
            bob_joined = True
        tasks = [asyncio.create_task(talk(n, round_)) for n in ("alice", "bob")]
        tasks += [asyncio.create_task(read(n)) for n in ("alice", "bob")]
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        await bridge.kill()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        bridge = await start()

    # everything acknowledged arrives, once, and what was read keeps its place
    peer_of = {"alice": "bob", "bob": "alice"}
    deadline = time.monotonic() + 60
    final: dict[str, dict[int, Any]] = {}
    while True:
        for name in ("alice", "bob"):
            status, page = await request(
                http,
                "GET",
                f"{bridge.url}/v1/events/poll",
                params={"after": 0, "limit": 1000, "timeout": 0},
                headers=auth[name],
            )
            assert status == 200
            final[name] = {e["seq"]: (e["type"], e.get("text")) for e in page["events"]}
        missing = {
            name: set(acked[peer_of[name]]) - {text for _, text in final[name].values()}
            for name in final
        }
        if not any(missing.values()):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"acknowledged messages never arrived: {missing}\n{bridge.output()}")
        await asyncio.sleep(0.5)

    for name in ("alice", "bob"):
        assert list(final[name]) == list(range(1, len(final[name]) + 1)), name  # no gaps
        texts = Counter(text for kind, text in final[name].values() if kind == "message")
        assert [t for t, n in texts.items() if n > 1] == [], f"{name} got duplicates"
        for seq, event in seen[name].items():
            assert final[name][seq] == event, (name, seq)
    assert sum(len(v) for v in acked.values()) > 20  # the test did send under fire

    bridge.signal(signal.SIGTERM)
    assert await bridge.wait(10) == 0
    with contextlib.suppress(Exception):
        await server.close()
