"""A Session: the sans-IO protocol state of one identity.

It owns the identity's default inbox, its conversations and the hint index, and it turns bytes
received into :class:`~umbra_waku.frames.Classification` results and intentions into bytes to
publish. It performs no I/O and never blocks, in the style of h11: a transport, a bot runtime or
the bridge moves the bytes.

Classification (profile §7) never raises, whatever the input: every byte string is exactly one
of Readable, BadlyFormed or NotForMe. An envelope read once is recognised if it comes again and is
reported BadlyFormed with reason ``replay``; it is never delivered twice.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import DecodeError

from umbra_waku import hints
from umbra_waku._proto import umbra_envelope_pb2
from umbra_waku.conversations.base import FrameError
from umbra_waku.conversations.inbox import INBOX_V1, InboxV1, seal_to_inbox
from umbra_waku.conversations.private import (
    PRIVATE_TOPIC,
    PRIVATE_V1,
    PrivateV1,
    close_frame,
    content_frame,
)
from umbra_waku.crypto import CryptoFailure
from umbra_waku.envelope import is_canonical, parse_envelope
from umbra_waku.errors import ConversationError, InvalidAddress, InvalidInput
from umbra_waku.frames import (
    MAX_DOMAIN_LENGTH,
    BadlyFormed,
    Classification,
    Content,
    NotForMe,
    Readable,
)
from umbra_waku.hints import HINT_LENGTH, HintIndex, ParkingLot, fingerprint
from umbra_waku.identity import Identity, parse_client_address
from umbra_waku.waku.message import MAX_MESSAGE_BYTES

log = logging.getLogger("umbra_waku.session")

MAX_HINT_WINDOW = 4096  # each window slot is one precomputed hint per conversation
REPLAY_MEMORY = 4096  # hints of recently read envelopes, to recognise replays


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An envelope to publish: its content topic and the envelope bytes (the Waku payload)."""

    conversation_id: str
    content_topic: str
    payload: bytes


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Classifier(Protocol):
    """The type of :attr:`Session.classify`."""

    def __call__(self, data: bytes, content_topic: str | None = None) -> Classification: ...


