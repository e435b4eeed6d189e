"""The bridge's local HTTP API (aiohttp.web); the contract is :mod:`umbra_waku.bridge.openapi`.

Every route but ``/v1/openapi.json``, ``/v1/health`` and ``/metrics`` needs
``Authorization: Bearer <token>``: the admin token for ``/v1/bots``, a bot token for the rest.
A bot sees only its own conversations and events: another bot's conversation is a 404.

Errors are JSON ``{"error": {"code", "message", "field"}}``; bad input is always a 4xx that names
the field at fault, never a 5xx.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel, ValidationError

from umbra_waku.bridge import models
from umbra_waku.bridge.metrics import CONTENT_TYPE_LATEST
from umbra_waku.bridge.openapi import openapi_document
from umbra_waku.bridge.service import BotInfo, Bridge
from umbra_waku.bridge.store import ConversationRecord, EventRecord, short_id
from umbra_waku.client import Delivery, Sent
from umbra_waku.errors import ConversationError, InvalidAddress, InvalidInput, StateError
from umbra_waku.frames import TEXT_DOMAIN, Content
from umbra_waku.identity import parse_client_address

log = logging.getLogger("umbra_waku.bridge.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

PAGE_SIZE = 100
# A batch frame (``/v1/events?batch=true``) stops before this many characters (at most 1 MiB of
# UTF-8): a page of 100 large messages would otherwise make a frame of several MB, beyond what
# WebSocket clients accept by default (aiohttp: 4 MB), and a client that cannot read a frame
# would reconnect to the same page for ever. A single larger event goes alone.
MAX_BATCH_FRAME_CHARS = 256 * 1024
MAX_LIMIT = 1000
MAX_POLL_SECONDS = 60.0
MAX_CURSOR = 2**63 - 1
WS_HEARTBEAT = 30.0
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NO_STORE = {"Cache-Control": "no-store"}


@dataclass(eq=False)
class ApiState:
    bridge: Bridge
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    openapi: bytes = b""


STATE = web.AppKey("umbra_bridge_api", ApiState)


class ApiError(Exception):
    """An error answer: status, machine code, human message and the field at fault."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}

    def response(self) -> web.Response:
        detail = models.ErrorDetail(code=self.code, message=self.message, field=self.field)
        return _json(models.ErrorResponse(error=detail), self.status, {**_NO_STORE, **self.headers})


