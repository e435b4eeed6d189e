"""ConversationTypes: each declares its content topics, its encryption and its valid frames."""

from umbra_waku.conversations.base import ConversationType, FrameError
from umbra_waku.conversations.inbox import INBOX_V1, InboxV1
from umbra_waku.conversations.private import PRIVATE_TOPIC, PRIVATE_V1, PrivateV1

__all__ = [
    "INBOX_V1",
    "PRIVATE_TOPIC",
    "PRIVATE_V1",
    "ConversationType",
    "FrameError",
    "InboxV1",
    "PrivateV1",
]
