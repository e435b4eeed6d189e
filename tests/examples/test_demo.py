"""`umbra-waku demo`: run as a user would, it exits 0 with a readable, well-shaped transcript."""

from __future__ import annotations

import re
import subprocess
import sys

from .conftest import REPO

PARTIES = ("alice", "bob", "eve")


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "umbra_waku", "demo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def blocks(transcript: str) -> list[list[str]]:
    """The per-envelope blocks: from a '[N] ...' line to the next blank line."""
    found: list[list[str]] = []
    current: list[str] | None = None
    for line in transcript.splitlines():
        if re.match(r"\[\d+\] ", line):
            current = [line]
            found.append(current)
        elif not line.strip():
            current = None
        elif current is not None:
            current.append(line)
    return found


def test_demo_exits_0_with_the_expected_transcript() -> None:
    result = run_demo()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert out.startswith("umbra-waku demo: two bots, one bridge")
    assert re.search(r"^  network  memory://umbra-demo-[0-9a-f]{8}\s", out, re.MULTILINE)
    assert re.search(r"^  bridge   http://127\.0\.0\.1:\d+\s", out, re.MULTILINE)
    for party in PARTIES:
        assert re.search(rf"^  {party:<7}  [0-9a-f]{{8}}\.\.\.[0-9a-f]{{4}}\s", out, re.MULTILINE)

    steps = blocks(out)
    assert len(steps) == 5  # the invitation and four messages
    senders = ["alice", "bob", "alice", "bob", "alice"]
    for number, (step, sender) in enumerate(zip(steps, senders, strict=True), start=1):
        recipient = "bob" if sender == "alice" else "alice"
        assert step[0].startswith(f"[{number}] {sender} -> {recipient}: "), step[0]
        assert re.fullmatch(
            rf"    envelope #{number}: \d+ bytes on /umbra/1/\S+/proto, "
            r"hint [0-9a-f]{8}\.\.\.[0-9a-f]{4}",
            step[1],
        ), step[1]
        outcomes = {line.split()[0]: line.split(None, 1)[1] for line in step[2:5]}
        assert list(outcomes) == list(PARTIES)
        kind = "inbox/v1" if number == 1 else "private/v1"
        assert outcomes[recipient].startswith(f"readable ({kind})")
        assert outcomes[sender] == "not_for_me"
        assert outcomes["eve"] == "not_for_me"
        assert re.fullmatch(
            rf'    {recipient} received ".+" from {sender} \(authenticated\)', step[5]
        ), step[5]
    assert "invitation with" in steps[0][0]
    assert "/umbra/1/inbox-" in steps[0][1]
    assert "new conversation" in steps[0][3]  # bob's line: he accepted the invitation
    assert all("/umbra/1/private/proto" in step[1] for step in steps[1:])
    hints = [step[1].rsplit("hint ", 1)[1] for step in steps]
    assert len(set(hints)) == len(hints)  # every envelope has a fresh hint
    assert out.rstrip().splitlines()[-1] == (
        "summary: 5 envelopes; alice read 2, bob read 3, eve read 0 (5 not_for_me)"
    )


def test_demo_message_count_is_an_option() -> None:
    result = run_demo("--messages", "1")
    assert result.returncode == 0, result.stderr
    assert len(blocks(result.stdout)) == 2
    assert "summary: 2 envelopes; alice read 1, bob read 1, eve read 0" in result.stdout


def test_demo_rejects_a_bad_option_in_one_line() -> None:
    result = run_demo("--messages", "99")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--messages" in result.stderr


def test_demo_is_listed_in_the_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "umbra_waku", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert re.search(r"^\s+demo\s+", result.stdout, re.MULTILINE)
