"""Ping-pong: one bot pings, the other pongs; prints the round-trip times, then exits.

Both bots in one process, on the in-process network (one command)::

    python examples/ping_pong.py --node memory://demo --rounds 20

The two sides apart, e.g. through a bridge (two tokens) or on a Waku node's REST API::

    python examples/ping_pong.py --role pong --bridge http://127.0.0.1:8080 --token "$PONG_TOKEN"
    python examples/ping_pong.py --role ping --bridge http://127.0.0.1:8080 --token "$PING_TOKEN" \\
        --to PONG_CLIENT_ADDRESS --rounds 20

The pong side prints its client_address first and serves until Ctrl+C or SIGTERM. The ping side
invites it (the first ping rides in the invitation), sends the next ping when a pong comes back,
and prints ``rounds=N p50=...ms max=...ms`` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from umbra_waku import Identity
from umbra_waku.bot import Bot, Message, run_program


def make_ponger(bot: Bot) -> Bot:
    """Answer ``ping N`` with ``pong N``."""

    async def pong(conversation_id: str, text: str | None) -> None:
        if text is not None and text.startswith("ping "):
            await bot.send(conversation_id, "pong " + text.removeprefix("ping "))

    @bot.on_message
    async def on_ping(message: Message) -> None:
        await pong(message.conversation_id, message.text)

    return bot


class Pinger:
    """Sends ``ping 1`` .. ``ping N``, one at a time, and times each answer."""

    def __init__(self, bot: Bot, rounds: int) -> None:
        self.bot = bot
        self.rounds = rounds
        self.times_ms: list[float] = []
        self.finished = asyncio.Event()
        self._sent_at = 0.0
        bot.on_message(self._on_pong)

    async def start(self, pong_address: str) -> None:
        self._sent_at = time.perf_counter()
        await self.bot.invite(pong_address, "ping 1")

    async def _on_pong(self, message: Message) -> None:
        expected = f"pong {len(self.times_ms) + 1}"
        if message.text != expected:
            print(f"ping: ignoring unexpected {message.text!r}", flush=True)
            return
        rtt = (time.perf_counter() - self._sent_at) * 1000
        self.times_ms.append(rtt)
        print(f"{expected}: {rtt:.1f} ms", flush=True)
        if len(self.times_ms) >= self.rounds:
            self.finished.set()
            return
        self._sent_at = time.perf_counter()
        await message.reply(f"ping {len(self.times_ms) + 1}")

    def summary(self) -> str:
        times = self.times_ms
        return f"rounds={len(times)} p50={statistics.median(times):.1f}ms max={max(times):.1f}ms"


async def ping(bot: Bot, pong_address: str, rounds: int, wait: float) -> int:
    pinger = Pinger(bot, rounds)
    async with bot:
        await pinger.start(pong_address)
        try:
            await asyncio.wait_for(pinger.finished.wait(), wait)
        except TimeoutError:
            print(f"ping: timed out after {len(pinger.times_ms)} of {rounds} rounds", flush=True)
            return 1
    print(pinger.summary(), flush=True)
    return 0


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    Bot.add_arguments(parser)
    parser.add_argument(
        "--role",
        choices=("both", "ping", "pong"),
        default="both",
        help="both (default): the two bots in this process; ping or pong: one side",
    )
    parser.add_argument("--rounds", type=int, default=10, metavar="N", help="pings to send")
    parser.add_argument("--to", metavar="CLIENT_ADDRESS", help="--role ping: the pong bot")
    parser.add_argument(
        "--pong-token", metavar="TOKEN", help="--role both with --bridge: the pong bot's token"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for all the pongs"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    if args.role == "pong":
        ponger = make_ponger(Bot.from_arguments(args, name="pong"))

        @ponger.on_startup
        async def ready() -> None:
            print(f"pong ready: {ponger.client_address}", flush=True)

        await ponger.serve()  # until Ctrl+C or SIGTERM
        return 0

    pinger_bot = Bot.from_arguments(args, name="ping")
    if args.role == "ping":
        if not args.to:
            parser.error("--role ping needs --to CLIENT_ADDRESS")
        return await ping(pinger_bot, args.to, args.rounds, args.timeout)

    if args.bridge and not args.pong_token:
        parser.error("--role both with --bridge needs --pong-token")
    ponger = make_ponger(
        Bot.from_arguments(args, name="pong", identity=Identity.generate(), token=args.pong_token)
    )
    async with ponger:
        print(f"pong ready: {ponger.client_address}", flush=True)
        return await ping(pinger_bot, ponger.client_address, args.rounds, args.timeout)


if __name__ == "__main__":
    sys.exit(run_program(main()))
