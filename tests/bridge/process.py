"""Run ``python -m umbra_waku.bridge`` as a child process (for signal and crash tests)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class BotHandle:
    """A bot as ``POST /v1/bots`` created it: its id, token and address."""

    bot_id: str
    token: str
    client_address: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def bridge_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UMBRA_WAKU_")}
    env.update(extra)
    return env


@dataclass
class BridgeProcess:
    """One bridge child process; its stderr goes to ``log``."""

    node: str
    data_dir: Path
    port: int = field(default_factory=free_port)
    args: tuple[str, ...] = ()
    process: asyncio.subprocess.Process | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # what the interpreter runs, and whether stdout goes to the log too (subclasses change them)
    entry: ClassVar[tuple[str, ...]] = ("-m", "umbra_waku.bridge")
    stdout_to_log: ClassVar[bool] = False

    async def start(self) -> Self:
        self.log = self.data_dir.parent / f"bridge-{self.port}-{time.monotonic_ns()}.log"
        with self.log.open("wb") as sink:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                *self.entry,
                "--node",
                self.node,
                "--data-dir",
                str(self.data_dir),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--log-level",
                "DEBUG",
                *self.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink if self.stdout_to_log else asyncio.subprocess.DEVNULL,
                stderr=sink,
                env=bridge_env(),
            )
        return self

    def output(self) -> str:
        return "" if self.log is None else self.log.read_text(errors="replace")

    async def wait_ready(self, http: aiohttp.ClientSession, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise AssertionError(f"bridge exited {self.process.returncode}:\n{self.output()}")
            try:
                async with http.get(self.url + "/v1/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"bridge not ready within {within} s:\n{self.output()}")

    def admin(self) -> dict[str, str]:
        token = (self.data_dir / "admin.token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait(self, within: float) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), within)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def request(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body
