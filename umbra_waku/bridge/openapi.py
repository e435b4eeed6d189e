"""The OpenAPI 3.1 description of the bridge's API, served at ``/v1/openapi.json``.

Schemas come from :mod:`umbra_waku.bridge.models` (the same models validate the requests); the
paths below must match :data:`umbra_waku.bridge.api.ROUTES` exactly, which a test checks.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from umbra_waku import __version__
from umbra_waku.bridge import models

Json = dict[str, Any]

_ADMIN: list[Json] = [{"adminToken": []}]
_BOT: list[Json] = [{"botToken": []}]
_PUBLIC: list[Json] = []


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(name: str, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _error(description: str) -> Json:
    return _json_body("ErrorResponse", description)


def _errors(*statuses: int) -> Json:
    texts = {
        400: "The body is not a JSON object (field: body)",
        401: "Missing or wrong token",
        403: "A token of the wrong kind (admin vs bot)",
        404: "Not found, or not this bot's (the field names the path parameter)",
        409: "The peer closed the conversation",
        413: "The body is larger than max_request_bytes (field: body)",
        422: "A field is invalid; error.field names it",
        502: "The node refused the message for good (it is not retried)",
        503: "Shutting down, or not connected to the node yet (Retry-After)",
    }
    return {str(status): _error(texts[status]) for status in statuses}


def _query(name: str, description: str, schema: Json) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _path(name: str, description: str, schema: Json) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


_AFTER = _query(
    "after",
    "Return events with seq greater than this cursor (default 0: from the first event)",
    {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "default": 0},
)
_CONVERSATION_ID = _path(
    "conversation_id",
    "The conversation's id in this API (Conversation.id, 64 hex)",
    {"type": "string", "pattern": "^[0-9a-f]{64}$"},
)


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    security: list[Json],
    responses: Json,
    *,
    description: str = "",
    body: Json | None = None,
    parameters: list[Json] | None = None,
) -> Json:
    op: Json = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": responses,
    }
    if description:
        op["description"] = description
    if body is not None:
        op["requestBody"] = body
    if parameters:
        op["parameters"] = parameters
    return op


def _paths() -> Json:
    return {
        "/v1/openapi.json": {
            "get": _operation(
                "getOpenApi",
                "This document",
                "meta",
                _PUBLIC,
                {
                    "200": {
                        "description": "The OpenAPI 3.1 document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            )
        },
        "/v1/health": {
            "get": _operation(
                "getHealth",
                "Readiness: the node answers and the subscriptions are live",
                "meta",
                _PUBLIC,
                {
                    "200": _json_body("Health", "Ready"),
                    "503": _json_body("Health", "Not ready; reason says why"),
                },
            )
        },
        "/metrics": {
            "get": _operation(
                "getMetrics",
                "Prometheus metrics of this bridge",
                "meta",
                _PUBLIC,
                {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/v1/bots": {
            "post": _operation(
                "createBot",
                "Create a bot: a new identity and its API token (shown once)",
                "admin",
                _ADMIN,
                {
                    "201": _json_body("CreatedBot", "The bot, with its token"),
                    **_errors(400, 401, 403, 413, 422, 503),
                },
                body={
                    "required": False,
                    "content": {"application/json": {"schema": _ref("CreateBotRequest")}},
                },
            ),
            "get": _operation(
                "listBots",
                "List the bots (never their tokens)",
                "admin",
                _ADMIN,
                {"200": _json_body("BotList", "Every bot"), **_errors(401, 403)},
            ),
        },
        "/v1/bots/{bot_id}": {
            "delete": _operation(
                "deleteBot",
                "Remove a bot with its identity, conversations and events",
                "admin",
                _ADMIN,
                {"204": {"description": "Removed"}, **_errors(401, 403, 404)},
                parameters=[_path("bot_id", "Bot.bot_id", {"type": "string"})],
            )
        },
        "/v1/me": {
            "get": _operation(
                "getMe",
                "This bot's addresses, topics and latest event cursor",
                "bot",
                _BOT,
                {"200": _json_body("Me", "The bot"), **_errors(401, 403)},
            )
        },
        "/v1/conversations": {
            "get": _operation(
                "listConversations",
                "This bot's conversations, oldest first",
                "bot",
                _BOT,
                {
                    "200": _json_body("ConversationList", "The conversations"),
                    **_errors(401, 403, 422),
                },
                description="Without limit and after: every conversation. With limit: a page "
                "of at most limit; pass its next as after for the following page (next is null "
                "on the last page).",
                parameters=[
                    _query(
                        "limit",
                        "Most conversations returned (default 100 when after is given)",
                        {"type": "integer", "minimum": 1, "maximum": 1000},
                    ),
                    _query(
                        "after",
                        "The next of the previous page",
                        {"type": "string", "pattern": "^[0-9]{1,19}[.][0-9a-f]{64}$"},
                    ),
                ],
            ),
            "post": _operation(
                "startConversation",
                "Invite a peer (by client_address) into a new conversation",
                "bot",
                _BOT,
                {
                    "201": _json_body(
                        "StartedConversation", "Created; the invitation was published"
                    ),
                    "202": _json_body(
                        "StartedConversation",
                        "Created; the invitation is saved and still being published",
                    ),
                    **_errors(400, 401, 403, 413, 422, 502, 503),
                },
                description="The invitation (with the optional first message) goes to the "
                "peer's inbox; the peer's bots see a conversation_started event.",
                body={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("StartConversationRequest")}},
                },
            ),
        },
        "/v1/conversations/{conversation_id}": {
            "get": _operation(
                "getConversation",
                "One of this bot's conversations",
                "bot",
                _BOT,
                {"200": _json_body("Conversation", "The conversation"), **_errors(401, 403, 404)},
                parameters=[_CONVERSATION_ID],
            ),
            "delete": _operation(
                "deleteConversation",
                "Forget a conversation (close it first to tell the peer)",
                "bot",
                _BOT,
                {"204": {"description": "Forgotten"}, **_errors(401, 403, 404)},
                description="Its state is deleted: nothing more of it is read, it is no longer "
                "listed, and the peer is not told. Envelopes of it still being published (a "
                "Close) are still published.",
                parameters=[_CONVERSATION_ID],
            ),
        },
        "/v1/conversations/{conversation_id}/messages": {
            "post": _operation(
                "sendMessage",
                "Send a message: {text} or {domain, tag, data_b64}",
                "bot",
                _BOT,
                {
                    "201": _json_body("SendResult", "The node accepted the message"),
                    "202": _json_body(
                        "SendResult", "Saved; still being published (retried in the background)"
                    ),
                    **_errors(400, 401, 403, 404, 409, 413, 422, 502, 503),
                },
                body={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("SendMessageRequest")}},
                },
                parameters=[_CONVERSATION_ID],
            )
        },
        "/v1/conversations/{conversation_id}/close": {
            "post": _operation(
                "closeConversation",
                "Leave a conversation: the peer is told (with an optional reason)",
                "bot",
                _BOT,
                {
                    "201": _json_body("SendResult", "The node accepted the Close"),
                    "202": _json_body(
                        "SendResult", "Saved; still being published (retried in the background)"
                    ),
                    **_errors(400, 401, 403, 404, 409, 413, 422, 502, 503),
                },
                description="The conversation stays, closed (closed: true): sends are refused "
                "with 409, messages the peer sent before it learnt still arrive as events. The "
                "peer's bots see a conversation_closed event.",
                body={
                    "required": False,
                    "content": {"application/json": {"schema": _ref("CloseConversationRequest")}},
                },
                parameters=[_CONVERSATION_ID],
            )
        },
        "/v1/messages": {
            "post": _operation(
                "sendMessages",
                "Send many messages in one request (a batch)",
                "bot",
                _BOT,
                {
                    "200": _json_body(
                        "SendBatchResult",
                        "Handled: one result per message, in order, each with the status the "
                        "one-message route would have answered for it",
                    ),
                    **_errors(400, 401, 403, 413, 422, 503),
                },
                description="Each message is {conversation_id, text} or {conversation_id, "
                "domain, tag, data_b64}. The body is validated as a whole (422 names "
                "messages.N.field). The messages are sealed in order and saved in ONE "
                "transaction (all or none: 503 storage_unavailable saves none), then published "
                "in order. Messages to an unknown (404) or closed (409) conversation are "
                "refused alone; the others are sent.",
                body={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("SendBatchRequest")}},
                },
            )
        },
        "/v1/events": {
            "get": _operation(
                "streamEvents",
                "WebSocket stream of this bot's events, resumable by cursor",
                "bot",
                _BOT,
                {
                    "101": {
                        "description": "Switching to WebSocket: one text frame per event, "
                        "each an Event (JSON), in seq order; with batch=true each frame is a "
                        "JSON array of one or more Events; close code 1001 when the bridge "
                        "shuts down"
                    },
                    **_errors(400, 401, 403, 422),
                },
                description="Sends every event with seq > after, in order, then each new one "
                "as it is stored. Reconnect with after = the last seq you processed to get "
                "exactly what you missed. Send the Authorization header with the upgrade request.",
                parameters=[
                    _AFTER,
                    _query(
                        "batch",
                        "true: each frame is a JSON array of events (fewer frames when busy)",
                        {"type": "string", "enum": ["true", "false", "1", "0"], "default": "false"},
                    ),
                ],
            )
        },
        "/v1/events/poll": {
            "get": _operation(
                "pollEvents",
                "Long-poll this bot's events",
                "bot",
                _BOT,
                {
                    "200": _json_body(
                        "EventPage", "Events with seq > after (maybe none after the timeout)"
                    ),
                    **_errors(401, 403, 422),
                },
                parameters=[
                    _AFTER,
                    _query(
                        "limit",
                        "Most events returned",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    ),
                    _query(
                        "timeout",
                        "Seconds to wait when there is nothing yet",
                        {"type": "number", "minimum": 0, "maximum": 60, "default": 25},
                    ),
                ],
            )
        },
    }


def openapi_document() -> Json:
    """The whole document (a fresh dict each call)."""
    inputs = [(model, "validation") for model in models.REQUEST_MODELS]
    outputs = [(model, "serialization") for model in models.RESPONSE_MODELS]
    _, top = models_json_schema(
        [*inputs, *outputs],  # type: ignore[list-item]
        ref_template="#/components/schemas/{model}",
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "umbra-waku bridge",
            "version": __version__,
            "description": "Local HTTP API of `umbra-waku bridge`: bots hold end-to-end encrypted "
            "conversations over Waku. See docs/api.md.",
        },
        "servers": [{"url": "/"}],
        "paths": _paths(),
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (settings or DATA_DIR/admin.token)",
                },
                "botToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A bot's token, as POST /v1/bots returned it",
                },
            },
        },
    }
