// A js-waku relay peer for umbra-waku's real-node tests, driven by a JSON-lines protocol.
//
//   node --import ./polyfill.mjs peer.mjs [--port 0] [--cluster 42] [--shard 0]... [--dial <multiaddr>]...
//
// Only loopback: it listens on /ip4/127.0.0.1/tcp/<port> (TCP + noise + yamux, the stack go-waku
// offers), with no bootstrap, no discovery and no relay keep-alive pings.
//
// stdout carries only JSON lines (events); everything else (logs, console output) goes to stderr.
//   {"event":"ready","peerId":...,"multiaddrs":[...],"pubsubTopics":[...],"versions":{...}}
//   {"event":"message","pubsubTopic":...,"message":"<base64 WakuMessage protobuf>","from":...,"msgId":...}
//   {"event":"connect"|"disconnect","peerId":...}
// stdin takes JSON lines (commands); "id" is echoed back in the reply when given:
//   {"cmd":"dial","multiaddr":...,"timeoutMs":20000}      -> {"event":"dialed","ok":true,"peerId":...,"mesh":{...}}
//       (the reply comes once the dialled peer is in the gossipsub mesh of every pubsub topic)
//   {"cmd":"waitMesh","peerId"?:...,"timeoutMs":20000}    -> {"event":"mesh","ok":true,"mesh":{...}}
//   {"cmd":"publish","pubsubTopic":...,"message":"<base64 WakuMessage protobuf>"}
//       -> {"event":"published","ok":true,"recipients":[...],"msgId":"<hex sha256 of the bytes>"}
//       The bytes go to libp2p.services.pubsub.publish unchanged, so the exact ns timestamp is kept.
//   {"cmd":"peers"}                                       -> {"event":"peers","connections":[...],"mesh":{...},"subscribers":{...}}
//   {"cmd":"stop"}                                        -> {"event":"stopped"} and exit 0
// A failed command answers {"event":"error","cmd":...,"id":...,"error":"..."}.
// EOF on stdin, SIGTERM or SIGINT stop the node and exit.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";

import { yamux } from "@chainsafe/libp2p-yamux";
import { tcp } from "@libp2p/tcp";
import { multiaddr as toMultiaddr } from "@multiformats/multiaddr";
import { proto_metadata } from "@waku/proto";
import { createRelayNode } from "@waku/sdk/relay";

// Keep stdout for protocol lines only: js-waku and libp2p print banners through console.*.
for (const level of ["log", "info", "warn", "debug", "error"]) {
  console[level] = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
}

const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const log = (...args) => process.stderr.write(`[jswaku-peer] ${args.join(" ")}\n`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    cluster: { type: "string", default: "42" },
    shard: { type: "string", multiple: true, default: ["0"] },
    dial: { type: "string", multiple: true, default: [] },
  },
});

const clusterId = Number(args.cluster);
const shards = args.shard.flatMap((s) => s.split(",")).map(Number);
const versionOf = (pkg) => {
  try {
    const url = new URL(`./node_modules/${pkg}/package.json`, import.meta.url);
    return JSON.parse(readFileSync(url, "utf8")).version;
  } catch {
    return "unknown";
  }
};
const versions = {
  "@waku/sdk": versionOf("@waku/sdk"),
  "@waku/relay": versionOf("@waku/relay"),
  libp2p: versionOf("libp2p"),
  "@chainsafe/libp2p-gossipsub": versionOf("@chainsafe/libp2p-gossipsub"),
  node: process.version,
};

// Metadata wire-format shim (/vac/waku/metadata/1.0.0).
// @waku/proto 0.0.8 (what @waku/sdk 0.0.27 uses; 0.0.10 too) writes the shard list as field 2
// (unpacked). The current spec, nwaku and go-waku v0.10 read `repeated uint32 shards = 3` (packed)
// and keep field 2 only as `shards_deprecated`. go-waku v0.10 on a non-zero cluster then sees a
// relay peer with no shards and disconnects it ("invalid shard count"), within milliseconds of
// every connection. So every metadata request/response this peer writes carries the shards both
// ways, and reads field 3 when field 2 is absent. Only the encoding changes, not the content.
function varint(n) {
  const out = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}
