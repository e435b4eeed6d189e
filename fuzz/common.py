"""Targets and oracles shared by the atheris harnesses and the hypothesis tests.

Nothing here imports atheris: ``tests/reliability/test_fuzz_properties.py`` drives the very same
oracles with hypothesis in CI, and the harnesses (``fuzz_classifier.py``, ``fuzz_codec.py``) drive
them with atheris for the long, coverage-guided runs documented in docs/reliability.md.

Oracles, i.e. what counts as a crash:

- classifier: ``Session.classify`` raises; returns anything but Readable / BadlyFormed /
  NotForMe; returns BadlyFormed("internal error: ..."), which means an exception was swallowed;
  returns Readable for bytes that are not one of the envelopes really sealed for that session
  (a forgery or a re-encoding got through); or delivers one envelope twice.
- fast path (differential, :func:`check_fast_path`, run on every classifier input): the native
  envelope scanner and its pure-Python twin disagree; the scanner accepts bytes that protobuf's
  parser refuses or reads differently; or the native NotForMe answer differs from the full
  classification path's answer.
- codec: a function turning node JSON into messages, pages or cursors raises anything but the
  documented error (NodeProtocolError for node answers, InvalidInput for cursors and hashes), or
  returns a value that breaks what callers rely on (bytes fields, int64 timestamps, a hash that
  can be computed, a cursor that round-trips).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from umbra_waku_rest.client import Reply, detect_implementation
from umbra_waku_rest.codec import (
    LegacyCursor,
    StoreV3Cursor,
    decode_cursor,
    encode_cursor,
    message_from_json,
    message_list_from_json,
    parse_store_v1,
    parse_store_v3,
)

from umbra_waku import Content, Identity, Session, _speedups_py, hints
from umbra_waku._proto.umbra_envelope_pb2 import UmbraEnvelopeV1
from umbra_waku.conversations.inbox import seal_to_inbox
from umbra_waku.conversations.private import PRIVATE_TOPIC, PrivateV1, content_frame
from umbra_waku.errors import InvalidInput, NodeProtocolError
from umbra_waku.frames import BadlyFormed, Classification, NotForMe, Readable
from umbra_waku.transport import ReceivedMessage
from umbra_waku.waku.message import MAX_MESSAGE_BYTES, MessageHash, WakuMessage

PUBSUB = "/waku/2/rs/42/0"


def _key(label: str) -> bytes:
    return hashlib.sha256(b"umbra-waku fuzz: " + label.encode()).digest()


# ---------------------------------------------------------------------------------------------
# Classifier


@dataclass
class ClassifierWorld:
    """A fixed conversation between alice (initiator) and bob, and the envelopes really sealed
    in it. Everything is derived from fixed keys and salts, so seeds are reproducible."""

    alice: Identity
    bob: Identity
    invite: bytes
    alice_state: bytes  # alice's side, before reading anything
    bob_state: bytes  # bob's side, before reading anything
    to_bob: list[bytes] = field(default_factory=list)  # alice -> bob, counters 0..n-1
    to_alice: list[bytes] = field(default_factory=list)  # bob -> alice

    @property
    def seeds(self) -> list[bytes]:
        return [self.invite, *self.to_bob, *self.to_alice]


def build_world(messages: int = 4) -> ClassifierWorld:
    alice, bob = Identity(_key("alice")), Identity(_key("bob"))
    conv_a, frame = PrivateV1.initiate(
        alice.private_key,
        bob.public_key,
        created_at_ms=1_700_000_000_000,
        initial=Content.text("hello bob"),
        ephemeral_private=_key("invitation ephemeral"),
    )
    _, invite = seal_to_inbox(
        bob.public_key, frame, salt=0x1234_5678, ephemeral_private=_key("ecies ephemeral")
    )
    conv_b, _ = PrivateV1.accept(
        bob.private_key, frame.invite_private_v1, ratchet_private=_key("bob ratchet")
    )
    world = ClassifierWorld(alice, bob, invite, conv_a.to_state(), conv_b.to_state())
    for i in range(messages):
        sent_at = 1_700_000_001_000 + i
        _, to_bob = conv_a.seal(content_frame(Content.text(f"a->b {i}"), sent_at), salt=i + 1)
        _, to_alice = conv_b.seal(content_frame(Content.text(f"b->a {i}"), sent_at), salt=i + 7)
        world.to_bob.append(to_bob)
        world.to_alice.append(to_alice)
    return world


#: Which session classifies, and what it may legitimately read.
TARGETS = ("bob-fresh", "bob-in-conversation", "alice-in-conversation")


def make_session(world: ClassifierWorld, target: str) -> tuple[Session, frozenset[bytes]]:
    if target == "bob-fresh":
        # once it has read the invitation, a fresh bob can read alice's messages too: their
        # first chain depends only on the invitation's keys, not on bob's own ratchet key
        return Session(world.bob), frozenset([world.invite, *world.to_bob])
    if target == "bob-in-conversation":
        session = Session(world.bob)
        session.add_conversation(PrivateV1.from_state(world.bob_state))
        return session, frozenset(world.to_bob)
    session = Session(world.alice)
    session.add_conversation(PrivateV1.from_state(world.alice_state))
    return session, frozenset(world.to_alice)


def topics_for(world: ClassifierWorld) -> list[str | None]:
    return [
        None,
        PRIVATE_TOPIC,
        world.bob.inbox_content_topic,
        world.alice.inbox_content_topic,
        "/other/1/topic/proto",
    ]


class OracleFailure(AssertionError):
    """An input broke an oracle: this is a finding."""


#: Findings already reported (docs/reliability.md, "Bugs found"), by a substring of the
#: OracleFailure message. A long run counts them and goes on looking for new ones; once the bug is
#: fixed the pattern simply stops matching. Set UMBRA_FUZZ_STRICT=1 to stop at these too.
KNOWN_FINDINGS: dict[str, str] = {
    # Empty: the two findings of the first runs (a lone surrogate in a node's contentTopic or
    # pubsubTopic; an integer string such as "--5") are fixed (95ef439), so a regression stops
    # the run. Add "<substring of the OracleFailure>": "<what it is>" while a finding is open.
}


def known_finding(failure: OracleFailure) -> str | None:
    """The pattern of a known finding ``failure`` is an instance of, or None."""
    import os

    if os.environ.get("UMBRA_FUZZ_STRICT") == "1":
        return None
    text = str(failure)
    return next((pattern for pattern in KNOWN_FINDINGS if pattern in text), None)


def check_fast_path(session: Session, data: bytes, topic: str | None) -> None:
    """The differential oracle of the NotForMe fast path, on ``session`` as it is now (nothing
    is changed: a NotForMe classification leaves the state alone)."""
    scanned = hints.impl.scan_envelope(data)
    twin = _speedups_py.scan_envelope(data)
    if scanned != twin:
        raise OracleFailure(f"scanners disagree: native {scanned!r}, Python {twin!r}: {data!r}")
    if scanned is not None:
        try:
            envelope = UmbraEnvelopeV1.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise OracleFailure(f"scanner accepts what protobuf refuses ({exc}): {data!r}") from exc
        parsed = (envelope.conversation_hint, envelope.salt)
        if parsed != scanned or not envelope.HasField("encrypted_bytes"):
            raise OracleFailure(f"scanner reads {scanned!r}, protobuf {parsed!r}: {data!r}")
    fast_path: Any = session.classify  # a hints.FastPath
    fast = fast_path.notforme(data, topic)
    if fast is not None:
        if fast.__class__ is not NotForMe:
            raise OracleFailure(f"fast path returned {fast!r}")
        full = session._classify(data, topic)
        if full != fast:
            raise OracleFailure(f"fast path says {fast!r}, the full path {full!r}: {data!r}")
    check_route(session, data)


def check_route(session: Session, data: bytes) -> None:
    """The router's promise to UmbraClient: when it names nobody for an envelope, the session
    answers NotForMe on the private topic (so skipping the session changes nothing); when it is
    not sure (None), neither is the fast path's scanner."""
    router = hints.impl.HintIndex()
    session.use_router(router, "s")
    try:
        [route] = router.route([data], MAX_MESSAGE_BYTES)
    finally:
        session.use_router(None)
    fast_path: Any = session.classify
    scanned = hints.impl.scan_envelope(data) if len(data) <= MAX_MESSAGE_BYTES else None
    if (route is None) != (scanned is None):
        raise OracleFailure(f"route {route!r} but the scanner read {scanned!r}: {data!r}")
    if route == () and fast_path.notforme(data, PRIVATE_TOPIC) is None:
        raise OracleFailure(f"the router names nobody, the fast path is not sure: {data!r}")
    if route not in (None, ()) and set(route) != {"s"}:
        raise OracleFailure(f"route names {route!r}, a router of one session 's': {data!r}")


