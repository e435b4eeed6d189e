"""Real Waku nodes for integration tests: go-waku processes and js-waku relay peers on loopback.

Everything here is about *running* nodes; the fixtures in ``conftest.py`` wire it to pytest.

Network hygiene (hard rules of the project):

- every node binds 127.0.0.1 only; go-waku always gets ``--ext-multiaddr=/ip4/127.0.0.1/tcp/<p>``
  (without it cmd/waku adds libp2p.NATPortMap(), i.e. UPnP/NAT-PMP traffic to the gateway);
- no discovery (go-waku: discv5/DNS discovery/peer exchange/rendezvous are off by default and
  stay off; js-waku: ``defaultBootstrap: false``, no peer discovery modules, no relay pings);
- ports are chosen at run time;
- by default all nodes of a test run inside a private network namespace that only has ``lo``
  (:class:`Sandbox`), because go-waku's NTP time source (``node.WithNTP()``, unconditional in
  cmd/waku) looks up ``[0-3].pool.ntp.org`` and would query them; inside the namespace those
  lookups fail at once and no packet leaves the machine. The REST ports are forwarded from the
  host's 127.0.0.1 into the namespace, so tests and adapters use plain ``http://127.0.0.1:<port>``.

Cluster and shard: every node runs on the private cluster 42 (an application-defined cluster,
16-65535 per 23/WAKU2-TOPICS, so nothing is confused with The Waku Network, cluster 1) and the
static shard ``/waku/2/rs/42/0``. go-waku enforces the metadata protocol on non-zero clusters
(peers of another cluster are disconnected), so a private cluster also exercises that
handshake between go-waku and js-waku. Static sharding is used because go-waku's autosharding is
hard-wired to cluster 1 / 8 shards whatever ``--cluster-id`` says.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import aiohttp
import pytest

from umbra_waku.waku.message import WakuMessage

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

CLUSTER_ID = 42
SHARD = 0
PUBSUB_TOPIC = f"/waku/2/rs/{CLUSTER_ID}/{SHARD}"
RELAY_CODEC = "/vac/waku/relay/2.0.0"
#: Readiness probes: ephemeral (never stored) messages on a content topic no test uses. They are
#: sent before any REST subscription or filter exists, and the js-waku peer drops them.
PROBE_CONTENT_TOPIC = "/umbra-realnodes/1/probe/proto"

#: Generous: a loaded CI machine can be slow; every wait polls and returns as soon as it can.
START_TIMEOUT = 45.0
MESH_TIMEOUT = 45.0
STOP_TIMEOUT = 10.0

INSTALL_HINT = "run scripts/setup-realnodes.sh (builds go-waku, runs npm ci in tools/jswaku-peer)"


# --------------------------------------------------------------------------------------------
# Prerequisites


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str, hint: str = INSTALL_HINT) -> NoReturn:
    """Skip outside CI, fail in CI (CI=true): real-node tests must not silently vanish there."""
    if in_ci():
        pytest.fail(f"{reason} -- CI=true, so real-node tests must run; {hint}", pytrace=False)
    pytest.skip(f"{reason}; {hint}")


def default_gowaku_binary() -> Path:
    cache_dir = Path(os.environ.get("UMBRA_WAKU_CACHE") or Path.home() / ".cache" / "umbra-waku")
    candidates = [cache_dir / f"go-waku-{v}" / "waku" for v in ("v0.10.1", "v0.10.0")]
    return next((c for c in candidates if c.exists()), candidates[0])


@dataclass(frozen=True)
class GoWakuBinary:
    path: Path
    version: str  # as `waku --version` prints it, e.g. "v0.10.1-gomodproxy"


@cache
def _probe_gowaku(path: str) -> GoWakuBinary | str:
    binary = Path(path)
    if not binary.exists():
        return f"go-waku binary not found at {binary} (env UMBRA_WAKU_GOWAKU_BIN)"
    if not os.access(binary, os.X_OK):
        return f"go-waku binary {binary} is not executable"
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"go-waku binary {binary} does not run: {exc}"
    version = out.strip().rsplit(" ", 1)[-1] if out.strip() else "unknown"
    return GoWakuBinary(binary, version)


def require_gowaku() -> GoWakuBinary:
    path = os.environ.get("UMBRA_WAKU_GOWAKU_BIN") or str(default_gowaku_binary())
    found = _probe_gowaku(path)
    if isinstance(found, str):
        unavailable(found)
    return found


@dataclass(frozen=True)
class JsWakuTool:
    node: Path
    node_version: str
    directory: Path
    sdk_version: str


@cache
def _probe_jswaku(node: str | None, directory: str) -> JsWakuTool | str:
    if node is None:
        return "Node.js (>= 20) is not installed (env UMBRA_WAKU_NODE_BIN)"
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"Node.js at {node} does not run: {exc}"
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        major = 0
    if major < 20:
        return f"Node.js {version} is too old for @waku/sdk 0.0.27 (need >= 20)"
    tool = Path(directory)
    sdk = tool / "node_modules" / "@waku" / "sdk" / "package.json"
    if not (tool / "peer.mjs").exists():
        return f"js-waku peer not found at {tool}/peer.mjs (env UMBRA_WAKU_JSWAKU_DIR)"
    if not sdk.exists():
        return f"js-waku dependencies are not installed in {tool} (npm ci)"
    sdk_version = json.loads(sdk.read_text())["version"]
    return JsWakuTool(Path(node), version, tool, sdk_version)


def require_jswaku() -> JsWakuTool:
    node = os.environ.get("UMBRA_WAKU_NODE_BIN") or shutil.which("node")
    directory = os.environ.get("UMBRA_WAKU_JSWAKU_DIR") or str(REPO / "tools" / "jswaku-peer")
    found = _probe_jswaku(node, directory)
    if isinstance(found, str):
        unavailable(found)
    return found


# --------------------------------------------------------------------------------------------
# Small async helpers


async def wait_until(
    check: Callable[[], Awaitable[T | None]],
    *,
    time_limit: float,
    what: str,
    interval: float = 0.1,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + time_limit
    last_error: BaseException | None = None
    while True:
        try:
            value = await check()
            if value:
                return value
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            extra = f"; last error: {last_error!r}" if last_error else ""
            more = f"\n{details()}" if details else ""
            raise TimeoutError(f"timed out after {time_limit:g} s waiting for {what}{extra}{more}")
        await asyncio.sleep(interval)


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the test process dies, even without cleanup (a
    killed pytest must not leave nodes behind). Linux prctl(PR_SET_PDEATHSIG); survives exec."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux/glibc
    _LIBC = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------
# Network sandbox


class Sandbox:
    """Where the nodes of one test run: a private network namespace (default) or the host.

    ``UMBRA_WAKU_REALNODES_NETNS``: ``auto`` (default: isolate; when the namespace cannot be
    created -- no unshare/nsenter, no privilege -- skip, or fail under CI=true), ``1`` (isolation
    required: always fail without it), ``0`` (never isolate: nodes run on the host's loopback,
    and go-waku's NTP lookups of pool.ntp.org go to the host's resolver).
    """

    def __init__(self) -> None:
        self.isolated = False
        self.description = "host loopback (no network namespace)"
        self._holder: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._enter: list[str] = []
        self._lock = asyncio.Lock()

    @property
    def forwarder_pid(self) -> int | None:
        """The namespace holder, which also forwards the REST ports (None on the host)."""
        return None if self._holder is None else self._holder.pid

    @classmethod
    async def create(cls) -> Sandbox:
        sandbox = cls()
        mode = os.environ.get("UMBRA_WAKU_REALNODES_NETNS", "auto").strip().lower()
        if mode in ("0", "off", "false", "no"):
            sandbox.description += " (UMBRA_WAKU_REALNODES_NETNS=0)"
            return sandbox
        try:
            await sandbox._isolate()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            await sandbox.close()
            reason = (
                f"cannot run the nodes in a private network namespace ({exc}), and on the host "
                "go-waku's NTP time source would look up and query pool.ntp.org"
            )
            hint = "set UMBRA_WAKU_REALNODES_NETNS=0 to run them on the host's loopback anyway"
            if mode in ("1", "on", "true", "yes"):
                pytest.fail(reason, pytrace=False)
            unavailable(reason, hint)
        return sandbox

    async def _isolate(self) -> None:
        unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
        if not unshare or not nsenter:
            raise RuntimeError("unshare/nsenter (util-linux) not found")
        root = os.geteuid() == 0
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [unshare, "--net"] if root else [unshare, "--user", "--map-root-user", "--net"]
        argv += [sys.executable, str(HERE / "netns_forward.py"), str(theirs.fileno())]
        self._holder = subprocess.Popen(  # noqa: ASYNC220 - a quick fork/exec
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(theirs.fileno(),),
            preexec_fn=_die_with_parent,
        )
        theirs.close()
        self._control = ours
        assert self._holder.stdout is not None
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(loop.run_in_executor(None, self._holder.stdout.readline), 15)
        if line.strip() != b"ready":
            err = b""
            with contextlib.suppress(Exception):
                self._holder.kill()
                err = self._holder.communicate(timeout=5)[1]
            raise RuntimeError(f"namespace holder failed: {(line + err).decode(errors='replace')}")
        pid = self._holder.pid
        if root:
            self._enter = [nsenter, f"--net=/proc/{pid}/ns/net", "--"]
        else:
            self._enter = [
                nsenter,
                "-t",
                str(pid),
                "--user",
                "--net",
                "--preserve-credentials",
                "--",
            ]
        probe = await asyncio.create_subprocess_exec(*self._enter, sys.executable, "-c", "pass")
        if await asyncio.wait_for(probe.wait(), 15) != 0:
            raise RuntimeError("nsenter into the namespace failed")
        self.isolated = True
        self.description = f"private network namespace (only lo), holder pid {pid}"

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run inside the sandbox (nsenter execs in place: same pid, same signals)."""
        return [*self._enter, *argv]

    def free_port(self) -> int:
        """A port for a node to listen on inside the sandbox."""
        return _free_port()

    async def rest_port(self) -> int:
        """A port for a REST server inside the sandbox, reachable at the same number on the
        host's 127.0.0.1."""
        if not self.isolated:
            return _free_port()
        assert self._control is not None
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(64)
            port = int(listener.getsockname()[1])
            async with self._lock:
                loop = asyncio.get_running_loop()
                control = self._control

                def exchange() -> bytes:
                    socket.send_fds(control, [str(port).encode()], [listener.fileno()])
                    return control.recv(16)

                answer = await asyncio.wait_for(loop.run_in_executor(None, exchange), 15)
            if answer != b"ok":
                raise RuntimeError(f"port forwarder answered {answer!r}")
        finally:
            listener.close()  # the forwarder holds its own duplicate
        return port

    async def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        holder, self._holder = self._holder, None
        if holder is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(holder.wait), 5)
            except TimeoutError:
                holder.kill()
                await asyncio.to_thread(holder.wait)
            for stream in (holder.stdout, holder.stderr):
                if stream is not None:
                    stream.close()


