"""``umbra-waku bridge``: a local HTTP API for many bots over one Waku node.

- :mod:`~umbra_waku.bridge.settings`: settings (flags, environment, config file);
- :mod:`~umbra_waku.bridge.service`: :class:`Bridge`, bots, tokens, the client's ledger;
- :mod:`~umbra_waku.bridge.store` / :mod:`~umbra_waku.bridge.sqlite`: durable state;
- :mod:`~umbra_waku.bridge.api` / :mod:`~umbra_waku.bridge.openapi`: the HTTP API;
- :mod:`~umbra_waku.bridge.cli`: ``umbra-waku bridge``.
"""
