"""Run the benchmarks: a table by default, one JSON object with ``--json``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable

from benchmarks import classification

# name -> (runner, targets: key -> (comparison, bound))
SUITES: dict[str, Callable[..., dict[str, float]]] = {
    "classification": classification.run,
}

TARGETS: dict[str, tuple[str, float]] = {
    "classify_notforme_vs_parse": (">=", 0.5),
    "hints_100k_vs_1": (">=", 0.8),
    "classify_readable_private_per_s": (">=", 50_000),
}


def _machine() -> dict[str, str | int]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return {
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object of figures")
    parser.add_argument("--only", choices=sorted(SUITES), action="append", help="run these suites")
    args = parser.parse_args(argv)

    figures: dict[str, float] = {}
    started = time.perf_counter()
    for name in args.only or SUITES:
        figures.update(SUITES[name](quick=args.quick))
    elapsed = time.perf_counter() - started

    if args.json:
        print(json.dumps({**figures, "machine": _machine(), "seconds": round(elapsed, 1)}))
        return 0
    width = max(len(key) for key in figures)
    print(f"{'figure':<{width}}  {'value':>14}  target")
    for key, value in figures.items():
        target = TARGETS.get(key)
        mark = ""
        if target is not None:
            op, bound = target
            ok = value >= bound if op == ">=" else value <= bound
            mark = f"{op} {bound:g}  {'met' if ok else 'MISSED'}"
        print(f"{key:<{width}}  {value:>14,.3f}  {mark}")
    print(f"\n{_machine()}  ({elapsed:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
