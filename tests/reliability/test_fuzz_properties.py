"""Fuzzing in the suite: hypothesis drives the same targets and oracles as the atheris harnesses
of fuzz/ (fuzz/common.py): the envelope classifier and the parsing of node responses. The long,
coverage-guided atheris runs are documented in docs/reliability.md; here a short atheris run of
each harness checks that they still work (skipped when atheris is not installed)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from umbra_waku.identity import Identity

from .helpers import settle

REPO = Path(__file__).resolve().parents[2]
FUZZ = REPO / "fuzz"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"umbra_fuzz_{name}", FUZZ / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


common = _load("common")
WORLD = common.build_world()
TOPICS = common.topics_for(WORLD)
SEEDS = WORLD.seeds

# ---------------------------------------------------------------------------------------------
# The classifier


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> bytes:
    """A real envelope of the fixed conversation, mutated: bytes flipped, cut, spliced,
    duplicated; or bytes from nowhere."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=400))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.integers(0, 5))
        if action == 0 and data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif action == 1:
            data = data[: draw(st.integers(0, len(data)))]
        elif action == 2:
            data += draw(st.binary(max_size=20))
        elif action == 3:
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.sampled_from(SEEDS))[: draw(st.integers(0, 80))]
        elif action == 4 and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at : at + 1] = bytes([draw(st.sampled_from([0x00, 0x08, 0x0A, 0x10, 0x52, 0xFF]))])
        else:
            data = data + data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.sampled_from(common.TARGETS),
    inputs=st.lists(
        st.tuples(mutated_envelopes(), st.sampled_from(range(len(TOPICS)))), min_size=1, max_size=3
    ),
)
def test_classifier_oracles(target: str, inputs: list[tuple[bytes, int]]) -> None:
    """Never raises, always one of three results, no swallowed bug, nothing readable that was
    not sealed for that session, nothing delivered twice (fuzz/common.py)."""
    common.check_classification(WORLD, target, [(data, TOPICS[t]) for data, t in inputs])


def test_classifier_oracles_accept_the_real_envelopes() -> None:
    """The oracle is not vacuous: the genuine envelopes are Readable, once, in any order."""
    assert common.check_classification(WORLD, "bob-fresh", [(WORLD.invite, None)]) == ["Readable"]
    kinds = common.check_classification(
        WORLD, "bob-in-conversation", [(m, "/umbra/1/private/proto") for m in WORLD.to_bob[::-1]]
    )
    assert kinds == ["Readable"] * len(WORLD.to_bob)
    twice = [(WORLD.to_alice[0], None), (WORLD.to_alice[0], None)]
    assert common.check_classification(WORLD, "alice-in-conversation", twice) == [
        "Readable",
        "BadlyFormed",
    ]
    with pytest.raises(common.OracleFailure):  # and it does catch a forgery
        common.check_classification(
            common.ClassifierWorld(
                WORLD.alice, WORLD.bob, b"", WORLD.alice_state, WORLD.bob_state, [], []
            ),
            "bob-fresh",
            [(WORLD.invite, None)],
        )


# ---------------------------------------------------------------------------------------------
# Node responses

#: Strings as JSON decoding produces them, lone surrogates excluded (they are the subject of
#: test_a_lone_surrogate_from_a_node_is_a_protocol_error).
node_text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    st.sampled_from(
        ["", "AA==", "AA", "-_-_", "0x" + "ab" * 32, "/waku/2/rs/42/0", "/umbra/1/private/proto",
         "9223372036854775808", "-1", "1700000000000000000", "v3.", "v1.", "null"]
    ),
)  # fmt: skip
node_keys = st.sampled_from(
    ["payload", "contentTopic", "content_topic", "version", "timestamp", "meta", "ephemeral",
     "proof", "messages", "message", "pubsubTopic", "pubsub_topic", "paginationCursor",
     "pagination_cursor", "statusCode", "statusDesc", "cursor", "digest", "data", "senderTime",
     "storeTime", "errorMessage", "error_message"]
)  # fmt: skip
node_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | node_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(node_keys | node_text, children, max_size=6)
    ),
    max_leaves=25,
)


@settings(max_examples=600, deadline=None)
@given(function=st.sampled_from(common.CODEC_FUNCTIONS), value=node_json)
@example(function="store_v3", value={"messages": [{"message": {"contentTopic": "/a/1/b/c"}}]})
@example(function="store_v1", value={"messages": None, "cursor": {"digest": {"data": 5}}})
@example(function="message", value={"contentTopic": "x", "timestamp": "99999999999999999999"})
def test_node_answers_become_messages_or_protocol_errors(function: str, value: Any) -> None:
    """Whatever JSON a node answers: a well-formed result, or NodeProtocolError (InvalidInput for
    cursors and hashes); never a KeyError, TypeError, ValueError or OverflowError."""
    common.check_codec(function, value)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.sampled_from(common.codec_seeds()), cut=st.integers(0, 400), junk=st.binary(max_size=8)
)
def test_truncated_and_spliced_node_json(seed: tuple[str, Any], cut: int, junk: bytes) -> None:
    function, value = seed
    text = json.dumps(value)
    mangled = text[:cut] + junk.decode("latin-1") + text[cut:]
    common.check_codec("reply_json", mangled)
    try:
        parsed = json.loads(mangled)
    except ValueError:
        return
    common.check_codec(function, parsed)