def check_classification(
    world: ClassifierWorld,
    target: str,
    inputs: Sequence[tuple[bytes, str | None]],
) -> list[str]:
    """Classify ``inputs`` in order on one fresh session of ``target``; returns the result kinds.
    Raises OracleFailure (never anything else) when an oracle is broken."""
    session, valid = make_session(world, target)
    readable: set[bytes] = set()
    kinds = []
    results: list[Classification] = []
    for data, topic in inputs:
        check_fast_path(session, data, topic)
        try:
            result = session.classify(data, topic)
        except BaseException as exc:  # the contract: classify never raises
            raise OracleFailure(f"classify raised {type(exc).__name__}: {exc}") from exc
        results.append(result)
        if isinstance(result, BadlyFormed):
            if result.reason.startswith("internal error"):
                raise OracleFailure(f"classification swallowed a bug: {result.reason}")
        elif isinstance(result, Readable):
            if data not in valid:
                raise OracleFailure(f"Readable for bytes never sealed for {target}: {data!r}")
            if data in readable:
                raise OracleFailure(f"delivered twice: {data!r}")
            readable.add(data)
        elif not isinstance(result, NotForMe):
            raise OracleFailure(f"not a classification: {result!r}")
        kinds.append(type(result).__name__)
    check_batches(world, target, inputs, results)
    return kinds


