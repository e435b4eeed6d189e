"""What a Readable envelope carries, as plain values (the protobuf types stay internal)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

#: The domain of plain UTF-8 text, the one every umbra-waku bot understands.
TEXT_DOMAIN = "umbra.text"
MAX_DOMAIN_LENGTH = 128


@dataclass(frozen=True, slots=True)
class Content:
    """Application bytes: ``domain`` names the application protocol, ``tag`` its message kind."""

    data: bytes
    domain: str = TEXT_DOMAIN
    tag: int = 0
    sent_at_ms: int = 0

    @classmethod
    def text(cls, text: str) -> Content:
        return cls(text.encode(), TEXT_DOMAIN, 0)

    def as_text(self) -> str | None:
        if self.domain != TEXT_DOMAIN:
            return None
        try:
            return self.data.decode()
        except UnicodeDecodeError:
            return None


@dataclass(frozen=True, slots=True)
class Invitation:
    """An accepted invitation: a new PrivateV1 conversation was created from it."""

    conversation_id: str
    initiator: str  # the initiator's client_address, proven by key confirmation
    created_at_ms: int
    initial_content: Content | None = None


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer left the conversation."""

    reason: str = ""


Frame = Content | Invitation | Closed


class State(StrEnum):
    READABLE = "readable"
    BADLY_FORMED = "badly_formed"
    NOT_FOR_ME = "not_for_me"


# The three results are not frozen: a frozen dataclass assigns through object.__setattr__, which
# would double the cost of classifying an envelope that is not for us (the hottest path).


@dataclass(slots=True)
class Readable:
    conversation_id: str
    conversation_type: str
    frame: Frame
    sender: str | None  # client_address where the conversation authenticates it
    hint: str
    salt: int
    state: ClassVar[State] = State.READABLE


@dataclass(slots=True)
class BadlyFormed:
    reason: str
    hint: str | None = None
    salt: int | None = None
    conversation_id: str | None = None  # set when it matched one of our conversations
    state: ClassVar[State] = State.BADLY_FORMED


@dataclass(slots=True)
class NotForMe:
    hint: str
    salt: int
    state: ClassVar[State] = State.NOT_FOR_ME


Classification = Readable | BadlyFormed | NotForMe
