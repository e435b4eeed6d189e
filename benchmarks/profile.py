"""Profile a bridge under the end-to-end load with py-spy, and summarise the flame graph as text.

``python -m benchmarks.profile [--tmpfs] [--gil] [--idle] [--messages N] [--out FILE]``

Starts a bridge (``python -m umbra_waku.bridge`` on ``memory://``) as the e2e suite does, drives
``--messages`` messages from bot A to bot B with 16 requests in flight, and samples the bridge
process with ``py-spy record --format raw`` meanwhile. Prints the rate, the bridge's CPU time per
message, and the functions with the largest inclusive and self shares of the samples (per thread:
the event loop thread, the SQLite thread). ``--gil`` samples only the thread holding the GIL (what
Python code costs), ``--idle`` includes waiting threads (where wall time goes).

``python -m benchmarks.profile --summarise FILE`` summarises any raw py-spy output (e.g. of
``py-spy record --format raw -o FILE -- python -m benchmarks --only classification``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import e2e
from benchmarks.common import running_bridge, scratch_dir

_LINE = re.compile(r":\d+\)$")

#: Where a sample's innermost frame is, by file or function (first match wins).
CATEGORIES: tuple[tuple[str, str], ...] = (
    (
        "protocol (seal, open, classify, state, hashes)",
        r"umbra_waku/(conversations|session|crypto|hints|envelope|frames|identity|waku/message)"
        r"|_proto|cryptography|hashlib|_blake2",
    ),
    ("sqlite calls", r"bridge/sqlite|sqlite3"),
    (
        "executor hand-off (threads, futures, self-pipe)",
        r"concurrent/futures|threading\.py|_chain_future|_copy_future_state|_read_from_self"
        r"|_write_to_self|run_in_executor|wrap_future|_set_state|call_soon_threadsafe",
    ),
    ("aiohttp (HTTP, WebSocket)", r"aiohttp|yarl|multidict"),
    ("event loop I/O (select, socket)", r"selector|Epoll"),
    ("asyncio scheduling", r"asyncio"),
    ("pydantic", r"pydantic"),
    ("tenacity", r"tenacity"),
    ("metrics", r"prometheus|bridge/metrics"),
    ("json, base64", r"json|base64"),
    ("bridge code", r"umbra_waku/bridge"),
    ("client runtime code", r"umbra_waku/client"),
    ("other umbra_waku code", r"umbra_waku"),
)


def category(frame: str) -> str:
    for name, pattern in CATEGORIES:
        if re.search(pattern, frame):
            return name
    return "other"


def summarise(path: Path, top: int = 25) -> str:
    """Inclusive and self shares of the samples in a ``py-spy --format raw`` file."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        threads[frames[0]] += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
        kinds[category(frames[-1])] += n
    if not total:
        return "no samples"
    lines = [f"{total} samples"]
    lines += [f"  thread root {n / total:6.1%}  {name}" for name, n in threads.most_common(4)]
    lines.append("self samples by category:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in kinds.most_common()]
    lines.append("inclusive:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    lines.append("self:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _profile(args: argparse.Namespace, spy: str) -> None:
    with scratch_dir("/dev/shm" if args.tmpfs else None) as base:
        async with running_bridge("memory://profile", base / "data") as bridge:
            pair = e2e.Pair(bridge)
            await pair.setup()
            try:
                await e2e.throughput(pair, 1, 200, 16)  # warm-up
                command = [spy, "record", "--pid", str(bridge.pid), "--format", "raw"]
                command += ["-o", str(args.out), "--rate", "250", "--nonblocking"]
                command += ["--gil"] if args.gil else []
                command += ["--idle"] if args.idle else []
                recorder = await asyncio.create_subprocess_exec(
                    *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                try:
                    await asyncio.sleep(1.0)  # py-spy attaches
                    cpu = _cpu_seconds(bridge.pid)
                    rate = await e2e.throughput(pair, 201, args.messages, 16)
                    cpu = _cpu_seconds(bridge.pid) - cpu
                finally:
                    recorder.send_signal(signal.SIGINT)
                    await asyncio.wait_for(recorder.wait(), 30)
            finally:
                await pair.close()
    print(f"{rate:.0f} messages/s; bridge CPU {cpu / args.messages * 1e6:.0f} us per message")
    print(summarise(args.out, args.top))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--tmpfs", action="store_true", help="bridge data directory on /dev/shm")
    parser.add_argument("--gil", action="store_true", help="sample only the GIL holder")
    parser.add_argument("--idle", action="store_true", help="include idle threads")
    parser.add_argument("--messages", type=int, default=3_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/umbra-bridge-profile.txt"))
    parser.add_argument("--summarise", type=Path, help="only summarise this raw py-spy file")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if args.summarise:
        print(summarise(args.summarise, args.top))
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    started = time.perf_counter()
    asyncio.run(_profile(args, spy))
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
