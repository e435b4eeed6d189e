"""Build the table of docs/reliability.md from the suite's summary lines.

    UMBRA_WAKU_RELIABILITY_OUT=/tmp/reliability.txt .venv/bin/pytest tests/reliability
    .venv/bin/python tests/reliability/report.py /tmp/reliability.txt

Reads ``RELIABILITY scenario=... sent=N delivered=N lost=N duplicates=N key=value ...`` lines
(a file, or stdin; pytest's terminal summary prints them too) and prints one Markdown table row
per scenario (the last line of each scenario wins), in the order of SCENARIOS.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: scenario -> (fault or attack, what happened). The figures come from the lines.
SCENARIOS: dict[str, tuple[str, str]] = {
    "node_unreachable_at_start": (
        "Node unreachable at start: go-waku B down when the bridge starts; a bot is created, a "
        "peer on A invites it and sends while B is down; B starts ~3 s later",
        "API up, /v1/health 503 'not reachable yet'; the bridge kept retrying, connected when B "
        "answered, backfilled from A's store; the bot's reply reached the peer",
    ),
    "node_restart_sigterm": (
        "Node restarted mid-stream (SIGTERM): B stops at message 50 of 150, back after 2 s "
        "(same key, ports, DB); A keeps accepting and archiving",
        "polls failed while B was down; the adapter re-subscribed and filled the gap from A's "
        "store, the client backfilled after its health probe (production client timings)",
    ),
    "node_restart_sigkill": (
        "Node restarted mid-stream (SIGKILL, a crash), otherwise as above",
        "as above",
    ),
    "cache_overflow_burst": (
        "Node's message cache overflowed: a 500-message burst in one conversation, "
        "--rest-relay-cache-capacity=50, the bridge polling once a second",
        "polls came back full (full_polls); the adapter drained the cache (go-waku's queue "
        "blocks instead of evicting) and filled each gap it opened from A's store; the "
        "relay/store split varies from run to run",
    ),
    "bridge_sigkill_mid_stream": (
        "Bridge killed with SIGKILL mid-stream, twice, restarted on the same data directory; "
        "peer -> bot stream plus bot -> peer replies through the API",
        "event sequence without gap; every message the peer published reached the bot once; "
        "every reply the bridge acknowledged (201/202) reached the peer once",
    ),
    "disk_full": (
        "Data directory's disk full: a 4 MiB tmpfs, filled while 30 messages arrive",
        "one log line 'the bridge stopped: bridge database: OperationalError: database or disk "
        "is full', exit 1; integrity_check ok, no gap; after freeing space and a restart all 30 "
        "arrived once; a send on the full disk: 503 storage_unavailable, nothing published",
    ),
    "bot_away_then_resumes": (
        "Bot disconnected for 'minutes' (time compressed, see below): its WebSocket dropped "
        "without a close frame while 2,000 messages arrive over 10 conversations, the cache "
        "overflows and the node restarts once",
        "the bridge noticed the dead socket (gauge 0), kept storing, checkpointing and "
        "backfilling; the bot resumed with `after=` its last seq: everything, in order, once",
    ),
    "slow_bot_backpressure": (
        "Slow bot: holds its WebSocket open and reads nothing until 800 events of 32 KiB "
        "(25 MiB) are stored; control: the same flood read at once",
        "the backlog waited in SQLite: the bridge's peak RSS stayed within a few MiB of the "
        "control's; every event then arrived in order, once",
    ),
    "same_message_twice_relay_and_filter": (
        "Same message arriving twice: the bridge receives through A's relay AND B's filter "
        "client (two nodes, two protocols)",
        "every second copy was dropped by message hash before classification; delivered once",
    ),
    "reordered_beyond_hint_window": (
        "Envelope arriving beyond the hint window: #9 of a conversation published before #0..#8 "
        "(window 8), as gossipsub reordered under load",
        "parked as NotForMe and delivered once the window reached it (lost for good before "
        "commit 1a78750, found by the slow-bot scenario)",
    ),
    "hostile_envelopes_e2e": (
        "Malformed, oversized (149 kB), replayed, tampered, re-encoded envelopes and forged "
        "invitations, published on the network (inbox topic and private topic)",
        "each classified as expected and counted in umbra_bridge_envelopes_total; the bot got "
        "only the legitimate events; a tampered copy consumed nothing",
    ),
    "api_attacks": (
        "API: missing/wrong/deleted tokens, cross-bot access, path tricks in ids (../, %2e%2e, "
        "NUL, CRLF, 5,000-char, unicode, overlong UTF-8), hypothesis ids/bodies/queries, 100 kB "
        "URL and header, oversized body, gzip bomb",
        "401 / 403 / 404 / other 4xx as due; no 5xx; no internal error logged",
    ),
    "secrets_in_logs": (
        "Secrets in logs: two bridges at DEBUG (every logger), two bots exchanging text and "
        "binary content; bridge and go-waku logs searched",
        "no private key, ratchet key, token or plaintext in any encoding (hex, base64, "
        "url-safe, repr, 12-byte prefixes)",
    ),
}

CORE = ("scenario", "sent", "delivered", "lost", "duplicates")


def parse(lines: list[str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for line in lines:
        start = line.find("RELIABILITY ")
        if start < 0:
            continue
        fields = dict(part.split("=", 1) for part in line[start + 12 :].split() if "=" in part)
        if "scenario" in fields:
            found[fields["scenario"]] = fields
    return found


def table(found: dict[str, dict[str, str]]) -> str:
    rows = [
        "| # | fault or attack | what happened | sent | delivered | lost | dup. | details |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    order = list(SCENARIOS) + sorted(set(found) - set(SCENARIOS))
    for number, scenario in enumerate((s for s in order if s in found), 1):
        fields = found[scenario]
        what, happened = SCENARIOS.get(scenario, (scenario, ""))
        details = ", ".join(f"{k}={v}" for k, v in fields.items() if k not in CORE)
        counts = [fields.get(k, "") for k in ("sent", "delivered", "lost", "duplicates")]
        if counts[0] == "0":  # not a message-delivery scenario
            counts = ["n/a"] * 4
        rows.append(f"| {number} | {what} | {happened} | " + " | ".join(counts) + f" | {details} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    text = Path(argv[1]).read_text() if len(argv) > 1 else sys.stdin.read()
    found = parse(text.splitlines())
    if not found:
        print("no RELIABILITY lines found", file=sys.stderr)
        return 1
    print(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