class Session:
    """The protocol state of one identity (see the module docstring)."""

    #: ``classify(data, content_topic=None) -> Classification``: classify one received payload;
    #: Readable results have been applied to the state. ``content_topic``, when given, lets
    #: envelopes from topics other than our inbox skip the inbox check. Never raises.
    #:
    #: Most envelopes a client sees are not for it, so this is a native callable
    #: (:class:`~umbra_waku.hints.FastPath`) that answers NotForMe itself when it is certain
    #: (a well-formed envelope of the usual shape on a topic that is not our inbox, whose hint
    #: fingerprint nothing expects and the replay memory does not hold) and otherwise returns
    #: :meth:`_classify`'s answer, the full classification of profile section 7.
    classify: Classifier

    def __init__(
        self,
        identity: Identity,
        *,
        hint_window: int | None = None,
        clock_ms: Callable[[], int] = _now_ms,
        parking: ParkingLot[Any] | None = None,
    ) -> None:
        if hint_window is not None and not 1 <= hint_window <= MAX_HINT_WINDOW:
            raise InvalidInput(f"hint_window must be between 1 and {MAX_HINT_WINDOW}")
        self.identity = identity
        self.inbox = InboxV1(identity)
        self.conversations: dict[str, PrivateV1] = {}
        impl = hints.impl  # the extension, or its pure-Python twin (tests swap it)
        self._index: HintIndex[PrivateV1] = impl.HintIndex(parking)
        self._recent: OrderedDict[str, str] = OrderedDict()  # hint -> conversation_id
        # the replay memory's fingerprints, for the fast path: fingerprint -> conversation_id
        self._recent_index: HintIndex[str] = impl.HintIndex()
        self._hint_window = hint_window
        self._clock_ms = clock_ms
        self.classify = impl.FastPath(
            self._index,
            self._recent_index,
            self.inbox.content_topic,
            NotForMe,
            MAX_MESSAGE_BYTES,
            self._classify,
        )

    # ---- topics and conversations ----

    @property
    def content_topics(self) -> list[str]:
        """What a transport must subscribe to for this identity."""
        return [self.inbox.content_topic, PRIVATE_TOPIC]

    def use_parking(self, parking: ParkingLot[Any] | None) -> None:
        """Release envelopes parked in ``parking`` when this session starts expecting them
        (see :class:`~umbra_waku.hints.ParkingLot`); the caller parks and re-classifies."""
        self._index.parking = parking

    def use_router(self, router: HintIndex[Any] | None, tag: Any = None) -> None:
        """Keep, in ``router``, one (fingerprint, ``tag``) entry for each hint this session
        expects or remembers as read (None: take them out). A client with many sessions looks
        an envelope's fingerprint up there to learn which sessions may read it: every other
        session would answer NotForMe (see :meth:`HintIndex.route
        <umbra_waku._speedups.HintIndex>`)."""
        self._index.mirror_to(router, tag)
        self._recent_index.mirror_to(router, tag)

    def add_conversation(self, conversation: PrivateV1) -> None:
        if self._hint_window is not None:
            conversation.window = self._hint_window
        old = self.conversations.get(conversation.conversation_id)
        if old is not None:
            old.detach()
        self.conversations[conversation.conversation_id] = conversation
        conversation.attach(self._index)

    def restore(self, states: Iterable[bytes]) -> None:
        """Re-add conversations saved with :meth:`PrivateV1.to_state`."""
        for state in states:
            self.add_conversation(PrivateV1.from_state(state))

    def remove_conversation(self, conversation_id: str) -> None:
        conversation = self.conversations.pop(conversation_id, None)
        if conversation is not None:
            conversation.detach()

    def conversation(self, conversation_id: str) -> PrivateV1:
        try:
            return self.conversations[conversation_id]
        except KeyError:
            raise ConversationError(f"unknown conversation {conversation_id!r}") from None

    # ---- sending ----

    def invite(
        self, client_address: str, content: Content | None = None
    ) -> tuple[PrivateV1, Outgoing]:
        """Start a PrivateV1 conversation with ``client_address``: the conversation (already
        added) and the invitation to publish to the peer's inbox."""
        remote = parse_client_address(client_address)
        if remote == self.identity.public_key:
            raise InvalidInput("cannot start a conversation with oneself")
        if content is not None:
            _check_content(content)
        try:
            conversation, frame = PrivateV1.initiate(
                self.identity.keypair, remote, created_at_ms=self._clock_ms(), initial=content
            )
            topic, payload = seal_to_inbox(remote, frame)
        except CryptoFailure:
            # e.g. a low-order point: 64 hex characters, but no usable X25519 public key
            raise InvalidAddress(f"{client_address} is not a usable X25519 public key") from None
        _check_size(payload)
        self.add_conversation(conversation)
        return conversation, Outgoing(conversation.conversation_id, topic, payload)

    def send(self, conversation_id: str, content: Content) -> Outgoing:
        """Encrypt ``content`` for a conversation; persist the conversation before publishing."""
        _check_content(content)
        conversation = self.conversation(conversation_id)
        if conversation.closed:
            raise ConversationError(f"conversation {conversation_id} is closed")
        frame = content_frame(content, self._clock_ms())
        _check_frame_size(frame.ByteSize(), "content")
        _, payload = conversation.seal(frame, salt=secrets.randbits(32))
        return Outgoing(conversation_id, PRIVATE_TOPIC, payload)

    def close(self, conversation_id: str, reason: str = "") -> Outgoing:
        """Tell the peer we leave: the Close frame to publish. The conversation stays, closed,
        as when the peer leaves: nothing more can be sent in it, and what the peer sent before it
        learnt is still read. :meth:`remove_conversation` forgets it."""
        conversation = self.conversation(conversation_id)
        if conversation.closed:
            raise ConversationError(f"conversation {conversation_id} is closed")
        frame = close_frame(reason, self._clock_ms())
        _check_frame_size(frame.ByteSize(), "the reason")
        _, payload = conversation.seal(frame, salt=secrets.randbits(32))
        conversation.closed = True
        return Outgoing(conversation_id, PRIVATE_TOPIC, payload)

    # ---- receiving ----

    def classify_many(
        self, payloads: Sequence[bytes], content_topic: str | None = None
    ) -> list[Classification]:
        """Classify a batch of received payloads, all from ``content_topic`` (None: unknown).

        The results are exactly those of calling :attr:`classify` on each payload in order: each
        envelope is classified after the state changes of the ones before it (a Readable
        envelope moves its conversation's window for the next, a second copy of it later in the
        batch is a replay). What a batch adds is speed with many conversations: natively, while
        an envelope is classified, the hint index's memory for the envelopes a few places ahead
        is already being fetched (``FastPath.many``), so that their cache misses overlap instead
        of costing one memory access each (docs/performance.md, section 1). A receive loop that
        gets envelopes in batches (a REST poll, a drained queue) should use this.

        Never raises for any payload (as :attr:`classify`); TypeError when ``payloads`` is not a
        sequence of payloads (one ``bytes`` object, say).
        """
        classify = self.classify
        many = getattr(classify, "many", None)
        if many is not None:
            return many(payloads, content_topic)  # type: ignore[no-any-return]
        # classify was replaced (an observer wrapping it, as the demo does): one at a time
        if isinstance(payloads, bytes | bytearray | memoryview | str):
            raise TypeError("classify_many() takes a sequence of payloads, not one payload")
        return [classify(data, content_topic) for data in tuple(payloads)]

    def _classify(self, data: bytes, content_topic: str | None = None) -> Classification:
        """The full classification (profile section 7) that :attr:`classify` falls back on."""
        try:
            if len(data) > MAX_MESSAGE_BYTES:
                return BadlyFormed("envelope larger than a Waku message can be")
            try:
                envelope = parse_envelope(data)
            except (DecodeError, ValueError, RuntimeError):
                return BadlyFormed("not an UmbraEnvelopeV1")
            conversation_hint = envelope.conversation_hint
            match = self._match(conversation_hint)
            if match is not None:
                if not is_canonical(envelope, data):
                    return BadlyFormed("non-canonical envelope encoding", conversation_hint)
                return self._read_private(*match, envelope)
            salt = envelope.salt
            if len(conversation_hint) != HINT_LENGTH:
                return BadlyFormed(
                    "conversation_hint is not 64 characters", conversation_hint or None, salt
                )
            if not envelope.HasField("encrypted_bytes"):
                return BadlyFormed("encrypted_bytes is missing", conversation_hint, salt)
            replayed = self._recent.get(conversation_hint)
            if replayed is not None:
                return BadlyFormed("replay", conversation_hint, salt, replayed)
            inbox = self.inbox
            if (content_topic is None or content_topic == inbox.content_topic) and inbox.matches(
                conversation_hint, salt
            ):
                if not is_canonical(envelope, data):
                    return BadlyFormed("non-canonical envelope encoding", conversation_hint, salt)
                return self._read_inbox(envelope)
            return NotForMe(conversation_hint, salt)
        except Exception as exc:  # a bug must not take the receive loop down; tests assert none
            log.exception("classification failed unexpectedly")
            return BadlyFormed(f"internal error: {type(exc).__name__}")

    def _match(self, conversation_hint: str) -> tuple[PrivateV1, int] | None:
        """The conversation expecting ``conversation_hint``, and the counter it expects it for.
        The index answers by fingerprint; each candidate checks the whole hint."""
        fp = fingerprint(conversation_hint)
        if fp is None:
            return None
        for candidate in self._index.owners(fp):
            counter = candidate.counter_of(conversation_hint, fp)
            if counter is not None:
                return candidate, counter
        return None

    def _read_private(
        self, conversation: PrivateV1, counter: int, envelope: umbra_envelope_pb2.UmbraEnvelopeV1
    ) -> Classification:
        conversation_hint, salt = envelope.conversation_hint, envelope.salt
        cid = conversation.conversation_id
        try:
            frame = conversation.open(conversation_hint, salt, envelope.encrypted_bytes, counter)
        except (CryptoFailure, FrameError) as exc:
            return BadlyFormed(str(exc), conversation_hint, salt, cid)
        self._remember(conversation_hint, cid)
        return Readable(
            cid, PRIVATE_V1.name, frame, conversation.peer_address, conversation_hint, salt
        )

    def _read_inbox(self, envelope: umbra_envelope_pb2.UmbraEnvelopeV1) -> Classification:
        conversation_hint, salt = envelope.conversation_hint, envelope.salt
        inbox_id = self.inbox.conversation_id
        try:
            frame = self.inbox.open(conversation_hint, salt, envelope.encrypted_bytes)
            conversation, invitation = PrivateV1.accept(
                self.identity.keypair, frame.invite_private_v1
            )
        except (CryptoFailure, FrameError) as exc:
            return BadlyFormed(str(exc), conversation_hint, salt, inbox_id)
        if conversation.conversation_id in self.conversations:
            return BadlyFormed("replay", conversation_hint, salt, inbox_id)
        self.add_conversation(conversation)
        self._remember(conversation_hint, inbox_id)
        return Readable(inbox_id, INBOX_V1.name, invitation, None, conversation_hint, salt)

    def _remember(self, conversation_hint: str, conversation_id: str) -> None:
        recent = self._recent
        if conversation_hint in recent:  # pragma: no cover - a read hint is a replay from now on
            return
        fp = fingerprint(conversation_hint)
        recent[conversation_hint] = conversation_id
        if fp is not None:
            self._recent_index.add(fp, conversation_id)
        if len(recent) > REPLAY_MEMORY:
            old_hint, old_id = recent.popitem(last=False)
            old_fp = fingerprint(old_hint)
            if old_fp is not None:
                self._recent_index.remove(old_fp, old_id)


def _check_content(content: Content) -> None:
    if not content.domain or len(content.domain) > MAX_DOMAIN_LENGTH:
        raise InvalidInput(f"content domain must be 1 to {MAX_DOMAIN_LENGTH} characters")
    if not 0 <= content.tag < 2**32:
        raise InvalidInput("content tag must fit in 32 bits")


def _check_frame_size(size: int, what: str) -> None:
    # checked before sealing, which moves the ratchet: a refused frame changes nothing
    if size > MAX_MESSAGE_BYTES - 512:
        raise InvalidInput(f"{what} of {size} bytes does not fit in one Waku message")


def _check_size(payload: bytes) -> None:
    if len(payload) > MAX_MESSAGE_BYTES - 512:
        raise InvalidInput(f"envelope of {len(payload)} bytes does not fit in one Waku message")
