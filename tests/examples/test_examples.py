"""Every example runs for real, as a user would start it: a subprocess, with its one command.

On the embedded network (memory://, inside the example's own process) each example brings its
own visitor and exits by itself; against a bridge started here, the echo bot serves until SIGTERM
and must then exit 0 (graceful shutdown).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from umbra_waku.bot import Bot, Message
from umbra_waku.identity import Identity

from .conftest import EXAMPLES, REPO, RunningBridge

pytestmark = pytest.mark.timeout(120)


async def run_example(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def test_every_example_documents_its_command() -> None:
    for path in sorted(EXAMPLES.glob("*.py")):
        head = path.read_text().split('"""')[1]
        assert f"python examples/{path.name}" in head, path.name


async def test_echo_bot_with_a_visitor_on_the_embedded_network() -> None:
    code, out, err = await run_example(
        "examples/echo_bot.py", "--node", "memory://echo-test", "--talk", "3"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert re.fullmatch(r"echo bot ready: [0-9a-f]{64}", lines[0])
    assert lines[1:] == [
        "visitor: hello 1",
        "echo: hello 1",
        "visitor: hello 2",
        "echo: hello 2",
        "visitor: hello 3",
        "echo: hello 3",
    ]


async def test_greeter_greets_each_visitor(tmp_path: Path) -> None:
    key = tmp_path / "greeter.key"
    code, out, err = await run_example(
        "examples/greeter.py", "--identity", str(key), "--visitors", "2"
    )
    assert code == 0, err
    assert out.startswith(f"greeter ready: {Identity.load(key).client_address}\n")
    greetings = re.findall(r"greeter -> visitor (\d): Hello ([0-9a-f]{8})\.\.\., welcome!", out)
    invites = re.findall(r"visitor (\d) \(([0-9a-f]{8})\.\.\.\): invites the greeter", out)
    assert [number for number, _ in greetings] == ["1", "2"]
    assert greetings == invites  # each visitor is greeted by its own address


async def test_ping_pong_measures_round_trips() -> None:
    code, out, err = await run_example("examples/ping_pong.py", "--rounds", "15")
    assert code == 0, err
    assert re.search(r"^pong ready: [0-9a-f]{64}$", out, re.MULTILINE)
    assert len(re.findall(r"^pong \d+: [\d.]+ ms$", out, re.MULTILINE)) == 15
    summary = out.splitlines()[-1]
    assert re.fullmatch(r"rounds=15 p50=[\d.]+ms max=[\d.]+ms", summary), summary


async def start_serving(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """Start an example that serves; its client_address from its first line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    if not first:
        assert process.stderr is not None
        raise AssertionError((await process.stderr.read()).decode())
    return process, first.rsplit(" ", 1)[-1].strip()


async def stop_gracefully(process: asyncio.subprocess.Process, sig: signal.Signals) -> str:
    process.send_signal(sig)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    return stderr.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_echo_bot_against_a_bridge(
    running_bridge: RunningBridge, sig: signal.Signals
) -> None:
    token, address = await running_bridge.create_bot("echo")
    process, announced = await start_serving(
        "examples/echo_bot.py", "--bridge", running_bridge.url, "--token", token
    )
    try:
        assert announced == address
        visitor = Bot.embedded(Identity.generate(), running_bridge.node, name="visitor")
        answers: asyncio.Queue[str] = asyncio.Queue()

        @visitor.on_message
        async def heard(message: Message) -> None:
            await answers.put(message.text or "")

        async with visitor:
            conversation_id = await visitor.invite(address, "ping from the test")
            assert await asyncio.wait_for(answers.get(), 15) == "ping from the test"
            await visitor.send(conversation_id, "second")
            assert await asyncio.wait_for(answers.get(), 15) == "second"
    finally:
        if process.returncode is None:
            stderr = await stop_gracefully(process, sig)
            assert "Traceback" not in stderr


async def test_echo_bot_token_from_the_environment(running_bridge: RunningBridge) -> None:
    token, address = await running_bridge.create_bot("echo")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "examples/echo_bot.py",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "UMBRA_WAKU_BOT_BRIDGE": running_bridge.url,
            "UMBRA_WAKU_BOT_TOKEN": token,
        },
    )
    assert process.stdout is not None
    first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    assert first.strip() == f"echo bot ready: {address}"
    await stop_gracefully(process, signal.SIGTERM)


async def test_ping_pong_split_through_a_bridge(running_bridge: RunningBridge) -> None:
    pong_token, pong_address = await running_bridge.create_bot("pong")
    ping_token, _ = await running_bridge.create_bot("ping")
    ponger, announced = await start_serving(
        "examples/ping_pong.py",
        "--role",
        "pong",
        "--bridge",
        running_bridge.url,
        "--token",
        pong_token,
    )
    try:
        assert announced == pong_address
        code, out, err = await run_example(
            "examples/ping_pong.py",
            "--role",
            "ping",
            "--bridge",
            running_bridge.url,
            "--token",
            ping_token,
            "--to",
            pong_address,
            "--rounds",
            "5",
        )
        assert code == 0, err
        assert re.fullmatch(r"rounds=5 p50=[\d.]+ms max=[\d.]+ms", out.splitlines()[-1])
    finally:
        await stop_gracefully(ponger, signal.SIGTERM)


async def test_a_bad_token_makes_the_bot_exit_with_an_error(
    running_bridge: RunningBridge,
) -> None:
    code, _, err = await run_example(
        "examples/echo_bot.py", "--bridge", running_bridge.url, "--token", "nobody.secret"
    )
    assert code == 1
    assert "401" in err
    assert "Traceback" not in err
    assert err.startswith("echo_bot.py: error: ")