@pytest.mark.parametrize(
    ("function", "value"),
    [
        ("store_v3", {"messages": [{"message": {"contentTopic": "/a/1/\ud800/p"}}]}),
        ("store_v3", {"messages": [{"pubsubTopic": "\udc00", "message": {"contentTopic": "/a"}}]}),
        ("store_v1", {"messages": [{"payload": "AA==", "contentTopic": "\ud83d/1/b/c"}]}),
        ("message", {"payload": "AA==", "contentTopic": "/a/1/\udfff/proto"}),
    ],
    ids=["v3-content-topic", "v3-pubsub-topic", "v1-content-topic", "message"],
)  # fmt: skip
def test_a_lone_surrogate_from_a_node_is_a_protocol_error(function: str, value: Any) -> None:
    """Bug 4 of docs/reliability.md (found by atheris, fixed in 95ef439): a contentTopic or
    pubsubTopic holding a lone surrogate passed the codec, and hashing it raised
    UnicodeEncodeError instead of NodeProtocolError."""
    common.check_codec(function, json.loads(json.dumps(value)))


@pytest.mark.parametrize(
    ("function", "value"),
    [
        ("message", {"contentTopic": "/a/1/b/c", "timestamp": "--5"}),
        ("message", {"contentTopic": "/a/1/b/c", "version": "\u00b2"}),
        ("message_list", [{"content_topic": "/a/1/b/c", "timestamp": "-" * 70 + "2"}]),
        ("store_v1", {"messages": [], "cursor": {"senderTime": "--1", "storeTime": "1",
                                                 "digest": "AAAA"}}),
    ],
    ids=["timestamp", "version", "relay-poll", "legacy-cursor"],
)  # fmt: skip
def test_a_malformed_integer_string_is_a_protocol_error(function: str, value: Any) -> None:
    """Bug 5 of docs/reliability.md (found by atheris after 5.1 million inputs, fixed in
    95ef439): '--5' or a Unicode digit passed _int_value's isdigit() test and int() raised
    ValueError instead of NodeProtocolError."""
    common.check_codec(function, value)


async def test_a_hostile_store_answer_does_not_stop_live_reception(aiohttp_server: Any) -> None:
    """Bug 4's impact, end to end (a fake go-waku node: no real node writes such JSON). The
    store answers with a message whose content topic holds a lone surrogate, and the node
    forgets the subscription (a gap to fill from that store). Before the fix every gap fill
    raised UnicodeEncodeError, the adapter's poll loop retried the fill forever and never polled
    again: live messages stopped arriving while the client reported itself live. Now the answer
    is a NodeProtocolError, the gap is given up with a warning, and polling goes on."""
    fakenodes = pytest.importorskip("fakenodes")
    from umbra_waku.client import (
        ClientEvent,
        ClientOptions,
        ConversationStarted,
        MessageReceived,
        UmbraClient,
    )
    from umbra_waku.transport import connect

    network = fakenodes.FakeNetwork()
    node = fakenodes.make_fake_node("go-waku", network=network)
    other = fakenodes.make_fake_node("go-waku", network=network)  # the sender's node
    url = str((await aiohttp_server(node.app)).make_url("")).rstrip("/")
    other_url = str((await aiohttp_server(other.app)).make_url("")).rstrip("/")
    options = ClientOptions(health_interval=0.1, resubscribe_max_backoff=0.2, backfill_margin=1)
    me, peer = Identity.generate(), Identity.generate()
    transport = connect(
        url, poll_interval=0.05, retry_max_backoff=0.1, start_timeout=3, pubsub_topic=PUBSUB
    )
    events: list[ClientEvent] = []
    client = UmbraClient(me, transport, options=options)
    client.add_listener(events.append)
    sender = UmbraClient(
        peer, connect(other_url, pubsub_topic=PUBSUB, start_timeout=3), options=options
    )

    def texts() -> list[str | None]:
        return [e.content.as_text() for e in events if isinstance(e, MessageReceived)]

    async with client, sender:
        sent = await sender.invite(me.client_address, "before")
        await settle(lambda: any(isinstance(e, ConversationStarted) for e in events), 5)
        hostile = {
            "messages": [{"payload": "AA==", "contentTopic": "/a/1/\ud800/proto",
                          "timestamp": time.time_ns()}],
        }  # fmt: skip
        node.respond("/store/v1/messages", json.dumps(hostile))
        node.respond("/store/v3/messages", "no", status=500)
        node.restart()  # the node forgets the subscription: a gap to fill from the store
        await asyncio.sleep(1.0)
        after = await sender.send(sent.conversation_id, "after")
        await after.wait(5)
        await settle(lambda: "after" in texts(), 5)
    assert any(isinstance(e, ConversationStarted) for e in events)
    assert texts() == ["after"]


PUBSUB = "/waku/2/rs/42/0"


# ---------------------------------------------------------------------------------------------
# The atheris harnesses themselves


@pytest.mark.parametrize("harness", ["fuzz_classifier", "fuzz_codec"])
def test_atheris_harness_runs(harness: str, tmp_path: Path) -> None:
    """A short run of each harness (the long ones are documented, not run in CI)."""
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install atheris)")
    done = subprocess.run(
        [
            sys.executable,
            str(FUZZ / f"{harness}.py"),
            "-atheris_runs=3000",
            str(tmp_path / "corpus"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Done 3000 in" in done.stderr, done.stderr[-2000:]
    assert len(list((tmp_path / "corpus").iterdir())) > 5
