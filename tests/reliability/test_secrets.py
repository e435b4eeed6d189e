"""Secrets: key and token files are private and refused otherwise; no key, token or plaintext
ever reaches a log.

The log test runs the real thing: two bridge processes (one on each go-waku node) at DEBUG, with
every logger of the process -- aiohttp's, asyncio's and the access log included -- turned up to
DEBUG; a bot on each exchanges text and binary content over WebSocket and long-poll; then every
line of both bridges' logs and of both go-waku nodes' logs is searched for every private key
(identities, ratchet roots, chains, hint and header keys, skipped message keys), every token
and every plaintext, in every encoding a logger might use.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bridge.process import BridgeProcess, bridge_env, request
from realnodes.conftest import PairFactory
from realnodes.harness import CLUSTER_ID, SHARD, GoWakuNode

from umbra_waku._proto import umbra_frames_pb2
from umbra_waku.bridge.files import read_secret_file
from umbra_waku.bridge.settings import BridgeSettings
from umbra_waku.errors import IdentityError, StateError
from umbra_waku.identity import Identity

from .helpers import BotApi, report, settle

# ---------------------------------------------------------------------------------------------
# Key and token files


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_key_files_are_created_0600_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "bot.key"
    Identity.generate().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cli = tmp_path / "cli.key"
    done = subprocess.run(
        [sys.executable, "-m", "umbra_waku", "identity", "new", str(cli)],
        capture_output=True,
        text=True,
        env=bridge_env(),
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(cli.stat().st_mode) == 0o600
    private = json.loads(cli.read_text())["x25519_private"]
    assert private not in done.stdout + done.stderr  # the CLI prints public facts only


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o666, 0o620, 0o602, 0o610, 0o601])
def test_shared_key_files_are_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "bot.key"
    Identity.generate().save(path)
    path.chmod(mode)
    with pytest.raises(IdentityError, match=f"chmod 600 {path}"):
        Identity.load(path)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_private_key_files_are_accepted(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "bot.key"
    identity = Identity.generate()
    identity.save(path)
    path.chmod(mode)
    assert Identity.load(path).public_key == identity.public_key


def test_symlinks_are_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    Identity.generate().save(real)
    link = tmp_path / "link.key"
    link.symlink_to(real)
    with pytest.raises(IdentityError):
        Identity.load(link)
    token = tmp_path / "admin.token"
    token.write_text("a" * 32)
    token.chmod(0o600)
    token_link = tmp_path / "token-link"
    token_link.symlink_to(token)
    with pytest.raises(StateError):
        read_secret_file(token_link)


def _finishes(call: Any, within: float = 5.0) -> tuple[bool, BaseException | None]:
    """Run ``call`` in a daemon thread: (finished in time, what it raised)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    return bool(outcome), outcome[0] if outcome else None


def test_non_regular_key_files_are_refused_not_waited_on(tmp_path: Path) -> None:
    """Bug 3 of docs/reliability.md (fixed in 95ef439): a FIFO in place of a key file or
    admin.token blocked the open forever; a directory raised a raw IsADirectoryError."""
    with pytest.raises(IdentityError):
        Identity.load(tmp_path)
    with pytest.raises(StateError):
        read_secret_file(tmp_path)
    fifo = tmp_path / "bot.key"
    os.mkfifo(fifo, 0o600)
    token = tmp_path / "admin.token"
    os.mkfifo(token, 0o600)
    done, error = _finishes(lambda: Identity.load(fifo))
    done_token, error_token = _finishes(lambda: read_secret_file(token))
    for path in (fifo, token):  # release a blocked reader: a writer opens, then closes
        with contextlib.suppress(OSError):  # ENXIO: nobody is blocked reading it
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    assert done, "Identity.load blocked on a FIFO"
    assert isinstance(error, IdentityError)
    assert done_token, "read_secret_file blocked on a FIFO"
    assert isinstance(error_token, StateError)


