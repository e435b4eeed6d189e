"""connect(), RestOptions validation, entry points and shard selection."""

from __future__ import annotations

import pytest
from umbra_waku_rest import RestOptions, RestTransport, connect

from umbra_waku import transport as core
from umbra_waku.errors import ConfigError, InvalidContentTopic, InvalidInput, TransportClosed
from umbra_waku.waku.message import WakuMessage

from .conftest import CT


def test_entry_points_resolve_http_and_https_to_the_rest_adapter() -> None:
    for url in ("http://127.0.0.1:8645", "https://node.example:443"):
        transport = core.connect(url, mode="light")
        assert isinstance(transport, RestTransport)
        assert isinstance(transport, core.Transport)  # the runtime-checkable Protocol
        assert transport.options.mode == "light"


def test_options_keywords_and_options_object_merge() -> None:
    base = RestOptions(mode="light", shard=3, cluster_id=16)
    transport = connect("http://localhost:8645", options=base, poll_interval=1)
    assert transport.options.mode == "light"
    assert transport.options.poll_interval == 1.0  # ints are accepted for seconds
    assert transport.options.static_pubsub_topic() == "/waku/2/rs/16/3"


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"colour": "blue"}, "colour"),
        ({"mode": "full"}, "mode"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": float("nan")}, "poll_interval"),
        ({"request_timeout": "10"}, "request_timeout"),
        ({"retry_attempts": 0}, "retry_attempts"),
        ({"num_shards": 0}, "num_shards"),
        ({"shard": 70000}, "shard"),
        ({"pubsub_topic": "/waku/2/default-waku/proto"}, "pubsub_topic"),
        ({"pubsub_topic": "/waku/2/rs/1/0", "shard": 0}, "pubsub_topic"),
        ({"store_peer": ""}, "store_peer"),
        ({"options": {"mode": "relay"}}, "options"),
    ],
)
def test_invalid_settings_raise_config_error_naming_the_setting(
    options: dict[str, object], setting: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        connect("http://127.0.0.1:8645", **options)
    assert caught.value.setting == setting


@pytest.mark.parametrize("url", ["ftp://x", "http://", "http://h:1/?q=1", "127.0.0.1:8645"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        RestTransport(url)


def test_pubsub_topic_autosharding_matches_the_reference_vectors() -> None:
    # waku-rest-api.md §3: cluster 1, 8 shards.
    transport = connect("http://127.0.0.1:8645", cluster_id=1, num_shards=8)
    assert transport.pubsub_topic("/toychat/2/huilong/proto") == "/waku/2/rs/1/3"
    assert transport.pubsub_topic("/statusim/1/community/cbor") == "/waku/2/rs/1/4"
    assert transport.pubsub_topic("/app/20/sometopic/someencoding") == "/waku/2/rs/1/7"
    # Default: one shard (nwaku >= v0.37), cluster 0.
    assert connect("http://h:1").pubsub_topic(CT) == "/waku/2/rs/0/0"


def test_pubsub_topic_static_sharding_wins_and_content_topics_are_validated() -> None:
    transport = connect("http://h:1", pubsub_topic="/waku/2/rs/16/5", num_shards=8)
    assert transport.pubsub_topic("/toychat/2/huilong/proto") == "/waku/2/rs/16/5"
    with pytest.raises(InvalidContentTopic):
        transport.pubsub_topic("no-leading-slash")
    with pytest.raises(InvalidContentTopic):
        transport.pubsub_topic("/a/b/c")


async def test_use_after_close_raises_transport_closed_and_close_is_idempotent() -> None:
    transport = connect("http://127.0.0.1:9")
    await transport.close()
    await transport.close()
    assert await transport.ready() is False
    with pytest.raises(TransportClosed):
        await transport.publish(WakuMessage.create(b"x", CT))
    with pytest.raises(TransportClosed):
        await transport.subscribe([CT])
    with pytest.raises(TransportClosed):
        await transport.start()


async def test_subscribe_rejects_a_bare_string_and_empty_lists() -> None:
    transport = connect("http://127.0.0.1:9")
    try:
        with pytest.raises(InvalidInput):
            await transport.subscribe(CT)
        with pytest.raises(InvalidInput):
            await transport.subscribe([])
        with pytest.raises(InvalidContentTopic):
            await transport.subscribe(["bad topic"])
    finally:
        await transport.close()
