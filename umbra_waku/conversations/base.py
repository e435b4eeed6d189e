"""The ConversationType framework (Conversations specification, "Conversations")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConversationType:
    """What the specification requires every ConversationType to define."""

    name: str
    #: Content topics where this type's envelopes travel ("{inbox_address}" is filled per client).
    content_topics: tuple[str, ...]
    encryption: str
    #: Frame types that are valid in this conversation type.
    frames: tuple[str, ...]


class FrameError(Exception):
    """A frame that decrypted but breaks its type's rules (classification: BadlyFormed)."""
