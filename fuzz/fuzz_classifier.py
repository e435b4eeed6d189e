"""atheris harness: the envelope classifier (``Session.classify``) on arbitrary bytes.

Input layout (so that seeds are exact and mutations stay meaningful)::

    byte 0      which session classifies (common.TARGETS, modulo)
    byte 1      how many envelopes follow, 1 to 3 (modulo), classified in order on that session
    per envelope: 1 byte topic choice (common.topics_for, modulo), 2 bytes big-endian length,
    then the envelope bytes (the last envelope takes whatever is left)

Run (see docs/reliability.md)::

    .venv/bin/python fuzz/fuzz_classifier.py -atheris_runs=1000000 /tmp/corpus-classifier

The first corpus directory given is filled with the seed envelopes (the fixed conversation of
common.build_world) if it has none. A finding raises common.OracleFailure with the input saved as
crash-<sha1> by libFuzzer.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["umbra_waku", "common"]):
    import common

WORLD = common.build_world()
TOPICS = common.topics_for(WORLD)


KNOWN: Counter[str] = Counter()


def split(data: bytes) -> tuple[str, list[tuple[bytes, str | None]]]:
    if len(data) < 2:
        return common.TARGETS[0], [(data, None)]
    target = common.TARGETS[data[0] % len(common.TARGETS)]
    count = 1 + data[1] % 3
    pos, inputs = 2, []
    for i in range(count):
        if pos >= len(data):
            break
        topic = TOPICS[data[pos] % len(TOPICS)]
        pos += 1
        if i == count - 1:
            chunk = data[pos:]
        else:
            length = int.from_bytes(data[pos : pos + 2], "big")
            chunk = data[pos + 2 : pos + 2 + length]
            pos += 2 + length
        inputs.append((chunk, topic))
    return target, inputs


def encode(target: int, inputs: list[tuple[bytes, int]]) -> bytes:
    out = bytearray([target, len(inputs) - 1])
    for i, (chunk, topic) in enumerate(inputs):
        out.append(topic)
        if i < len(inputs) - 1:
            out += len(chunk).to_bytes(2, "big")
        out += chunk
    return bytes(out)


def seeds() -> list[bytes]:
    w = WORLD
    found = [encode(0, [(w.invite, t)]) for t in (0, 2)]
    found += [encode(1, [(m, 1)]) for m in w.to_bob]
    found += [encode(2, [(m, 1)]) for m in w.to_alice]
    found.append(encode(1, [(w.to_bob[1], 1), (w.to_bob[0], 1), (w.to_bob[1], 0)]))
    found.append(encode(0, [(w.invite, 2), (w.invite, 2)]))
    found.append(encode(2, [(w.to_alice[0], 1), (w.to_bob[0], 1), (w.to_alice[3], 1)]))
    return found


def TestOneInput(data: bytes) -> None:
    PROGRESS.tick()
    target, inputs = split(data)
    try:
        common.check_classification(WORLD, target, inputs)
    except common.OracleFailure as failure:
        pattern = common.known_finding(failure)
        if pattern is None:
            raise
        KNOWN[pattern] += 1


PROGRESS = common.Progress(KNOWN, sys.argv)


def main() -> None:
    common.fuzz(sys.argv, TestOneInput, seeds())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
