"""Receiving: one poll loop per pubsub topic, fanned out to subscriptions.

Why one loop per pubsub topic and not per subscription: the node's message caches are drained by
every read (destructive GET), so two loops on one topic would steal each other's messages. The
:class:`TopicFeed` reads, drops duplicates by message hash (the node echoes its own publishes and
gap filling re-reads what polling already gave), keeps only the subscribed content topics, and
hands each message once to every interested :class:`RestSubscription`.

Gap filling: the feed tracks ``complete_until``, the wall-clock time (ns) up to which it knows it
has seen everything. A successful poll moves it forward -- in light mode only as far as the last
successful filter ping or subscribe, because polls of the node's local filter cache go on
succeeding after the *service* node lost our subscription. When completeness may no longer hold
-- a poll returned as many messages as the node's cache holds (older ones may have been evicted),
a poll failed, the node was unreachable or restarted and forgot the subscription -- the feed
queries the store from ``complete_until - gap_fill_margin``, delivering whatever it had not seen.
A failing poll never ends the loop: it backs off and tries again.

Re-subscribing happens only on evidence that the node lost the subscription (a GET answering 404,
nwaku's filter 400 "Not subscribed", a ping answering 404 / NOT_FOUND), never after a mere timeout
or connection error: on go-waku each relay POST adds another subscription (see relay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from umbra_waku.errors import TransportError
from umbra_waku.transport import ReceivedMessage, Source
from umbra_waku.waku.dedupe import RecentHashes
from umbra_waku.waku.message import WakuMessage
from umbra_waku_rest import filter as filter_api
from umbra_waku_rest import relay as relay_api
from umbra_waku_rest.client import NodeClient
from umbra_waku_rest.filter import FilterApi, PingClock
from umbra_waku_rest.options import RestOptions
from umbra_waku_rest.relay import RelayApi
from umbra_waku_rest.store import StoreApi

log = logging.getLogger("umbra_waku.rest")

#: nwaku refuses store queries with a cursor and more than 10 content topics.
_STORE_TOPICS_PER_QUERY = 10
#: Gap fills that fail with a retriable error are tried again this many times before giving up.
_GAP_FILL_TRIES = 3


@dataclass(frozen=True, slots=True)
class PollResult:
    messages: list[WakuMessage]
    #: The node's cache may have overflowed since the last poll: some messages may be lost.
    possibly_lost: bool


class Receiver(Protocol):
    """How a feed subscribes and polls: relay (full node) or filter (light node)."""

    source: Source

    async def sync(self, content_topics: Collection[str], *, force: bool) -> None:
        """Make the node's subscription cover exactly these content topics."""

    async def poll(self, content_topics: Collection[str]) -> PollResult: ...

    async def keep_alive(self) -> bool:
        """Refresh the subscription if due; False when the node has lost it."""

    def lost_subscription(self, error: TransportError) -> bool: ...

    def confirmed_until(self) -> int | None:
        """Wall-clock time (ns) up to which the node-side subscription is known to have existed
        without interruption, when polls alone cannot tell (filter); None when they can."""

    async def release(self, content_topics: Collection[str]) -> None:
        """Drop the node-side subscription, best effort, when the feed stops."""


class RelayReceiver:
    """Relay: subscribe the whole pubsub topic; content topics are filtered locally."""

    source: Source = "relay"

    def __init__(self, relay: RelayApi, pubsub_topic: str, options: RestOptions) -> None:
        self._relay = relay
        self._pubsub_topic = pubsub_topic

    async def sync(self, content_topics: Collection[str], *, force: bool) -> None:
        if force:  # only after a GET answered 404: the node really lost it
            self._relay.forget(self._pubsub_topic)
        await self._relay.subscribe(self._pubsub_topic)

    async def poll(self, content_topics: Collection[str]) -> PollResult:
        messages, full = await self._relay.poll(self._pubsub_topic)
        return PollResult(messages, possibly_lost=full)

    async def keep_alive(self) -> bool:
        return True

    def lost_subscription(self, error: TransportError) -> bool:
        return relay_api.lost_subscription(error)

    def confirmed_until(self) -> int | None:
        return None  # a GET answers 404 as soon as the node lost the subscription

    async def release(self, content_topics: Collection[str]) -> None:
        # Never DELETE /relay/v1/subscriptions: on go-waku that removes every subscription of the
        # topic, the node's own one included, and the node leaves the shard for everyone. The
        # subscription stays (nwaku: one bounded cache; go-waku: see RestTransport._detach).
        self._relay.discard_unread(self._pubsub_topic)


