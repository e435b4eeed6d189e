"""The HTTP floor: a bare aiohttp server with the bridge's message routes and nothing behind them.

``python -m benchmarks.floor_server PORT`` serves, on 127.0.0.1, the few routes the end-to-end
benchmark's bots (the bot SDK, ``Bot.via_bridge``) use: ``POST /v1/bots``, ``GET /v1/me``, ``POST
/v1/conversations``, ``POST /v1/conversations/{id}/messages`` and the batch route ``POST
/v1/messages`` (the texts go straight to the peer's WebSocket, one frame per request), and ``GET
/v1/events`` (WebSocket; ``batch=true`` frames are JSON arrays, as the bridge's). No
authentication, no crypto, no storage, no Waku: what is left is the cost of the HTTP requests in
and the WebSocket frames out, in Python, on this machine. The bridge's throughput divided by this
one's is the share of the plumbing in the bridge's cost.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
from typing import Any

from aiohttp import web

_dumps = json.dumps


class Floor:
    def __init__(self) -> None:
        self.bots: dict[str, dict[web.WebSocketResponse, bool]] = {}  # socket -> batch frames
        self.peers: dict[str, str] = {}  # conversation id -> the bot that receives there
        self.by_address: dict[str, str] = {}
        self.address_of: dict[str, str] = {}
        self.seq: dict[str, int] = {}
        self.backlog: dict[str, list[dict[str, Any]]] = {}
        self.sending: set[asyncio.Future[None]] = set()

    def push(self, bot: str, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.seq[bot] = event["seq"] = self.seq.get(bot, 0) + 1
        sockets = self.bots.get(bot)
        if not sockets:
            self.backlog.setdefault(bot, []).extend(events)
            return
        for ws, batch in sockets.items():
            frames = [_dumps(events)] if batch else [_dumps(event) for event in events]
            for text in frames:
                future = asyncio.ensure_future(ws.send_str(text))
                self.sending.add(future)
                future.add_done_callback(self.sending.discard)


FLOOR = web.AppKey("floor", Floor)


def _bot(request: web.Request) -> str:
    return request.headers.get("Authorization", "").rpartition(" ")[2]


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


async def create_bot(request: web.Request) -> web.Response:
    floor = request.app[FLOOR]
    bot = f"bot{len(floor.bots)}"
    floor.bots[bot] = {}
    address = f"{len(floor.bots):064x}"
    floor.by_address[address] = bot
    floor.address_of[bot] = address
    return web.json_response({"bot_id": bot, "token": bot, "client_address": address}, status=201)


async def me(request: web.Request) -> web.Response:
    floor = request.app[FLOOR]
    bot = _bot(request)
    body = {"client_address": floor.address_of[bot], "last_seq": floor.seq.get(bot, 0)}
    return web.json_response(body)


async def start_conversation(request: web.Request) -> web.Response:
    floor = request.app[FLOOR]
    body = await request.json()
    peer = floor.by_address[body["peer"]]
    cid = f"{len(floor.peers):064x}"
    floor.peers[cid] = peer
    sender = floor.address_of[_bot(request)]
    floor.push(peer, [{"type": "conversation_started", "conversation_id": cid, "peer": sender}])
    answer = {"conversation": {"id": cid, "peer": body["peer"]}}
    return web.json_response(answer, status=201)


def _message(cid: str, text: str) -> dict[str, Any]:
    data = base64.b64encode(text.encode()).decode("ascii")  # as the bridge's events carry
    return {
        "type": "message",
        "conversation_id": cid,
        "domain": "umbra.text",
        "tag": 0,
        "text": text,
        "data_b64": data,
    }


async def send_message(request: web.Request) -> web.Response:
    floor = request.app[FLOOR]
    body = await request.json()
    cid = request.match_info["conversation_id"]
    floor.push(floor.peers[cid], [_message(cid, body["text"])])
    return web.json_response({"conversation_id": cid, "delivery": "published"}, status=201)


async def send_messages(request: web.Request) -> web.Response:
    floor = request.app[FLOOR]
    body = await request.json()
    by_peer: dict[str, list[dict[str, Any]]] = {}
    results = []
    for item in body["messages"]:
        cid = item["conversation_id"]
        by_peer.setdefault(floor.peers[cid], []).append(_message(cid, item["text"]))
        results.append({"status": 201, "conversation_id": cid, "delivery": "published"})
    for peer, events in by_peer.items():
        floor.push(peer, events)
    return web.json_response({"results": results})


async def events(request: web.Request) -> web.WebSocketResponse:
    floor = request.app[FLOOR]
    bot = _bot(request)
    batch = request.query.get("batch") in ("1", "true")
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    backlog = floor.backlog.pop(bot, [])
    if backlog:
        for text in [_dumps(backlog)] if batch else [_dumps(e) for e in backlog]:
            await ws.send_str(text)
    floor.bots.setdefault(bot, {})[ws] = batch
    try:
        async for _ in ws:
            pass
    finally:
        floor.bots[bot].pop(ws, None)
    return ws


def make_app() -> web.Application:
    app = web.Application()
    app[FLOOR] = Floor()
    app.router.add_get("/v1/health", health)
    app.router.add_post("/v1/bots", create_bot)
    app.router.add_get("/v1/me", me)
    app.router.add_post("/v1/conversations", start_conversation)
    app.router.add_post("/v1/conversations/{conversation_id}/messages", send_message)
    app.router.add_post("/v1/messages", send_messages)
    app.router.add_get("/v1/events", events)
    return app


async def serve(port: int) -> None:
    runner = web.AppRunner(make_app(), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
