"""Settings of the REST adapter, validated once when the transport is created.

Every number has a default sized for a real node (see docs/transport.md): the node's own internal
waits are 5 s, and discovery may add up to 60 s, hence the 10 s / 65 s timeouts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, cast

from umbra_waku.errors import ConfigError, InvalidPubsubTopic
from umbra_waku.validation import check_choice, check_int, check_seconds
from umbra_waku.waku.message import MAX_MESSAGE_BYTES
from umbra_waku.waku.topics import PubsubTopic, parse_pubsub_topic

Mode = Literal["relay", "light"]
Implementation = Literal["auto", "nwaku", "go-waku"]
StoreApi = Literal["auto", "v3", "v1"]

#: Default ``--rest-relay-cache-capacity`` of each node kind (nwaku v0.36+; go-waku v0.10).
DEFAULT_RELAY_CACHE_CAPACITY: dict[str, int] = {"nwaku": 50, "go-waku": 1000}


@dataclass(frozen=True, slots=True, kw_only=True)
class RestOptions:
    """How a :class:`~umbra_waku_rest.RestTransport` talks to its node.

    Sharding: set ``pubsub_topic`` (or ``shard`` with ``cluster_id``) to use one static shard for
    everything, which is what interop between nwaku and go-waku needs; otherwise content topics are
    spread by autosharding over ``num_shards`` shards of ``cluster_id`` (default 1 shard, nwaku's
    default since v0.37).
    """

    #: "relay": publish and receive through the node's own relay (it must run ``--relay``).
    #: "light": publish with lightpush and receive with filter through the node's service peers.
    mode: Mode = "relay"
    cluster_id: int = 0
    #: Autosharding: the number of shards in the network. Ignored with shard / pubsub_topic.
    num_shards: int | None = None
    #: Static sharding: one shard of ``cluster_id`` for every content topic.
    shard: int | None = None
    #: Static sharding: an explicit ``/waku/2/rs/<cluster>/<shard>`` for every content topic.
    pubsub_topic: str | None = None
    #: Skip detection when the node kind is known ("auto" asks /debug/v1/version).
    implementation: Implementation = "auto"

    #: Seconds between polls of a subscription; keep arrivals per poll below the node's cache.
    poll_interval: float = 0.2
    #: Timeout of one request for relay, info and health calls (the node itself waits 5 s).
    request_timeout: float = 10.0
    #: Timeout of filter, store and lightpush calls, where the node may run discovery (60 s).
    long_timeout: float = 65.0
    #: How long start() waits for the node to become ready.
    start_timeout: float = 60.0
    #: Attempts per call for retriable failures (1 = no retry); every attempt sends the same bytes.
    retry_attempts: int = 4
    #: Base of the jittered exponential backoff between attempts, in seconds.
    retry_backoff: float = 0.25
    #: Ceiling of one backoff sleep, in seconds; also the ceiling of poll-failure backoff.
    retry_max_backoff: float = 5.0

    #: Limit on the protobuf-encoded message, checked before anything is sent.
    max_message_bytes: int = MAX_MESSAGE_BYTES
    #: Seconds between filter pings; service nodes drop a subscription after 5 min without one.
    #: In light mode it also bounds how late a lost subscription (service node restart) is noticed:
    #: a feed counts itself complete only up to its last successful ping, so what the service node
    #: got after that is read back from the store.
    filter_ping_interval: float = 15.0
    #: Multiaddr (with /p2p/<id>) of the store peer; None lets the node pick (or answer itself).
    #: The node's own address is never sent (go-waku: 500 "dial to self attempted").
    store_peer: str | None = None
    #: Which store REST API to use; "auto": v3 first on nwaku, legacy v1 first on go-waku (its
    #: store server is legacy-only), each falling back to the other where it is not served.
    store_api: StoreApi = "auto"

    #: Fill gaps of a subscription (cache overflow, errors, node restarts) from the store.
    gap_fill: bool = True
    #: Seconds subtracted from the last point known complete before querying the store, to cover
    #: clock skew and propagation delay (stores accept timestamps within +/-20 s).
    gap_fill_margin: float = 20.0
    #: Capacity of the node's relay REST cache (``--rest-relay-cache-capacity``). None: the node
    #: kind's default (nwaku 50, go-waku 1000 per subscription). A poll returning this many
    #: messages may have lost some: it reads again at once and fills the gap from the store.
    relay_cache_capacity: int | None = None
    #: Capacity of the node's filter REST cache (go-waku default 30 per topic pair).
    filter_cache_capacity: int = 30
    #: Message hashes remembered per pubsub topic to drop duplicates.
    dedupe_capacity: int = 10_000
    #: Most simultaneous connections to the node.
    connection_limit: int = 8

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, Mode)
        check_choice("implementation", self.implementation, Implementation)
        check_choice("store_api", self.store_api, StoreApi)
        check_int("cluster_id", self.cluster_id, 0, 0xFFFF)
        if self.num_shards is not None:
            check_int("num_shards", self.num_shards, 1, 0x10000)
        if self.shard is not None:
            check_int("shard", self.shard, 0, 0xFFFF)
        if self.pubsub_topic is not None:
            if self.shard is not None:
                raise ConfigError("pubsub_topic", "set either pubsub_topic or shard, not both")
            try:
                parse_pubsub_topic(self.pubsub_topic)
            except InvalidPubsubTopic as exc:
                raise ConfigError("pubsub_topic", str(exc)) from exc
        for name in (
            "poll_interval",
            "request_timeout",
            "long_timeout",
            "start_timeout",
            "retry_max_backoff",
            "filter_ping_interval",
        ):
            check_seconds(name, getattr(self, name), positive=True)
        check_seconds("retry_backoff", self.retry_backoff, positive=False)
        check_seconds("gap_fill_margin", self.gap_fill_margin, positive=False)
        check_int("retry_attempts", self.retry_attempts, 1, 100)
        check_int("max_message_bytes", self.max_message_bytes, 1, 1 << 20)
        if self.relay_cache_capacity is not None:
            check_int("relay_cache_capacity", self.relay_cache_capacity, 1, 1 << 24)
        check_int("filter_cache_capacity", self.filter_cache_capacity, 1, 1 << 24)
        check_int("dedupe_capacity", self.dedupe_capacity, 1, 1 << 24)
        check_int("connection_limit", self.connection_limit, 1, 1024)
        if not isinstance(self.store_peer, str | None) or self.store_peer == "":
            raise ConfigError("store_peer", "must be a multiaddr string or None")
        if not isinstance(self.gap_fill, bool):
            raise ConfigError("gap_fill", "must be a bool")

    @classmethod
    def from_mapping(cls, values: dict[str, object]) -> RestOptions:
        """Build options from ``connect(url, **options)`` keywords, naming any unknown key."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(key, f"unknown REST transport option (known: {sorted(known)})")
        coerced: dict[str, Any] = {}
        for key, value in values.items():
            # Whole numbers are fine where seconds are expected.
            is_int = isinstance(value, int) and not isinstance(value, bool)
            coerced[key] = float(cast(int, value)) if key in _FLOAT_FIELDS and is_int else value
        return cls(**coerced)

    def static_pubsub_topic(self) -> str | None:
        """The single pubsub topic of static sharding, or None under autosharding."""
        if self.pubsub_topic is not None:
            return self.pubsub_topic
        if self.shard is not None:
            return str(PubsubTopic(self.cluster_id, self.shard))
        return None

    def shards_in_network(self) -> int:
        return 1 if self.num_shards is None else self.num_shards

    def relay_capacity(self, implementation: str | None) -> int:
        """The relay cache capacity to assume: the configured one, else the node kind's default
        (nwaku's 50, the smaller, while the kind is unknown)."""
        if self.relay_cache_capacity is not None:
            return self.relay_cache_capacity
        return DEFAULT_RELAY_CACHE_CAPACITY.get(implementation or "", 50)


_FLOAT_FIELDS = frozenset(
    {
        "poll_interval",
        "request_timeout",
        "long_timeout",
        "start_timeout",
        "retry_backoff",
        "retry_max_backoff",
        "filter_ping_interval",
        "gap_fill_margin",
    }
)
