"""atheris harness: parsing of node responses (adapters/umbra_waku_rest/codec.py and the
client's JSON and version handling) on arbitrary and structure-aware inputs.

Input layout::

    byte 0      which function (common.CODEC_FUNCTIONS, modulo)
    byte 1      0 or 1: the rest is JSON text (bytes as sent by a node; skipped if not JSON);
                2: the rest drives a structure-aware generator of JSON values (node-like keys);
                3: the rest, as text, is the value itself (cursors, hashes, raw bodies)

Run (see docs/reliability.md)::

    .venv/bin/python fuzz/fuzz_codec.py -atheris_runs=1000000 /tmp/corpus-codec
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["umbra_waku", "umbra_waku_rest", "common"]):
    import common

KEYS = (
    "payload", "contentTopic", "content_topic", "version", "timestamp", "meta", "ephemeral",
    "proof", "rate_limit_proof", "rateLimitProof", "messages", "message", "messageHash",
    "message_hash", "pubsubTopic", "pubsub_topic", "paginationCursor", "pagination_cursor",
    "statusCode", "status_code", "statusDesc", "status_desc", "cursor", "digest", "data",
    "senderTime", "storeTime", "errorMessage", "error_message", "requestId",
)  # fmt: skip
STRINGS = (
    "", "AA==", "AA", "-_-_", "0x" + "ab" * 32, "ab" * 32, "/waku/2/rs/42/0",
    "/umbra/1/private/proto", "9223372036854775808", "-1", "1700000000000000000", "\ud800",
    "null", "true", "v3.", "v1.", "OK",
)  # fmt: skip
INTS = (0, 1, -1, 200, 404, 2**31, 2**32, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64)


class Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk


KNOWN: Counter[str] = Counter()


def value(src: Bytes, depth: int = 0) -> Any:
    kind = src.byte() % (10 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return bool(src.byte() & 1)
    if kind == 2:
        return INTS[src.byte() % len(INTS)]
    if kind == 3:
        return int.from_bytes(src.take(9), "big", signed=True)
    if kind == 4:
        return STRINGS[src.byte() % len(STRINGS)]
    if kind == 5:
        return src.take(src.byte() % 80).decode("utf-8", "surrogateescape")
    if kind == 6:
        return float(int.from_bytes(src.take(2), "big")) / 7
    if kind in (7, 8):
        return {KEYS[src.byte() % len(KEYS)]: value(src, depth + 1) for _ in range(src.byte() % 6)}
    return [value(src, depth + 1) for _ in range(src.byte() % 4)]


def TestOneInput(data: bytes) -> None:
    PROGRESS.tick()
    if len(data) < 2:
        return
    function = common.CODEC_FUNCTIONS[data[0] % len(common.CODEC_FUNCTIONS)]
    mode, rest = data[1] % 4, data[2:]
    if mode in (0, 1):
        try:
            parsed = json.loads(rest)
        except (ValueError, RecursionError):
            return
    elif mode == 2:
        parsed = value(Bytes(rest))
    elif function in ("reply_json", "version"):
        parsed = rest.decode("utf-8", "replace")  # as aiohttp decodes a node's body
    else:
        parsed = rest.decode("utf-8", "surrogateescape")  # cursors and hashes come from callers
    try:
        common.check_codec(function, parsed)
    except common.OracleFailure as failure:
        pattern = common.known_finding(failure)
        if pattern is None:
            raise
        KNOWN[pattern] += 1


def seeds() -> list[bytes]:
    out = []
    for function, seed in common.codec_seeds():
        index = common.CODEC_FUNCTIONS.index(function)
        out.append(bytes([index, 0]) + json.dumps(seed).encode())
        if isinstance(seed, str):
            out.append(bytes([index, 3]) + seed.encode())
    return out


PROGRESS = common.Progress(KNOWN, sys.argv)


def main() -> None:
    common.fuzz(sys.argv, TestOneInput, seeds())


if __name__ == "__main__":
    main()
