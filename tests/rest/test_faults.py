"""Bad node answers: typed errors within the configured time, and poll loops that survive."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from umbra_waku.errors import (
    NodeHTTPError,
    NodeProtocolError,
    NodeTimeout,
    NodeUnreachable,
    TransportError,
)
from umbra_waku.transport import HistoryQuery

from .conftest import CT, OpenTransport, ServeNode, collect, eventually, free_port, message

RELAY_GET = "/relay/v1/messages"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("<html>502 Bad Gateway</html>", "text/html"),
        ('{"messages": ', "application/json"),
        ('{"messages": "not a list"}', "application/json"),
        ('{"messages": [{"message_hash": "x"}]}', "application/json"),
        (
            '{"messages": [{"message": {"payload": 7, "contentTopic": "/a/1/b/c"}}]}',
            "application/json",
        ),
        (
            '{"messages": [{"message": {"payload": "!!", "contentTopic": "/a/1/b/c"}}]}',
            "application/json",
        ),
        (
            '{"messages": [{"message": {"contentTopic": "/a/1/b/c", "timestamp": "soon"}}]}',
            "application/json",
        ),
        ('{"messages": [], "paginationCursor": "not-a-hash"}', "application/json"),
        ("[]", "application/json"),
        ('{"statusCode": 503, "statusDesc": "busy"}', "application/json"),
    ],
)
async def test_store_answers_of_the_wrong_shape_are_protocol_errors(
    serve_node: ServeNode, open_transport: OpenTransport, body: str, content_type: str
) -> None:
    served = await serve_node("nwaku")
    served.node.respond("/store/v3", body, content_type=content_type)
    transport = await open_transport(served.url)
    with pytest.raises(NodeProtocolError):
        await transport.query_history(HistoryQuery([CT]))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/debug/v1/info", '{"listenAddresses": "nope"}'),
        ("/debug/v1/info", '"just a string"'),
        ("/debug/v1/info", '{"listenAddresses": [], "enrUri": 5}'),
    ],
)
async def test_node_info_of_the_wrong_shape_is_a_protocol_error(
    serve_node: ServeNode, open_transport: OpenTransport, path: str, body: str
) -> None:
    served = await serve_node("go-waku")
    transport = await open_transport(served.url)
    served.node.respond(path, body)
    with pytest.raises(NodeProtocolError):
        await transport.node_info()


async def test_a_relay_subscribe_answer_that_is_neither_ok_nor_true_is_a_protocol_error(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    served.node.respond("/relay/v1/subscriptions", "maybe", content_type="text/plain")
    transport = await open_transport(served.url)
    with pytest.raises(NodeProtocolError):
        await transport.publish(message())
    assert served.node.published == []


async def test_hanging_node_gives_node_timeout_within_the_configured_time(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(
        served.url, request_timeout=0.2, long_timeout=0.3, retry_attempts=2
    )
    served.node.hang("/relay")
    served.node.hang("/store")
    began = time.monotonic()
    with pytest.raises(NodeTimeout):
        await transport.publish(message())
    assert time.monotonic() - began < 0.2 * 2 + 0.5
    began = time.monotonic()
    with pytest.raises(NodeTimeout) as caught:
        await transport.query_history(HistoryQuery([CT]))
    assert isinstance(caught.value, TimeoutError)  # NodeTimeout is a TimeoutError too
    assert time.monotonic() - began < 0.3 * 2 + 0.5
    served.node.release_hangs()


async def test_connection_refused_is_node_unreachable(open_transport: OpenTransport) -> None:
    port = free_port()  # nothing listens there
    transport = await open_transport(f"http://127.0.0.1:{port}", start=False, retry_attempts=2)
    for call in (
        transport.publish(message()),
        transport.query_history(HistoryQuery([CT])),
        transport.node_info(),
        transport.subscribe([CT]),
    ):
        with pytest.raises(NodeUnreachable) as caught:
            await call
        assert caught.value.retriable


async def test_a_server_that_closes_the_connection_mid_answer_is_node_unreachable(
    open_transport: OpenTransport,
) -> None:
    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"half":')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport = await open_transport(
            f"http://127.0.0.1:{port}", start=False, retry_attempts=1, implementation="nwaku"
        )
        with pytest.raises(NodeUnreachable):
            await transport.query_history(HistoryQuery([CT]))
    finally:
        server.close()
        await server.wait_closed()


async def test_garbage_that_is_not_http_is_a_typed_error(open_transport: OpenTransport) -> None:
    async def noise(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(noise, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport = await open_transport(
            f"http://127.0.0.1:{port}", start=False, retry_attempts=1, implementation="nwaku"
        )
        with pytest.raises(TransportError):
            await transport.query_history(HistoryQuery([CT]))
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("body", "status", "content_type"),
    [
        ("<html>oops</html>", 200, "text/html"),  # non-JSON
        ('{"unexpected": true}', 200, "application/json"),  # wrong shape
        ('[{"payload": 5}]', 200, "application/json"),  # wrong element shape
        ("busy", 503, "text/plain"),  # 5xx storm
        ("", 500, "text/plain"),
    ],
)
@pytest.mark.parametrize("flavour", ["nwaku", "go-waku"])
async def test_the_poll_loop_survives_bad_answers_and_delivers_afterwards(
    serve_node: ServeNode,
    open_transport: OpenTransport,
    caplog: pytest.LogCaptureFixture,
    body: str,
    status: int,
    content_type: str,
    flavour: str,
) -> None:
    served = await serve_node(flavour)
    transport = await open_transport(served.url)
    sub = await transport.subscribe([CT])
    caplog.set_level(logging.INFO, logger="umbra_waku.rest")
    served.node.respond(RELAY_GET, body, status=status, content_type=content_type, method="GET")
    await eventually(lambda: len(served.node.requests_to(RELAY_GET, "GET")) >= 4)
    secret = b"top secret payload"
    await transport.publish(message(secret))
    served.node.clear_faults()
    (got,) = await collect(sub, 1)
    assert got.message.payload == secret
    assert any("polling" in r.getMessage() for r in caplog.records)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "top secret" not in logged
    assert "dG9wIHNlY3JldC" not in logged


async def test_the_poll_loop_survives_a_hanging_node(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, request_timeout=0.1)
    sub = await transport.subscribe([CT])
    served.node.hang(RELAY_GET, method="GET")
    await transport.publish(message(b"while hung"))
    await asyncio.sleep(0.3)
    served.node.release_hangs()
    (got,) = await collect(sub, 1)
    assert got.message.payload == b"while hung"


async def test_errors_are_never_raw_library_exceptions(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("go-waku")
    transport = await open_transport(served.url, retry_attempts=1)
    served.node.respond("/store", "\x00\xff not json", content_type="application/octet-stream")
    served.node.respond("/lightpush", "{", status=200)
    served.node.respond("/debug/v1/info", "null")
    light = await open_transport(served.url, mode="light", retry_attempts=1, start=False)
    for call in (
        transport.query_history(HistoryQuery([CT])),
        transport.node_info(),
        light.publish(message()),
    ):
        with pytest.raises(TransportError):
            await call


async def test_http_error_carries_status_and_body(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    served.node.fail("/store/v3", times=None, status=400, body="page size parsing error: x")
    transport = await open_transport(served.url)
    with pytest.raises(NodeHTTPError) as caught:
        await transport.query_history(HistoryQuery([CT]))
    error = caught.value
    assert (error.method, error.status, error.body) == ("GET", 400, "page size parsing error: x")
    assert error.path == "/store/v3/messages"
    assert not error.retriable
    assert len(served.node.requests_to("/store/v3")) == 1


async def test_store_5xx_is_retried_then_succeeds_or_ends_retriable(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url, retry_attempts=3)
    served.node.fail("/store/v3", times=2, status=500, body="No history response received")
    page = await transport.query_history(HistoryQuery([CT]))
    assert page.messages == []
    assert len(served.node.requests_to("/store/v3")) == 3
    served.node.fail("/store/v3", times=None, status=500, body="No history response received")
    with pytest.raises(NodeHTTPError) as caught:
        await transport.query_history(HistoryQuery([CT]))
    assert caught.value.retriable
    assert len(served.node.requests_to("/store/v3")) == 6


def test_recent_hashes_is_a_bounded_lru() -> None:
    from umbra_waku.waku.dedupe import RecentHashes
    from umbra_waku.waku.message import MessageHash

    seen = RecentHashes(2)
    a, b, c = (MessageHash(bytes([i]) * 32) for i in range(3))
    assert seen.add(a)
    assert seen.add(b)
    assert not seen.add(a)  # duplicate; a is now the most recent
    assert seen.add(c)  # evicts b, the least recently seen
    assert len(seen) == 2
    assert not seen.add(a)
    assert seen.add(b)


async def test_an_answer_in_an_unknown_charset_is_a_protocol_error(
    open_transport: OpenTransport,
) -> None:
    async def klingon(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b"\xff\xfe{}"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=klingon\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(klingon, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport = await open_transport(
            f"http://127.0.0.1:{port}", start=False, retry_attempts=1, implementation="nwaku"
        )
        with pytest.raises(NodeProtocolError):
            await transport.query_history(HistoryQuery([CT]))
    finally:
        server.close()
        await server.wait_closed()
