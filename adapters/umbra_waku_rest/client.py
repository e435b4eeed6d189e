"""HTTP to one Waku node: the only module that touches aiohttp.

Every aiohttp, JSON and decoding failure is mapped here, at the boundary, onto the one error tree
of :mod:`umbra_waku.errors`, so nothing above this module sees a raw library exception:

- connection refused/reset, DNS, a body cut short  -> NodeUnreachable (retriable)
- no answer within the timeout                       -> NodeTimeout (retriable)
- 404 "... not available while initializing."        -> NodeNotReady (retriable)
- any other status >= 400                            -> NodeHTTPError (429, 5xx but 501 retriable,
                                                       unless the caller knows the body is final)
- an answer that is not the JSON we expect           -> NodeProtocolError

Retries (:meth:`NodeClient.retrying`) are decided by ``error.retriable`` alone and resend exactly
the same bytes: request bodies are serialised once, before the first attempt, so a retried publish
is byte-identical and the network's message-hash deduplication applies.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import yarl
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from umbra_waku.errors import (
    ConfigError,
    NodeHTTPError,
    NodeNotReady,
    NodeProtocolError,
    NodeTimeout,
    NodeUnreachable,
    TransportClosed,
    UmbraWakuError,
)
from umbra_waku_rest.options import RestOptions

log = logging.getLogger("umbra_waku.rest")

T = TypeVar("T")
Flavour = Literal["nwaku", "go-waku"]
Params = Sequence[tuple[str, str]]
#: Tells whether an error answer is final even though its status says "retriable" (e.g. go-waku's
#: fast 500 "no suitable peers found"): such an error is raised with ``retriable`` false.
Final = Callable[[NodeHTTPError], bool]

_INITIALISING = "not available while initializing"
_JSON = "application/json"


def segment(value: str) -> str:
    """One path segment: every reserved character, ``/`` and ``+`` included, percent-encoded.

    nim-presto and go-waku both decode ``+`` in a path as a space, and an unencoded ``/`` splits
    the topic into segments that match no route.
    """
    return quote(value, safe="")


def encode_json(value: object) -> bytes:
    """The request body, serialised once so that every retry resends the same bytes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode()