class FilterReceiver:
    """Filter: subscribe the content topics on the pubsub topic at the node's service peer."""

    source: Source = "filter"

    def __init__(
        self, filters: FilterApi, client: NodeClient, pubsub_topic: str, options: RestOptions
    ) -> None:
        self._filters = filters
        self._client = client
        self._pubsub_topic = pubsub_topic
        self._capacity = options.filter_cache_capacity
        self._subscribed: set[str] = set()
        self._request_id: str | None = None
        self._ping = PingClock(options.filter_ping_interval)
        self._timeout = options.request_timeout
        #: When the last successful subscribe or ping was sent (wall clock, ns): the service peer
        #: held the subscription then, so nothing before it was missed.
        self._confirmed = time.time_ns()
        #: FilterApi.losses when this receiver last subscribed.
        self._epoch = filters.losses

    async def sync(self, content_topics: Collection[str], *, force: bool) -> None:
        wanted = set(content_topics)
        missing = wanted if force else wanted - self._subscribed
        if missing:
            sent = time.time_ns()
            epoch = self._filters.losses
            self._request_id = await self._filters.subscribe(self._pubsub_topic, missing)
            self._ping.reset()
            if not self._subscribed or force:
                # Everything is subscribed from now on (before: the last ping stands).
                self._confirmed, self._epoch = sent, epoch
            self._subscribed |= missing
        extra = self._subscribed - wanted
        if extra:
            await self._filters.unsubscribe(self._pubsub_topic, extra, time_limit=self._timeout)
            self._subscribed -= extra

    async def poll(self, content_topics: Collection[str]) -> PollResult:
        go_waku = await self._client.implementation() == "go-waku"
        messages: list[WakuMessage] = []
        lost = False
        for topic in sorted(content_topics):
            batch = await self._filters.poll(self._pubsub_topic, topic, go_waku=go_waku)
            lost = lost or len(batch) >= self._capacity
            messages.extend(batch)
        return PollResult(messages, possibly_lost=lost)

    async def keep_alive(self) -> bool:
        if self._request_id is None:
            return True
        if self._filters.losses != self._epoch:
            # Another receiver's ping found the service peer without our subscriptions.
            self._subscribed.clear()
            return False
        if not self._ping.due():
            return True
        sent = time.time_ns()
        alive = await self._filters.ping(self._request_id)  # an error: ping again next step
        self._ping.reset()
        if alive:
            self._confirmed = sent
        else:
            self._subscribed.clear()
        return alive

    def lost_subscription(self, error: TransportError) -> bool:
        lost = filter_api.lost_subscription(error)
        if lost:
            self._subscribed.clear()
        return lost

    def confirmed_until(self) -> int:
        return self._confirmed

    async def release(self, content_topics: Collection[str]) -> None:
        if self._subscribed:
            await self._filters.unsubscribe(
                self._pubsub_topic, self._subscribed, time_limit=min(2.0, self._timeout)
            )
            self._subscribed.clear()