def check_batches(
    world: ClassifierWorld,
    target: str,
    inputs: Sequence[tuple[bytes, str | None]],
    one_by_one: Sequence[Classification],
) -> None:
    """The oracle of ``Session.classify_many`` (the prefetching batch path): a second fresh
    session of ``target`` classifies the same inputs in batches, one per run of one topic, and
    must give exactly the results of one call per input."""
    session, _valid = make_session(world, target)
    batched: list[Classification] = []
    start = 0
    while start < len(inputs):
        topic = inputs[start][1]
        end = start
        while end < len(inputs) and inputs[end][1] == topic:
            end += 1
        try:
            batched += session.classify_many([data for data, _ in inputs[start:end]], topic)
        except BaseException as exc:
            raise OracleFailure(f"classify_many raised {type(exc).__name__}: {exc}") from exc
        start = end
    for position, (alone, together) in enumerate(zip(one_by_one, batched, strict=True)):
        if alone != together:
            raise OracleFailure(
                f"input {position}: classify gave {alone!r}, classify_many {together!r}"
            )


# ---------------------------------------------------------------------------------------------
# Node responses (adapters/umbra_waku_rest/codec.py and client.py)

CODEC_FUNCTIONS = (
    "message",
    "message_list",
    "store_v3",
    "store_v1",
    "cursor",
    "hash",
    "reply_json",
    "version",
)
_INT64 = range(-(1 << 63), 1 << 63)