def is_retriable(error: BaseException) -> bool:
    return isinstance(error, UmbraWakuError) and error.retriable


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful (status < 400) answer, already read in full."""

    method: str
    path: str
    status: int
    content_type: str
    text: str

    def json(self) -> object:
        """The body as JSON; a body that is not JSON is a NodeProtocolError."""
        try:
            return json.loads(self.text)
        except ValueError as exc:
            raise NodeProtocolError(
                f"{self.method} {self.path}: expected JSON, got {_excerpt(self.text)!r}"
            ) from exc

    def is_ok(self) -> bool:
        """nwaku answers ``OK`` (text/plain), go-waku ``true`` (JSON); both mean success."""
        return self.text.strip() in ("OK", "true", "")


class NodeClient:
    """One node's REST API: a lazily created aiohttp session, error mapping and retries."""

    def __init__(self, base_url: str, options: RestOptions) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("node", f"{base_url!r} is not an http:// or https:// node URL")
        if parts.query or parts.fragment:
            raise ConfigError("node", f"{base_url!r}: a node URL has no query or fragment")
        self.base_url = base_url.rstrip("/")
        self.options = options
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._implementation: Flavour | None = (
            None if options.implementation == "auto" else options.implementation
        )
        self.version = ""
        self._detect_lock = asyncio.Lock()
        #: Peer ids in the node's own listen addresses (from /debug/v1/info), once known.
        self._peer_ids: frozenset[str] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop (never in __init__, which may run outside).
        if self._closed:
            raise TransportClosed("the REST transport is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(limit_per_host=self.options.connection_limit)
            # No Origin header, ever: nwaku answers 403 to an Origin it does not allow.
            self._session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        return self._session

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Params = (),
        body: bytes | None = None,
        time_limit: float,
        final: Final | None = None,
    ) -> Reply:
        """One attempt. Raises a TransportError subclass for anything but a status < 400."""
        session = self._get_session()
        url = self.base_url + path
        if params:
            url += "?" + "&".join(f"{segment(k)}={segment(v)}" for k, v in params)
        headers = {"Content-Type": _JSON} if body is not None else None
        try:
            async with session.request(
                method,
                yarl.URL(url, encoded=True),
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=time_limit),
                allow_redirects=False,
            ) as response:
                text = await response.text(errors="replace")
                status = response.status
                content_type = response.content_type
        except TimeoutError as exc:  # also aiohttp.ServerTimeoutError
            raise NodeTimeout(f"{method} {path}: no answer within {time_limit:g} s") from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise NodeUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise NodeProtocolError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        except (LookupError, UnicodeError) as exc:  # a body in an unknown charset
            raise NodeProtocolError(f"{method} {path}: undecodable answer: {exc}") from exc
        except RuntimeError as exc:
            # aiohttp raises RuntimeError("Session is closed") when close() races a request.
            if self._closed:
                raise TransportClosed("the REST transport is closed") from exc
            raise
        if status == 404 and _INITIALISING in text:
            raise NodeNotReady(f"{method} {path}: {_excerpt(text)}")
        if status >= 400:
            error = NodeHTTPError(method, path, status, text)
            if final is not None and final(error):
                error.retriable = False
            raise error
        return Reply(method, path, status, content_type, text)

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Params = (),
        body: bytes | None = None,
        time_limit: float,
        final: Final | None = None,
    ) -> Reply:
        """:meth:`send` with retries for retriable errors."""
        return await self.retrying(
            lambda: self.send(
                method, path, params=params, body=body, time_limit=time_limit, final=final
            )
        )

    async def retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds, raises a non-retriable error or attempts run out.

        The first attempt runs bare, and tenacity (about 25 us of set-up per call: one publish
        is one call) is brought in only after it failed with a retriable error, replaying that
        failure as its first attempt: the same waits, logs and number of attempts."""
        options = self.options
        try:
            return await attempt()
        except Exception as exc:
            if not is_retriable(exc) or options.retry_attempts <= 1:
                raise
            failed: Exception | None = exc
        retrier = AsyncRetrying(
            stop=stop_after_attempt(options.retry_attempts),
            wait=wait_exponential_jitter(
                multiplier=options.retry_backoff,
                max=options.retry_max_backoff,
                jitter=options.retry_backoff,
            ),
            retry=retry_if_exception(is_retriable),
            before_sleep=_log_retry,
            reraise=True,
        )
        async for try_ in retrier:
            with try_:
                if failed is not None:
                    error, failed = failed, None
                    raise error
                return await attempt()
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    async def implementation(self) -> Flavour:
        """nwaku or go-waku, from ``/debug/v1/version``: nwaku answers text/plain, go-waku a JSON
        string. Asked once and remembered."""
        if self._implementation is not None:
            return self._implementation
        async with self._detect_lock:
            if self._implementation is None:
                reply = await self.call(
                    "GET", "/debug/v1/version", time_limit=self.options.request_timeout
                )
                self._implementation, self.version = detect_implementation(reply)
        return self._implementation

    def known_implementation(self) -> Flavour | None:
        return self._implementation

    def remember(self, implementation: Flavour, version: str) -> None:
        """Keep what a readiness probe learnt (an explicit ``implementation`` option wins)."""
        if self._implementation is None or self.options.implementation == "auto":
            self._implementation = implementation
        self.version = version

    def remember_addresses(self, listen_addresses: Sequence[str]) -> None:
        """Keep the peer ids of the node's own listen addresses (from /debug/v1/info)."""
        self._peer_ids = frozenset(
            pid for pid in (peer_id_of(address) for address in listen_addresses) if pid
        )

    async def own_peer_ids(self) -> frozenset[str]:
        """The node's own peer ids, from ``/debug/v1/info`` (asked once, unless start() did)."""
        if self._peer_ids is None:
            reply = await self.call(
                "GET", "/debug/v1/info", time_limit=self.options.request_timeout
            )
            value = reply.json()
            addresses = value.get("listenAddresses") if isinstance(value, dict) else None
            if not isinstance(addresses, list):
                raise NodeProtocolError("GET /debug/v1/info: listenAddresses must be a list")
            self.remember_addresses([a for a in addresses if isinstance(a, str)])
        assert self._peer_ids is not None
        return self._peer_ids


def peer_id_of(multiaddr: str) -> str | None:
    """The ``/p2p/<id>`` (or legacy ``/ipfs/<id>``) component of a multiaddr, if any."""
    parts = multiaddr.rstrip("/").split("/")
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] in ("p2p", "ipfs") and parts[index + 1]:
            return parts[index + 1]
    return None


def detect_implementation(reply: Reply) -> tuple[Flavour, str]:
    text = reply.text.strip()
    if reply.content_type == _JSON or text.startswith('"'):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, str):
            return "go-waku", value
    return "nwaku", text


def _excerpt(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "retrying after attempt %d failed: %s",
        state.attempt_number,
        error,
    )