class RestSubscription:
    """A live stream of messages on some content topics (see umbra_waku.transport.Subscription).

    Messages wait in an unbounded queue until read; iteration ends once the subscription is
    closed and what was already received has been read.
    """

    def __init__(self, content_topics: Sequence[str]) -> None:
        self.content_topics: Sequence[str] = tuple(content_topics)
        self._queue: asyncio.Queue[ReceivedMessage | None] = asyncio.Queue()
        self._closed = False
        self._closers: list[Callable[[RestSubscription], Awaitable[None]]] = []

    @property
    def closed(self) -> bool:
        return self._closed

    def deliver(self, received: ReceivedMessage) -> None:
        if not self._closed:
            self._queue.put_nowait(received)

    def add_closer(self, closer: Callable[[RestSubscription], Awaitable[None]]) -> None:
        """Run ``closer`` (once) when the subscription closes."""
        self._closers.append(closer)

    async def __aiter__(self) -> AsyncIterator[ReceivedMessage]:
        while True:
            item = await self._queue.get()
            if item is None:
                self._queue.put_nowait(None)  # let any other iterator end too
                return
            yield item

    async def close(self) -> None:
        """Stop receiving; idempotent."""
        if self._closed:
            return
        self._closed = True
        closers, self._closers = self._closers, []
        try:
            for closer in closers:
                await closer(self)
        finally:
            self._queue.put_nowait(None)


