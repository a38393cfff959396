// Ebb's browser SDK, the entry pages and bundlers import.
//
//   import ebb from 'ebb-sdk';
//   ebb.load('wk_live_…', { host: 'https://collector.example' });
//   ebb.consent.grant(['analytics']);
//   ebb.identify('user_42', { plan: 'pro' });
//   ebb.track('Signed Up', { seats: 3 });
//
// Calls made before load() wait for it, in order. Every function returns a promise and
// none throws: a wrong argument, a failed load or a refused batch rejects the promise with
// an Error whose message starts with "ebb: ". Importing this module touches no browser
// API, so server-side rendering can import it; outside a browser every call resolves and
// does nothing.

import * as wasm from './ebb_sdk.js';

const inBrowser = typeof window !== 'undefined' && typeof document !== 'undefined';

let loading = null;
let loaded = false;
let failure = null;
// Calls made before load() finished: [run, resolve, reject], replayed in order.
const waiting = [];
const listeners = new Set();

// What a call that went through returns. One promise serves them all: creating one per
// call was a large share of the cost of track(), and a settled promise can be awaited any
// number of times.
const done = Promise.resolve();

// Fetches and compiles the module here rather than through the glue's own loader, whose
// fallbacks and warnings are for setups this package does not have, and cost bytes.
async function instantiate(url) {
  try {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`answered ${response.status}`);
    wasm.initSync({ module: await WebAssembly.compile(await response.arrayBuffer()) });
  } catch (cause) {
    throw new Error(`ebb: the SDK's wasm did not load from ${url}: ${cause?.message ?? cause}`, {
      cause,
    });
  }
}

function reject(text) {
  return Promise.reject(new Error(`ebb: ${text}`));
}

// The module's calls return `undefined` when they went through, else the Error they met
// (or, for flush, a promise).
function settle(outcome) {
  if (outcome === undefined) return done;
  return outcome instanceof Error ? Promise.reject(outcome) : outcome;
}

/**
 * Loads the SDK for the environment named by `writeKey`; see `LoadOptions` in index.d.ts
 * for the options and their defaults.
 */
export function load(writeKey, options) {
  if (!inBrowser) return Promise.resolve();
  if (loading) return reject('already loaded: load may be called once per page');

  const opts = { ...(options ?? {}) };
  opts.host ??= globalThis.location?.origin;
  loading = (async () => {
    await instantiate(opts.wasmUrl ?? new URL('ebb_sdk_bg.wasm', import.meta.url));
    const failed = wasm.load(writeKey, opts, (state) => {
      for (const listener of listeners) {
        try {
          listener(state);
        } catch (error) {
          // A listener's error is the page's; report it without stopping the others.
          setTimeout(() => {
            throw error;
          });
        }
      }
    });
    if (failed) throw failed;
  })();
  loading.then(
    () => {
      loaded = true;
      for (const [run, resolve, fail] of waiting.splice(0)) run().then(resolve, fail);
    },
    (cause) => {
      failure = cause;
      const text = String(cause?.message ?? cause).replace(/^ebb: /, '');
      for (const [, , fail] of waiting.splice(0)) {
        fail(new Error(`ebb: not loaded: ${text}`, { cause }));
      }
    },
  );
  return loading;
}

// Runs `run` now when loaded, else once load() has finished, and settles its outcome.
// Anything it throws (it should not) becomes a rejection too.
function call(run) {
  if (!inBrowser) return done;
  const guarded = () => {
    try {
      return settle(run());
    } catch (error) {
      return Promise.reject(error);
    }
  };
  if (loaded) return guarded();
  if (failure) return reject(`not loaded: ${String(failure?.message ?? failure).replace(/^ebb: /, '')}`);
  return new Promise((resolve, fail) => waiting.push([guarded, resolve, fail]));
}

/**
 * Records who the user is. `identify(userId, traits?, options?)`, `identify(traits)` and
 * `identify(traits, options)` are all accepted; `options.userHash` is the identity-
 * verification hash computed by the site's server.
 */
export function identify(userId, traits, options) {
  return replayable.identify(undefined, userId, traits, options);
}

/** Records something the user did. */
export function track(event, properties) {
  return replayable.track(undefined, event, properties);
}

