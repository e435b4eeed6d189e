"""Timing, process and bridge helpers shared by the benchmark modules."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:  # importable at run time once repo_on_path() ran, when a bridge starts
    from tests.bridge.process import BotHandle

REPO = Path(__file__).resolve().parents[1]

#: Where benchmark scratch directories go (bridge data dirs, node logs); removed afterwards.
SCRATCH_PREFIX = "umbra-bench-"


def scaled(count: int, scale: float, low: int = 1) -> int:
    """``count`` times ``scale`` (the smoke tests run every suite with a tiny scale)."""
    return max(low, round(count * scale))


def rate(run: Callable[[], int], *, repeats: int) -> float:
    """Operations per second: the median over ``repeats`` runs of ``run`` (which returns how many
    operations it did). The garbage collector is paused while timing, as timeit does."""
    samples = []
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            ops = run()
            elapsed = time.perf_counter() - start
        finally:
            gc.enable()
        samples.append(ops / elapsed)
    return statistics.median(samples)


def interleaved(
    runs: dict[str, Callable[[], int]],
    *,
    repeats: int,
    statistic: Callable[[list[float]], float] = max,
) -> dict[str, float]:
    """Rates of several runs measured in alternation, so that drift hits all of them alike.

    The order is rotated every round, so that no run always follows the same neighbour. The
    default statistic is the best round (as timeit advises: on a shared machine, noise only ever
    adds time); pass ``statistics.median`` for the typical round instead."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    with frozen_heap():
        for round_ in range(repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(rate(runs[name], repeats=1))
    return {name: statistic(values) for name, values in samples.items()}


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..1) of ``values``; nan when empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Move everything allocated so far out of the collector's sight (``gc.freeze``), so that the
    ``gc.collect()`` before each timed run does not walk the whole heap (100,000 conversations in
    the classification suite) every time: 25 ms or more per collection on these machines."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other work on the machine skews absolute rates)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not Linux
        return []


def vm_rss(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes, from /proc/<pid>/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) process ``pid`` has used, from /proc/<pid>/stat;
    0.0 when it is gone. ``os.getpid()`` works too."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:  # pragma: no cover - the process ended
        return 0.0
    # after "pid (comm)": state is field 3, utime and stime fields 14 and 15 (man 5 proc)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by named groups of processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, groups: dict[str, Sequence[int]]) -> None:
        self.groups = groups
        self._before: dict[str, float] = {}
        self.used: dict[str, float] = dict.fromkeys(groups, 0.0)

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.groups.items()}

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> None:
        for name, value in self._now().items():
            self.used[name] += value - self._before[name]


