"""Run the benchmarks: a table by default, one JSON object with ``--json``.

Suites: classification, crypto, e2e (bridge over the embedded network), gowaku (bridge over real
go-waku REST nodes; skipped when go-waku cannot run here), memory. ``--quick`` uses small counts
and finishes in under a minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

from benchmarks import classification, crypto, e2e, gowaku, memory
from benchmarks.common import load_average

SUITES: dict[str, Callable[..., dict[str, float]]] = {
    "classification": classification.run,
    "crypto": crypto.run,
    "e2e": e2e.run,
    "gowaku": gowaku.run,
    "memory": memory.run,
}

#: The issue's targets on 2-core machines: key -> (comparison, bound).
TARGETS: dict[str, tuple[str, float]] = {
    "classify_notforme_vs_parse": (">=", 0.5),
    "hints_100k_vs_1": (">=", 0.8),
    "e2e_embedded_msgs_per_s": (">=", 5_000),
    "e2e_embedded_p99_ms": ("<=", 50),
    "gowaku_bridge_vs_direct_throughput": (">=", 0.9),
    "gowaku_added_p50_ms": ("<=", 1),
    "rss_bytes_per_idle_conversation": ("<=", 2_048),
}

#: Keys the JSON object always has (null when their suite was skipped or failed).
REQUIRED = tuple(TARGETS)


def machine() -> dict[str, object]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    memory_kb = 0
    with contextlib.suppress(OSError, StopIteration, ValueError), open("/proc/meminfo") as info:
        memory_kb = int(next(line for line in info if line.startswith("MemTotal")).split()[1])
    from google.protobuf import __version__ as protobuf_version
    from google.protobuf.internal import api_implementation

    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "protobuf": f"{protobuf_version} ({api_implementation.Type()})",
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "memory_gb": round(memory_kb / 1024**2, 1),
        "platform": platform.platform(),
    }


def revision() -> dict[str, object]:
    """The commit measured, and the library files that differed from it (work in progress)."""
    from benchmarks.common import REPO

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--porcelain", "--", "umbra_waku", "adapters").splitlines()
    commit = git("rev-parse", "--short", "HEAD").strip()
    return {"commit": commit, "uncommitted": [line[3:] for line in changed if line.strip()]}


def verdict(key: str, value: float) -> str:
    target = TARGETS.get(key)
    if target is None:
        return ""
    op, bound = target
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{op} {bound:g}  n/a"
    ok = value >= bound if op == ">=" else value <= bound
    return f"{op} {bound:g}  {'met' if ok else 'MISSED'}"


def print_table(
    figures: dict[str, float | None],
    by_suite: dict[str, dict[str, float]],
    context: dict[str, object],
) -> None:
    width = max(len(key) for key in figures)

    def row(key: str, value: float | None, with_target: bool) -> None:
        shown = "-" if value is None else f"{value:,.3f}"
        mark = verdict(key, value) if with_target and value is not None else ""
        print(f"  {key:<{width}}  {shown:>16}  {mark}".rstrip())

    print("targets")
    for key in TARGETS:
        row(key, figures.get(key), True)
    for suite, values in by_suite.items():
        print(f"\n{suite}")
        for key, value in values.items():
            row(key, value, False)
    print()
    for name, fact in context.items():
        print(f"{name}: {fact}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object of figures")
    parser.add_argument("--only", choices=sorted(SUITES), action="append", help="run these suites")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every count (tiny for smoke tests)"
    )
    args = parser.parse_args(argv)

    figures: dict[str, float | None] = dict.fromkeys(REQUIRED)
    by_suite: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    timings: dict[str, float] = {}
    load_before = load_average()
    started = time.perf_counter()
    for name in args.only or SUITES:
        began = time.perf_counter()
        print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        try:
            # suites (and the real-node harness) may print progress: keep stdout for the result
            with contextlib.redirect_stdout(sys.stderr):
                by_suite[name] = SUITES[name](quick=args.quick, scale=args.scale)
            figures.update(by_suite[name])
        except gowaku.Unavailable as exc:
            skipped[name] = str(exc).strip().splitlines()[0]
        except Exception as exc:  # noqa: BLE001 -- reported, the other suites still run
            traceback.print_exc()
            failed[name] = f"{type(exc).__name__}: {exc}"
        timings[name] = round(time.perf_counter() - began, 1)
    elapsed = time.perf_counter() - started
    context = {
        "machine": machine(),
        "revision": revision(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "quick": args.quick,
        "scale": args.scale,
        "seconds": round(elapsed, 1),
        "suite_seconds": timings,
        "skipped": skipped,
        "failed": failed,
    }

    if args.json:
        print(json.dumps({**figures, **context}))
    else:
        print_table(figures, by_suite, context)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
