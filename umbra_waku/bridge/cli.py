"""Run the bridge: a local HTTP API through which bots hold end-to-end encrypted conversations
over a Waku network.

Each bot has its own identity and API token and sees only its own conversations; the admin token
creates and removes bots. State (identities, conversations, ratchets, received messages, the
outbox) lives in SQLite under --data-dir, and nothing acknowledged is lost to a crash.

Settings come from (strongest first) these flags, environment variables UMBRA_WAKU_<NAME>, a
configuration file (--config FILE or UMBRA_WAKU_CONFIG; TOML or JSON, keys are the setting names
with underscores, e.g. data_dir = "/var/lib/umbra") and the defaults. An invalid setting stops the
bridge with one line naming it. SIGTERM or SIGINT drain the bridge and exit 0.

The API is described at /v1/openapi.json and in docs/api.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from umbra_waku.bridge.api import make_app
from umbra_waku.bridge.service import Bridge
from umbra_waku.bridge.settings import (
    CONFIG_ENV,
    BridgeSettings,
    describe_setting,
    env_name,
    flag_name,
    load_settings,
)
from umbra_waku.errors import ConfigError

log = logging.getLogger("umbra_waku.bridge")

EXIT_OK = 0
EXIT_FAILURE = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; flags left out keep the environment's or the file's value."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"configuration file, TOML or JSON (env {CONFIG_ENV})",
    )
    for name, info in BridgeSettings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        metavar = extra.get("metavar")
        default = "none" if info.default is None else str(info.default)
        parser.add_argument(
            flag_name(name),
            dest=name,
            metavar=str(metavar) if metavar else None,
            default=argparse.SUPPRESS,
            help=f"{info.description} [env {env_name(name)}; default: {default}]",
        )


def run(args: argparse.Namespace) -> int:
    """Validate the settings (ConfigError naming the setting), then serve until a signal."""
    values = {
        name: getattr(args, name) for name in BridgeSettings.model_fields if hasattr(args, name)
    }
    settings = load_settings(values, getattr(args, "config", None))
    configure_logging(settings.log_level)
    return asyncio.run(serve(settings))


def configure_logging(level: str) -> None:
    """A service's logs: timestamped, with tracebacks of unexpected errors, on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("umbra_waku", "aiohttp"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
    logging.getLogger("umbra_waku").setLevel(level)


async def serve(settings: BridgeSettings) -> int:
    """Run one bridge until SIGTERM/SIGINT (exit 0) or until its store fails (exit 1)."""
    bridge = Bridge(settings)
    await bridge.start()
    host, port = settings.listen_address
    runner = web.AppRunner(
        make_app(bridge),
        handle_signals=False,
        access_log=logging.getLogger("umbra_waku.bridge.access"),
        shutdown_timeout=min(3.0, settings.shutdown_timeout / 3),
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        await bridge.stop()
        reason = f"cannot listen on {settings.listen}: {exc.strerror or exc}"
        raise ConfigError(describe_setting("listen"), reason) from None
    log.info("bridge for %s listening on http://%s:%d", bridge.node_label, host, port)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    failure: BaseException | None = None
    try:
        stopped = asyncio.create_task(bridge.wait_stopped())
        signalled = asyncio.create_task(stop.wait())
        await asyncio.wait({stopped, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if stopped.done():
            failure = stopped.result()
        stopped.cancel()
        signalled.cancel()
        log.info("shutting down")
        try:
            async with asyncio.timeout(settings.shutdown_timeout):
                bridge.begin_drain()
                await runner.cleanup()  # stop listening, close websockets (1001), finish requests
                await bridge.stop()  # finish publishes, stop the client, close the store
        except TimeoutError:
            log.error("shutdown took longer than %.1f s; exiting anyway", settings.shutdown_timeout)
            return EXIT_FAILURE
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)
    if failure is not None:
        log.error("the bridge stopped: %s", failure)
        return EXIT_FAILURE
    return EXIT_OK
