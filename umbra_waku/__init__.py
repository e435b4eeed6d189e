"""umbra-waku: the Conversations protocol over Waku.

The core (this package) is sans-IO: envelopes, hints, classification and the conversation state
machines. Transports (``umbra_waku.transport``) and the bridge do the I/O.
"""

from umbra_waku.errors import UmbraWakuError
from umbra_waku.frames import (
    BadlyFormed,
    Classification,
    Closed,
    Content,
    Invitation,
    NotForMe,
    Readable,
    State,
)
from umbra_waku.identity import Identity
from umbra_waku.session import Outgoing, Session

__version__ = "0.1.0"

__all__ = [
    "BadlyFormed",
    "Classification",
    "Closed",
    "Content",
    "Identity",
    "Invitation",
    "NotForMe",
    "Outgoing",
    "Readable",
    "Session",
    "State",
    "UmbraWakuError",
    "__version__",
]