/** Records a page view: `page(name?, properties?)` or `page(properties)`. */
export function page(name, properties) {
  return replayable.page(undefined, name, properties);
}

/** Records the user's membership of a group. */
export function group(groupId, traits) {
  return replayable.group(undefined, groupId, traits);
}

/** Records that `userId` and `previousId` (default: the current id) name one user. */
export function alias(userId, previousId) {
  return replayable.alias(undefined, userId, previousId);
}

/** Records a survey response: `answers` maps each question to its answer. */
export function respond(surveyId, answers) {
  return replayable.respond(undefined, surveyId, answers);
}

/** Forgets the user and starts a new anonymous id. */
export function reset() {
  return call(() => wasm.reset());
}

/** Sends everything queued; resolves once the collector has taken it. */
export function flush() {
  return call(() => wasm.flush());
}

/** Resolves once the SDK is loaded; rejects if loading failed. */
export function ready() {
  return call(() => undefined);
}

/**
 * What the SDK holds now: `{userId, anonymousId, queued, held}` (ids `null` until known;
 * `queued`: messages waiting to be sent; `held`: calls waiting for consent). `null` before
 * load.
 */
export function status() {
  return loaded ? wasm.state(1) : null;
}

/** Calls `listener(state)` after each change of consent. Returns a function that stops it. */
export function on(event, listener) {
  if (event === 'consent' && typeof listener === 'function') listeners.add(listener);
  return () => off(event, listener);
}

/** Stops a listener added with `on`. */
export function off(event, listener) {
  if (event === 'consent') listeners.delete(listener);
}

/** The visitor's consent: grant, deny, withdraw, and the current state. */
export const consent = {
  grant: (categories) => call(() => wasm.consent(0, categories)),
  deny: (categories) => call(() => wasm.consent(1, categories)),
  withdraw: () => call(() => wasm.consent(2)),
  state: () => (loaded ? wasm.state(0) : null),
};

// The recording calls, taking first the time and page of a call made before the module
// loaded (from the snippet's queue), or `undefined` for a call made now. The module takes
// them all through `record(kind, …)`: 0 identify, 1 track, 2 page, 3 group, 4 alias,
// 5 respond.
const replayable = {
  identify(meta, userId, traits, options) {
    if (userId !== null && typeof userId === 'object') {
      [userId, traits, options] = [undefined, userId, traits];
    }
    return call(() => wasm.record(0, userId, traits, options, meta));
  },
  track(meta, event, properties) {
    // The most frequent call goes straight through once loaded, without the closures of
    // call(): they were a measurable part of its cost.
    if (!loaded) return call(() => wasm.record(1, event, properties, undefined, meta));
    try {
      return settle(wasm.record(1, event, properties, undefined, meta));
    } catch (error) {
      return Promise.reject(error);
    }
  },
  page(meta, name, properties) {
    if (name !== null && typeof name === 'object') [name, properties] = [undefined, name];
    return call(() => wasm.record(2, name, properties, undefined, meta));
  },
  group: (meta, groupId, traits) => call(() => wasm.record(3, groupId, traits, undefined, meta)),
  alias: (meta, userId, previousId) =>
    call(() => wasm.record(4, userId, previousId, undefined, meta)),
  respond: (meta, surveyId, answers) =>
    call(() => wasm.record(5, surveyId, answers, undefined, meta)),
};

const ebb = {
  load, identify, track, page, group, alias, respond, reset, flush, ready, status, on, off,
  consent,
};

/**
 * Replays the calls that the inline snippet queued before the module loaded, in order,
 * each with the time and page it was made on, and settles each call's promise. Used by the
 * snippet's loader (`auto.js`); pages do not call it.
 */
export function replay(queue) {
  for (const entry of queue ?? []) {
    const { m: name, a: args = [], t: timestamp, p: pageContext, r: resolve, j: fail } = entry;
    let result;
    try {
      if (name in replayable) {
        result = replayable[name]({ timestamp, page: pageContext }, ...args);
      } else if (name.startsWith('consent.')) {
        result = consent[name.slice(8)](...args);
      } else if (typeof ebb[name] === 'function') {
        result = ebb[name](...args);
      } else {
        result = reject(`unknown call ${name}`);
      }
    } catch (error) {
      result = Promise.reject(error);
    }
    Promise.resolve(result).then(resolve, fail);
  }
}

export default ebb;