def _json(
    body: BaseModel | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return web.json_response(data, status=status, headers=headers or _NO_STORE, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Middleware and authentication
# ---------------------------------------------------------------------------------------------

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPRequestEntityTooLarge as exc:
        return ApiError(413, "payload_too_large", _one_line(exc.text or ""), "body").response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        message = _one_line(exc.reason if exc.status in (404, 405) else exc.text or exc.reason)
        return ApiError(exc.status, code, message, headers=headers).response()
    except asyncio.CancelledError:
        raise
    except StateError as exc:
        # the bridge's storage failed (disk full, I/O error): nothing was acknowledged, and
        # the request can be retried once the operator has made room
        log.error("%s %s: storage failed: %s", request.method, request.path, exc)
        message = _one_line(f"the bridge cannot save its state: {exc}")
        return ApiError(
            503, "storage_unavailable", message, headers={"Retry-After": "5"}
        ).response()
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return ApiError(500, "internal", "internal error").response()


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _bridge(request: web.Request) -> Bridge:
    return request.app[STATE].bridge


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def admin_route(handler: Handler) -> Handler:
    """Only the admin token."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        principal = _bridge(request).authenticate(request.headers.get("Authorization"))
        if principal is None:
            raise _unauthorized("a valid admin token is required (Authorization: Bearer ...)")
        if principal.kind != "admin":
            raise ApiError(403, "forbidden", "this route needs the admin token")
        return await handler(request)

    wrapped.auth = "admin"  # type: ignore[attr-defined]
    return wrapped


BOT_KEY = web.RequestKey("umbra_bot", BotInfo)


def bot_route(handler: Handler) -> Handler:
    """Only a bot token; the bot is ``request[BOT_KEY]``."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        bridge = _bridge(request)
        principal = bridge.authenticate(request.headers.get("Authorization"))
        if principal is None:
            raise _unauthorized("a valid bot token is required (Authorization: Bearer ...)")
        bot = None if principal.bot_id is None else bridge.bot(principal.bot_id)
        if bot is None:
            raise ApiError(403, "forbidden", "this route needs a bot token, not the admin token")
        request[BOT_KEY] = bot
        return await handler(request)

    wrapped.auth = "bot"  # type: ignore[attr-defined]
    return wrapped


# ---------------------------------------------------------------------------------------------
# Input helpers
# ---------------------------------------------------------------------------------------------


async def _body(request: web.Request, model: type[M], *, optional: bool = False) -> M:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return model()
        raise ApiError(400, "invalid_request", "a JSON object body is required", "body")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        location = ".".join(str(part) for part in error["loc"]) or "body"
        if error["type"] == "json_invalid":
            raise ApiError(400, "invalid_json", "the body is not valid JSON", "body") from None
        message = _one_line(str(error["msg"]))
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        raise ApiError(422, "invalid_request", message, location) from None


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 20 or not low <= int(text) <= high:
        raise ApiError(422, "invalid_request", f"must be an integer in [{low}, {high}]", name)
    return int(text)


def _float_query(request: web.Request, name: str, default: float, high: float) -> float:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= high:  # also rejects nan
        raise ApiError(
            422, "invalid_request", f"must be a number of seconds in [0, {high:g}]", name
        )
    return value


def _batch_frames(records: Sequence[EventRecord]) -> Iterator[tuple[str, int]]:
    """The events of a page as JSON arrays of at most MAX_BATCH_FRAME_CHARS characters (or one
    event), each with the seq of its last event."""
    parts: list[str] = []
    size = last = 0
    for record in records:
        part = _dumps(event_json(record))
        if parts and size + len(part) + 1 > MAX_BATCH_FRAME_CHARS:
            yield "[" + ",".join(parts) + "]", last
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
        last = record.seq
    if parts:
        yield "[" + ",".join(parts) + "]", last


def _bool_query(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "")
    if text in ("", "0", "false"):
        return False
    if text in ("1", "true"):
        return True
    raise ApiError(422, "invalid_request", "must be true or false", name)


def _decode_b64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_request", "must be standard base64", name) from None


def _content(
    text: str | None,
    domain: str | None,
    tag: int | None,
    data_b64: str | None,
    prefix: str = "",
) -> Content:
    if text is not None:
        if domain is not None or data_b64 is not None or tag is not None:
            raise ApiError(
                422, "invalid_request", "give either text, or domain and data_b64", prefix + "text"
            )
        return Content.text(text)
    if data_b64 is None:
        raise ApiError(422, "invalid_request", "give text, or domain and data_b64", prefix + "text")
    if domain is None:
        raise ApiError(422, "invalid_request", "required with data_b64", prefix + "domain")
    return Content(_decode_b64(data_b64, prefix + "data_b64"), domain, tag or 0)


async def _conversation(request: web.Request, bot: BotInfo) -> ConversationRecord:
    short = request.match_info["conversation_id"]
    record = None
    if _HEX64.fullmatch(short):
        record = await _bridge(request).conversation(bot.bot_id, short)
    if record is None:
        raise ApiError(404, "not_found", "no such conversation", "conversation_id")
    return record


def _require_accepting(bridge: Bridge, *, need_node: bool = True) -> None:
    """503 while draining, and (for what must reach the node) until the node answered."""
    reason = None
    if bridge.draining:
        reason = "shutting down"
    elif need_node and not bridge.connected:
        reason = "not connected to the node yet"
    if reason is not None:
        raise ApiError(503, "unavailable", reason, headers={"Retry-After": "5"})


# ---------------------------------------------------------------------------------------------
# Output helpers
# ---------------------------------------------------------------------------------------------


def _bot_model(bot: BotInfo) -> models.Bot:
    return models.Bot(
        bot_id=bot.bot_id,
        name=bot.name,
        client_address=bot.client_address,
        inbox_address=bot.inbox_address,
        created_at_ms=bot.created_at_ms,
    )


def _conversation_model(record: ConversationRecord) -> models.Conversation:
    return models.Conversation(
        id=record.short_id,
        protocol_id=record.conversation_id,
        peer=record.peer,
        initiated_by_me=record.initiator,
        closed=record.closed,
        created_at_ms=record.created_at_ms,
    )


def _send_result(sent: Sent, delivery: Delivery) -> models.SendResult:
    return models.SendResult(
        conversation_id=short_id(sent.conversation_id),
        message_hash=sent.message_hash.hex0x(),
        delivery=delivery.value,
    )


def _delivery_status(delivery: Delivery) -> int:
    """The HTTP status of a send by where its message stands: 201 published, 202 pending (the
    outbox retries it), 502 refused for good by the node."""
    return 502 if delivery is Delivery.FAILED else 201 if delivery is Delivery.PUBLISHED else 202


def _send_status(sent: Sent, delivery: Delivery) -> int:
    if delivery is Delivery.FAILED:
        raise ApiError(
            502,
            "publish_rejected",
            f"the node refused message {sent.message_hash.hex0x()}; it will not be retried",
        )
    return _delivery_status(delivery)


def event_json(record: EventRecord) -> dict[str, Any]:
    event = record.event
    out: dict[str, Any] = {
        "seq": record.seq,
        "type": event.kind,
        "conversation_id": short_id(event.conversation_id),
        "peer": event.peer,
        "received_at_ms": record.received_at_ms,
        "message_hash": "0x" + bytes(event.message_hash).hex(),
    }
    if event.kind == "message":
        data = bytes(event.data or b"")
        out["domain"] = event.domain
        out["tag"] = event.tag
        out["data_b64"] = base64.b64encode(data).decode("ascii")
        if event.domain == TEXT_DOMAIN:
            with contextlib.suppress(UnicodeDecodeError):
                out["text"] = data.decode("utf-8")
        if event.sent_at_ms is not None:
            out["sent_at_ms"] = event.sent_at_ms
    elif event.kind == "conversation_started":
        out["created_at_ms"] = event.created_at_ms
    else:
        out["reason"] = event.reason or ""
    return out


# ---------------------------------------------------------------------------------------------
# Public routes
# ---------------------------------------------------------------------------------------------


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[STATE].openapi, content_type="application/json")


async def get_health(request: web.Request) -> web.Response:
    bridge = _bridge(request)
    ready, reason = await bridge.health()
    connected = bridge.connected
    body = models.Health(
        status="ready" if ready else "unavailable",
        reason=reason,
        bots=len(bridge.bots()),
        node=bridge.node_label,
        live=connected and bridge.client.live,
        backfill_pending=len(bridge.client.backfill_pending) if connected else 0,
    )
    return _json(body, 200 if ready else 503)


async def get_metrics(request: web.Request) -> web.Response:
    bridge = _bridge(request)
    bridge.metrics.live.set(1 if bridge.connected and bridge.client.live else 0)
    return web.Response(body=bridge.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# ---------------------------------------------------------------------------------------------
# Admin routes
# ---------------------------------------------------------------------------------------------


@admin_route
async def create_bot(request: web.Request) -> web.Response:
    body = await _body(request, models.CreateBotRequest, optional=True)
    bridge = _bridge(request)
    _require_accepting(bridge, need_node=False)
    bot, token = await bridge.create_bot(body.name)
    created = models.CreatedBot(**_bot_model(bot).model_dump(), token=token)
    return _json(created, 201)


@admin_route
async def list_bots(request: web.Request) -> web.Response:
    bots = [_bot_model(bot) for bot in _bridge(request).bots()]
    return _json(models.BotList(bots=bots))


@admin_route
async def delete_bot(request: web.Request) -> web.Response:
    if not await _bridge(request).delete_bot(request.match_info["bot_id"]):
        raise ApiError(404, "not_found", "no such bot", "bot_id")
    return web.Response(status=204, headers=_NO_STORE)


# ---------------------------------------------------------------------------------------------
# Bot routes
# ---------------------------------------------------------------------------------------------


@bot_route
async def get_me(request: web.Request) -> web.Response:
    bot = request[BOT_KEY]
    me = models.Me(
        bot_id=bot.bot_id,
        name=bot.name,
        client_address=bot.client_address,
        inbox_address=bot.inbox_address,
        topics=bot.topics,
        last_seq=await _bridge(request).store.last_seq(bot.bot_id),
    )
    return _json(me)


@bot_route
async def list_conversations(request: web.Request) -> web.Response:
    """All of the bot's conversations, or with ``limit`` a page of them; ``next`` is the
    ``after`` of the next page (None: this page ends the list)."""
    bot_id = request[BOT_KEY].bot_id
    after = _conversation_cursor(request)
    bridge = _bridge(request)
    if "limit" not in request.query and after is None:
        records = await bridge.conversations(bot_id)
        more = False
    else:
        limit = _int_query(request, "limit", PAGE_SIZE, 1, MAX_LIMIT)
        records = await bridge.conversations_page(bot_id, after, limit + 1)
        more = len(records) > limit
        del records[limit:]
    items = [_conversation_model(record) for record in records]
    last = records[-1] if more else None
    cursor = None if last is None else f"{last.created_at_ms}.{last.short_id}"
    return _json(models.ConversationList(conversations=items, next=cursor))


_CONVERSATION_CURSOR = re.compile(r"([0-9]{1,19})\.([0-9a-f]{64})")


def _conversation_cursor(request: web.Request) -> tuple[int, str] | None:
    """The ``after`` of a conversation page: a previous page's ``next`` (created_at_ms, a dot,
    the last conversation's id)."""
    text = request.query.get("after")
    if text is None or text == "":
        return None
    match = _CONVERSATION_CURSOR.fullmatch(text)
    if match is None or int(match[1]) > MAX_CURSOR:
        raise ApiError(422, "invalid_request", "must be the next of a previous page", "after")
    return int(match[1]), match[2]


@bot_route
async def start_conversation(request: web.Request) -> web.Response:
    bot = request[BOT_KEY]
    body = await _body(request, models.StartConversationRequest)
    if body.text is not None and body.content is not None:
        raise ApiError(422, "invalid_request", "give either text or content", "content")
    content = None
    if body.content is not None:
        c = body.content
        content = _content(None, c.domain, c.tag, c.data_b64, "content.")
    elif body.text is not None:
        content = Content.text(body.text)
    if parse_client_address(body.peer).hex() == bot.client_address:
        raise ApiError(
            422, "invalid_request", "a bot cannot start a conversation with itself", "peer"
        )
    bridge = _bridge(request)
    _require_accepting(bridge)
    try:
        record, sent, delivery = await bridge.start_conversation(bot, body.peer, content)
    except InvalidAddress as exc:
        raise ApiError(422, "invalid_request", _one_line(str(exc)), "peer") from None
    except InvalidInput as exc:
        where = "content.data_b64" if body.content is not None else "text"
        raise ApiError(422, "invalid_request", _one_line(str(exc)), where) from None
    except ConversationError as exc:
        raise ApiError(404, "not_found", _one_line(str(exc)), "conversation_id") from None
    status = _send_status(sent, delivery)
    started = models.StartedConversation(
        conversation=_conversation_model(record), invitation=_send_result(sent, delivery)
    )
    return _json(started, status)


@bot_route
async def get_conversation(request: web.Request) -> web.Response:
    record = await _conversation(request, request[BOT_KEY])
    return _json(_conversation_model(record))


@bot_route
async def send_message(request: web.Request) -> web.Response:
    bot = request[BOT_KEY]
    record = await _conversation(request, bot)
    body = await _body(request, models.SendMessageRequest)
    content = _content(body.text, body.domain, body.tag, body.data_b64)
    where = "text" if body.text is not None else "data_b64"
    return await _seal_one(request, record, where, lambda b: b.send(bot, record, content))


async def _seal_one(
    request: web.Request,
    record: ConversationRecord,
    field: str,
    seal: Callable[[Bridge], Awaitable[tuple[Sent, Delivery]]],
) -> web.Response:
    """The answer of a route that seals one envelope of a conversation (a message, a close):
    409 when it is closed, 422 naming ``field`` when the envelope cannot be made, else the
    send result with its delivery's status."""
    if record.closed:
        raise ApiError(409, "conversation_closed", "the conversation is closed")
    bridge = _bridge(request)
    _require_accepting(bridge)
    try:
        sent, delivery = await seal(bridge)
    except InvalidInput as exc:
        raise ApiError(422, "invalid_request", _one_line(str(exc)), field) from None
    except ConversationError as exc:  # closed meanwhile
        raise ApiError(409, "conversation_closed", _one_line(str(exc))) from None
    return _json(_send_result(sent, delivery), _send_status(sent, delivery))


@bot_route
async def delete_conversation(request: web.Request) -> web.Response:
    bot = request[BOT_KEY]
    record = await _conversation(request, bot)
    try:
        await _bridge(request).delete_conversation(bot, record)
    except ConversationError:  # deleted meanwhile
        raise ApiError(404, "not_found", "no such conversation", "conversation_id") from None
    return web.Response(status=204, headers=_NO_STORE)


@bot_route
async def close_conversation(request: web.Request) -> web.Response:
    bot = request[BOT_KEY]
    record = await _conversation(request, bot)
    reason = ""
    if request.can_read_body:
        reason = (await _body(request, models.CloseConversationRequest)).reason
    return await _seal_one(
        request, record, "reason", lambda b: b.close_conversation(bot, record, reason)
    )


def _item_error(
    conversation_id: str, status: int, code: str, message: str, field: str | None
) -> dict[str, Any]:
    return {
        "status": status,
        "conversation_id": conversation_id,
        "message_hash": None,
        "delivery": None,
        "error": {"code": code, "message": message, "field": field},
    }


@bot_route
async def send_messages(request: web.Request) -> web.Response:
    """Many messages in one request: validated as a whole, sealed in order and saved in one
    transaction, published in order; each message gets its own result."""
    bot = request[BOT_KEY]
    body = await _body(request, models.SendBatchRequest)
    contents = [
        _content(m.text, m.domain, m.tag, m.data_b64, f"messages.{i}.")
        for i, m in enumerate(body.messages)
    ]
    bridge = _bridge(request)
    _require_accepting(bridge)
    results: list[dict[str, Any] | None] = [None] * len(contents)
    items: list[tuple[ConversationRecord, Content]] = []
    where: list[int] = []
    for i, (message, content) in enumerate(zip(body.messages, contents, strict=True)):
        short = message.conversation_id
        record = await bridge.conversation(bot.bot_id, short)
        if record is None:
            results[i] = _item_error(
                short, 404, "not_found", "no such conversation", f"messages.{i}.conversation_id"
            )
        elif record.closed:
            results[i] = _item_error(
                short, 409, "conversation_closed", "the conversation is closed", None
            )
        else:
            items.append((record, content))
            where.append(i)
    if items:
        outcomes = await bridge.send_many(bot, items)
        for i, outcome in zip(where, outcomes, strict=True):
            short = body.messages[i].conversation_id
            if isinstance(outcome, tuple):
                sent, delivery = outcome
                failed = delivery is Delivery.FAILED
                results[i] = {
                    "status": _delivery_status(delivery),
                    "conversation_id": short,
                    "message_hash": sent.message_hash.hex0x(),
                    "delivery": delivery.value,
                    "error": {
                        "code": "publish_rejected",
                        "message": "the node refused the message; it will not be retried",
                        "field": None,
                    }
                    if failed
                    else None,
                }
            elif isinstance(outcome, InvalidInput):
                field = "text" if body.messages[i].text is not None else "data_b64"
                results[i] = _item_error(
                    short,
                    422,
                    "invalid_request",
                    _one_line(str(outcome)),
                    f"messages.{i}.{field}",
                )
            else:
                results[i] = _item_error(
                    short, 409, "conversation_closed", _one_line(str(outcome)), None
                )
    return _json({"results": results})


@bot_route
async def poll_events(request: web.Request) -> web.Response:
    bot = request[BOT_KEY]
    after = _int_query(request, "after", 0, 0, MAX_CURSOR)
    limit = _int_query(request, "limit", PAGE_SIZE, 1, MAX_LIMIT)
    timeout = _float_query(request, "timeout", 25.0, MAX_POLL_SECONDS)
    bridge = _bridge(request)
    bell = bridge.notifier.bell(bot.bot_id)
    records = await bridge.events(bot.bot_id, after, limit)
    if not records and timeout > 0 and not bridge.draining:
        await _wait_any([bell.wait(), bridge.notifier.closed.wait()], timeout)
        records = await bridge.events(bot.bot_id, after, limit)
    events = [event_json(record) for record in records]
    page = {"events": events, "next": records[-1].seq if records else after}
    return _json(page)


@bot_route
async def stream_events(request: web.Request) -> web.StreamResponse:
    """The WebSocket event stream: every event with seq > after, in order, then live ones.

    Fresh events come from memory (:class:`~umbra_waku.bridge.service.Notifier`); older ones
    are read from the store a page at a time. Each send waits for the socket to drain, so a slow
    reader holds at most one page in memory. With ``batch=true`` a frame is a JSON array of
    the events of one page (one or more) instead of one event.
    """
    bot = request[BOT_KEY]
    after = _int_query(request, "after", 0, 0, MAX_CURSOR)
    batch = _bool_query(request, "batch")
    state = request.app[STATE]
    bridge = state.bridge
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT, max_msg_size=64 * 1024)
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "invalid_request", "expected a WebSocket upgrade", "Upgrade")
    await ws.prepare(request)
    state.sockets.add(ws)
    bridge.metrics.websockets.inc()
    bridge.notifier.follow(bot.bot_id)
    reader = asyncio.create_task(_drain_incoming(ws))
    try:
        while not ws.closed and not bridge.draining:
            bell = bridge.notifier.bell(bot.bot_id)
            if bridge.bot(bot.bot_id) is None:
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"bot deleted")
                break
            records = await bridge.events(bot.bot_id, after, PAGE_SIZE)
            if records and batch:
                for frame, last_seq in _batch_frames(records):
                    await ws.send_str(frame)
                    after = last_seq
            else:
                for record in records:
                    await ws.send_str(_dumps(event_json(record)))
                    after = record.seq
            if not records:
                await _wait_any([bell.wait(), reader], None)
                if reader.done():
                    break
    except (ConnectionResetError, RuntimeError) as exc:  # the peer went away mid-send
        log.debug("event stream of bot %s ended: %s", bot.bot_id, exc)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        bridge.notifier.unfollow(bot.bot_id)
        state.sockets.discard(ws)
        bridge.metrics.websockets.dec()
        if not ws.closed:
            code = WSCloseCode.GOING_AWAY if bridge.draining else WSCloseCode.OK
            await ws.close(code=code, message=b"server shutdown" if bridge.draining else b"")
    return ws


