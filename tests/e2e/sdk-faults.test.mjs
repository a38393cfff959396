// The SDK under faults, in headless Chromium against a real collector: storage that throws
// (from the start, and in the middle of a session), a storage quota reached mid-queue,
// corrupt stored state, a `fetch` that rejects or throws, a collector down for minutes, and
// the clock jumping backwards.
//
// Each test checks two things. Nothing reaches the page: no `pageerror`, no window `error`
// event and no `unhandledrejection`. The page here awaits or handles every promise the SDK
// hands it (a rejected `flush()` while the collector is down is the SDK reporting, not
// throwing), so an unhandled rejection can only come from a promise the SDK made for
// itself. And nothing queued is lost beyond the documented bound: every message arrives
// at the collector exactly once, with one message id across all its attempts, or, past
// `maxQueueBytes`, the number missing equals what `context.dropped` reports.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { launchBrowser, repoRoot, startCollector, watchPageErrors } from './harness.mjs';
import {
  openFixture,
  recordBatches,
  serveFixture,
  tracked,
  waitForUser,
  writeKey,
} from './sdk-helpers.mjs';

let collector;
let browser;
let key;

before(async () => {
  collector = await startCollector();
  browser = await launchBrowser();
  key = await writeKey(collector);
});

after(async () => {
  await browser?.close();
  await collector?.stop();
});

/** Runs in every page before anything else: records what reaches the page uncaught. */
function recordFaults() {
  window.ebbFaults = [];
  window.addEventListener('error', (event) => window.ebbFaults.push(`error: ${event.message}`));
  window.addEventListener('unhandledrejection', (event) => {
    window.ebbFaults.push(`unhandled rejection: ${event.reason?.message ?? event.reason}`);
  });
}

/**
 * Runs in every page: wraps `fetch` to note, for each batch request, the page's own time
 * (the fake clock's, where one is installed), the message ids it carried (`null` for a
 * body that is not JSON), and whether it has settled.
 */
function noteBatchFetches() {
  window.ebbFetches = [];
  // The message ids of a batch body, or `null` when the body is not JSON.
  window.ebbBatchIds = (body) => {
    try {
      return JSON.parse(body).batch.map((message) => message.messageId);
    } catch {
      return null;
    }
  };
  const realFetch = window.fetch;
  window.fetch = function fetch(input, init) {
    const pending = realFetch.call(this, input, init);
    if (!String(input).endsWith('/v1/batch')) return pending;
    const entry = { at: Date.now(), ids: window.ebbBatchIds(init.body), settled: false };
    window.ebbFetches.push(entry);
    const settled = () => {
      entry.settled = true;
    };
    pending.then(settled, settled);
    return pending;
  };
}

/** A context serving the fixture; `scripts` (functions, or `[function, argument]`) run first. */
async function context(...scripts) {
  const ctx = await browser.newContext();
  ctx.pageErrors = [];
  ctx.on('page', (page) => {
    ctx.pageErrors.push(watchPageErrors(page));
  });
  await ctx.addInitScript(recordFaults);
  for (const script of scripts) {
    const [fn, arg] = Array.isArray(script) ? script : [script];
    await ctx.addInitScript(fn, arg);
  }
  await serveFixture(ctx, collector);
  return ctx;
}

/** Everything that reached the pages of `ctx` uncaught, `page` last read now. */
async function faults(ctx, page) {
  const recorded = await page.evaluate(() => window.ebbFaults);
  return [...ctx.pageErrors.flat(), ...recorded];
}

/** Loads the SDK, grants consent, identifies as `user` and flushes. */
async function start(page, user, options = {}) {
  await page.evaluate(
    async ({ key, user, options }) => {
      const ebb = window.ebbSdk;
      await ebb.load(key, options);
      await ebb.consent.grant();
      await ebb.identify(user);
      await ebb.flush();
    },
    { key, user, options },
  );
}

