"""Echo bot: answers every message with the same text.

Try it alone, on the in-process network, with a visitor that says three things and leaves::

    python examples/echo_bot.py --node memory://demo --talk 3

Run it for real, against an ``umbra-waku bridge`` (the bot's token comes from the bridge; see
docs/api.md), or embedded on a Waku node's REST API, until Ctrl+C or SIGTERM::

    python examples/echo_bot.py --bridge http://127.0.0.1:8080 --token "$TOKEN"
    python examples/echo_bot.py --node http://127.0.0.1:8645 --identity echo.key

It prints its client_address on the first line of output: invite it from any client.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from umbra_waku import Identity
from umbra_waku.bot import Bot, Message, run_program


def make_echo_bot(bot: Bot) -> Bot:
    """Give ``bot`` the echo behaviour (tests reuse this)."""

    @bot.on_message
    async def echo(message: Message) -> None:
        text = message.text
        await message.reply(text if text is not None else message.content)

    return bot


async def visit(echo_address: str, args: argparse.Namespace, rounds: int) -> None:
    """A second bot on the same network invites the echo bot and talks to it."""
    visitor = Bot.from_arguments(
        args, name="visitor", identity=Identity.generate(), token=args.visitor_token
    )
    answers: asyncio.Queue[str] = asyncio.Queue()

    @visitor.on_message
    async def heard(message: Message) -> None:
        await answers.put(message.text or "")

    async with visitor:
        conversation_id = await visitor.invite(echo_address, "hello 1")
        print("visitor: hello 1", flush=True)
        for n in range(1, rounds + 1):
            if n > 1:
                await visitor.send(conversation_id, f"hello {n}")
                print(f"visitor: hello {n}", flush=True)
            answer = await asyncio.wait_for(answers.get(), timeout=30)
            print(f"echo: {answer}", flush=True)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    Bot.add_arguments(parser)
    parser.add_argument(
        "--talk",
        type=int,
        metavar="N",
        default=0,
        help="start an in-process visitor that sends N messages, then stop (0: serve forever)",
    )
    parser.add_argument(
        "--visitor-token",
        metavar="TOKEN",
        help="with --bridge and --talk: the visitor bot's token",
    )
    args = parser.parse_args(argv)
    bot = make_echo_bot(Bot.from_arguments(args, name="echo"))

    @bot.on_startup
    async def ready() -> None:
        print(f"echo bot ready: {bot.client_address}", flush=True)

    if args.talk <= 0:
        await bot.serve()  # until Ctrl+C or SIGTERM
        return 0
    async with bot:
        await visit(bot.client_address, args, args.talk)
    return 0


if __name__ == "__main__":
    sys.exit(run_program(main()))