def _check_message(message: object, where: str) -> None:
    if not isinstance(message, WakuMessage):
        raise OracleFailure(f"{where}: not a WakuMessage: {message!r}")
    for name in ("payload", "meta", "rate_limit_proof"):
        if type(getattr(message, name)) is not bytes:
            raise OracleFailure(f"{where}: {name} is not bytes")
    if not isinstance(message.content_topic, str):
        raise OracleFailure(f"{where}: content_topic is not str")
    if message.timestamp is not None and message.timestamp not in _INT64:
        raise OracleFailure(f"{where}: timestamp {message.timestamp} is not an int64")
    if not 0 <= message.version <= 0xFFFFFFFF or type(message.ephemeral) is not bool:
        raise OracleFailure(f"{where}: version/ephemeral out of range")
    try:  # what every receiver does next: hash it (dedupe) and read its payload
        message.hash(PUBSUB)
    except Exception as exc:
        raise OracleFailure(f"{where}: the parsed message cannot be hashed: {exc!r}") from exc


def _check_received(received: ReceivedMessage, where: str) -> None:
    _check_message(received.message, where)
    if received.hash != received.message.hash(received.pubsub_topic):
        raise OracleFailure(f"{where}: hash does not match the message")


def _check_cursor_round_trip(cursor: object, where: str) -> None:
    if cursor is None:
        return
    if not isinstance(cursor, StoreV3Cursor | LegacyCursor):
        raise OracleFailure(f"{where}: not a cursor: {cursor!r}")
    try:
        text = encode_cursor(cursor)
        back = decode_cursor(text)
    except Exception as exc:
        raise OracleFailure(f"{where}: cursor does not round-trip: {exc!r}") from exc
    if back != cursor:
        raise OracleFailure(f"{where}: cursor changed in a round trip: {cursor!r} -> {back!r}")


def _call(function: str, value: Any) -> None:
    if function == "message":
        _check_message(message_from_json(value, "fuzz"), function)
    elif function == "message_list":
        for message in message_list_from_json(value, "fuzz"):
            _check_message(message, function)
    elif function in ("store_v3", "store_v1"):
        parse = parse_store_v3 if function == "store_v3" else parse_store_v1
        page = parse(value, PUBSUB, "fuzz")
        for received in page.messages:
            _check_received(received, function)
        _check_cursor_round_trip(page.cursor, function)
    elif function == "cursor":
        if isinstance(value, str):
            _check_cursor_round_trip(decode_cursor(value), function)
    elif function == "hash":
        if isinstance(value, str) and len(MessageHash.parse(value)) != 32:
            raise OracleFailure("hash: not 32 bytes")
    elif function == "reply_json":
        text = value if isinstance(value, str) else json.dumps(value)
        reply = Reply("GET", "/fuzz", 200, "application/json", text)
        for message in message_list_from_json(reply.json(), "fuzz"):
            _check_message(message, function)
    elif function == "version":
        text = value if isinstance(value, str) else json.dumps(value)
        for content_type in ("application/json", "text/plain"):
            kind, version = detect_implementation(Reply("GET", "/v", 200, content_type, text))
            if kind not in ("nwaku", "go-waku") or not isinstance(version, str):
                raise OracleFailure(f"version: {kind!r} {version!r}")
    else:  # pragma: no cover
        raise ValueError(function)


#: The errors each kind of input may legitimately raise (the adapter's documented contract).
EXPECTED_ERRORS: dict[str, tuple[type[BaseException], ...]] = {
    "cursor": (InvalidInput,),
    "hash": (InvalidInput,),
}


