"""The HTTP floor: a bare aiohttp server with the bridge's message routes and nothing behind them.

``python -m benchmarks.floor_server PORT`` serves, on 127.0.0.1, the few routes the end-to-end
benchmark drives: ``POST /v1/bots``, ``POST /v1/conversations``, ``POST
/v1/conversations/{id}/messages`` (the text goes straight to the peer's WebSocket) and ``GET
/v1/events`` (WebSocket). No authentication, no crypto, no storage, no Waku: what is left is the
cost of one HTTP request in and one WebSocket frame out, in Python, on this machine. The bridge's
throughput divided by this one's is the share of the plumbing in the bridge's cost.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

from aiohttp import web

_dumps = json.dumps


class Floor:
    def __init__(self) -> None:
        self.bots: dict[str, set[web.WebSocketResponse]] = {}
        self.peers: dict[str, str] = {}  # conversation id -> the bot that receives there
        self.by_address: dict[str, str] = {}
        self.backlog: dict[str, list[str]] = {}
        self.sending: set[asyncio.Future[None]] = set()

    def push(self, bot: str, event: dict[str, Any]) -> None:
        text = _dumps(event)
        sockets = self.bots.get(bot)
        if sockets:
            for ws in sockets:
                future = asyncio.ensure_future(ws.send_str(text))
                self.sending.add(future)
                future.add_done_callback(self.sending.discard)
        else:
            self.backlog.setdefault(bot, []).append(text)


FLOOR = web.AppKey("floor", Floor)


def _bot(request: web.Request) -> str:
    return request.headers.get("Authorization", "").rpartition(" ")[2]


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


async def create_bot(request: web.Request) -> web.Response:
    floor = request.app[FLOOR]
    bot = f"bot{len(floor.bots)}"
    floor.bots[bot] = set()
    address = f"{len(floor.bots):064x}"
    floor.by_address[address] = bot
    return web.json_response({"bot_id": bot, "token": bot, "client_address": address}, status=201)


async def start_conversation(request: web.Request) -> web.Response:
    floor = request.app[FLOOR]
    body = await request.json()
    peer = floor.by_address[body["peer"]]
    cid = f"{len(floor.peers):064x}"
    floor.peers[cid] = peer
    floor.push(peer, {"type": "conversation_started", "conversation_id": cid})
    return web.json_response({"conversation": {"id": cid}}, status=201)


async def send_message(request: web.Request) -> web.Response:
    floor = request.app[FLOOR]
    body = await request.json()
    cid = request.match_info["conversation_id"]
    floor.push(floor.peers[cid], {"type": "message", "conversation_id": cid, "text": body["text"]})
    return web.json_response({"conversation_id": cid, "delivery": "published"}, status=201)


async def events(request: web.Request) -> web.WebSocketResponse:
    floor = request.app[FLOOR]
    bot = _bot(request)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    for text in floor.backlog.pop(bot, []):
        await ws.send_str(text)
    floor.bots.setdefault(bot, set()).add(ws)
    try:
        async for _ in ws:
            pass
    finally:
        floor.bots[bot].discard(ws)
    return ws


def make_app() -> web.Application:
    app = web.Application()
    app[FLOOR] = Floor()
    app.router.add_get("/v1/health", health)
    app.router.add_post("/v1/bots", create_bot)
    app.router.add_post("/v1/conversations", start_conversation)
    app.router.add_post("/v1/conversations/{conversation_id}/messages", send_message)
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
