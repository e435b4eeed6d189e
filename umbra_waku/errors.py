"""The one error tree of umbra-waku.

Every error says what failed and whether trying again can help (``retriable``)::

    UmbraWakuError                     base; .retriable tells whether a retry can help
    ├── InvalidInput (ValueError)      the caller passed something unusable; never retriable
    │   ├── InvalidContentTopic        not a 23/WAKU2-TOPICS content topic
    │   ├── InvalidPubsubTopic         not /waku/2/rs/<cluster>/<shard>
    │   ├── MessageTooLarge            encoded WakuMessage above the network limit
    │   └── InvalidAddress             not a client_address (64 hex chars of an X25519 key)
    ├── ConfigError (ValueError)       a setting is invalid; names the setting
    ├── IdentityError                  a key file is missing, unreadable or readable by others
    ├── ConversationError              a conversation operation is not possible (unknown id, ...)
    ├── StateError                     persisted state cannot be read back or written
    └── TransportError                 talking to the Waku network failed
        ├── NodeUnreachable            connection refused/reset, DNS; retriable
        ├── NodeTimeout (TimeoutError) no answer within the configured time; retriable
        ├── NodeNotReady               the node is still initialising; retriable
        ├── NodeHTTPError              the node answered with an error status (.status, .body)
        │                              retriable for 429, 5xx except 501
        ├── NodeProtocolError          the node answered something we cannot understand
        ├── PublishRejected            the node refused a message (invalid, duplicate, no peers)
        └── TransportClosed            the transport was used after close

Bad bytes from the network are never errors: classification turns them into BadlyFormed.
"""

from __future__ import annotations


class UmbraWakuError(Exception):
    """Base of every error raised by umbra-waku."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class InvalidInput(UmbraWakuError, ValueError):
    """The caller passed a value that can never work; fix the input, do not retry."""


class InvalidContentTopic(InvalidInput):
    pass


class InvalidPubsubTopic(InvalidInput):
    pass


class MessageTooLarge(InvalidInput):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"encoded WakuMessage is {size} bytes, above the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class InvalidAddress(InvalidInput):
    pass


class ConfigError(UmbraWakuError, ValueError):
    """A setting is invalid. ``setting`` names it."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"invalid setting {setting}: {reason}")
        self.setting = setting
        self.reason = reason


class IdentityError(UmbraWakuError):
    """A key file cannot be created, read or trusted."""


class ConversationError(UmbraWakuError):
    """A conversation operation is not possible."""


class StateError(UmbraWakuError):
    """Persisted state cannot be read or written."""


class TransportError(UmbraWakuError):
    """Talking to the Waku network failed."""


class NodeUnreachable(TransportError):
    retriable = True


class NodeTimeout(TransportError, TimeoutError):
    retriable = True


class NodeNotReady(TransportError):
    retriable = True


class NodeHTTPError(TransportError):
    """The node answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        retriable = status == 429 or (status >= 500 and status != 501)
        short = body if len(body) <= 200 else body[:200] + "..."
        super().__init__(f"{method} {path} -> HTTP {status}: {short}", retriable=retriable)
        self.method = method
        self.path = path
        self.status = status
        self.body = body


class NodeProtocolError(TransportError):
    """The node's answer does not have the shape the REST API documents."""


class PublishRejected(TransportError):
    """The node (or the network) refused a message."""


class TransportClosed(TransportError):
    """The transport was used after it was closed."""
