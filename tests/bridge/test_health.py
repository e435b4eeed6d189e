"""Health, metrics, and a node that is not there yet."""

from __future__ import annotations

from typing import Any

from umbra_waku.errors import NodeUnreachable

from .conftest import StartBridge, eventually, wait_ready
from .faulty import FaultyTransport


async def test_health_follows_the_node(start_bridge: StartBridge, network_name: str) -> None:
    faulty = FaultyTransport(network_name)
    h = await start_bridge(transport=faulty)
    body = await (await h.http.get("/v1/health")).json()
    assert body["status"] == "ready"
    assert body["live"] is True
    assert body["node"] == f"memory://{network_name}"

    faulty.is_ready = False
    response = await h.http.get("/v1/health")
    assert response.status == 503
    assert "not reachable" in (await response.json())["reason"]
    faulty.is_ready = True
    await wait_ready(h)


async def test_the_bridge_waits_for_a_node_that_is_down_at_start(
    start_bridge: StartBridge, network_name: str
) -> None:
    faulty = FaultyTransport(network_name)
    faulty.start_errors = [NodeUnreachable("connection refused")] * 2
    h = await start_bridge(transport=faulty, ready=False)
    response = await h.http.get("/v1/health")
    assert response.status == 503
    assert "not reachable yet" in (await response.json())["reason"]

    # bots can be managed meanwhile; sending waits for the node
    alice, bob = await h.create_bot(), await h.create_bot()
    response = await h.http.post(
        "/v1/conversations", json={"peer": bob.client_address}, headers=alice.auth
    )
    assert response.status == 503
    assert response.headers["Retry-After"]
    assert (await response.json())["error"]["code"] == "unavailable"

    await wait_ready(h, within=10)
    await h.start_conversation(alice, bob, "now")
    assert [e["type"] for e in await h.wait_events(bob, 2)] == [
        "conversation_started",
        "message",
    ]


def _samples(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


async def test_metrics_count_what_happens(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, bob = await h.create_bot(), await h.create_bot()
    conversation = await h.start_conversation(alice, bob, "hi")
    await h.send(bob, conversation, "hello")
    await h.wait_events(alice, 1)

    response = await h.http.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples: dict[str, Any] = _samples(await response.text())
    readable = 'umbra_bridge_envelopes_total{classification="readable",source="live"}'
    assert samples[readable] == 2
    assert samples['umbra_bridge_publishes_total{result="published"}'] == 2
    assert samples['umbra_bridge_events_total{type="message"}'] == 2
    assert samples['umbra_bridge_events_total{type="conversation_started"}'] == 1
    assert samples["umbra_bridge_bots"] == 2
    assert samples["umbra_bridge_live"] == 1
    assert samples["umbra_bridge_delivery_latency_seconds_count"] == 2
    assert samples['umbra_bridge_backfills_total{result="ok"}'] >= 1

    async with h.http.ws_connect("/v1/events", headers=bob.auth):
        await eventually(lambda: h.bridge.metrics.websockets._value.get() == 1)