# --------------------------------------------------------------------------------------------
# Run registry (for the terminal summary)


@dataclass
class Registry:
    gowaku: GoWakuBinary | None = None
    jswaku: JsWakuTool | None = None
    gowaku_starts: list[float] = field(default_factory=list)
    jswaku_starts: list[float] = field(default_factory=list)
    sandboxes: set[str] = field(default_factory=set)
    peer_ids: list[str] = field(default_factory=list)


REGISTRY = Registry()


# --------------------------------------------------------------------------------------------
# go-waku


@dataclass
class GoWakuConfig:
    """One go-waku node's command line, in the terms the tests care about."""

    name: str
    store: bool = False
    filter: bool = False
    lightpush: bool = False
    #: Multiaddr of a service node: --staticnode, --storenode, --filternode and --lightpushnode.
    service_peer: str | None = None
    rest_relay_cache_capacity: int = 1000
    rest_filter_cache_capacity: int = 30
    #: go-waku's default is 1; 0 lets a lone node accept publishes (they reach nobody).
    min_relay_peers_to_publish: int = 1
    log_level: str = "INFO"
    extra_args: tuple[str, ...] = ()


class GoWakuNode:
    """A go-waku process with a stable identity: ports, node key and database survive restarts."""

    def __init__(
        self, binary: GoWakuBinary, sandbox: Sandbox, workdir: Path, config: GoWakuConfig
    ) -> None:
        self.binary = binary
        self.sandbox = sandbox
        self.config = config
        self.name = config.name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"gowaku-{config.name}.log"
        self.db_path = workdir / f"gowaku-{config.name}-store.sqlite3"
        self.nodekey = secrets.token_hex(32)
        self.tcp_port = sandbox.free_port()
        self.rest_port = 0  # assigned in start() the first time
        self.peer_id = self._peer_id()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.last_start_seconds = 0.0
        self._session: aiohttp.ClientSession | None = None

    def _peer_id(self) -> str:
        # --show-addresses only derives and prints the addresses from the key; no networking.
        out = subprocess.run(
            [
                str(self.binary.path),
                f"--nodekey={self.nodekey}",
                "--address=127.0.0.1",
                f"--tcp-port={self.tcp_port}",
                f"--ext-multiaddr={self._ext_multiaddr()}",
                "--show-addresses",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        for line in out.splitlines():
            if "/p2p/" in line:
                return line.strip().rsplit("/p2p/", 1)[1]
        raise RuntimeError(f"go-waku --show-addresses printed no /p2p/ address: {out!r}")

    def _ext_multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.tcp_port}"

    @property
    def multiaddr(self) -> str:
        return f"{self._ext_multiaddr()}/p2p/{self.peer_id}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def args(self) -> list[str]:
        c = self.config
        args = [
            str(self.binary.path),
            f"--nodekey={self.nodekey}",
            "--address=127.0.0.1",
            f"--tcp-port={self.tcp_port}",
            f"--ext-multiaddr={self._ext_multiaddr()}",
            f"--cluster-id={CLUSTER_ID}",
            f"--pubsub-topic={PUBSUB_TOPIC}",
            "--relay=true",
            f"--min-relay-peers-to-publish={c.min_relay_peers_to_publish}",
            "--circuit-relay=false",
            "--rest=true",
            "--rest-address=127.0.0.1",
            f"--rest-port={self.rest_port}",
            "--rest-admin=true",
            f"--rest-relay-cache-capacity={c.rest_relay_cache_capacity}",
            f"--rest-filter-cache-capacity={c.rest_filter_cache_capacity}",
            f"--log-level={c.log_level}",
            "--log-encoding=console",
        ]
        if c.store:
            args += ["--store=true", f"--store-message-db-url=sqlite3://{self.db_path}"]
        if c.filter:
            args.append("--filter=true")
        if c.lightpush:
            args.append("--lightpush=true")
        if c.service_peer:
            peer = c.service_peer
            args += [
                f"--staticnode={peer}",
                f"--storenode={peer}",
                f"--filternode={peer}",
                f"--lightpushnode={peer}",
            ]
        args += list(c.extra_args)
        return args

    async def start(self, time_limit: float = START_TIMEOUT) -> None:
        """Start (or start again, same ports/key/DB) and wait for ``GET /debug/v1/info`` 200."""
        if self.running:
            raise RuntimeError(f"go-waku {self.name} is already running")
        if not self.rest_port:
            self.rest_port = await self.sandbox.rest_port()
        self.starts += 1
        argv = self.args()
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(argv)}\n".encode())
            log.flush()
            began = time.monotonic()
            self.process = subprocess.Popen(  # noqa: ASYNC220 - a quick fork/exec
                self.sandbox.command(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

        async def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"go-waku {self.name} exited with {self.process.returncode} during start-up:\n"
                    f"{tail(self.log_path)}"
                )
            status, _ = await self.request("GET", "/debug/v1/info", time_limit=2)
            return status == 200

        await wait_until(
            answers,
            time_limit=time_limit,
            what=f"go-waku {self.name} REST",
            details=lambda: tail(self.log_path, 30),
        )
        self.last_start_seconds = time.monotonic() - began
        REGISTRY.gowaku_starts.append(self.last_start_seconds)
        REGISTRY.peer_ids.append(f"go-waku {self.name} {self.peer_id}")
        print(
            f"[realnodes] go-waku {self.binary.version} node {self.name} (start #{self.starts}) "
            f"ready in {self.last_start_seconds:.2f} s: peer {self.peer_id}, "
            f"REST {self.rest_url}, p2p {self.multiaddr}, log {self.log_path}"
        )

    async def stop(self, time_limit: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after ``time_limit``; returns the exit code."""
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), time_limit)
            except TimeoutError:
                print(
                    f"[realnodes] go-waku {self.name} ignored SIGTERM for {time_limit:g} s; SIGKILL"
                )
                proc.kill()
                await asyncio.to_thread(proc.wait)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== stopped: exit code {proc.returncode}\n".encode())
        return proc.returncode

    async def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        with self.log_path.open("ab") as log:
            log.write(b"\n===== killed (SIGKILL)\n")

    async def restart(self, *, downtime: float = 0.0) -> None:
        await self.stop()
        if downtime:
            await asyncio.sleep(downtime)
        await self.start()

    async def close(self) -> None:
        await self.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    # REST helpers, for fixtures and smoke tests (the adapter has its own client).

    async def request(
        self, method: str, path: str, body: object = None, *, time_limit: float = 10
    ) -> tuple[int, Any]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        kwargs: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=time_limit)}
        if body is not None:
            kwargs["json"] = body
        async with self._session.request(method, self.rest_url + path, **kwargs) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text) if text else None
            except ValueError:
                return response.status, text

    async def admin_peers(self) -> list[dict[str, Any]]:
        status, body = await self.request("GET", "/admin/v1/peers")
        if status != 200:
            raise RuntimeError(f"GET /admin/v1/peers on {self.name}: {status} {body!r}")
        return list(body or [])

    async def relay_peer(self, peer_id: str) -> dict[str, Any] | None:
        """The admin entry of ``peer_id`` if it is connected and (identify done) speaks relay.

        The entry's ``pubsubTopics`` is not used: go-waku v0.10.1 fills it from its peer-event
        loop, which blocks for good on the first topic-health change (PeerManager sends on
        TopicHealthNotifCh, a nil channel in cmd/waku), so it is only right for the first peers.
        """
        for peer in await self.admin_peers():
            if (
                peer.get("id") == peer_id
                and peer.get("connected")
                and RELAY_CODEC in (peer.get("protocols") or [])
            ):
                return peer
        return None

    async def wait_relay_peer(self, peer_id: str, time_limit: float = MESH_TIMEOUT) -> None:
        async def check() -> bool:
            return await self.relay_peer(peer_id) is not None

        await wait_until(
            check,
            time_limit=time_limit,
            what=f"{peer_id} connected as a relay peer of {self.name}",
            details=lambda: self.tail(30),
        )

    async def probe(self) -> int:
        """Publish an ephemeral probe message through this node's REST relay; the status code.

        With ``--min-relay-peers-to-publish`` >= 1, 200 means gossipsub knows at least one peer
        subscribed to the shard (go-waku publishes with flood-publish, so that peer gets it);
        500 means none yet."""
        from urllib.parse import quote

        probe = WakuMessage.create(secrets.token_bytes(8), PROBE_CONTENT_TOPIC, ephemeral=True)
        status, _ = await self.request(
            "POST", f"/relay/v1/messages/{quote(PUBSUB_TOPIC, safe='')}", message_to_rest(probe)
        )
        return status

    async def wait_publishable(self, time_limit: float = MESH_TIMEOUT) -> None:
        async def check() -> bool:
            return await self.probe() == 200

        await wait_until(
            check,
            time_limit=time_limit,
            interval=0.2,
            what=f"go-waku {self.name} to have a relay peer on {PUBSUB_TOPIC} (probe publish)",
            details=lambda: self.tail(30),
        )

    async def relay_messages(self, topic: str = PUBSUB_TOPIC) -> list[WakuMessage]:
        """Drain the REST relay cache (go-waku answers ``null`` for none)."""
        from urllib.parse import quote

        status, body = await self.request("GET", f"/relay/v1/messages/{quote(topic, safe='')}")
        if status != 200:
            raise RuntimeError(f"GET relay messages on {self.name}: {status} {body!r}")
        return [rest_to_message(m) for m in body or []]


def rest_to_message(value: dict[str, Any]) -> WakuMessage:
    return WakuMessage(
        payload=base64.b64decode(value.get("payload") or ""),
        content_topic=value["contentTopic"],
        timestamp=value.get("timestamp"),
        version=value.get("version") or 0,
        meta=base64.b64decode(value.get("meta") or ""),
        ephemeral=bool(value.get("ephemeral")),
    )


def message_to_rest(message: WakuMessage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "payload": base64.b64encode(message.payload).decode(),
        "contentTopic": message.content_topic,
        "timestamp": message.timestamp,
        "version": message.version,
    }
    if message.meta:
        body["meta"] = base64.b64encode(message.meta).decode()
    if message.ephemeral:
        body["ephemeral"] = True
    return body


@dataclass
class GoWakuPair:
    """Node A (store, filter, lightpush service) and node B (client of A), relay-peered."""

    a: GoWakuNode
    b: GoWakuNode
    sandbox: Sandbox

    @property
    def nodes(self) -> tuple[GoWakuNode, GoWakuNode]:
        return (self.a, self.b)

    async def wait_peered(self, time_limit: float = MESH_TIMEOUT) -> None:
        """Both nodes are connected relay peers and each knows the other subscribed to the shard
        (a probe publish succeeds with --min-relay-peers-to-publish=1).

        go-waku publishes with flood-publish (to every topic peer, not only the mesh); the
        gossipsub mesh itself is grafted at the next 1 s heartbeat, and whatever still has to be
        forwarded before that travels by gossip (IHAVE/IWANT). Tests poll for arrivals."""
        await asyncio.gather(
            self.a.wait_relay_peer(self.b.peer_id, time_limit),
            self.b.wait_relay_peer(self.a.peer_id, time_limit),
        )
        if self.a.config.min_relay_peers_to_publish >= 1:
            await self.a.wait_publishable(time_limit)
        if self.b.config.min_relay_peers_to_publish >= 1:
            await self.b.wait_publishable(time_limit)

    async def repeer(self, time_limit: float = MESH_TIMEOUT) -> None:
        """Connect B to A again (after A restarted) and wait as at start-up.

        go-waku v0.10.1 never redials a peer on its own once its peer manager is stuck (see
        :meth:`GoWakuNode.relay_peer`), and B dials its --staticnode only at start-up; so after A
        restarts, nothing reconnects them unless asked: POST /admin/v1/peers on B."""
        body = {"multiaddr": self.a.multiaddr, "shards": [SHARD], "protocols": [RELAY_CODEC]}

        async def connect() -> bool:
            status, _ = await self.b.request("POST", "/admin/v1/peers", body)
            return status == 200

        await wait_until(connect, time_limit=time_limit, interval=0.2, what="B to reconnect to A")
        await self.wait_peered(time_limit)

    async def close(self) -> None:
        await asyncio.gather(self.b.close(), self.a.close())


async def start_gowaku_pair(
    binary: GoWakuBinary,
    sandbox: Sandbox,
    workdir: Path,
    *,
    rest_relay_cache_capacity: int = 1000,
    rest_filter_cache_capacity: int = 30,
    min_relay_peers_to_publish: int = 1,
    log_level: str = "INFO",
    a_extra_args: Iterable[str] = (),
    b_extra_args: Iterable[str] = (),
) -> GoWakuPair:
    a = GoWakuNode(
        binary,
        sandbox,
        workdir,
        GoWakuConfig(
            name="A",
            store=True,
            filter=True,
            lightpush=True,
            rest_relay_cache_capacity=rest_relay_cache_capacity,
            rest_filter_cache_capacity=rest_filter_cache_capacity,
            min_relay_peers_to_publish=min_relay_peers_to_publish,
            log_level=log_level,
            extra_args=tuple(a_extra_args),
        ),
    )
    b = GoWakuNode(
        binary,
        sandbox,
        workdir,
        GoWakuConfig(
            name="B",
            service_peer=a.multiaddr,
            rest_relay_cache_capacity=rest_relay_cache_capacity,
            rest_filter_cache_capacity=rest_filter_cache_capacity,
            min_relay_peers_to_publish=min_relay_peers_to_publish,
            log_level=log_level,
            extra_args=tuple(b_extra_args),
        ),
    )
    pair = GoWakuPair(a, b, sandbox)
    try:
        # A first: B dials its --staticnode once at start-up and does not retry a refused dial.
        await a.start()
        await b.start()
        began = time.monotonic()
        await pair.wait_peered()
        print(
            f"[realnodes] go-waku A and B relay-peered on {PUBSUB_TOPIC} in "
            f"{time.monotonic() - began:.2f} s"
        )
    except BaseException:
        await pair.close()
        raise
    return pair


# --------------------------------------------------------------------------------------------
# js-waku


@dataclass(frozen=True)
class JsReceived:
    pubsub_topic: str
    message: WakuMessage
    raw: bytes
    sender: str

    def hash(self) -> bytes:
        return self.message.hash(self.pubsub_topic)


class JsWakuError(RuntimeError):
    pass


class JsWakuPeer:
    """A js-waku relay peer (tools/jswaku-peer/peer.mjs) driven over its JSON-lines protocol."""

    def __init__(self, tool: JsWakuTool, sandbox: Sandbox, workdir: Path, name: str = "js") -> None:
        self.tool = tool
        self.sandbox = sandbox
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"jswaku-{name}.log"
        self.port = sandbox.free_port()
        self.peer_id = ""
        self.multiaddrs: list[str] = []
        self.versions: dict[str, str] = {}
        #: Every gossipsub message received, in order; also fed to :attr:`queue`.
        self.received: list[JsReceived] = []
        self.queue: asyncio.Queue[JsReceived] = asyncio.Queue()
        self.events: list[dict[str, Any]] = []
        self.probes_seen = 0
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._log: Any = None

    async def start(self, time_limit: float = START_TIMEOUT) -> None:
        argv = [
            str(self.tool.node),
            "--import",
            "./polyfill.mjs",
            "peer.mjs",
            "--port",
            str(self.port),
            "--cluster",
            str(CLUSTER_ID),
            "--shard",
            str(SHARD),
        ]
        self._log = self.log_path.open("ab", buffering=0)
        self._log.write(f"===== start: {' '.join(argv)}\n".encode())
        self._log.flush()
        began = time.monotonic()
        self._ready = asyncio.get_running_loop().create_future()
        self._process = await asyncio.create_subprocess_exec(
            *self.sandbox.command(argv),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            cwd=self.tool.directory,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            limit=16 * 1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read())
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), time_limit)
        except (TimeoutError, JsWakuError) as exc:
            await self.stop()
            raise JsWakuError(f"js-waku peer did not start: {exc}\n{tail(self.log_path)}") from exc
        self.peer_id = ready["peerId"]
        self.multiaddrs = ready["multiaddrs"]
        self.versions = ready.get("versions", {})
        seconds = time.monotonic() - began
        REGISTRY.jswaku_starts.append(seconds)
        REGISTRY.peer_ids.append(f"js-waku {self.name} {self.peer_id}")
        v = self.versions
        print(
            f"[realnodes] js-waku @waku/sdk {v.get('@waku/sdk')} (@waku/relay "
            f"{v.get('@waku/relay')}, libp2p {v.get('libp2p')}, Node.js {v.get('node')}) "
            f"peer {self.name} ready in {seconds:.2f} s: peer {self.peer_id}, "
            f"{self.multiaddrs}, log {self.log_path}"
        )

    async def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        stdout = self._process.stdout
        try:
            while line := await stdout.readline():
                self._log.write(b"<< " + line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                kind = event.get("event")
                if kind == "message":
                    raw = base64.b64decode(event["message"])
                    received = JsReceived(
                        event["pubsubTopic"], WakuMessage.decode(raw), raw, event.get("from", "")
                    )
                    if received.message.content_topic == PROBE_CONTENT_TOPIC:
                        self.probes_seen += 1
                        continue
                    self.received.append(received)
                    self.queue.put_nowait(received)
                elif kind == "ready":
                    if self._ready is not None and not self._ready.done():
                        self._ready.set_result(event)
                elif "id" in event and event["id"] in self._pending:
                    future = self._pending.pop(event["id"])
                    if not future.done():
                        if kind == "error":
                            future.set_exception(
                                JsWakuError(f"{event.get('cmd')}: {event.get('error')}")
                            )
                        else:
                            future.set_result(event)
                else:
                    self.events.append(event)
        finally:
            error = JsWakuError(f"js-waku peer {self.name} exited")
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(error)
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error)
            self._pending.clear()

    async def command(self, cmd: str, time_limit: float = 60, **fields: Any) -> dict[str, Any]:
        if self._process is None or self._process.stdin is None:
            raise JsWakuError("js-waku peer is not running")
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        line = json.dumps({"cmd": cmd, "id": request_id, **fields}) + "\n"
        self._log.write(b">> " + line.encode())
        self._process.stdin.write(line.encode())
        await self._process.stdin.drain()
        return await asyncio.wait_for(future, time_limit)

    async def dial(self, multiaddr: str, time_limit: float = MESH_TIMEOUT) -> dict[str, Any]:
        """Dial and wait until the peer is in this peer's gossipsub mesh for the shard."""
        return await self.command(
            "dial", time_limit=time_limit + 5, multiaddr=multiaddr, timeoutMs=int(time_limit * 1000)
        )

    async def wait_reached_by(self, node: GoWakuNode, time_limit: float = MESH_TIMEOUT) -> None:
        """Probe-publish on ``node`` until this peer receives a probe: the path node -> js works
        (node knows this peer subscribed to the shard). Probes never reach :attr:`received`."""
        seen = self.probes_seen

        async def check() -> bool:
            if self.probes_seen > seen:
                return True
            await node.probe()
            for _ in range(10):
                await asyncio.sleep(0.05)
                if self.probes_seen > seen:
                    return True
            return False

        await wait_until(
            check,
            time_limit=time_limit,
            interval=0.0,
            what=f"a probe from go-waku {node.name} to reach js-waku {self.name}",
            details=lambda: self.tail(30),
        )

    async def publish(self, message: WakuMessage, pubsub_topic: str = PUBSUB_TOPIC) -> list[str]:
        """Publish the exact protobuf bytes of ``message``; returns the gossipsub recipients."""
        return await self.publish_raw(message.encode(), pubsub_topic)

    async def publish_raw(self, data: bytes, pubsub_topic: str = PUBSUB_TOPIC) -> list[str]:
        reply = await self.command(
            "publish", pubsubTopic=pubsub_topic, message=base64.b64encode(data).decode()
        )
        return list(reply.get("recipients", []))

    async def peers(self) -> dict[str, Any]:
        return await self.command("peers")

    async def next_message(self, time_limit: float = 30) -> JsReceived:
        return await asyncio.wait_for(self.queue.get(), time_limit)

    async def wait_for(
        self, predicate: Callable[[JsReceived], bool], time_limit: float = 30
    ) -> JsReceived:
        """The first received message (already received ones included) matching ``predicate``."""

        async def check() -> JsReceived | None:
            return next((r for r in self.received if predicate(r)), None)

        return await wait_until(
            check, time_limit=time_limit, what=f"a message on js-waku {self.name}", interval=0.05
        )

    async def stop(self, time_limit: float = STOP_TIMEOUT) -> None:
        proc, self._process = self._process, None
        if proc is not None:
            if proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.write(b'{"cmd":"stop"}\n')
                    await proc.stdin.drain()
                    proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), time_limit)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
            self._reader = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)
