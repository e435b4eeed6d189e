"""Timing helpers shared by the benchmark modules."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence


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


def interleaved(runs: dict[str, Callable[[], int]], *, repeats: int) -> dict[str, float]:
    """Rates of several runs measured in alternation, so that drift hits all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(rate(run, repeats=1))
    return {name: statistics.median(values) for name, values in samples.items()}


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
