// Node 20 lacks Promise.withResolvers (Node 22+), which mortice/it-queue/abort-error (pulled in by
// libp2p 1.9 through caret ranges) call. Load with: node --import ./polyfill.mjs peer.mjs
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}
