// Ebb's browser SDK, the entry pages import.
//
//   import ebb from '/sdk/index.js';
//   ebb.load('wk_live_…', { host: 'https://collector.example' });
//   ebb.identify('user_42', { plan: 'pro' });
//   ebb.track('Signed Up', { seats: 3 });
//
// Calls made before load() wait for it, in order. Every function returns a promise and
// none throws: a wrong argument, a failed load or a refused batch rejects the promise with
// an Error whose message starts with "ebb: ".

import init, * as wasm from './ebb_sdk.js';

let loading = null;
let markReady;
let markFailed;
const ready = new Promise((resolve, reject) => {
  markReady = resolve;
  markFailed = reject;
});
// A failed load is reported to load()'s caller and to each later call; without this the
// browser would also log it as an unhandled rejection.
ready.catch(() => {});

/**
 * Loads the SDK for the environment named by `writeKey`.
 *
 * Options: `host` (the collector's origin, default `location.origin`), `flushAt` (queued
 * messages that trigger a flush, default 20), `flushInterval` (milliseconds a message waits
 * at most, default 10000), `debug` (log failed background flushes), `wasmUrl` (where
 * `ebb_sdk_bg.wasm` lives, default beside this file).
 */
export function load(writeKey, options) {
  if (loading) {
    return Promise.reject(new Error('ebb: already loaded: load may be called once per page'));
  }

  loading = (async () => {
    const opts = options ?? {};
    const host = opts.host ?? globalThis.location?.origin;
    await init(opts.wasmUrl ? { module_or_path: opts.wasmUrl } : undefined);
    await wasm.load(writeKey, host, opts.flushAt, opts.flushInterval, opts.debug);
  })();
  loading.then(markReady, markFailed);
  return loading;
}

/**
 * Records who the user is. `identify(userId, traits)`, `identify(userId)` and
 * `identify(traits)` are all accepted.
 */
export function identify(userId, traits) {
  if (userId !== null && typeof userId === 'object') {
    return whenLoaded(() => wasm.identify(undefined, userId));
  }
  return whenLoaded(() => wasm.identify(userId, traits));
}

/** Records something the user did. Resolves once the message is queued. */
export function track(event, properties) {
  return whenLoaded(() => wasm.track(event, properties));
}

/** Sends everything queued. Resolves once the collector has accepted it. */
export function flush() {
  return whenLoaded(() => wasm.flush());
}

// Runs `call` after load; anything it throws (it should not) becomes a rejection too.
function whenLoaded(call) {
  return ready.then(call, (cause) => {
    const reason = String(cause?.message ?? cause).replace(/^ebb: /, '');
    return Promise.reject(new Error(`ebb: not loaded: ${reason}`, { cause }));
  });
}

const ebb = { load, identify, track, flush };
export default ebb;
