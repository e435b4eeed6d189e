"""Bad input is a 4xx with a JSON error that names the field, never a 5xx."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from umbra_waku.bridge.models import MAX_TEXT_CHARS

from .conftest import BotHandle, Harness, StartBridge

HEX = "ab" * 32


@pytest.fixture
async def pair(start_bridge: StartBridge) -> tuple[Harness, BotHandle, BotHandle, str]:
    h = await start_bridge(max_request_bytes=300_000)
    alice, bob = await h.create_bot(), await h.create_bot()
    conversation = await h.start_conversation(alice, bob, "hi")
    return h, alice, bob, conversation


def _error_of(status: int, body: dict[str, Any]) -> dict[str, Any]:
    assert 400 <= status < 500, (status, body)
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "field"}
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


START = "/v1/conversations"

START_CASES: list[tuple[object, int, str]] = [
    ({}, 422, "peer"),
    ({"peer": 5}, 422, "peer"),
    ({"peer": "xyz"}, 422, "peer"),
    ({"peer": "g" * 64}, 422, "peer"),
    ({"peer": "00" * 32}, 422, "peer"),  # a low-order X25519 point: no key agreement
    ({"peer": "01" + "00" * 31}, 422, "peer"),
    ({"peer": HEX, "text": 5}, 422, "text"),
    ({"peer": HEX, "text": "a", "content": {"domain": "d", "data_b64": ""}}, 422, "content"),
    ({"peer": HEX, "content": {"data_b64": ""}}, 422, "content.domain"),
    ({"peer": HEX, "content": {"domain": "d", "data_b64": "!!"}}, 422, "content.data_b64"),
    ({"peer": HEX, "content": {"domain": "", "data_b64": ""}}, 422, "content.domain"),
    ({"peer": HEX, "content": {"domain": "x" * 129, "data_b64": ""}}, 422, "content.domain"),
    ({"peer": HEX, "content": {"domain": "d", "tag": -1, "data_b64": ""}}, 422, "content.tag"),
    ({"peer": HEX, "content": {"domain": "d", "tag": 2**32, "data_b64": ""}}, 422, "content.tag"),
    ({"peer": HEX, "content": {"domain": "d", "tag": "1", "data_b64": ""}}, 422, "content.tag"),
    ({"peer": HEX, "surprise": 1}, 422, "surprise"),
    ([], 422, "body"),
    ("text", 422, "body"),
    (None, 422, "body"),
]


@pytest.mark.parametrize(("body", "status", "field"), START_CASES, ids=lambda v: str(v)[:40])
async def test_bad_start_conversation(
    pair: tuple[Harness, BotHandle, BotHandle, str], body: object, status: int, field: str
) -> None:
    h, alice, _, _ = pair
    response = await h.http.post(START, data=json.dumps(body), headers=alice.auth)
    error = _error_of(response.status, await response.json())
    assert (response.status, error["field"]) == (status, field), error


async def test_cannot_invite_oneself(pair: tuple[Harness, BotHandle, BotHandle, str]) -> None:
    h, alice, _, _ = pair
    response = await h.http.post(START, json={"peer": alice.client_address}, headers=alice.auth)
    assert _error_of(response.status, await response.json())["field"] == "peer"


SEND_CASES: list[tuple[object, int, str]] = [
    ({}, 422, "text"),
    ({"text": None}, 422, "text"),
    ({"text": 1}, 422, "text"),
    ({"text": "a", "data_b64": ""}, 422, "text"),
    ({"text": "a", "tag": 1}, 422, "text"),
    ({"data_b64": "AAAA"}, 422, "domain"),
    ({"domain": "d"}, 422, "text"),
    ({"domain": "d", "data_b64": "not base64!"}, 422, "data_b64"),
    ({"domain": "d", "data_b64": "AAA"}, 422, "data_b64"),
    ({"domain": "d", "tag": 1.5, "data_b64": ""}, 422, "tag"),
    ({"domain": "d", "tag": True, "data_b64": ""}, 422, "tag"),
    ({"text": "x" * (MAX_TEXT_CHARS + 1)}, 422, "text"),
    ({"text": "x" * (MAX_TEXT_CHARS - 100)}, 422, "text"),  # fits the field, not a Waku message
    ({"domain": "d", "data_b64": base64.b64encode(b"x" * 149_900).decode()}, 422, "data_b64"),
    ({"txet": "typo"}, 422, "txet"),
]


@pytest.mark.parametrize(("body", "status", "field"), SEND_CASES, ids=lambda v: str(v)[:40])
async def test_bad_send(
    pair: tuple[Harness, BotHandle, BotHandle, str], body: object, status: int, field: str
) -> None:
    h, alice, _, conversation = pair
    response = await h.http.post(
        f"/v1/conversations/{conversation}/messages", data=json.dumps(body), headers=alice.auth
    )
    error = _error_of(response.status, await response.json())
    assert (response.status, error["field"]) == (status, field), error
    # nothing was sealed: the conversation still works
    assert (await h.send(alice, conversation, "still fine"))["delivery"] == "published"


RAW_CASES: list[tuple[bytes, int, str]] = [
    (b"", 400, "body"),
    (b"{", 400, "body"),
    (b"\xff\xfe", 400, "body"),
    (b'{"text": "\\ud800"}', 400, "body"),
    (b'{"text": "a"} trailing', 400, "body"),
    (b"[" * 10_000, 400, "body"),
]


@pytest.mark.parametrize(("raw", "status", "field"), RAW_CASES, ids=lambda v: str(v)[:20])
async def test_malformed_bodies(
    pair: tuple[Harness, BotHandle, BotHandle, str], raw: bytes, status: int, field: str
) -> None:
    h, alice, _, conversation = pair
    response = await h.http.post(
        f"/v1/conversations/{conversation}/messages", data=raw, headers=alice.auth
    )
    error = _error_of(response.status, await response.json())
    assert (response.status, error["field"]) == (status, field), error


async def test_oversized_bodies_are_refused_before_reading(
    pair: tuple[Harness, BotHandle, BotHandle, str],
) -> None:
    h, alice, _, conversation = pair
    body = json.dumps({"text": "x" * 400_000})
    response = await h.http.post(
        f"/v1/conversations/{conversation}/messages", data=body, headers=alice.auth
    )
    error = _error_of(response.status, await response.json())
    assert (response.status, error["code"], error["field"]) == (413, "payload_too_large", "body")


QUERY_CASES = [
    ("/v1/events/poll?after=-1", "after"),
    ("/v1/events/poll?after=x", "after"),
    ("/v1/events/poll?after=99999999999999999999999", "after"),
    ("/v1/events/poll?after=%EF%BC%91", "after"),  # a full-width digit
    ("/v1/events/poll?limit=0", "limit"),
    ("/v1/events/poll?limit=1001", "limit"),
    ("/v1/events/poll?timeout=61", "timeout"),
    ("/v1/events/poll?timeout=nan", "timeout"),
    ("/v1/events/poll?timeout=-1", "timeout"),
    ("/v1/events?after=-5", "after"),
]


@pytest.mark.parametrize(("url", "field"), QUERY_CASES)
async def test_bad_query_parameters(
    pair: tuple[Harness, BotHandle, BotHandle, str], url: str, field: str
) -> None:
    h, alice, _, _ = pair
    response = await h.http.get(url, headers=alice.auth)
    error = _error_of(response.status, await response.json())
    assert (response.status, error["field"]) == (422, field)


async def test_unknown_paths_methods_and_ids(
    pair: tuple[Harness, BotHandle, BotHandle, str],
) -> None:
    h, alice, _, _ = pair
    for method, url, status, field in [
        ("GET", "/v1/nothing", 404, None),
        ("PUT", "/v1/me", 405, None),
        ("GET", "/v1/conversations/" + "z" * 64, 404, "conversation_id"),
        ("GET", "/v1/conversations/" + "0" * 64, 404, "conversation_id"),
        ("POST", "/v1/conversations/..%2F..%2Fetc/messages", 404, "conversation_id"),
    ]:
        response = await h.http.request(method, url, headers=alice.auth)
        error = _error_of(response.status, await response.json())
        assert (response.status, error["field"]) == (status, field), url
    response = await h.http.get("/v1/events", headers=alice.auth)  # not a WebSocket upgrade
    error = _error_of(response.status, await response.json())
    assert (response.status, error["field"]) == (400, "Upgrade")


async def test_bad_bot_creation(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    for body, field in [
        ({"name": ""}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": 3}, "name"),
        ({"nmae": "typo"}, "nmae"),
    ]:
        response = await h.http.post("/v1/bots", json=body, headers=h.admin)
        error = _error_of(response.status, await response.json())
        assert error["field"] == field
    response = await h.http.post("/v1/bots", headers=h.admin)  # no body: a bot without a name
    assert response.status == 201
