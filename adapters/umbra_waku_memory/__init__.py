"""The embedded Waku network: an in-process network that transports in one process share.

``memory://<name>`` selects the network called ``<name>`` (created on first use); every transport
connected to the same name sees the same relay traffic and the same store. It keeps Waku's rules:

- relay: each subscriber gets each message once, whoever published it (the publisher too,
  as a node with ``triggerSelf`` does), duplicates by message hash are dropped;
- store: non-ephemeral messages are kept in arrival order, queried by topic and time range with
  cursor paging (the cursor is the last message's hash, as in store v3);
- hashes: the 14/WAKU2-MESSAGE hash over the pubsub topic that autosharding gives.

It does no I/O; it exists for the demo, tests and single-process deployments.
"""

from umbra_waku_memory.network import (
    MemoryNetwork,
    MemorySubscription,
    MemoryTransport,
    connect,
    network,
)

__all__ = ["MemoryNetwork", "MemorySubscription", "MemoryTransport", "connect", "network"]
