"""The local API's request and response bodies (pydantic models; the OpenAPI schemas come from
here, so documentation and validation cannot drift apart)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from umbra_waku.frames import MAX_DOMAIN_LENGTH
from umbra_waku.waku.message import MAX_MESSAGE_BYTES

#: Text and data are limited by what fits in one Waku message; the exact check is the seal's.
MAX_TEXT_CHARS = MAX_MESSAGE_BYTES
MAX_DATA_B64_CHARS = (MAX_MESSAGE_BYTES * 4) // 3 + 4
MAX_REASON_CHARS = 1024
HEX64 = r"^[0-9a-fA-F]{64}$"


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_utf8)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- requests ----


class CreateBotRequest(_Request):
    name: Text | None = Field(
        None, min_length=1, max_length=64, description="a label for operators; not secret"
    )


class ContentBody(_Request):
    """Application content: ``domain`` names the application protocol, ``tag`` its kind."""

    domain: Text = Field(min_length=1, max_length=MAX_DOMAIN_LENGTH)
    tag: int = Field(0, ge=0, le=2**32 - 1)
    data_b64: str = Field(
        max_length=MAX_DATA_B64_CHARS, description="the content bytes, standard base64"
    )


class StartConversationRequest(_Request):
    peer: str = Field(pattern=HEX64, description="client_address of the peer (64 hex characters)")
    text: Text | None = Field(
        None, max_length=MAX_TEXT_CHARS, description="first message, as umbra.text"
    )
    content: ContentBody | None = Field(
        None, description="first message, as application content (instead of text)"
    )


class SendMessageRequest(_Request):
    """Either ``text``, or ``domain`` + ``data_b64`` (+ ``tag``)."""

    text: Text | None = Field(None, max_length=MAX_TEXT_CHARS, description="umbra.text content")
    domain: Text | None = Field(None, min_length=1, max_length=MAX_DOMAIN_LENGTH)
    tag: int | None = Field(None, ge=0, le=2**32 - 1)
    data_b64: str | None = Field(
        None, max_length=MAX_DATA_B64_CHARS, description="the content bytes, standard base64"
    )


class CloseConversationRequest(_Request):
    reason: Text = Field("", max_length=MAX_REASON_CHARS, description="told to the peer")


#: Most messages in one POST /v1/messages.
MAX_BATCH = 1000


class BatchMessage(SendMessageRequest):
    """One message of a batch: its conversation, and the content as for one message."""

    conversation_id: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="Conversation.id (64 lowercase hex)"
    )


class SendBatchRequest(_Request):
    messages: list[BatchMessage] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="sealed in this order and saved in one transaction, then published in "
        "this order",
    )


# ---- responses ----


class ErrorDetail(_Response):
    code: str = Field(description="machine-readable: invalid_request, unauthorized, ...")
    message: str
    field: str | None = Field(None, description="the request field at fault, if one is")


class ErrorResponse(_Response):
    error: ErrorDetail


class Bot(_Response):
    bot_id: str
    name: str
    client_address: str = Field(description="what peers pass as 'peer' to reach this bot")
    inbox_address: str
    created_at_ms: int


class CreatedBot(Bot):
    token: str = Field(description="the bot's bearer token; shown once, only its hash is kept")


class BotList(_Response):
    bots: list[Bot]


class Me(_Response):
    bot_id: str
    name: str
    client_address: str
    inbox_address: str
    topics: list[str] = Field(description="the content topics the bridge watches for this bot")
    last_seq: int = Field(description="sequence number of the bot's latest event")


class Conversation(_Response):
    id: str = Field(description="the conversation's id in this API (64 hex)")
    protocol_id: str = Field(description="the protocol's conversation_id, /private/v1/<id>")
    peer: str = Field(description="client_address of the other side")
    initiated_by_me: bool
    closed: bool = Field(description="the peer left; nothing can be sent any more")
    created_at_ms: int


class ConversationList(_Response):
    conversations: list[Conversation]
    next: str | None = Field(
        default=None,
        description="with limit: the after of the next page; null when this page ends the list",
    )


class SendResult(_Response):
    conversation_id: str
    message_hash: str = Field(description="the Waku message hash, 0x-hex")
    delivery: Literal["published", "pending", "failed"] = Field(
        description="published: the node accepted it; pending: saved, retried in the background"
    )


class BatchResult(_Response):
    """The outcome of one message of a batch: ``status`` is what POST
    /v1/conversations/{id}/messages would have answered for it alone."""

    status: int = Field(description="201 published, 202 pending; or 404, 409, 422, 502")
    conversation_id: str
    message_hash: str | None = Field(None, description="when saved (201, 202, 502)")
    delivery: Literal["published", "pending", "failed"] | None = None
    error: ErrorDetail | None = Field(None, description="when status >= 400")


class SendBatchResult(_Response):
    results: list[BatchResult] = Field(description="one per message, in the request's order")


class StartedConversation(_Response):
    conversation: Conversation
    invitation: SendResult


class Event(_Response):
    """One event of a bot's stream; ``seq`` is the cursor to resume after."""

    seq: int
    type: Literal["conversation_started", "message", "conversation_closed"]
    conversation_id: str
    peer: str = Field(description="client_address of the other side (the sender of a message)")
    received_at_ms: int
    message_hash: str
    domain: str | None = None
    tag: int | None = None
    text: str | None = Field(None, description="for umbra.text content that is valid UTF-8")
    data_b64: str | None = None
    sent_at_ms: int | None = Field(None, description="the sender's clock, not verified")
    created_at_ms: int | None = None
    reason: str | None = None


class EventPage(_Response):
    events: list[Event]
    next: int = Field(description="the cursor for the next call (the last seq, or 'after')")


class Health(_Response):
    status: Literal["ready", "unavailable"]
    reason: str | None = None
    bots: int
    node: str = Field(description="the node URL's scheme and host (no credentials)")
    live: bool
    backfill_pending: int


REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    CreateBotRequest,
    StartConversationRequest,
    SendMessageRequest,
    SendBatchRequest,
    CloseConversationRequest,
)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    ErrorResponse,
    CreatedBot,
    BotList,
    Me,
    ConversationList,
    StartedConversation,
    SendResult,
    SendBatchResult,
    Conversation,
    Event,
    EventPage,
    Health,
)
