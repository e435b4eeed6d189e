"""Greeter bot: accepts every invitation and answers it with a greeting.

Try it alone, on the in-process network, with N visitors that each invite it once::

    python examples/greeter.py --node memory://demo --visitors 2

Run it for real, against an ``umbra-waku bridge`` or embedded on a Waku node, until Ctrl+C or
SIGTERM::

    python examples/greeter.py --bridge http://127.0.0.1:8080 --token "$TOKEN"
    python examples/greeter.py --node http://127.0.0.1:8645 --identity greeter.key

It prints its client_address on the first line of output: invite it from any client.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from umbra_waku import Identity
from umbra_waku.bot import Bot, Conversation, Message, run_program

DEFAULT_GREETING = "Hello {peer}, welcome! This conversation is end-to-end encrypted."


def short(address: str | None) -> str:
    return "stranger" if not address else f"{address[:8]}..."


def make_greeter(bot: Bot, greeting: str = DEFAULT_GREETING) -> Bot:
    """Give ``bot`` the greeter behaviour (tests reuse this)."""

    @bot.on_conversation
    async def greet(conversation: Conversation) -> None:
        if conversation.initiated_by_me:
            return
        await conversation.reply(greeting.format(peer=short(conversation.peer)))

    return bot


async def visit(greeter_address: str, args: argparse.Namespace, number: int) -> None:
    """Visitor ``number`` invites the greeter and waits for the greeting."""
    visitor = Bot.from_arguments(args, name=f"visitor-{number}", identity=Identity.generate())
    greeted: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @visitor.on_message
    async def heard(message: Message) -> None:
        if not greeted.done():
            greeted.set_result(message.text or "")

    async with visitor:
        await visitor.invite(greeter_address)
        print(
            f"visitor {number} ({short(visitor.client_address)}): invites the greeter", flush=True
        )
        text = await asyncio.wait_for(greeted, timeout=30)
        print(f"greeter -> visitor {number}: {text}", flush=True)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    Bot.add_arguments(parser)
    parser.add_argument(
        "--greeting",
        default=DEFAULT_GREETING,
        help="the greeting; {peer} becomes the start of the visitor's client_address",
    )
    parser.add_argument(
        "--visitors",
        type=int,
        metavar="N",
        default=0,
        help="embedded only: start N in-process visitors, then stop (0: serve forever)",
    )
    args = parser.parse_args(argv)
    if args.visitors > 0 and args.bridge:
        parser.error("--visitors needs an embedded network (visitors have no bridge token)")
    bot = make_greeter(Bot.from_arguments(args, name="greeter"), args.greeting)

    @bot.on_startup
    async def ready() -> None:
        print(f"greeter ready: {bot.client_address}", flush=True)

    if args.visitors <= 0:
        await bot.serve()  # until Ctrl+C or SIGTERM
        return 0
    async with bot:
        for number in range(1, args.visitors + 1):
            await visit(bot.client_address, args, number)
    return 0


if __name__ == "__main__":
    sys.exit(run_program(main()))
