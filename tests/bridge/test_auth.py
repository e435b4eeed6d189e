"""Tokens: who may call what, bot isolation, and the files that hold secrets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from umbra_waku.bridge.api import ROUTES

from .conftest import StartBridge

PUBLIC = {"/v1/openapi.json", "/v1/health", "/metrics"}
SAMPLE_ID = "0" * 64


def _concrete(path: str) -> str:
    return path.replace("{bot_id}", "nobot").replace("{conversation_id}", SAMPLE_ID)


@pytest.mark.parametrize(
    ("method", "path"), [(m, p) for m, p, _ in ROUTES if p not in PUBLIC], ids=str
)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Bearer wrong", "Basic abc", "Bearer nobot.secret"]
)
async def test_every_private_route_needs_a_token(
    start_bridge: StartBridge, method: str, path: str, authorization: str | None
) -> None:
    h = await start_bridge()
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await h.http.request(method, _concrete(path), headers=headers, json={})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    error = (await response.json())["error"]
    assert error["code"] == "unauthorized"


@pytest.mark.parametrize("path", sorted(PUBLIC))
async def test_public_routes_need_no_token(start_bridge: StartBridge, path: str) -> None:
    h = await start_bridge()
    assert (await h.http.get(path)).status == 200


async def test_tokens_of_the_wrong_kind_are_forbidden(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    bot = await h.create_bot()
    for method, path, _ in ROUTES:
        if path in PUBLIC:
            continue
        admin_route = path.startswith("/v1/bots")
        headers = bot.auth if admin_route else h.admin
        response = await h.http.request(method, _concrete(path), headers=headers, json={})
        assert response.status == 403, (method, path)
        assert (await response.json())["error"]["code"] == "forbidden"


async def test_bots_see_only_their_own_conversations(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    alice, bob, mallory = await h.create_bot(), await h.create_bot(), await h.create_bot()
    conversation = await h.start_conversation(alice, bob, "private")
    await h.wait_events(bob, 2)

    listed = await (await h.http.get("/v1/conversations", headers=mallory.auth)).json()
    assert listed == {"conversations": [], "next": None}
    for method, path, body in [
        ("GET", f"/v1/conversations/{conversation}", None),
        ("POST", f"/v1/conversations/{conversation}/messages", {"text": "let me in"}),
    ]:
        response = await h.http.request(method, path, json=body, headers=mallory.auth)
        assert response.status == 404, (method, path)
        error = (await response.json())["error"]
        assert (error["code"], error["field"]) == ("not_found", "conversation_id")
    assert await h.poll(mallory) == []
    async with h.http.ws_connect("/v1/events", headers=mallory.auth) as ws:
        with pytest.raises(TimeoutError):
            await ws.receive_json(timeout=0.3)

    # the owners still can
    for bot in (alice, bob):
        response = await h.http.get(f"/v1/conversations/{conversation}", headers=bot.auth)
        assert response.status == 200


async def test_a_token_is_shown_once_and_stored_hashed(start_bridge: StartBridge) -> None:
    h = await start_bridge()
    bot = await h.create_bot()
    database = (h.bridge.data_dir / "bridge.sqlite3").read_bytes()
    database += (h.bridge.data_dir / "bridge.sqlite3-wal").read_bytes()
    secret = bot.token.split(".", 1)[1]
    assert secret.encode() not in database
    assert bot.token.encode() not in database
    listed = await (await h.http.get("/v1/bots", headers=h.admin)).text()
    assert secret not in listed


async def test_generated_admin_token_and_data_files_are_private(
    start_bridge: StartBridge, tmp_path: Path
) -> None:
    data = tmp_path / "private"
    h = await start_bridge(data_dir=data)
    await h.create_bot()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    token_file = data / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(token_file.read_text().strip()) >= 32
    for name in ("bridge.sqlite3", "bridge.sqlite3-wal", "bridge.sqlite3-shm"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name


async def test_the_admin_token_file_is_reused_and_must_stay_private(
    start_bridge: StartBridge, tmp_path: Path
) -> None:
    data = tmp_path / "again"
    first = await start_bridge(data_dir=data)
    token = first.admin_token
    await first.close()
    second = await start_bridge(data_dir=data)
    assert second.admin_token == token
    assert (await second.http.get("/v1/bots", headers=second.admin)).status == 200
    await second.close()

    os.chmod(data / "admin.token", 0o644)
    with pytest.raises(Exception, match="accessible by others"):
        await start_bridge(data_dir=data)


async def test_a_configured_admin_token_replaces_the_file(
    start_bridge: StartBridge, tmp_path: Path
) -> None:
    data = tmp_path / "configured"
    h = await start_bridge(data_dir=data, admin_token="a-configured-admin-token")
    assert not (data / "admin.token").exists()
    assert (await h.http.get("/v1/bots", headers=h.admin)).status == 200
    wrong = {"Authorization": "Bearer a-configured-admin-tokeN"}
    assert (await h.http.get("/v1/bots", headers=wrong)).status == 401