function readVarint(bytes, pos) {
  let value = 0;
  let mul = 1;
  for (;;) {
    const b = bytes[pos++];
    value += (b & 0x7f) * mul;
    if (b < 0x80) return [value, pos];
    mul *= 128;
  }
}
function packedShards(bytes) {
  // Collect field 3 (packed varints) from a top-level protobuf message.
  const shards = [];
  let pos = 0;
  while (pos < bytes.length) {
    let tag;
    [tag, pos] = readVarint(bytes, pos);
    const [field, type] = [tag >>> 3, tag & 7];
    if (type === 0) {
      [, pos] = readVarint(bytes, pos);
    } else if (type === 2) {
      let len;
      [len, pos] = readVarint(bytes, pos);
      if (field === 3) {
        let p = pos;
        while (p < pos + len) {
          let v;
          [v, p] = readVarint(bytes, p);
          shards.push(v);
        }
      }
      pos += len;
    } else if (type === 1) {
      pos += 8;
    } else if (type === 5) {
      pos += 4;
    } else {
      break;
    }
  }
  return shards;
}
for (const codec of [proto_metadata.WakuMetadataRequest, proto_metadata.WakuMetadataResponse]) {
  const { encode, decode } = codec;
  codec.encode = (obj) => {
    const base = encode(obj);
    const shards = obj?.shards ?? [];
    if (shards.length === 0) return base;
    const body = shards.flatMap(varint);
    return Uint8Array.from([...base, 0x1a, ...varint(body.length), ...body]);
  };
  codec.decode = (buf, opts) => {
    const obj = decode(buf, opts);
    if (obj && obj.shards.length === 0) {
      const bytes = buf instanceof Uint8Array ? buf : buf.subarray();
      obj.shards = packedShards(bytes);
    }
    return obj;
  };
}

const node = await createRelayNode({
  networkConfig: { clusterId, shards },
  defaultBootstrap: false,
  relayKeepAlive: 0,
  libp2p: {
    hideWebSocketInfo: true,
    addresses: { listen: [`/ip4/127.0.0.1/tcp/${Number(args.port)}`] },
    transports: [tcp()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
  },
});
// WakuNode computes `options.relayKeepAlive || 300`, so 0 does not mean "off" (in 0.0.27 the pings
// stay off only because the relay is attached after that line). Force it off explicitly so the
// peer never publishes /relay-ping/1/ping/null messages into the tests' topics.
if (node.connectionManager?.keepAliveManager?.options) {
  node.connectionManager.keepAliveManager.options.relayKeepAlive = 0;
}
await node.start();

const libp2p = node.libp2p;
const pubsub = libp2p.services.pubsub;
const pubsubTopics = [...node.pubsubTopics];

pubsub.addEventListener("gossipsub:message", (evt) => {
  const { msg, propagationSource, msgId } = evt.detail;
  emit({
    event: "message",
    pubsubTopic: msg.topic,
    message: Buffer.from(msg.data).toString("base64"),
    from: propagationSource.toString(),
    msgId,
  });
});
libp2p.addEventListener("peer:connect", (evt) => emit({ event: "connect", peerId: evt.detail.toString() }));
libp2p.addEventListener("peer:disconnect", (evt) => emit({ event: "disconnect", peerId: evt.detail.toString() }));

const meshOf = () => Object.fromEntries(pubsubTopics.map((t) => [t, pubsub.getMeshPeers(t)]));

async function waitMesh(peerId, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const mesh = meshOf();
    const ok = pubsubTopics.every((t) => (peerId ? mesh[t].includes(peerId) : mesh[t].length > 0));
    if (ok) return mesh;
    if (Date.now() > deadline) {
      throw new Error(`peer ${peerId ?? "(any)"} not in the gossipsub mesh after ${timeoutMs} ms: ${JSON.stringify(mesh)}`);
    }
    await sleep(100);
  }
}

