"""Memory: bridge RSS per idle conversation, and what one conversation costs inside a Session.

- Bridge RSS: two bridge processes (``python -m umbra_waku.bridge`` on ``memory://``) start from
  the same database, one bot, one with no conversation and one with N; the difference of their
  VmRSS (/proc/<pid>/status), divided by N, is what an idle conversation costs a running bridge:
  restored from its saved state, hints precomputed, nothing sent since. The conversations are
  written through the bridge's own Store API (``SqliteStore.record_received``), as a bridge would
  have saved them; their states come from one real conversation of that bot with fresh hint and
  header keys each (see classification.filler_states), so each one has its own hints.
- Bridge objects: the same two databases restored by a Bridge in this process (the Bridge class
  started as tests/bridge/conftest.py starts it) with ``tracemalloc`` on, which tells the bytes
  still alive per conversation from the transient peak of restoring them (the difference between
  these and the RSS figure is memory the allocator keeps after the restore, and SQLite's cache).
- Session: the same with ``tracemalloc`` inside this process, for a bare Session, with a
  breakdown (``sys.getsizeof``) of one conversation.

Database growth per 1,000 messages is measured in the end-to-end suite, on the bridge that carried
the messages.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import shutil
import sys
import time
import tracemalloc
from pathlib import Path

from benchmarks.classification import filler_states
from benchmarks.common import database_bytes, running_bridge, scaled, scratch_dir, vm_rss
from umbra_waku import Identity, Session
from umbra_waku.bridge.sqlite import SqliteStore
from umbra_waku.bridge.store import BotRecord, ConversationRecord
from umbra_waku.conversations.private import PrivateV1


def _template(identity: Identity) -> tuple[bytes, str]:
    """A real conversation of ``identity`` (the initiator) with a fresh peer: its saved state."""
    session = Session(identity)
    peer = Identity.generate()
    conversation, _ = session.invite(peer.client_address)
    return conversation.to_state(), peer.client_address


async def _populate(data_dir: Path, identity: Identity, states: list[bytes], peer: str) -> None:
    """The bridge database of one bot with these conversations, written through the Store."""
    store = SqliteStore(data_dir / "bridge.sqlite3")
    await store.open()
    try:
        created = time.time_ns()
        bot = BotRecord("benchbot", "bench", identity.private_key, b"\0" * 32, created // 10**6)
        if not await store.list_bots():
            await store.create_bot(bot, identity.inbox_content_topic, created)
        same_hash = hashlib.sha256(b"benchmark").digest()  # one seen-hash row in all
        for state in states:
            conversation = PrivateV1.from_state(state)
            record = ConversationRecord(
                bot.bot_id,
                conversation.conversation_id,
                peer,
                True,
                conversation.created_at_ms,
                False,
                state,
            )
            await store.record_received(record, [], same_hash, created // 10**6)
    finally:
        await store.close()


async def _bridge_rss(quick: bool, scale: float, scratch: str | None) -> dict[str, float]:
    count = scaled(20_000 if quick else 50_000, scale, 10)
    identity = Identity.generate()
    template, peer = _template(identity)
    states = filler_states(count, template)
    with scratch_dir(scratch) as base:
        empty, full = base / "empty", base / "full"
        empty.mkdir(mode=0o700)
        await _populate(empty, identity, [], peer)
        shutil.copytree(empty, full)
        await _populate(full, identity, states, peer)
        db_per_conversation = (database_bytes(full) - database_bytes(empty)) / count
        # the two bridge processes start while this process traces its own two Bridges
        rss_task = asyncio.gather(_bridge_rss_of(empty, "empty"), _bridge_rss_of(full, "full"))
        try:
            traced_empty = await traced_bridge(empty)
            traced_full = await traced_bridge(full)
        finally:
            rss_empty, rss_full = await rss_task
        rss = {"empty": rss_empty, "full": rss_full}
        traced = {"empty": traced_empty, "full": traced_full}
    return {
        "rss_bytes_per_idle_conversation": (rss["full"] - rss["empty"]) / count,
        "bridge_live_bytes_per_idle_conversation": (
            traced["full"]["current"] - traced["empty"]["current"]
        )
        / count,
        "bridge_restore_peak_bytes_per_conversation": (
            traced["full"]["peak"] - traced["empty"]["peak"]
        )
        / count,
        "rss_bridge_base_bytes": float(rss["empty"]),
        "rss_conversations_measured": float(count),
        "db_bytes_per_idle_conversation": db_per_conversation,
    }


async def _bridge_rss_of(data_dir: Path, label: str) -> int:
    """VmRSS of a bridge process started on ``data_dir``, once it serves."""
    async with running_bridge(f"memory://bench-rss-{label}", data_dir, connections=2) as bridge:
        await asyncio.sleep(0.5)  # let start-up settle (connect, first checkpoint)
        async with bridge.http.get(bridge.url + "/v1/health") as response:
            health = await response.json()
        if health["bots"] != 1:  # pragma: no cover - a broken benchmark
            raise RuntimeError(f"bridge restored {health['bots']} bots")
        return vm_rss(bridge.pid)


async def traced_bridge(data_dir: Path) -> dict[str, int]:
    """Start a Bridge on a copy of ``data_dir`` in this process (as tests/bridge/conftest.py
    does) with allocations traced: the bytes it holds once started, and the peak while starting."""
    from umbra_waku.bridge.service import Bridge
    from umbra_waku.bridge.settings import BridgeSettings

    copy = data_dir.with_name(data_dir.name + "-traced")
    shutil.copytree(data_dir, copy)
    try:
        settings = BridgeSettings(node=f"memory://traced-{copy.name}-{os.getpid()}", data_dir=copy)
        bridge = Bridge(settings)
        gc.collect()
        tracemalloc.start()
        try:
            await bridge.start()
            for _ in range(200):
                if bridge.connected:
                    break
                await asyncio.sleep(0.05)
            gc.collect()
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await bridge.stop()
        return {"current": current, "peak": peak}
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _session_bytes(quick: bool, scale: float) -> dict[str, float]:
    count = scaled(3_000 if quick else 20_000, scale, 10)
    identity = Identity.generate()
    template, _ = _template(identity)
    states = filler_states(count, template)
    session = Session(identity)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        session.restore(states)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    one = next(iter(session.conversations.values()))
    # what one idle conversation keeps: the packed fingerprint window, the one bytes object of its
    # six lifetime keys, and the ratchet's keys (the key properties are slices made on access)
    keys = [one._keys] + [
        getattr(one, name)
        for name in ("root_key", "dhs_priv", "dhs_pub", "dhr", "cks", "ckr")
        if getattr(one, name) is not None
    ]
    return {
        "session_bytes_per_idle_conversation": (after - before) / count,
        "session_window_bytes": float(sys.getsizeof(one._window)),
        "session_key_bytes": float(sum(sys.getsizeof(k) for k in keys)),
        "session_key_objects_per_conversation": float(len(keys)),
        "session_object_bytes": float(
            sys.getsizeof(one)
            + sys.getsizeof(one.skipped)
            + sys.getsizeof(one.missing)
            + sys.getsizeof(one.conversation_id)
        ),
        "hint_window": float(one.window),
    }


def run(*, quick: bool, scale: float = 1.0) -> dict[str, float]:
    out = _session_bytes(quick, scale)
    scratch = "/dev/shm" if Path("/dev/shm").is_dir() else None  # fast writes for the setup
    out.update(asyncio.run(_bridge_rss(quick, scale, scratch)))
    return out