@contextlib.contextmanager
def scratch_dir(base: str | None = None) -> Iterator[Path]:
    """A fresh directory (under ``base``, e.g. /dev/shm), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def database_bytes(data_dir: Path) -> int:
    """Bytes in use in the bridge's SQLite database (pages minus free pages), as a reader sees it
    now: committed data, whether it is still in the write-ahead log or already checkpointed."""
    path = data_dir / "bridge.sqlite3"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()
    return int((pages - free) * size)


def commit_ms(directory: Path, commits: int = 200) -> float:
    """Milliseconds per committed SQLite transaction (WAL, synchronous=FULL, as the bridge
    configures it; one small row each) in a fresh database in ``directory``: what a durable write
    costs on that file system."""
    path = directory / "commit-probe.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (x BLOB)")
        row = os.urandom(300)
        started = time.perf_counter()
        for _ in range(commits):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?)", (row,))
            db.execute("COMMIT")
        return (time.perf_counter() - started) / commits * 1000
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")


# ---------------------------------------------------------------------------------------------
# A bridge in a child process, driven through its HTTP API like a bot would
# ---------------------------------------------------------------------------------------------


@dataclass
class BridgeClient:
    """The benchmark's view of one running bridge process: its URL, admin token and HTTP session.

    The process is started with ``python -m umbra_waku.bridge`` by tests/bridge/process.py's
    :class:`BridgeProcess`; log level WARNING, so that per-message debug logging costs nothing.
    """

    url: str
    pid: int
    admin: dict[str, str]
    http: aiohttp.ClientSession
    data_dir: Path
    bots: list[BotHandle] = field(default_factory=list)

    async def create_bot(self) -> BotHandle:
        async with self.http.post(self.url + "/v1/bots", json={}, headers=self.admin) as r:
            body = await _expect(r, 201)
        from tests.bridge.process import BotHandle  # on the path since the bridge started

        bot = BotHandle(body["bot_id"], body["token"], body["client_address"])
        self.bots.append(bot)
        return bot

    async def start_conversation(self, bot: BotHandle, peer: str, text: str | None = None) -> str:
        request: dict[str, Any] = {"peer": peer}
        if text is not None:
            request["text"] = text
        async with self.http.post(
            self.url + "/v1/conversations", json=request, headers=bot.auth
        ) as r:
            body = await _expect(r, 201, 202)
        conversation_id: str = body["conversation"]["id"]
        return conversation_id

    async def send(self, bot: BotHandle, conversation_id: str, text: str) -> None:
        async with self.http.post(
            f"{self.url}/v1/conversations/{conversation_id}/messages",
            json={"text": text},
            headers=bot.auth,
        ) as r:
            await _expect(r, 201)

    async def events(self, bot: BotHandle, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The bot's WebSocket event stream (GET /v1/events), forever."""
        async with self.http.ws_connect(
            f"{self.url}/v1/events?after={after}", headers=bot.auth, heartbeat=None
        ) as ws:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    yield json.loads(message.data)
                elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    return


async def _expect(response: aiohttp.ClientResponse, *statuses: int) -> Any:
    if response.status not in statuses:
        raise RuntimeError(
            f"{response.method} {response.url.path}: {response.status} {await response.text()}"
        )
    return await response.json()


@contextlib.asynccontextmanager
async def running_bridge(
    node: str, data_dir: Path, *extra_args: str, connections: int = 64
) -> AsyncIterator[BridgeClient]:
    """A bridge child process on 127.0.0.1 for ``node``; always stopped (SIGTERM, then SIGKILL)
    when the block ends."""
    repo_on_path()
    from tests.bridge.process import BridgeProcess

    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 -- one local mkdir at start-up
    process = BridgeProcess(
        node, data_dir, args=("--log-level", "WARNING", "--publish-wait", "10", *extra_args)
    )
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    http = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))
    try:
        await process.start()
        await process.wait_ready(http, within=30)
        assert process.process is not None
        yield BridgeClient(process.url, process.process.pid, process.admin(), http, data_dir)
    finally:
        await http.close()
        await stop_process(process.process)


@contextlib.asynccontextmanager
async def running_floor(connections: int = 64) -> AsyncIterator[BridgeClient]:
    """The HTTP floor server (benchmarks/floor_server.py) in a child process."""
    repo_on_path()
    from tests.bridge.process import free_port

    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.floor_server",
        str(port),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    connector = aiohttp.TCPConnector(limit=connections)
    http = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with http.get(url + "/v1/health") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline or process.returncode is not None:
                raise RuntimeError("the floor server did not start")
            await asyncio.sleep(0.05)
        yield BridgeClient(url, process.pid, {}, http, Path(os.devnull))
    finally:
        await http.close()
        await stop_process(process)


async def stop_process(process: asyncio.subprocess.Process | None, within: float = 15) -> None:
    """SIGTERM ``process`` and wait; SIGKILL if it does not exit in time."""
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), within)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def repo_on_path() -> None:
    """Make the repository's ``tests`` package importable (the benchmarks reuse its helpers to
    run bridges and go-waku nodes), also when ``python -m benchmarks`` runs from elsewhere."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
