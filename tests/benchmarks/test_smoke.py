"""The benchmarks run and report their figures (tiny counts; nothing here looks at speed)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

# The benchmarks package lives at the repository root, which pytest does not put on sys.path.
# (This directory has no __init__.py: as a package it would be called "benchmarks" too.)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import __main__ as cli
from benchmarks import classification, crypto, e2e, gowaku, memory

TINY = 0.01


def _numbers(figures: dict[str, float], *keys: str) -> None:
    for key in keys:
        assert key in figures, key
        assert isinstance(figures[key], float | int), key
        assert not math.isnan(figures[key]), key


def test_classification() -> None:
    figures = classification.run(quick=True, scale=TINY, sizes=(1, 10, 100))
    _numbers(
        figures,
        "classify_notforme_vs_parse",
        "classify_notforme_vs_floor",
        "hints_10_vs_1",
        "hints_100_vs_1",
        "classify_notforme_batch_per_s",
        "classify_notforme_batch_vs_parse",
        "hints_batch_10_vs_1",
        "hints_batch_100_vs_1",
        "classify_readable_private_per_s",
        "classify_readable_inbox_per_s",
    )


def test_crypto() -> None:
    figures = crypto.run(quick=True, scale=TINY)
    _numbers(
        figures,
        "crypto_seal_vs_primitives",
        "crypto_open_vs_primitives",
        "crypto_ratchet_step_vs_primitives",
        "crypto_inbox_seal_vs_primitives",
        "crypto_inbox_open_vs_primitives",
    )


def test_e2e_embedded() -> None:
    figures = e2e.run(quick=True, scale=TINY, tmpfs=True)
    _numbers(
        figures,
        "e2e_embedded_msgs_per_s",
        "e2e_embedded_p99_ms",
        "e2e_embedded_vs_floor",
        "e2e_embedded_disk_vs_tmpfs",
        "db_bytes_per_1k_messages",
    )


@pytest.mark.gowaku
def test_gowaku() -> None:
    try:
        figures = gowaku.run(quick=True, scale=TINY)
    except gowaku.Unavailable as exc:
        pytest.skip(str(exc))
    _numbers(
        figures,
        "gowaku_bridge_vs_direct_throughput",
        "gowaku_added_p50_ms",
        "gowaku_bridge_p99_ms",
    )


def test_memory() -> None:
    figures = memory.run(quick=True, scale=TINY)
    _numbers(
        figures,
        "rss_bytes_per_idle_conversation",
        "bridge_live_bytes_per_idle_conversation",
        "session_bytes_per_idle_conversation",
        "db_bytes_per_idle_conversation",
    )


@pytest.mark.slow
def test_json_has_the_required_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks --quick --json`` prints one JSON object with every required key
    (null only for the go-waku ones, when go-waku cannot run here)."""
    assert cli.main(["--quick", "--json", "--scale", str(TINY)]) == 0
    out = json.loads(capsys.readouterr().out)
    go_waku = {key for key in cli.REQUIRED if key.startswith("gowaku_")}
    for key in cli.REQUIRED:
        if key in go_waku and "gowaku" in out["skipped"]:
            assert out[key] is None
        else:
            assert isinstance(out[key], float | int), key
    assert out["failed"] == {}
    assert out["machine"]["cores"] >= 1
    assert len(out["load_average_before"]) == 3


def test_table_marks_targets(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--only", "crypto", "--scale", str(TINY)]) == 0
    out = capsys.readouterr().out
    assert "targets" in out
    assert "crypto_seal_vs_primitives" in out
    assert cli.verdict("hints_100k_vs_1", 0.9).endswith("met")
    assert cli.verdict("e2e_embedded_p99_ms", 80.0).endswith("MISSED")