/** Resolves once `check()` holds, polling every 20 ms; fails after `timeout` ms. */
async function until(check, what, timeout = 15_000) {
  const end = Date.now() + timeout;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Waits until every batch request the page made has been answered or has failed. */
function requestsSettled(page) {
  return until(
    () => page.evaluate(() => window.ebbFetches.every((entry) => entry.settled)),
    'the batch requests to settle',
  );
}

/**
 * Moves the page's fake clock on by `ms` in steps of `step`, letting the requests started
 * in each step settle before the next: a retry is only scheduled once its failure is known.
 * Stops early once `done()` holds.
 */
async function advance(page, ms, { step = 1000, done = async () => false } = {}) {
  for (let moved = 0; moved < ms; moved += step) {
    await page.clock.runFor(step);
    await requestsSettled(page);
    if (await done()) return;
  }
}

function count(values) {
  const counts = new Map();
  for (const value of values) counts.set(value, (counts.get(value) ?? 0) + 1);
  return counts;
}

/**
 * Asserts that each event of `names` is stored once for `user`, that every attempt to
 * send it carried that one message id (`attempts`: lists of ids, one per request made),
 * and that exactly one request the collector answered with a status in `accepted`
 * carried it.
 */
function assertEachOnce({ user, names, requests, attempts, accepted = [200] }) {
  const stored = new Map(names.map((name) => [name, []]));
  for (const event of user.events) stored.get(event.event)?.push(event.messageId);
  const acceptedIds = count(
    requests
      .filter((request) => accepted.includes(request.status))
      .flatMap((request) => request.messages.map((message) => message.messageId)),
  );
  assert.deepEqual(attempts.filter((ids) => ids === null), [], 'every batch body was JSON');
  assert.deepEqual(requests.filter((request) => request.body === null), [], 'every batch was JSON');
  const attempted = new Set(attempts.flat());
  const sentIds = new Map(names.map((name) => [name, new Set()]));
  for (const message of requests.flatMap((request) => request.messages)) {
    sentIds.get(message.event)?.add(message.messageId);
  }

  for (const name of names) {
    assert.equal(stored.get(name).length, 1, `${name} is stored once`);
    const [id] = stored.get(name);
    assert.deepEqual([...sentIds.get(name)], [id], `${name} kept one message id`);
    assert.equal(acceptedIds.get(id), 1, `${name} was accepted in exactly one request`);
    assert.ok(attempted.has(id), `${name} went through the page's fetch`);
  }
}

/** A promise with its `resolve` beside it. */
function deferred() {
  let resolve;
  const promise = new Promise((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

function range(prefix, from, to) {
  return Array.from({ length: to - from + 1 }, (_, n) => `${prefix} ${from + n}`);
}

// --- storage that throws --------------------------------------------------------------

/**
 * Runs in every page: while `window.ebbStorageBroken` is true, every access to
 * localStorage and sessionStorage throws: the window getters, `getItem`, `setItem`,
 * `removeItem`, `key`, `clear` and `length`. `window.ebbStorageRefusals` counts them.
 */
function breakableStorage(brokenFromStart) {
  window.ebbStorageBroken = brokenFromStart;
  window.ebbStorageRefusals = 0;
  const refuse = () => {
    window.ebbStorageRefusals += 1;
    throw new DOMException('storage is blocked', 'SecurityError');
  };
  const proto = Storage.prototype;
  const original = {};
  for (const name of ['getItem', 'setItem', 'removeItem', 'key', 'clear']) {
    original[name] = proto[name];
    proto[name] = function guarded(...args) {
      if (window.ebbStorageBroken) refuse();
      return original[name].apply(this, args);
    };
  }
  const length = Object.getOwnPropertyDescriptor(proto, 'length').get;
  Object.defineProperty(proto, 'length', {
    configurable: true,
    get() {
      if (window.ebbStorageBroken) refuse();
      return length.call(this);
    },
  });
  const getters = {};
  for (const name of ['localStorage', 'sessionStorage']) {
    const owner = Object.getOwnPropertyDescriptor(window, name) ? window : Window.prototype;
    getters[name] = Object.getOwnPropertyDescriptor(owner, name).get;
    Object.defineProperty(window, name, {
      configurable: true,
      get() {
        if (window.ebbStorageBroken) refuse();
        return getters[name].call(window);
      },
    });
  }
}

/** The stored queue of the page's tab, as lines, read past any storage fault. */
function storedQueue(page) {
  return page.evaluate(() => {
    const broken = window.ebbStorageBroken;
    window.ebbStorageBroken = false;
    try {
      const tab = sessionStorage.getItem('ebb.tab');
      return (localStorage.getItem(`ebb.queue.${tab}`) ?? '').split('\n');
    } finally {
      window.ebbStorageBroken = broken;
    }
  });
}

test('storage that starts throwing mid-session loses nothing queued, and once it heals a reload sends nothing twice', async () => {
  const ctx = await context([breakableStorage, false], noteBatchFetches);
  const requests = await recordBatches(ctx);
  const page = await openFixture(ctx, collector);
  await start(page, 'storage-mid-user', { flushInterval: 600_000, flushAt: 100 });
  await page.evaluate(async () => {
    for (let n = 1; n <= 5; n += 1) await window.ebbSdk.track(`Stored ${n}`);
    await new Promise((resolve) => setTimeout(resolve, 300));
  });
  const storedBefore = await storedQueue(page);

  const during = await page.evaluate(async () => {
    const ebb = window.ebbSdk;
    window.ebbStorageBroken = true;
    for (let n = 1; n <= 5; n += 1) await ebb.track(`Broken ${n}`);
    await ebb.identify('storage-mid-user', { plan: 'pro' });
    await ebb.consent.grant();
    await new Promise((resolve) => setTimeout(resolve, 300));
    // What the page does on its way out, with storage refusing the write.
    window.dispatchEvent(new PageTransitionEvent('pagehide', { persisted: true }));
    for (let n = 6; n <= 8; n += 1) await ebb.track(`Broken ${n}`);
    const flushed = await ebb.flush().then(() => 'sent', (error) => error.message);
    return { flushed, status: ebb.status(), refusals: window.ebbStorageRefusals };
  });
  await page.evaluate(async () => {
    window.ebbStorageBroken = false;
    await window.ebbSdk.track('Healed');
    await window.ebbSdk.flush();
    await new Promise((resolve) => setTimeout(resolve, 300));
  });
  const storedAfter = await storedQueue(page);
  const faultsBeforeReload = await page.evaluate(() => window.ebbFaults);
  const attemptsBeforeReload = await page.evaluate(() => window.ebbFetches.map((f) => f.ids));
  await page.reload();
  await page.waitForFunction(() => window.ebbImported === true);
  await page.evaluate(async (key) => {
    await window.ebbSdk.load(key);
    await window.ebbSdk.track('After reload');
    await window.ebbSdk.flush();
  }, key);
  const names = [...range('Stored', 1, 5), ...range('Broken', 1, 8), 'Healed', 'After reload'];
  const user = await waitForUser(collector, 'storage-mid-user', (u) => tracked(u).length === names.length);

  const storedMessages = storedBefore.filter((line) => line.includes('"Stored '));
  assert.equal(storedMessages.length, 5, 'the queue was stored before the fault');
  assert.equal(during.flushed, 'sent');
  assert.ok(during.refusals > 0, 'the SDK met the broken storage');
  assert.deepEqual(during.status.queued, 0);
  assert.deepEqual(storedAfter.slice(1), [], 'healed storage holds no message already delivered');
  assert.deepEqual(user.traits, { plan: 'pro' });
  const attemptsAfterReload = await page.evaluate(() => window.ebbFetches.map((f) => f.ids));
  const attempts = [...attemptsBeforeReload, ...attemptsAfterReload];
  assertEachOnce({ user, names, requests, attempts });
  const sent = requests.flatMap((request) => request.messages.map((m) => m.messageId));
  assert.equal(sent.length, new Set(sent).size, 'no message was sent twice, before or after the reload');
  assert.deepEqual([...faultsBeforeReload, ...(await faults(ctx, page))], []);
  await ctx.close();
});

test('a page back from the back-forward cache keeps the queue that storage refused when it was hidden', async () => {
  const ctx = await context([breakableStorage, false], noteBatchFetches);
  let down = false;
  const requests = await recordBatches(ctx, () => (down ? 'abort' : undefined));
  const page = await openFixture(ctx, collector);
  await start(page, 'bfcache-user', { flushInterval: 600_000, retry: { baseDelay: 100, maxDelay: 400 } });
  await page.evaluate(async () => {
    for (let n = 1; n <= 3; n += 1) await window.ebbSdk.track(`Kept ${n}`);
    await new Promise((resolve) => setTimeout(resolve, 300));
  });
  down = true;

  await page.evaluate(async () => {
    window.ebbStorageBroken = true;
    for (let n = 1; n <= 3; n += 1) await window.ebbSdk.track(`Memory ${n}`);
    // Hidden into the cache with the collector unreachable and storage refusing the queue,
    // then shown again once storage reads again.
    window.dispatchEvent(new PageTransitionEvent('pagehide', { persisted: true }));
  });
  await requestsSettled(page);
  const hidden = await page.evaluate(() => window.ebbSdk.status().queued);
  down = false;
  const shown = await page.evaluate(async () => {
    window.ebbStorageBroken = false;
    window.dispatchEvent(new PageTransitionEvent('pageshow', { persisted: true }));
    const queued = window.ebbSdk.status().queued;
    await window.ebbSdk.flush();
    return queued;
  });
  const names = [...range('Kept', 1, 3), ...range('Memory', 1, 3)];
  const user = await waitForUser(collector, 'bfcache-user', (u) => tracked(u).length >= names.length, 5000);

  assert.equal(hidden, 6, 'the failed keepalive requests left every message queued');
  assert.equal(shown, 6);
  const attempts = await page.evaluate(() => window.ebbFetches.map((f) => f.ids));
  assertEachOnce({ user, names, requests, attempts });
  assert.deepEqual(await faults(ctx, page), []);
  await ctx.close();
});

test('storage whose every method and getter throws from the start leaves the SDK working in memory, reset and withdrawal included', async () => {
  const ctx = await context([breakableStorage, true], noteBatchFetches);
  const requests = await recordBatches(ctx);
  const page = await openFixture(ctx, collector);

  const outcome = await page.evaluate(async (key) => {
    const ebb = window.ebbSdk;
    const results = [];
    const note = (promise) => promise.then(() => 'ok', (error) => error.message);
    results.push(await note(ebb.load(key, { debug: true })));
    results.push(await note(ebb.consent.grant()));
    results.push(await note(ebb.identify('storage-dead-user', { plan: 'team' })));
    for (let n = 1; n <= 4; n += 1) results.push(await note(ebb.track(`Memory ${n}`)));
    results.push(await note(ebb.flush()));
    const status = ebb.status();
    results.push(await note(ebb.reset()));
    results.push(await note(ebb.consent.withdraw()));
    results.push(await note(ebb.track('After withdrawal')));
    results.push(await note(ebb.flush()));
    return { results, status, state: ebb.consent.state().status, refusals: window.ebbStorageRefusals };
  }, key);
  const user = await waitForUser(collector, 'storage-dead-user', (u) => tracked(u).length === 4);

  assert.deepEqual(new Set(outcome.results), new Set(['ok']));
  assert.ok(outcome.refusals > 0, 'the SDK met the broken storage');
  assert.equal(outcome.status.userId, 'storage-dead-user');
  assert.equal(outcome.state, 'denied');
  assert.deepEqual(user.traits, { plan: 'team' });
  const attempts = await page.evaluate(() => window.ebbFetches.map((f) => f.ids));
  assertEachOnce({ user, names: range('Memory', 1, 4), requests, attempts });
  const messages = requests.flatMap((request) => request.messages);
  assert.ok(!messages.some((m) => m.event === 'After withdrawal'));
  const withdrawals = messages.filter(
    (m) => m.event === 'Segment Consent Preference Updated' && !m.context.consent.categoryPreferences.analytics,
  );
  assert.equal(withdrawals.length, 1, 'the withdrawal is recorded from memory');
  assert.deepEqual(await faults(ctx, page), []);
  await ctx.close();
});

// --- quota ------------------------------------------------------------------------------

/**
 * Runs in every page: once `window.ebbQuota` is set, a `setItem` that would take the
 * storage area past that many characters (keys and values, as browsers count) throws
 * `QuotaExceededError` and changes nothing; `window.ebbQuotaRefusals` counts them.
 */
function limitedQuota() {
  window.ebbQuota = Infinity;
  window.ebbQuotaRefusals = 0;
  const setItem = Storage.prototype.setItem;
  Storage.prototype.setItem = function limited(name, value) {
    let used = String(name).length + String(value).length;
    for (let index = 0; index < this.length; index += 1) {
      const other = this.key(index);
      if (other !== name) used += other.length + this.getItem(other).length;
    }
    if (used > window.ebbQuota) {
      window.ebbQuotaRefusals += 1;
      throw new DOMException('the quota has been exceeded', 'QuotaExceededError');
    }
    return setItem.call(this, name, value);
  };
}

test('a storage quota reached mid-queue while the collector is unreachable loses nothing once it is back', async () => {
  const ctx = await context(limitedQuota, noteBatchFetches);
  let down = false;
  const requests = await recordBatches(ctx, () => (down ? 'abort' : undefined));
  const page = await openFixture(ctx, collector);
  await start(page, 'quota-user', { retry: { baseDelay: 100, maxDelay: 400 } });
  await page.evaluate(() => {
    const used = Object.entries(localStorage).reduce((sum, [k, v]) => sum + k.length + v.length, 0);
    window.ebbQuota = used + 8000;
  });
  down = true;

  const during = await page.evaluate(async () => {
    const ebb = window.ebbSdk;
    const padding = 'q'.repeat(200);
    // In groups, so that the queue is written between them: the first groups fit.
    for (let n = 1; n <= 60; n += 1) {
      await ebb.track(`Quota ${n}`, { padding });
      if (n % 5 === 0) await new Promise((resolve) => setTimeout(resolve, 150));
    }
    const flushed = await ebb.flush().then(() => 'sent', (error) => error.message);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const tab = sessionStorage.getItem('ebb.tab');
    const stored = (localStorage.getItem(`ebb.queue.${tab}`) ?? '').split('\n').length - 1;
    return { flushed, stored, refusals: window.ebbQuotaRefusals };
  });
  down = false;
  const names = range('Quota', 1, 60);
  const user = await waitForUser(collector, 'quota-user', (u) => tracked(u).length === 60);
  await page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 300)));
  const storedAfter = await storedQueue(page);

  assert.match(during.flushed, /^ebb: could not reach the collector/);
  assert.ok(during.refusals > 0, 'storage refused writes');
  assert.ok(during.stored > 0 && during.stored < 60, `storage took ${during.stored} of 60, then refused`);
  const attempts = await page.evaluate(() => window.ebbFetches.map((f) => f.ids));
  assertEachOnce({ user, names, requests, attempts });
  const messages = requests.flatMap((request) => request.messages);
  assert.ok(messages.every((m) => m.context.dropped === undefined), 'nothing was dropped');
  assert.deepEqual(storedAfter.slice(1), [], 'the emptied queue fits the quota again and is stored');
  assert.deepEqual(await faults(ctx, page), []);
  await ctx.close();
});

// --- corrupt stored state ---------------------------------------------------------------

/** A message as the SDK stores it: one line of JSON, `context` its last member. */
function storedMessage(event, anonymousId, padding) {
  return JSON.stringify({
    type: 'track',
    messageId: randomUUID(),
    anonymousId,
    userId: 'corrupt-user',
    timestamp: new Date(Date.now() - 60_000).toISOString(),
    event,
    properties: { padding },
    context: { library: { name: 'ebb-sdk', version: '0.1.0' } },
  });
}

/** Runs in every page: fills storage with `seed` once, before the page's own scripts. */
function seedStorage(seed) {
  // The blank page a new tab starts on has no storage of its own to seed.
  if (location.protocol !== 'http:' || sessionStorage.getItem('ebb.seeded')) return;
  sessionStorage.setItem('ebb.seeded', '1');
  for (const [name, value] of Object.entries(seed.local)) localStorage.setItem(name, value);
  for (const [name, value] of Object.entries(seed.session)) sessionStorage.setItem(name, value);
}

test('corrupt stored state is skipped: the valid entries are delivered, the queue bound reported, nothing thrown', async () => {
  const anonymousId = randomUUID();
  const padding = 'c'.repeat(1200);
  const own = range('Stored', 1, 30).map((event) => storedMessage(event, anonymousId, padding));
  const adopted = range('Adopted', 1, 2).map((event) => storedMessage(event, anonymousId, 'a'));
  const broken = [
    '{"type":"track","event":"Truncated',
    'not json at all',
    '',
    '[{"type":"track","context":{}}]',
    '{"a":1}}',
    '{"type":"track","event":"No context"}',
    '{"x":"\ud800',
    'v9',
  ];
  // Broken lines between the valid ones, and one well-formed object that is no message
  // at the newest end: the collector refuses that one alone and stores the rest.
  const queue = ['v2'];
  own.forEach((line, index) => {
    queue.push(line);
    if (index % 4 === 0) queue.push(broken[(index / 4) % broken.length]);
  });
  queue.push('{"type":"track","context":{"not":"a message"}}');
  const seed = {
    session: { 'ebb.tab': 'seedtab1' },
    local: {
      'ebb.consent': 'garbage\n=1\n{"analytics":true}\nanalytics=1\nads"\\\u0001=1\n',
      'ebb.anon': '',
      'ebb.user': 'u'.repeat(1001),
      'ebb.hash': '{"broken',
      'ebb.traits': '{"plan":"pro",',
      'ebb.live.seedtab1': 'NaN',
      'ebb.queue.seedtab1': queue.join('\n'),
      'ebb.queue.deadtab': 'not a queue\n{"half":',
      'ebb.live.deadtab': '-5',
      'ebb.queue.oldtab': `vX\n${adopted.join('\n')}`,
    },
  };
  const ctx = await context([seedStorage, seed], noteBatchFetches);
  const requests = await recordBatches(ctx);
  const page = await openFixture(ctx, collector);

  const loaded = await page.evaluate(async (key) => {
    const ebb = window.ebbSdk;
    await ebb.load(key, { maxQueueBytes: 32768, flushAt: 100, flushInterval: 600_000 });
    // The adoption of other tabs' queues runs under this lock; waiting for it means done.
    await navigator.locks.request('ebb.adopt', async () => {});
    const flushed = await ebb.flush().then(() => 'sent', (error) => error.message);
    return { flushed, consent: ebb.consent.state() };
  }, key);
  await page.evaluate(async () => {
    await window.ebbSdk.identify('corrupt-user', { plan: 'team' });
    await window.ebbSdk.track('After corrupt load');
    await window.ebbSdk.flush();
  });
  const valid = [...range('Stored', 1, 30), ...range('Adopted', 1, 2)];
  const user = await waitForUser(collector, 'corrupt-user', (u) => tracked(u).includes('After corrupt load'));

  assert.equal(loaded.consent.status, 'granted', 'the one readable consent line counts');
  const delivered = valid.filter((name) => tracked(user).includes(name));
  const missing = valid.length - delivered.length;
  assert.ok(missing > 0, 'the stored queue was over maxQueueBytes');
  assert.deepEqual(delivered, valid.slice(missing), 'the oldest went first');
  const reported = user.events.reduce((sum, event) => sum + (event.context?.dropped ?? 0), 0);
  assert.equal(reported, 2 + missing, 'context.dropped counts the stored drops and the bound');
  assert.match(loaded.flushed, /^ebb: the collector answered 400/, 'the non-message was refused');
  assert.equal(
    tracked(user).filter((name) => name !== 'After corrupt load').length,
    delivered.length,
    'no broken line was sent as an event',
  );
  assert.deepEqual(user.traits, { plan: 'team' });
  const attempts = await page.evaluate(() => window.ebbFetches.map((f) => f.ids));
  const names = [...delivered, 'After corrupt load'];
  assertEachOnce({ user, names, requests, attempts, accepted: [200, 400] });
  const leftovers = await page.evaluate(() =>
    Object.keys(localStorage).filter((name) => /deadtab|oldtab/.test(name)),
  );
  assert.deepEqual(leftovers, [], "the closed tabs' queues were taken over and removed");
  assert.deepEqual(await faults(ctx, page), []);
  await ctx.close();
});

// --- the module itself ---------------------------------------------------------------------

test('a wasm module that does not load rejects load() and every call, made before or after, with an error that says so', async () => {
  const ctx = await context();
  // One address answers 404; the other answers 200 with bytes that are no wasm module.
  await ctx.route(
    (url) => url.pathname === '/assets/garbage.wasm',
    (route) => route.fulfill({ status: 200, contentType: 'application/wasm', body: 'not a module' }),
  );
  const outcomes = [];
  for (const wasmUrl of ['/assets/missing.wasm', '/assets/garbage.wasm']) {
    const page = await openFixture(ctx, collector);
    outcomes.push(
      await page.evaluate(
        async ({ key, wasmUrl }) => {
          const ebb = window.ebbSdk;
          const text = (promise) => promise.then(() => 'resolved', (error) => error.message);
          const early = text(ebb.track('Early'));
          const loaded = await text(ebb.load(key, { wasmUrl }));
          return {
            loaded,
            early: await early,
            later: await text(ebb.identify('never-stored')),
            again: await text(ebb.load(key)),
            status: ebb.status(),
          };
        },
        { key, wasmUrl },
      ),
    );
    assert.deepEqual(await faults(ctx, page), [], wasmUrl);
    await page.close();
  }

  const [missing, garbage] = outcomes;
  assert.match(missing.loaded, /^ebb: the SDK's wasm did not load from \/assets\/missing\.wasm: answered 404$/);
  assert.match(garbage.loaded, /^ebb: the SDK's wasm did not load from \/assets\/garbage\.wasm: \S/);
  for (const outcome of outcomes) {
    const reason = outcome.loaded.replace(/^ebb: /, '');
    assert.equal(outcome.early, `ebb: not loaded: ${reason}`, 'a call that waited for load');
    assert.equal(outcome.later, `ebb: not loaded: ${reason}`, 'a call after the failed load');
    assert.match(outcome.again, /^ebb: already loaded/);
    assert.equal(outcome.status, null);
  }
  const users = await collector.admin('/admin/v1/users/never-stored');
  assert.equal(users.status, 404);
  await ctx.close();
});

test('the module comes from wasmUrl when one is given, whatever content type it is served with', async () => {
  const ctx = await context();
  const wasm = await readFile(join(repoRoot, 'www', 'sdk', 'ebb_sdk_bg.wasm'));
  const fetched = [];
  await ctx.route(
    (url) => url.pathname.endsWith('.wasm'),
    (route) => {
      const { pathname } = new URL(route.request().url());
      fetched.push(pathname);
      if (pathname !== '/cdn/ebb-custom.wasm') return route.continue();
      return route.fulfill({ status: 200, contentType: 'application/octet-stream', body: wasm });
    },
  );
  const page = await openFixture(ctx, collector);
  await start(page, 'wasm-url-user', { wasmUrl: new URL('/cdn/ebb-custom.wasm', collector.base).href });
  await page.evaluate(() => window.ebbSdk.track('From a custom wasm').then(() => window.ebbSdk.flush()));
  const user = await waitForUser(collector, 'wasm-url-user', (u) => tracked(u).length === 1);

  assert.deepEqual(tracked(user), ['From a custom wasm']);
  assert.deepEqual(fetched, ['/cdn/ebb-custom.wasm'], 'only the given address was fetched');
  assert.deepEqual(await faults(ctx, page), []);
  await ctx.close();
});

// --- fetch that rejects or throws ----------------------------------------------------------

test('a fetch that throws or rejects in every way is retried with the same message ids and delivers once', async () => {
  const ctx = await context(noteBatchFetches);
  const requests = await recordBatches(ctx);
  const page = await openFixture(ctx, collector);
  await start(page, 'fetch-user', { retry: { baseDelay: 50, maxDelay: 200 } });

  const outcome = await page.evaluate(async () => {
    const ebb = window.ebbSdk;
    // The faults never reach the network; the calls after them go through the noting
    // fetch, and the faulty ones are noted here.
    const noted = window.fetch;
    const faults = [
      () => {
        throw new TypeError('synchronous failure');
      },
      () => Promise.reject(new TypeError('Failed to fetch')),
      () => Promise.reject('a bare string'),
      () => Promise.reject(undefined),
      () => Promise.resolve(undefined),
      () => Promise.resolve({ status: 200 }),
      () => Promise.resolve(new Response('not json', { status: 503 })),
      () => {
        throw 42;
      },
    ];
    let calls = 0;
    window.fetch = function faulty(input, init) {
      const fault = faults[calls];
      calls += 1;
      if (!fault) return noted.call(this, input, init);
      const ids = window.ebbBatchIds(init.body);
      window.ebbFetches.push({ at: Date.now(), ids, settled: true });
      return fault();
    };
    for (let n = 1; n <= 5; n += 1) await ebb.track(`Fetch ${n}`);
    const flushed = await ebb.flush().then(() => 'sent', (error) => error.message);
    return { flushed, faults: faults.length };
  });
  const names = range('Fetch', 1, 5);
  const user = await waitForUser(collector, 'fetch-user', (u) => tracked(u).length === 5);
  await page.evaluate(() => window.ebbSdk.flush());

  assert.match(outcome.flushed, /^ebb: could not reach the collector: synchronous failure/);
  const attempts = await page.evaluate(() => window.ebbFetches.map((f) => f.ids));
  const carrying = attempts.filter((ids) => ids.length === 5);
  assert.equal(carrying.length, outcome.faults + 1, 'one attempt per fault, then one that went through');
  assert.equal(new Set(carrying.map((ids) => ids.join())).size, 1, 'every attempt carried the same ids');
  assertEachOnce({ user, names, requests, attempts });
  assert.deepEqual(await faults(ctx, page), []);
  await ctx.close();
});

// --- time: a long outage, and the clock going backwards ---------------------------------

/**
 * The attempt times, from the first at 0, that a retry schedule of `base · 2^(n−1)` capped
 * at `max` allows within `window` ms when each delay is `pick(full)` of its full value.
 */
function scheduleWithin(window, { base, max }, pick) {
  const times = [0];
  for (let failures = 1; ; failures += 1) {
    const next = times.at(-1) + pick(Math.min(base * 2 ** (failures - 1), max));
    if (next > window) return times;
    times.push(next);
  }
}

test('a collector down for five minutes gets every message once, its retries spaced by the backoff', async () => {
  const ctx = await context(noteBatchFetches);
  let down = false;
  const requests = await recordBatches(ctx, () => (down ? 'abort' : undefined));
  await ctx.clock.install();
  const page = await openFixture(ctx, collector);
  await start(page, 'outage-user', { maxQueueBytes: 32768 });
  await page.clock.pauseAt(Date.now() + 1000);
  const retry = { base: 1000, max: 60_000 };
  const outage = 5 * 60_000;
  const padding = 'o'.repeat(1000);
  const earlier = await page.evaluate(() => window.ebbFetches.length);
  down = true;

  await page.evaluate(async (padding) => {
    for (let n = 1; n <= 40; n += 1) await window.ebbSdk.track(`Outage ${n}`, { padding });
  }, padding);
  await requestsSettled(page);
  await advance(page, outage / 2);
  await page.evaluate(async (padding) => {
    for (let n = 41; n <= 45; n += 1) await window.ebbSdk.track(`Outage ${n}`, { padding });
  }, padding);
  await advance(page, outage / 2);
  const during = await page.evaluate((from) => window.ebbFetches.slice(from), earlier);
  down = false;
  await advance(page, 2 * retry.max, {
    done: () => page.evaluate(() => window.ebbSdk.status().queued === 0),
  });
  const names = range('Outage', 1, 45);
  const user = await waitForUser(collector, 'outage-user', (u) => tracked(u).includes('Outage 45'));

  const attempts = during.filter((attempt) => attempt.at - during[0].at <= outage);
  const gaps = attempts.slice(1).map((attempt, n) => attempt.at - attempts[n].at);
  for (const [n, gap] of gaps.entries()) {
    const full = Math.min(retry.base * 2 ** n, retry.max);
    assert.ok(gap >= full / 2, `retry ${n + 1} came ${gap} ms after the one before, under ${full / 2}`);
  }
  const most = scheduleWithin(outage, retry, (full) => full / 2).length;
  // Each retry may start up to one step of the fake clock late.
  const fewest = scheduleWithin(outage, retry, (full) => full + 1000).length;
  assert.ok(attempts.length <= most, `${attempts.length} attempts in 5 minutes, at most ${most} allowed`);
  assert.ok(attempts.length >= fewest, `${attempts.length} attempts in 5 minutes, at least ${fewest} due`);
  const delivered = names.filter((name) => tracked(user).includes(name));
  const missing = names.length - delivered.length;
  const reported = user.events.reduce((sum, event) => sum + (event.context?.dropped ?? 0), 0);
  assert.ok(missing > 0, 'the outage filled the queue past maxQueueBytes');
  assert.equal(reported, missing, 'context.dropped counts every message the bound dropped');
  assert.ok(delivered.includes('Outage 45'), 'the newest message stays');
  const all = await page.evaluate(() => window.ebbFetches.map((f) => f.ids));
  assertEachOnce({ user, names: delivered, requests, attempts: all });
  assert.deepEqual(await faults(ctx, page), []);
  await ctx.close();
});

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

test('the clock jumping back an hour, with a batch in flight and again with a retry due, delivers everything once and soon', async () => {
  const ctx = await context(noteBatchFetches);
  let hold = null;
  const requests = await recordBatches(ctx, () => hold?.promise);
  await ctx.clock.install();
  const page = await openFixture(ctx, collector);
  await start(page, 'clock-user');
  await page.clock.pauseAt(Date.now() + 1000);
  const jumpBack = async () => {
    const now = await page.evaluate(() => Date.now());
    await page.clock.setSystemTime(now - 3_600_000);
  };
  // Each group of calls a little later than the one before, by the page's clock.
  const track = async (names) => {
    await page.clock.runFor(200);
    await page.evaluate(async (names) => {
      for (const name of names) await window.ebbSdk.track(name);
    }, names);
  };
  hold = deferred();

  await page.evaluate(async () => {
    for (const n of [1, 2, 3]) await window.ebbSdk.track(`Before ${n}`);
    window.ebbFlushed = window.ebbSdk.flush().then(() => 'sent', (error) => error.message);
  });
  await until(() => requests.some((r) => r.messages.some((m) => m.event === 'Before 1')), 'the batch to fly');
  await track(['Queued 1', 'Queued 2']);
  await jumpBack();
  await track(['After first jump']);
  const held = hold;
  hold = null;
  held.resolve({ status: 503, body: '{"error":"unavailable","message":"try later"}' });
  const flushed = await page.evaluate(() => window.ebbFlushed);
  await jumpBack();
  await track(['After second jump']);
  await advance(page, 5000, {
    step: 250,
    done: () => page.evaluate(() => window.ebbSdk.status().queued === 0),
  });
  const names = [
    ...range('Before', 1, 3), ...range('Queued', 1, 2), 'After first jump', 'After second jump',
  ];
  const user = await waitForUser(
    collector, 'clock-user', (u) => names.every((name) => tracked(u).includes(name)), 5000,
  );

  assert.equal(flushed, 'ebb: the collector answered 503: try later');
  const sent = requests.flatMap((request) =>
    request.messages.map((message) => ({ ...message, sentAt: request.body.sentAt })),
  );
  for (const message of sent) {
    assert.match(message.timestamp, ISO, `${message.event} has an ISO timestamp`);
    assert.match(message.sentAt, ISO);
    assert.equal(new Date(message.timestamp).toISOString(), message.timestamp);
  }
  const stored = names.map((name) => user.events.find((event) => event.event === name));
  for (const [n, event] of stored.entries()) {
    const at = Date.parse(event.timestamp);
    assert.ok(at <= Date.parse(event.receivedAt), `${event.event} is not placed in the future`);
    if (n > 0) {
      const before = stored[n - 1];
      assert.ok(at >= Date.parse(before.timestamp), `${event.event} is stored after ${before.event}`);
    }
  }
  const attempts = await page.evaluate(() => window.ebbFetches.map((f) => f.ids));
  assertEachOnce({ user, names, requests, attempts });
  assert.deepEqual(await faults(ctx, page), []);
  await ctx.close();
});
