"""Waku REST transport adapter: umbra_waku over an nwaku or go-waku node's REST API.

Registered for the ``http`` and ``https`` schemes in the ``umbra_waku.transports`` entry-point
group, so ``umbra_waku.transport.connect("http://127.0.0.1:8645", mode="light")`` lands here.
"""

from __future__ import annotations

import dataclasses

from umbra_waku.errors import ConfigError
from umbra_waku_rest.options import Implementation, Mode, RestOptions, StoreApi
from umbra_waku_rest.subscription import RestSubscription
from umbra_waku_rest.transport import RestTransport

__all__ = [
    "Implementation",
    "Mode",
    "RestOptions",
    "RestSubscription",
    "RestTransport",
    "StoreApi",
    "connect",
]


def connect(url: str, **options: object) -> RestTransport:
    """Create (not start) a transport for the node at ``url`` (``http://host:8645``).

    ``options`` are :class:`RestOptions` fields (``mode="light"``, ``shard=0``, ...), or
    ``options=RestOptions(...)`` with optional field overrides next to it. Invalid settings raise
    ConfigError naming the setting.
    """
    base = options.pop("options", None)
    if base is not None:
        if not isinstance(base, RestOptions):
            raise ConfigError("options", f"expected RestOptions, got {type(base).__name__}")
        options = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)} | options
    return RestTransport(url, RestOptions.from_mapping(options))