async function dial(multiaddr, timeoutMs = 20000) {
  const peerId = multiaddr.split("/p2p/").pop();
  const deadline = Date.now() + timeoutMs;
  let lastError;
  // A plain connection: gossipsub opens its own relay stream. (WakuNode.dial would also open a
  // bare /vac/waku/relay/2.0.0 stream, which go-libp2p-pubsub sees as a duplicate inbound
  // stream: it resets one, later declares the peer dead and forgets its topic subscription.)
  // The remote may still be binding its port: retry the dial until the deadline.
  for (;;) {
    try {
      await libp2p.dial(toMultiaddr(multiaddr));
      break;
    } catch (err) {
      lastError = err;
      if (Date.now() > deadline) throw new Error(`dial ${multiaddr} failed: ${lastError}`);
      await sleep(250);
    }
  }
  const mesh = await waitMesh(peerId, Math.max(1000, deadline - Date.now()));
  return { peerId, mesh };
}

const handlers = {
  async dial(cmd) {
    const { peerId, mesh } = await dial(cmd.multiaddr, cmd.timeoutMs ?? 20000);
    return { event: "dialed", ok: true, peerId, mesh };
  },
  async waitMesh(cmd) {
    return { event: "mesh", ok: true, mesh: await waitMesh(cmd.peerId, cmd.timeoutMs ?? 20000) };
  },
  async publish(cmd) {
    const topic = cmd.pubsubTopic ?? pubsubTopics[0];
    const data = Buffer.from(cmd.message, "base64");
    const msgId = createHash("sha256").update(data).digest("hex");
    const { recipients } = await pubsub.publish(topic, new Uint8Array(data));
    return { event: "published", ok: true, pubsubTopic: topic, msgId, recipients: recipients.map(String) };
  },
  async peers() {
    const connections = libp2p.getConnections().map((c) => ({
      peerId: c.remotePeer.toString(),
      remoteAddr: c.remoteAddr.toString(),
      status: c.status,
      multiplexer: c.multiplexer,
      encryption: c.encryption,
    }));
    const subscribers = Object.fromEntries(pubsubTopics.map((t) => [t, pubsub.getSubscribers(t).map(String)]));
    return { event: "peers", peerId: libp2p.peerId.toString(), connections, mesh: meshOf(), subscribers };
  },
  async stop() {
    await shutdown(0);
  },
};

let stopping = false;
async function shutdown(code) {
  if (stopping) return;
  stopping = true;
  try {
    await Promise.race([node.stop(), sleep(3000)]);
  } catch (err) {
    log("stop failed:", err);
  }
  emit({ event: "stopped" });
  process.exit(code);
}
process.on("SIGTERM", () => void shutdown(0));
process.on("SIGINT", () => void shutdown(0));

for (const addr of args.dial) {
  await dial(addr);
}

log(`js-waku peer ${libp2p.peerId} on cluster ${clusterId} shards ${shards} (@waku/sdk ${versions["@waku/sdk"]})`);
emit({
  event: "ready",
  peerId: libp2p.peerId.toString(),
  multiaddrs: libp2p.getMultiaddrs().map(String),
  pubsubTopics,
  versions,
});

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    emit({ event: "error", error: `bad JSON: ${err.message}` });
    return;
  }
  const handler = handlers[cmd.cmd];
  if (!handler) {
    emit({ event: "error", cmd: cmd.cmd, id: cmd.id, error: `unknown command ${cmd.cmd}` });
    return;
  }
  handler(cmd).then(
    (reply) => emit({ ...reply, id: cmd.id }),
    (err) => emit({ event: "error", cmd: cmd.cmd, id: cmd.id, error: String(err?.message ?? err) }),
  );
});
rl.on("close", () => void shutdown(0));