class TopicFeed:
    """The poll loop of one pubsub topic and the subscriptions it serves."""

    def __init__(
        self,
        pubsub_topic: str,
        receiver: Receiver,
        store: StoreApi,
        options: RestOptions,
    ) -> None:
        self.pubsub_topic = pubsub_topic
        self._receiver = receiver
        self._store = store
        self._options = options
        #: Each subscription with the content topics it wants from this pubsub topic.
        self._listeners: list[tuple[RestSubscription, frozenset[str]]] = []
        self._seen = RecentHashes(options.dedupe_capacity)
        self._sync_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._complete_until = time.time_ns()
        self._gap_from: int | None = None
        self._gap_tries = 0
        self._needs_subscribe = False

    @property
    def empty(self) -> bool:
        return not self._listeners

    @property
    def running(self) -> bool:
        return self._task is not None

    def content_topics(self) -> set[str]:
        return {topic for _, topics in self._listeners for topic in topics}

    async def add(self, subscription: RestSubscription, content_topics: Collection[str]) -> None:
        """Subscribe the node for ``content_topics`` (errors reach the caller), then start
        delivering their messages to ``subscription``."""
        wanted = frozenset(content_topics)
        async with self._sync_lock:
            await self._receiver.sync(self.content_topics() | wanted, force=False)
        if not self._listeners:
            # First listener (or the first after an idle spell of draining): nothing earlier is
            # owed to anyone.
            self._gap_from = None
            self._advance(time.time_ns())
        self._listeners.append((subscription, wanted))
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name=f"umbra-waku-rest {self.pubsub_topic}"
            )

    def remove(self, subscription: RestSubscription) -> None:
        self._listeners = [entry for entry in self._listeners if entry[0] is not subscription]

    async def stop(self) -> None:
        """Stop polling and release the node-side subscription (best effort)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self._receiver.release(self.content_topics())
        except TransportError as exc:
            log.debug("could not release the subscription on %s: %s", self.pubsub_topic, exc)

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._step()
                failures = 0
                delay = self._options.poll_interval
            except TransportError as exc:
                failures += 1
                delay = self._failed(exc, failures)
            except Exception:  # the loop must outlive any single bad answer
                failures += 1
                log.exception("unexpected error while polling %s", self.pubsub_topic)
                self._open_gap()
                delay = self._backoff(failures)
            await asyncio.sleep(delay)

    async def _step(self) -> None:
        topics = self.content_topics()
        if not topics:
            # No listener, but the transport keeps the feed (go-waku relay): drain and discard,
            # so that the node's queue for our subscription never fills up and stalls the node.
            if not self._needs_subscribe:  # else the node has no subscription left to drain
                await self._receiver.poll(topics)
            return
        async with self._sync_lock:
            await self._receiver.sync(topics, force=self._needs_subscribe)
        if self._needs_subscribe:
            log.info("re-subscribed %s", self.pubsub_topic)
            self._needs_subscribe = False
        if not await self._receiver.keep_alive():
            log.info("the node lost the subscription on %s; re-subscribing", self.pubsub_topic)
            self._needs_subscribe = True
            self._open_gap()
            return
        if self._gap_from is not None:
            await self._fill_gap(topics)
        started = time.time_ns()
        result = await self._receiver.poll(topics)
        self._deliver(result.messages, self._receiver.source)
        if result.possibly_lost:
            log.info(
                "poll of %s returned %d messages (cache capacity): filling the gap from the store",
                self.pubsub_topic,
                len(result.messages),
            )
            self._open_gap()
        elif self._gap_from is None:
            self._advance(started)

    def _advance(self, to: int) -> None:
        """Everything up to ``to`` was seen -- as far as the receiver can vouch for it."""
        confirmed = self._receiver.confirmed_until()
        self._complete_until = to if confirmed is None else min(to, confirmed)

    def _failed(self, error: TransportError, failures: int) -> float:
        if self._receiver.lost_subscription(error):
            # Evidence the node lost it (restart): subscribe again. Never on a mere timeout or
            # connection error -- on go-waku a second relay POST is a second subscription.
            log.info(
                "the node is not subscribed to %s (restart?); re-subscribing", self.pubsub_topic
            )
            self._needs_subscribe = True
        else:
            log.warning("polling %s failed (%d in a row): %s", self.pubsub_topic, failures, error)
        # Whatever failed, messages may have been missed meanwhile: fill the gap.
        self._open_gap()
        return self._backoff(failures)

    def _backoff(self, failures: int) -> float:
        return min(
            self._options.retry_max_backoff, self._options.poll_interval * 2.0 ** min(failures, 16)
        )

    def _open_gap(self) -> None:
        if self._gap_from is None and self._options.gap_fill:
            self._gap_from = self._complete_until
            self._gap_tries = 0

    async def _fill_gap(self, topics: Iterable[str]) -> None:
        assert self._gap_from is not None
        since = self._gap_from - int(self._options.gap_fill_margin * 1e9)
        started = time.time_ns()
        ordered = sorted(topics)
        delivered = 0
        try:
            for index in range(0, len(ordered), _STORE_TOPICS_PER_QUERY):
                chunk = ordered[index : index + _STORE_TOPICS_PER_QUERY]
                delivered += await self._fill_from_store(chunk, since)
        except TransportError as exc:
            self._gap_tries += 1
            if exc.retriable and self._gap_tries < _GAP_FILL_TRIES:
                log.warning("filling the gap on %s failed, will retry: %s", self.pubsub_topic, exc)
                raise
            log.warning(
                "could not fill the gap on %s from the store; messages may be missing: %s",
                self.pubsub_topic,
                exc,
            )
        else:
            log.info(
                "gap on %s filled: %d new messages from the store", self.pubsub_topic, delivered
            )
        self._gap_from = None
        self._advance(started)

    async def _fill_from_store(self, topics: Sequence[str], since: int) -> int:
        delivered = 0
        cursor = None
        while True:
            page = await self._store.query(
                self.pubsub_topic, topics, start_time=max(since, 1), cursor=cursor
            )
            delivered += self._deliver([r.message for r in page.messages], "store")
            if page.cursor is None or not page.messages:
                return delivered
            cursor = page.cursor

    def _deliver(self, messages: Iterable[WakuMessage], source: Source) -> int:
        delivered = 0
        for message in messages:
            listeners = [sub for sub, topics in self._listeners if message.content_topic in topics]
            if not listeners:
                continue
            received = ReceivedMessage.of(message, self.pubsub_topic, source)
            if not self._seen.add(received.hash):
                continue
            delivered += 1
            for sub in listeners:
                sub.deliver(received)
        return delivered
