"""Shared helpers for the core tests: sessions that talk entirely in memory."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from umbra_waku import Content, Identity, Session
from umbra_waku.frames import BadlyFormed, Classification, Invitation, NotForMe, Readable
from umbra_waku.session import Outgoing


class Clock:
    """A deterministic millisecond clock."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self._ticks = itertools.count(start)

    def __call__(self) -> int:
        return next(self._ticks)


@dataclass
class Pair:
    alice: Session  # initiator
    bob: Session  # recipient
    cid: str
    invite: Outgoing

    def a2b(self, text: str) -> Outgoing:
        return self.alice.send(self.cid, Content.text(text))

    def b2a(self, text: str) -> Outgoing:
        return self.bob.send(self.cid, Content.text(text))


def make_pair(*, window: int | None = None, initial: str | None = "hi") -> Pair:
    alice = Session(Identity.generate(), hint_window=window, clock_ms=Clock())
    bob = Session(Identity.generate(), hint_window=window, clock_ms=Clock())
    content = None if initial is None else Content.text(initial)
    conversation, invite = alice.invite(bob.identity.client_address, content)
    result = bob.classify(invite.payload, invite.content_topic)
    assert isinstance(result, Readable), result
    assert isinstance(result.frame, Invitation)
    assert result.frame.conversation_id == conversation.conversation_id
    return Pair(alice, bob, conversation.conversation_id, invite)


def text_of(result: Classification) -> str:
    assert isinstance(result, Readable), result
    assert isinstance(result.frame, Content), result.frame
    text = result.frame.as_text()
    assert text is not None
    return text


def check_shape(result: object) -> None:
    """Exactly one of the three results, never an internal error."""
    assert type(result) in (Readable, BadlyFormed, NotForMe), result
    if isinstance(result, BadlyFormed):
        assert not result.reason.startswith("internal error"), result
