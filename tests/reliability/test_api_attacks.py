"""The bridge's HTTP API under attack: tokens, bot isolation, path tricks, hostile bodies.

The bridge runs for real (aiohttp on a TCP port, in a thread of its own) and every request is
sent with ``http.client``, which writes the request line and headers exactly as given: no client
normalises ``..``, percent-escapes, NUL or a 10 kB id away. The API's contract: every bad request
is a 4xx with a JSON error, never a 5xx, and nothing of another bot leaks. These tests use the
embedded memory:// network: no Waku node is involved in answering an HTTP request.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from bridge.conftest import FAST_CLIENT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from umbra_waku.bridge.api import ROUTES, make_app
from umbra_waku.bridge.service import Bridge
from umbra_waku.bridge.settings import BridgeSettings

from .helpers import report


@dataclass
class LiveBridge:
    """A bridge serving on 127.0.0.1:port from its own thread and event loop."""

    port: int
    admin: str
    bots: dict[str, dict[str, Any]] = field(default_factory=dict)
    conversation: str = ""
    errors: list[logging.LogRecord] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            sent = dict(headers or {})
            if token is not None:
                sent["Authorization"] = f"Bearer {token}"
            if body is not None:
                sent.setdefault("Content-Type", "application/json")
                sent["Content-Length"] = str(len(body))
            for name, value in sent.items():
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw

    def token(self, name: str) -> str:
        return str(self.bots[name]["token"])


class _Errors(logging.Handler):
    def __init__(self, sink: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveBridge]:
    """Bots alice, bob and mallory; alice started a conversation with bob (both read it)."""
    data = tmp_path_factory.mktemp("api-attacks")
    network = f"api-attacks-{uuid.uuid4().hex}"
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}
    errors: list[logging.LogRecord] = []
    handler = _Errors(errors)
    logging.getLogger("umbra_waku").addHandler(handler)

    async def main() -> None:
        settings = BridgeSettings(
            node=f"memory://{network}",
            data_dir=Path(data),
            listen="127.0.0.1:0",
            max_request_bytes=64 * 1024,
            publish_wait=2.0,
        )
        bridge = Bridge(settings, client_options=FAST_CLIENT)
        await bridge.start()
        runner = web.AppRunner(make_app(bridge))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        state["admin"] = (data / "admin.token").read_text().strip()
        state["stop"] = asyncio.Event()
        ready.set()
        await state["stop"].wait()
        await runner.cleanup()
        await bridge.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    bridge = LiveBridge(state["port"], state["admin"], errors=errors)
    for name in ("alice", "bob", "mallory"):
        status, body = bridge.request(
            "POST", "/v1/bots", token=bridge.admin, body=json.dumps({"name": name}).encode()
        )
        assert status == 201, body
        bridge.bots[name] = body
    status, body = bridge.request(
        "POST",
        "/v1/conversations",
        token=bridge.token("alice"),
        body=json.dumps({"peer": bridge.bots["bob"]["client_address"], "text": "secret"}).encode(),
    )
    assert status in (201, 202), body
    bridge.conversation = body["conversation"]["id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, page = bridge.request("GET", "/v1/events/poll?timeout=1", token=bridge.token("bob"))
        if len(page["events"]) >= 2:
            break
    try:
        yield bridge
    finally:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(30)
        logging.getLogger("umbra_waku").removeHandler(handler)


def assert_4xx(status: int, body: Any, where: str) -> None:
    assert 400 <= status < 500, (where, status, body)
    if isinstance(body, dict):  # our JSON error (aiohttp's own 400/414 for a broken request
        assert set(body) == {"error"}, (where, body)  # line are plain text)


# ---------------------------------------------------------------------------------------------
# Tokens

PRIVATE_ROUTES = [
    (method, path)
    for method, path, _ in ROUTES
    if path not in ("/v1/openapi.json", "/v1/health", "/metrics")
]


def _concrete(path: str, live: LiveBridge) -> str:
    return path.replace("{bot_id}", live.bots["bob"]["bot_id"]).replace(
        "{conversation_id}", live.conversation
    )


BAD_AUTHORIZATIONS = {
    "missing": None,
    "empty": "",
    "scheme only": "Bearer",
    "scheme and spaces": "Bearer     ",
    "basic": "Basic YWRtaW46YWRtaW4=",
    "wrong": "Bearer wrong-token-wrong-token",
    "bot id, wrong secret": "Bearer {bob_id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "bot id only": "Bearer {bob_id}",
    "bot id with dot": "Bearer {bob_id}.",
    "token of bob with a suffix": "Bearer {bob_token}x",
    "token of bob, truncated": "Bearer {bob_token_short}",
    "admin token, one char changed": "Bearer {admin_changed}",
    "8 kB token": "Bearer " + "A" * 8000,
    "unicode token": "Bearer tökén-😀",
    "percent-encoded admin token": "Bearer {admin_quoted}x",
}


@pytest.mark.parametrize("case", sorted(BAD_AUTHORIZATIONS))
def test_a_missing_or_wrong_token_is_401_everywhere(live: LiveBridge, case: str) -> None:
    bob = live.token("bob")
    template = BAD_AUTHORIZATIONS[case]
    authorization = None
    if template is not None:
        authorization = template.format(
            bob_id=live.bots["bob"]["bot_id"],
            bob_token=bob,
            bob_token_short=bob[:-1],
            admin_changed=live.admin[:-1] + ("A" if live.admin[-1] != "A" else "B"),
            admin_quoted=quote(live.admin),
        )
    for method, path in PRIVATE_ROUTES:
        headers = {} if authorization is None else {"Authorization": authorization}
        headers = {k: v.encode("utf-8").decode("latin-1") for k, v in headers.items()}
        status, body = live.request(method, _concrete(path, live), headers=headers, body=b"{}")
        assert status == 401, (case, method, path, status, body)
        assert body["error"]["code"] == "unauthorized"


def test_a_deleted_bots_token_is_401(live: LiveBridge) -> None:
    status, created = live.request(
        "POST", "/v1/bots", token=live.admin, body=json.dumps({"name": "gone"}).encode()
    )
    assert status == 201
    token = created["token"]
    assert live.request("GET", "/v1/me", token=token)[0] == 200
    assert live.request("DELETE", f"/v1/bots/{created['bot_id']}", token=live.admin)[0] == 204
    for method, path in PRIVATE_ROUTES:
        status, _ = live.request(method, _concrete(path, live), token=token, body=b"{}")
        assert status == 401, (method, path, status)


# ---------------------------------------------------------------------------------------------
# Bot isolation


def test_one_bot_cannot_read_or_send_in_another_bots_conversation(live: LiveBridge) -> None:
    mallory = live.token("mallory")
    conversation = live.conversation
    alice_events = live.request("GET", "/v1/events/poll?timeout=0", token=live.token("alice"))[1][
        "events"
    ]
    attempts = [
        ("GET", f"/v1/conversations/{conversation}"),
        ("GET", f"/v1/conversations/{conversation.upper()}"),
        ("GET", f"/v1/conversations/%2Fprivate%2Fv1%2F{conversation}"),
        ("GET", f"/v1/conversations/{conversation}/"),
        ("POST", f"/v1/conversations/{conversation}/messages"),
        ("POST", f"/v1/conversations/{conversation.upper()}/messages"),
        ("POST", f"/v1/conversations/%2e%2e/{conversation}/messages"),
        ("POST", f"/v1/conversations/{conversation}%00/messages"),
        ("POST", f"/v1/conversations/{conversation}/close"),
        ("POST", f"/v1/conversations/{conversation.upper()}/close"),
        ("DELETE", f"/v1/conversations/{conversation}"),
    ]
    for method, path in attempts:
        status, body = live.request(
            method, path, token=mallory, body=json.dumps({"text": "let me in"}).encode()
        )
        assert status in (404, 405), (method, path, status, body)
    assert live.request("GET", "/v1/conversations", token=mallory)[1] == {
        "conversations": [],
        "next": None,
    }
    for query in ("?timeout=0", "?after=0&timeout=0", "?after=0&limit=1000&timeout=0"):
        page = live.request("GET", "/v1/events/poll" + query, token=mallory)[1]
        assert page["events"] == [], query
    # bob (the other party) and the admin: bob may, the admin token is not a bot token
    status, seen_by_bob = live.request(
        "GET", f"/v1/conversations/{conversation}", token=live.token("bob")
    )
    assert status == 200
    assert seen_by_bob["closed"] is False  # mallory's close and delete attempts did nothing
    status, seen_by_alice = live.request(
        "GET", f"/v1/conversations/{conversation}", token=live.token("alice")
    )
    assert (status, seen_by_alice["closed"]) == (200, False)
    assert live.request("GET", f"/v1/conversations/{conversation}", token=live.admin)[0] == 403
    # mallory cannot delete or list bots, and nothing of alice's leaked into mallory's view
    assert (
        live.request("DELETE", f"/v1/bots/{live.bots['alice']['bot_id']}", token=mallory)[0] == 403
    )
    assert live.request("GET", "/v1/bots", token=mallory)[0] == 403
    assert live.request("GET", "/v1/events/poll?timeout=0", token=live.token("alice"))[1][
        "events"
    ] == (alice_events)


# ---------------------------------------------------------------------------------------------
# Path tricks

TRICKY_IDS = [
    "..",
    "../..",
    "..%2F..%2Fbots",
    "%2e%2e",
    "%2e%2e%2f%2e%2e",
    "%252e%252e",
    ".%00.",
    "%00",
    "abc%00def",
    "%0d%0aX-Injected:%201",
    "%20",
    "%",
    "%ZZ",
    "%C0%AE%C0%AE",  # overlong UTF-8 dots
    "%F0%9F%92%A5",
    quote("é" * 32),
    quote("💥" * 64),
    "a" * 5000,
    "0" * 64 + "0",
    "g" * 64,
    "%2F" * 20,
    "~root",
    "*",
    ";",
    "'%20OR%201=1--",
]


@pytest.mark.parametrize("trick", TRICKY_IDS, ids=lambda t: t[:24])
def test_path_tricks_in_ids_are_4xx(live: LiveBridge, trick: str) -> None:
    for method, path in PRIVATE_ROUTES:
        if "{" not in path:
            continue
        token = live.admin if "{bot_id}" in path else live.token("alice")
        target = path.replace("{bot_id}", trick).replace("{conversation_id}", trick)
        status, body = live.request(method, target, token=token, body=b'{"text": "x"}')
        assert_4xx(status, body, f"{method} {target[:80]}")
    # and the same tricks around the ids of existing objects
    for target in (
        f"/v1/conversations/{live.conversation}{trick}",
        f"/v1/conversations/{trick}{live.conversation}/messages",
        f"/v1/bots/{live.bots['mallory']['bot_id']}{trick}",
    ):
        method = "DELETE" if target.startswith("/v1/bots") else "GET"
        token = live.admin if method == "DELETE" else live.token("alice")
        status, body = live.request(method, target, token=token)
        assert_4xx(status, body, f"{method} {target[:80]}")
    assert live.request("GET", "/v1/me", token=live.token("mallory"))[0] == 200  # still there


def test_a_very_long_url_and_header_are_4xx(live: LiveBridge) -> None:
    status, body = live.request("GET", "/v1/conversations/" + "a" * 100_000, token=live.admin)
    assert_4xx(status, body, "100 kB path")
    status, body = live.request(
        "GET", "/v1/me", headers={"Authorization": "Bearer " + "x" * 100_000}
    )
    assert_4xx(status, body, "100 kB header")


path_segment = st.one_of(
    st.text(min_size=0, max_size=300).map(lambda s: quote(s, safe="")),
    st.binary(min_size=1, max_size=200).map(lambda b: quote(b, safe="")),
    st.text(alphabet="./%2eEfF0c~_-", min_size=1, max_size=40),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(segment=path_segment, route=st.sampled_from(range(len(ROUTES))))
def test_any_id_is_a_4xx_never_a_5xx(live: LiveBridge, segment: str, route: int) -> None:
    method, path, _ = ROUTES[route]
    token = live.admin if path.startswith("/v1/bots") else live.token("alice")
    target = path.replace("{bot_id}", segment).replace("{conversation_id}", segment)
    if "{" not in path:
        target = target + "/" + segment
    status, body = live.request(method, target, token=token, body=b'{"text": "x"}')
    assert status < 500, (method, target, status, body)


# ---------------------------------------------------------------------------------------------
# Bodies


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(["text", "peer", "content", "domain", "tag", "data_b64", "name", "x"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)

POST_TARGETS = ["/v1/bots", "/v1/conversations", "/v1/conversations/{conversation}/messages"]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=json_values, target=st.sampled_from(POST_TARGETS))
def test_any_json_body_is_answered_without_a_5xx(live: LiveBridge, value: Any, target: str) -> None:
    path = target.format(conversation=live.conversation)
    token = live.admin if path == "/v1/bots" else live.token("alice")
    status, body = live.request("POST", path, token=token, body=json.dumps(value).encode())
    assert status < 500, (path, value, status, body)
    if status >= 400:
        assert_4xx(status, body, path)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=st.binary(max_size=300))
def test_any_raw_body_is_answered_without_a_5xx(live: LiveBridge, raw: bytes) -> None:
    path = f"/v1/conversations/{live.conversation}/messages"
    status, body = live.request("POST", path, token=live.token("alice"), body=raw)
    assert status < 500, (raw, status, body)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    params=st.dictionaries(
        st.sampled_from(["after", "limit", "x"]),
        st.text(max_size=30).map(lambda s: quote(s, safe="")),
        max_size=3,
    )
)
def test_any_poll_query_is_answered_without_a_5xx(live: LiveBridge, params: dict[str, str]) -> None:
    query = "&".join(["timeout=0", *(f"{k}={v}" for k, v in params.items())])
    status, body = live.request("GET", "/v1/events/poll?" + query, token=live.token("mallory"))
    assert status < 500, (query, status, body)
    if status == 200:
        assert body["events"] == []


def test_oversized_and_compressed_bodies(live: LiveBridge) -> None:
    path = f"/v1/conversations/{live.conversation}/messages"
    token = live.token("alice")
    # over max_request_bytes (64 KiB here)
    status, body = live.request(
        "POST", path, token=token, body=b'{"text": "' + b"x" * 200_000 + b'"}'
    )
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    # a decompression bomb: 40 kB on the wire, 40 MB once inflated
    bomb = gzip.compress(b'{"text": "' + b"x" * 40_000_000 + b'"}', compresslevel=9)
    assert len(bomb) < 64 * 1024
    status, body = live.request(
        "POST", path, token=token, body=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert_4xx(status, body, "gzip bomb")
    # a body announced longer than it is, and a wrong content type
    status, body = live.request(
        "POST", path, token=token, body=b'{"text": "hi"}', headers={"Content-Type": "text/plain"}
    )
    assert status in (201, 202) or 400 <= status < 500, (status, body)
    status, body = live.request("POST", path, token=token, body=b'{"text": 12}')
    assert (status, body["error"]["field"]) == (422, "text")


def test_no_request_caused_an_internal_error(live: LiveBridge) -> None:
    """Runs last in this module: no request above was answered with a 500, or logged one."""
    report(
        "api_attacks",
        0,
        0,
        routes=len(PRIVATE_ROUTES),
        tricky_ids=len(TRICKY_IDS),
        bad_tokens=len(BAD_AUTHORIZATIONS),
        internal_errors=len(live.errors),
    )
    assert [record.getMessage() for record in live.errors] == []