async def test_the_bridge_refuses_shared_state_files(tmp_path: Path) -> None:
    from umbra_waku.bridge.service import Bridge

    data = tmp_path / "data"
    bridge = Bridge(BridgeSettings(node="memory://secrets-files", data_dir=data))
    await bridge.start()
    await bridge.stop()
    for name in ("admin.token", "bridge.sqlite3"):
        (data / name).chmod(0o640)
        with pytest.raises(StateError, match="chmod 600"):
            await Bridge(BridgeSettings(node="memory://secrets-files", data_dir=data)).start()
        (data / name).chmod(0o600)
    data.chmod(0o755)  # a shared data directory is tightened, with a warning
    bridge = Bridge(BridgeSettings(node="memory://secrets-files", data_dir=data))
    await bridge.start()
    await bridge.stop()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


# ---------------------------------------------------------------------------------------------
# Logs

#: Runs the bridge CLI with every logger of the process at DEBUG (root, asyncio, aiohttp.*).
VERBOSE_BRIDGE = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.DEBUG,"
    " format='%(asctime)s %(levelname)s %(name)s: %(message)s')\n"
    "for name in ('aiohttp', 'aiohttp.access', 'aiohttp.server', 'aiohttp.web',"
    " 'aiohttp.client', 'aiohttp.websocket', 'asyncio'):\n"
    "    logging.getLogger(name).setLevel(logging.DEBUG)\n"
    "from umbra_waku.cli import main\n"
    "sys.exit(main(['bridge', *sys.argv[1:]]))\n"
)


class VerboseBridge(BridgeProcess):
    entry = ("-c", VERBOSE_BRIDGE)
    stdout_to_log = True


def encodings(secret: bytes) -> set[str]:
    """Every way a logger could have written these bytes."""
    b64 = base64.b64encode(secret).decode()
    b64url = base64.urlsafe_b64encode(secret).decode()
    forms = {
        secret.hex(),
        secret.hex().upper(),
        b64,
        b64.rstrip("="),
        b64url,
        b64url.rstrip("="),
        repr(secret)[2:-1],
    }
    if len(secret) >= 16:  # a logged prefix of a key is a leak too
        forms.add(secret[:12].hex())
        forms.add(base64.b64encode(secret[:12]).decode())
    return {form for form in forms if len(form) >= 12}


def state_keys(state: bytes) -> list[bytes]:
    """Every secret of a saved PrivateV1 conversation (docs/protocol.md section 4.5)."""
    parsed = umbra_frames_pb2.PrivateV1State.FromString(state)
    keys = [
        parsed.root_key,
        parsed.send_ratchet_private,
        parsed.send_chain_key,
        parsed.recv_chain_key,
        parsed.send_hint_key,
        parsed.recv_hint_key,
        parsed.send_header_key,
        parsed.recv_header_key,
    ]
    keys += [item.message_key for item in parsed.skipped_keys]
    return [key for key in keys if key]


def secrets_of(data_dir: Path) -> dict[str, set[str]]:
    db = sqlite3.connect(data_dir / "bridge.sqlite3")
    try:
        found: dict[str, set[str]] = {
            "admin token": {(data_dir / "admin.token").read_text().strip()}
        }
        for bot_id, private_key in db.execute("SELECT bot_id, private_key FROM bots"):
            found[f"private key of bot {bot_id}"] = encodings(bytes(private_key))
        for index, (state,) in enumerate(db.execute("SELECT state FROM conversations")):
            for number, key in enumerate(state_keys(bytes(state))):
                found[f"conversation {index} state key {number}"] = encodings(key)
    finally:
        db.close()
    return found