async def _drain_incoming(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, so pings and the close handshake work."""
    async for message in ws:
        if message.type is WSMsgType.ERROR:
            return


async def _wait_any(waitables: list[Awaitable[Any]], timeout: float | None) -> None:  # noqa: ASYNC109
    """Until one of ``waitables`` is done (or ``timeout``); cancels the ones it wrapped itself,
    never a task it was given."""
    tasks = [asyncio.ensure_future(w) for w in waitables]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task, waitable in zip(tasks, waitables, strict=True):
            if task is not waitable:
                task.cancel()


# ---------------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------------

#: (method, path, handler): the API. The OpenAPI document must describe exactly these.
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/v1/openapi.json", get_openapi),
    ("GET", "/v1/health", get_health),
    ("GET", "/metrics", get_metrics),
    ("POST", "/v1/bots", create_bot),
    ("GET", "/v1/bots", list_bots),
    ("DELETE", "/v1/bots/{bot_id}", delete_bot),
    ("GET", "/v1/me", get_me),
    ("GET", "/v1/conversations", list_conversations),
    ("POST", "/v1/conversations", start_conversation),
    ("GET", "/v1/conversations/{conversation_id}", get_conversation),
    ("DELETE", "/v1/conversations/{conversation_id}", delete_conversation),
    ("POST", "/v1/conversations/{conversation_id}/messages", send_message),
    ("POST", "/v1/conversations/{conversation_id}/close", close_conversation),
    ("POST", "/v1/messages", send_messages),
    ("GET", "/v1/events", stream_events),
    ("GET", "/v1/events/poll", poll_events),
)


async def _close_sockets(app: web.Application) -> None:
    state = app[STATE]
    state.bridge.begin_drain()
    for ws in list(state.sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def make_app(bridge: Bridge) -> web.Application:
    """The API application for a started :class:`Bridge`."""
    app = web.Application(
        client_max_size=bridge.settings.max_request_bytes, middlewares=[error_middleware]
    )
    document = openapi_document()
    app[STATE] = ApiState(bridge, openapi=json.dumps(document, indent=1).encode())
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.on_shutdown.append(_close_sockets)
    return app
