"""start(), readiness, node_info(), implementation detection and context management."""

from __future__ import annotations

import asyncio
import time

import pytest

from umbra_waku.errors import NodeProtocolError, NodeTimeout, NodeUnreachable

from .conftest import OpenTransport, ServeNode, free_port


async def test_start_waits_through_nwaku_initialising_404s(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku", initializing_requests=4)
    transport = await open_transport(served.url)
    assert await transport.ready()
    initialising = [r for r in served.node.requests if r.path == "/debug/v1/version"]
    assert len(initialising) >= 2  # it asked again after "not available while initializing"


async def test_start_waits_until_nwaku_health_reports_ready(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku", initializing=True)
    transport = await open_transport(served.url, start=False)
    starting = asyncio.create_task(transport.start())
    await asyncio.sleep(0.2)
    assert not starting.done()
    assert not await transport.ready()
    served.node.finish_initializing()
    await asyncio.wait_for(starting, 2)
    assert await transport.ready()


async def test_go_waku_readiness_uses_debug_info_not_health_501(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("go-waku")
    transport = await open_transport(served.url)
    assert await transport.ready()
    assert served.node.requests_to("/health") == []
    assert served.node.requests_to("/debug/v1/info")


@pytest.mark.parametrize("flavour", ["nwaku", "go-waku"])
async def test_node_info_detects_the_implementation(
    serve_node: ServeNode, open_transport: OpenTransport, flavour: str
) -> None:
    served = await serve_node(flavour)
    transport = await open_transport(served.url)
    info = await transport.node_info()
    assert info.implementation == flavour
    assert info.version == served.node.version
    assert info.listen_addresses == [f"/ip4/127.0.0.1/tcp/60000/p2p/{served.node.peer_id}"]
    assert info.enr is not None
    assert info.enr.startswith("enr:")
    # nwaku's /health lists Store READY; go-waku is asked for one stored message.
    assert info.has_store


async def test_node_info_reports_store_after_a_successful_query_on_go_waku(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    from umbra_waku.transport import HistoryQuery

    from .conftest import CT

    served = await serve_node("go-waku")
    transport = await open_transport(served.url)
    await transport.query_history(HistoryQuery([CT]))
    assert (await transport.node_info()).has_store


async def test_start_against_nothing_listening_is_node_unreachable_within_start_timeout(
    open_transport: OpenTransport,
) -> None:
    transport = await open_transport(
        f"http://127.0.0.1:{free_port()}", start=False, start_timeout=0.3
    )
    began = time.monotonic()
    with pytest.raises(NodeUnreachable):
        await transport.start()
    assert time.monotonic() - began < 1.5


async def test_start_against_a_hanging_node_is_node_timeout(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    served.node.hang("/debug")
    transport = await open_transport(
        served.url, start=False, request_timeout=0.2, start_timeout=0.5
    )
    began = time.monotonic()
    with pytest.raises(NodeTimeout):
        await transport.start()
    assert time.monotonic() - began < 1.5


async def test_start_gives_up_at_once_on_a_non_json_info(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    served = await serve_node("nwaku")
    served.node.respond("/debug/v1/info", "<html>proxy error page</html>", content_type="text/html")
    transport = await open_transport(served.url, start=False)
    with pytest.raises(NodeProtocolError):
        await transport.start()
    assert len(served.node.requests_to("/debug/v1/info")) == 1  # not retriable: no retry


async def test_ready_never_raises(serve_node: ServeNode, open_transport: OpenTransport) -> None:
    served = await serve_node("nwaku")
    transport = await open_transport(served.url)
    assert await transport.ready()
    served.node.respond("/debug/v1/info", "[1, 2", times=1)
    assert await transport.ready() is False
    served.node.fail("/health", status=503, times=1)
    assert await transport.ready() is False
    assert await transport.ready() is True
    down = await open_transport(f"http://127.0.0.1:{free_port()}", start=False)
    assert await down.ready() is False


async def test_async_with_starts_and_closes(serve_node: ServeNode) -> None:
    from umbra_waku_rest import connect

    from .conftest import CT, FAST

    served = await serve_node("go-waku")
    async with connect(served.url, **FAST) as transport:
        sub = await transport.subscribe([CT])
        assert await transport.ready()
    assert transport._client.closed  # the session is released
    # The subscription ended with the transport.
    assert [m async for m in sub] == []


async def test_no_origin_header_is_ever_sent(
    serve_node: ServeNode, open_transport: OpenTransport
) -> None:
    from .conftest import CT, collect, message

    served = await serve_node("nwaku")
    transport = await open_transport(served.url)
    sub = await transport.subscribe([CT])
    await transport.publish(message())
    await collect(sub, 1)
    assert served.node.requests
    assert all("Origin" not in r.headers for r in served.node.requests)