@pytest.mark.gowaku
async def test_no_key_token_or_plaintext_in_any_log(
    gowaku_pair_factory: PairFactory, tmp_path: Path
) -> None:
    pair = await gowaku_pair_factory(log_level="DEBUG")
    bridges: list[VerboseBridge] = []
    plaintexts: list[str] = []
    binaries: list[bytes] = []
    tokens: list[str] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:

            async def start(node: GoWakuNode, name: str) -> BotApi:
                process = VerboseBridge(
                    node.rest_url,
                    tmp_path / name,
                    args=("--shard", str(SHARD), "--cluster-id", str(CLUSTER_ID)),
                )
                bridges.append(await process.start())
                await process.wait_ready(http, within=60)
                bot = await BotApi.create(http, process, name)
                tokens.append(bot.token)
                return bot

            alice = await start(pair.a, "alice")
            bob = await start(pair.b, "bob")
            opening = "plaintext-opening-7f3c1e alice greets bob"
            plaintexts.append(opening)
            status, started = await request(
                http,
                "POST",
                alice.url + "/v1/conversations",
                json={"peer": bob.address, "text": opening},
                headers=alice.auth,
            )
            assert status in (201, 202), started
            conversation = started["conversation"]["id"]
            ws = await http.ws_connect(bob.url + "/v1/events", headers=bob.auth)
            first = json.loads((await ws.receive(timeout=30)).data)
            assert first["type"] == "conversation_started"
            for i in range(5):
                for sender in (alice, bob):
                    text = f"plaintext-{sender.bot_id[:4]}-{i}-a94d0b secret words {i}"
                    plaintexts.append(text)
                    assert await sender.send(conversation, text) in (201, 202)
            blob = os.urandom(48)
            binaries.append(blob)
            status, _ = await request(
                http,
                "POST",
                f"{alice.url}/v1/conversations/{conversation}/messages",
                json={
                    "domain": "test.binary",
                    "tag": 7,
                    "data_b64": base64.b64encode(blob).decode(),
                },
                headers=alice.auth,
            )
            assert status in (201, 202)
            # a wrong token, a malformed body: the error paths log too
            await request(http, "GET", bob.url + "/v1/me", headers={"Authorization": "Bearer x"})
            await request(
                http,
                "POST",
                f"{bob.url}/v1/conversations/{conversation}/messages",
                data=b"{not json",
                headers=bob.auth,
            )
            received: list[dict[str, Any]] = [first]
            while len(received) < 8:  # the opening, 5 from alice, the binary one
                received.append(json.loads((await ws.receive(timeout=30)).data))
            await ws.close()
            await settle(lambda: True, 0)
            back = await alice.all_events(
                lambda e: sum(1 for x in e if x["type"] == "message") >= 5, within=30
            )
            assert sum(1 for x in back if x["type"] == "message") == 5
    finally:
        for process in bridges:
            if process.process is not None and process.process.returncode is None:
                process.process.terminate()
                await process.wait(15)
    for bot_secret in list(tokens):
        tokens.append(bot_secret.split(".", 1)[1])
    secrets: dict[str, set[str]] = {}
    for process in bridges:
        secrets.update(secrets_of(process.data_dir))
    for i, token in enumerate(tokens):
        secrets[f"bot token {i}"] = {token}
    for i, text in enumerate(plaintexts):
        secrets[f"plaintext {i}"] = {text, *encodings(text.encode())}
    for i, blob in enumerate(binaries):
        secrets[f"binary plaintext {i}"] = encodings(blob)
    logs = {str(p.log): p.output() for p in bridges}
    logs.update(
        {str(node.log_path): node.log_path.read_text(errors="replace") for node in pair.nodes}
    )
    lines = sum(text.count("\n") for text in logs.values())
    leaks = [
        f"{what} in {path}"
        for what, forms in secrets.items()
        for path, text in logs.items()
        if any(form in text for form in forms)
    ]
    report(
        "secrets_in_logs",
        len(plaintexts) + len(binaries),
        len(plaintexts) + len(binaries),
        log_lines=lines,
        secrets_searched=len(secrets),
        forms_searched=sum(len(forms) for forms in secrets.values()),
        leaks=len(leaks),
    )
    access = sum(text.count("umbra_waku.bridge.access") for text in logs.values())
    debug = sum(text.count(" DEBUG ") for text in logs.values())
    assert access > 10, "no access log lines"
    assert debug > 10, "the logs are not at DEBUG"
    assert leaks == []