def check_codec(function: str, value: Any) -> None:
    """Run one codec function on ``value``; raises OracleFailure (only) on a finding."""
    allowed = EXPECTED_ERRORS.get(function, (NodeProtocolError,))
    try:
        _call(function, value)
    except OracleFailure:
        raise
    except allowed:
        return
    except Exception as exc:
        raise OracleFailure(
            f"{function} raised {type(exc).__name__} (not {allowed[0].__name__}): {exc}"
        ) from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def codec_seeds() -> list[tuple[str, Any]]:
    """Realistic answers of both node kinds (shapes from docs/transport.md and tests/fakenodes)."""
    ct = "/umbra/1/private/proto"
    nwaku_msg = {
        "payload": _b64(b"\x0a\x40" + b"a" * 64),
        "contentTopic": ct,
        "version": 0,
        "timestamp": 1_700_000_000_000_000_000,
        "ephemeral": False,
    }
    go_msg = {
        "payload": _b64(b"xyz"),
        "content_topic": ct,
        "timestamp": "1700000000000000001",
        "meta": _b64(b"m"),
        "ephemeral": None,
    }
    digest = _b64(bytes(range(32)))
    return [
        ("message", nwaku_msg),
        ("message", go_msg),
        ("message_list", [nwaku_msg, nwaku_msg]),
        ("message_list", None),
        (
            "store_v3",
            {
                "requestId": "x",
                "statusCode": 200,
                "statusDesc": "OK",
                "messages": [
                    {"messageHash": "0x" + "ab" * 32, "message": nwaku_msg, "pubsubTopic": PUBSUB}
                ],
                "paginationCursor": "0x" + "cd" * 32,
            },
        ),
        (
            "store_v3",
            {
                "request_id": "y",
                "status_code": 200,
                "messages": [{"message_hash": digest, "message": go_msg, "pubsub_topic": PUBSUB}],
                "pagination_cursor": digest,
            },
        ),
        (
            "store_v1",
            {
                "messages": [nwaku_msg],
                "cursor": {
                    "pubsubTopic": PUBSUB,
                    "senderTime": 1,
                    "storeTime": 2,
                    "digest": {"data": digest},
                },
            },
        ),
        (
            "store_v1",
            {
                "messages": [go_msg],
                "cursor": {
                    "pubsub_topic": PUBSUB,
                    "senderTime": "3",
                    "storeTime": "4",
                    "digest": digest,
                },
                "error_message": "",
            },
        ),
        ("cursor", encode_cursor(StoreV3Cursor(MessageHash(bytes(32))))),
        ("cursor", encode_cursor(LegacyCursor(PUBSUB, 5, 6, b"d" * 32))),
        ("hash", "0x" + "ef" * 32),
        ("hash", digest),
        ("reply_json", "[]"),
        ("version", '"v0.10.1-gomodproxy"'),
        ("version", "v0.36.0"),
    ]


# ---- what both atheris harnesses share ----


def write_seeds(argv: Sequence[str], seeds: Iterable[bytes]) -> None:
    """Fill the first corpus directory on the command line with ``seeds`` if it is empty."""
    corpus = next((a for a in argv[1:] if not a.startswith("-")), None)
    if corpus is None:
        return
    path = Path(corpus)
    path.mkdir(parents=True, exist_ok=True)
    if not any(path.iterdir()):
        for i, seed in enumerate(seeds):
            (path / f"seed-{i:02d}").write_bytes(seed)


class Progress:
    """A progress line every 100,000 inputs and at the last one (libFuzzer exits without
    running Python's atexit handlers)."""

    def __init__(self, known: Counter[str], argv: Sequence[str]) -> None:
        self.known = known
        self.inputs = 0
        self.limit = next(
            (int(a.split("=", 1)[1]) for a in argv if a.startswith("-atheris_runs=")), 0
        )

    def tick(self) -> None:
        self.inputs += 1
        n = self.inputs
        if n % 100_000 == 0 or n == self.limit:
            known = "; ".join(f"{c} x {KNOWN_FINDINGS[p]}" for p, c in self.known.items())
            print(f"FUZZ-PROGRESS inputs={n} known_findings={known or 'none'}", flush=True)


def fuzz(
    argv: Sequence[str], test_one_input: Callable[[bytes], None], seeds: Iterable[bytes]
) -> None:
    """Seed the corpus, then hand over to atheris (imported here: only the harnesses need it)."""
    import atheris

    write_seeds(argv, seeds)
    atheris.Setup(list(argv), test_one_input)
    atheris.Fuzz()
