// The SDK's delivery in headless Chromium against a real collector: a reload keeps the
// queue, offline then online delivers exactly once, 500 and 429 are retried with the same
// message ids, the interval flushes, a pagehide or hidden-page flush arrives within the
// browser's keepalive budget (and by beacon past it), and two tabs never send the same
// message, also when both could adopt a closed tab's queue.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, startCollector, watchPageErrors } from './harness.mjs';
import {
  FIXTURE,
  deliveredIds,
  openFixture,
  recordBatches,
  serveFixture,
  startRelay,
  tracked,
  unreachableHost,
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

async function context() {
  const context = await browser.newContext();
  // An unreachable host is a loopback origin other than the page's, which Chromium's Local
  // Network Access lets a page try to reach only with this permission.
  await context.grantPermissions(['local-network-access']);
  await serveFixture(context, collector);
  return context;
}

/** Loads the SDK with consent granted and identifies as `user`. */
async function start(page, user, options = {}) {
  await page.evaluate(
    async ({ key, user, options }) => {
      const ebb = window.ebbSdk;
      await ebb.load(key, options);
      await ebb.consent.grant();
      await ebb.identify(user);
    },
    { key, user, options },
  );
}

/** What requests outliving a page may carry in all, in Chromium as in the Fetch standard. */
const KEEPALIVE_BUDGET = 64 * 1024;

/**
 * Runs in every page: notes each batch the SDK hands to `fetch` or `sendBeacon` in
 * `localStorage['test.sent']` (which outlives the page), as `{via, keepalive, bytes, ids,
 * at, taken}`. While `window.ebbHoldKeepalive` is set, a keepalive `fetch` never leaves
 * the page, as in a browser without keepalive; while `window.ebbRefusePlain` is set, any
 * other batch `fetch` fails as if the collector were unreachable.
 */
function noteSends() {
  const note = (entry) => {
    const sent = JSON.parse(localStorage.getItem('test.sent') ?? '[]');
    sent.push(entry);
    localStorage.setItem('test.sent', JSON.stringify(sent));
  };
  const ids = (body) => JSON.parse(body).batch.map((message) => message.messageId);
  const realFetch = window.fetch;
  window.fetch = function fetch(input, init) {
    if (!String(input).endsWith('/v1/batch')) return realFetch.call(this, input, init);
    const keepalive = init?.keepalive === true;
    note({ via: 'fetch', keepalive, bytes: init.body.length, ids: ids(init.body), at: Date.now() });
    if (keepalive && window.ebbHoldKeepalive) return new Promise(() => {});
    if (!keepalive && window.ebbRefusePlain) return Promise.reject(new TypeError('Failed to fetch'));
    return realFetch.call(this, input, init);
  };
  const realBeacon = navigator.sendBeacon.bind(navigator);
  navigator.sendBeacon = (url, body) => {
    const taken = realBeacon(url, body);
    note({ via: 'beacon', keepalive: true, bytes: body.length, ids: ids(body), at: Date.now(), taken });
    return taken;
  };
}

/** The sends `noteSends` noted in the pages of the context of `page`, and forgets them. */
function takeSends(page) {
  return page.evaluate(() => {
    const sent = JSON.parse(localStorage.getItem('test.sent') ?? '[]');
    localStorage.removeItem('test.sent');
    return sent;
  });
}

/** Resolves once `check()` holds, polling every 50 ms; fails after `timeout` ms. */
async function until(check, what, timeout = 15_000) {
  const end = Date.now() + timeout;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function trackIds(requests, event) {
  return requests
    .flatMap((request) => request.messages)
    .filter((message) => message.event === event)
    .map((message) => message.messageId);
}

test('a reload keeps the queue and sends it from the next page', async () => {
  const ctx = await context();
  const page = await openFixture(ctx, collector);
  await start(page, 'reload-user', { flushInterval: 600_000 });
  await page.evaluate(() => window.ebbSdk.flush());

  await page.evaluate(() => window.ebbSdk.track('Before reload'));
  // The leaving page cannot send (its requests never leave, as when the tab is killed or
  // the network is gone): the message can only arrive from the queue the reloaded page
  // finds in storage.
  await page.evaluate(() => {
    window.fetch = () => new Promise(() => {});
    navigator.sendBeacon = () => false;
  });
  await page.reload();
  const between = await collector.admin('/admin/v1/users/reload-user');
  await page.waitForFunction(() => window.ebbImported === true);
  await page.evaluate(async (key) => {
    await window.ebbSdk.load(key);
    await window.ebbSdk.flush();
  }, key);
  const user = await waitForUser(collector, 'reload-user', (u) => tracked(u).includes('Before reload'));

  assert.deepEqual(tracked(between.body), []);
  assert.deepEqual(tracked(user), ['Before reload']);
  await ctx.close();
});

test('offline then online delivers every message exactly once', async () => {
  const ctx = await context();
  let offline = false;
  // Requests that a route passes on are sent by the test runner, which offline mode does
  // not reach: the route fails them itself while the browser is offline.
  const requests = await recordBatches(ctx, () => (offline ? 'abort' : undefined));
  const page = await openFixture(ctx, collector);
  await start(page, 'offline-user', { retry: { baseDelay: 100, maxDelay: 400 } });
  await page.evaluate(() => window.ebbSdk.flush());

  offline = true;
  await ctx.setOffline(true);
  const offlineFlush = await page.evaluate(async () => {
    for (const n of [1, 2, 3]) await window.ebbSdk.track(`Offline ${n}`);
    return window.ebbSdk.flush().then(() => 'sent', (error) => error.message);
  });
  offline = false;
  await ctx.setOffline(false);
  const user = await waitForUser(collector, 'offline-user', (u) => tracked(u).length === 3);
  await page.evaluate(() => window.ebbSdk.flush());

  assert.match(offlineFlush, /^ebb: could not reach the collector/);
  assert.deepEqual(tracked(user).sort(), ['Offline 1', 'Offline 2', 'Offline 3']);
  const sentOrder = requests
    .filter((request) => request.status === 200)
    .flatMap((request) => request.messages.map((m) => m.event))
    .filter((event) => event?.startsWith('Offline'));
  assert.deepEqual(sentOrder, ['Offline 1', 'Offline 2', 'Offline 3'], 'delivered in order');
  const delivered = deliveredIds(requests);
  assert.equal(delivered.length, new Set(delivered).size, 'no message delivered twice');
  for (const n of [1, 2, 3]) assert.equal(new Set(trackIds(requests, `Offline ${n}`)).size, 1);
  await ctx.close();
});

test('500 and 429 answers are retried with the same message ids', async () => {
  const ctx = await context();
  let tracking = false;
  let refusals = 0;
  const requests = await recordBatches(ctx, (request) => {
    if (!tracking || !request.messages.some((m) => m.event === 'Retried')) return undefined;
    refusals += 1;
    if (refusals === 1) return { status: 500, body: '{"error":"internal","message":"boom"}' };
    if (refusals === 2) return { status: 429, headers: { 'retry-after': '1' }, body: '{}' };
    return undefined;
  });
  const page = await openFixture(ctx, collector);
  await start(page, 'retry-user', { retry: { baseDelay: 100, maxDelay: 200 } });
  await page.evaluate(() => window.ebbSdk.flush());
  tracking = true;

  const firstFlush = await page.evaluate(async () => {
    await window.ebbSdk.track('Retried');
    return window.ebbSdk.flush().then(() => 'sent', (error) => error.message);
  });
  const user = await waitForUser(collector, 'retry-user', (u) => tracked(u).includes('Retried'));

  assert.equal(firstFlush, 'ebb: the collector answered 500: boom');
  assert.deepEqual(tracked(user), ['Retried']);
  const attempts = requests.filter((r) => r.messages.some((m) => m.event === 'Retried'));
  assert.deepEqual(attempts.map((r) => r.status), [500, 429, 200]);
  assert.equal(new Set(trackIds(requests, 'Retried')).size, 1);
  await ctx.close();
});

test('after a 429 with Retry-After: 2 nothing is sent for 2 s, also when calls reach flushAt or flush() is called', async () => {
  const ctx = await context();
  let refuseNext = false;
  let refusedAt = null;
  const arrivals = [];
  const requests = await recordBatches(ctx, () => {
    arrivals.push(Date.now());
    if (!refuseNext) return undefined;
    refuseNext = false;
    refusedAt = Date.now();
    return { status: 429, headers: { 'retry-after': '2' }, body: '{"error":"rate_limited","message":"slow down"}' };
  });
  const page = await openFixture(ctx, collector);
  // Without the header the backoff would retry within 50 ms.
  await start(page, 'retry-after-user', { flushAt: 1, retry: { baseDelay: 50, maxDelay: 50 } });
  await page.evaluate(() => window.ebbSdk.flush());
  refuseNext = true;

  const refused = await page.evaluate(async () => {
    await window.ebbSdk.track('Refused once');
    return window.ebbSdk.flush().then(() => 'sent', (error) => error.message);
  });
  // Calls made while the retry waits reach flushAt, which would send at once otherwise,
  // and an explicit flush() would go ahead of a backoff.
  const meanwhile = await page.evaluate(async () => {
    for (const n of [1, 2, 3]) {
      await window.ebbSdk.track(`Meanwhile ${n}`);
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    const flushed = window.ebbSdk.flush().then(() => Date.now(), (error) => error.message);
    return { calledAt: Date.now(), flushedAt: await flushed };
  });
  const user = await waitForUser(collector, 'retry-after-user', (u) => tracked(u).length === 4);

  const after429 = arrivals.filter((at) => at > refusedAt);
  const waited = after429[0] - refusedAt;
  assert.equal(refused, 'ebb: the collector answered 429: slow down');
  assert.ok(waited >= 1950, `the next request went ${waited} ms after the 429`);
  assert.ok(waited < 6000, `the retry came ${waited} ms after the 429, late`);
  assert.equal(typeof meanwhile.flushedAt, 'number', `flush() resolved: ${meanwhile.flushedAt}`);
  assert.ok(meanwhile.flushedAt - refusedAt >= 1950, 'flush() resolved once the wait was over');
  const retried = requests.filter((r) => r.messages.some((m) => m.event === 'Refused once'));
  assert.deepEqual(retried.map((r) => r.status), [429, 200]);
  assert.equal(new Set(trackIds(requests, 'Refused once')).size, 1);
  assert.deepEqual(tracked(user), ['Refused once', 'Meanwhile 1', 'Meanwhile 2', 'Meanwhile 3']);
  await ctx.close();
});

test('a 400 answer drops the batch instead of retrying it', async () => {
  const ctx = await context();
  const requests = await recordBatches(ctx, (request) =>
    request.messages.some((m) => m.event === 'Refused')
      ? { status: 400, body: '{"error":"invalid_body","message":"no"}' }
      : undefined,
  );
  const page = await openFixture(ctx, collector);
  await start(page, 'refused-user', { retry: { baseDelay: 50, maxDelay: 50 } });

  const outcome = await page.evaluate(async () => {
    await window.ebbSdk.track('Refused');
    const first = await window.ebbSdk.flush().then(() => 'sent', (error) => error.message);
    await window.ebbSdk.track('Next');
    await window.ebbSdk.flush();
    return first;
  });
  await waitForUser(collector, 'refused-user', (u) => tracked(u).includes('Next'));

  assert.equal(outcome, 'ebb: the collector answered 400: no');
  assert.equal(requests.filter((r) => r.messages.some((m) => m.event === 'Refused')).length, 1);
  await ctx.close();
});

test('a pagehide flush arrives', async () => {
  const ctx = await context();
  const page = await openFixture(ctx, collector);
  await start(page, 'pagehide-user', { flushInterval: 600_000 });
  await page.evaluate(() => window.ebbSdk.flush());

  await page.evaluate(() => window.ebbSdk.track('Leaving'));
  const before = await collector.admin('/admin/v1/users/pagehide-user');
  // The next page has no SDK: only the flush of the page going away can deliver it.
  await page.goto('about:blank');
  const user = await waitForUser(collector, 'pagehide-user', (u) => tracked(u).includes('Leaving'));

  assert.deepEqual(tracked(before.body), []);
  assert.deepEqual(tracked(user), ['Leaving']);
  await ctx.close();
});

test('two tabs do not send the same message twice', async () => {
  const ctx = await context();
  const requests = await recordBatches(ctx);
  const first = await openFixture(ctx, collector);
  await start(first, 'tabs-user', { flushAt: 3 });
  const second = await openFixture(ctx, collector);
  await start(second, 'tabs-user', { flushAt: 3 });
  const firstErrors = watchPageErrors(first);
  const secondErrors = watchPageErrors(second);

  const burst = (page, tab) =>
    page.evaluate(async (tab) => {
      for (let n = 0; n < 10; n += 1) await window.ebbSdk.track(`Tab ${tab} event ${n}`);
      await window.ebbSdk.flush();
    }, tab);
  await Promise.all([burst(first, 'A'), burst(second, 'B')]);
  await Promise.all([first, second].map((page) => page.evaluate(() => window.ebbSdk.flush())));
  const user = await waitForUser(collector, 'tabs-user', (u) => tracked(u).length === 20);

  const sent = requests.flatMap((request) => request.messages.map((m) => m.messageId));
  assert.equal(sent.length, new Set(sent).size, 'no message id was sent twice');
  assert.equal(tracked(user).length, 20);
  const anonymous = await Promise.all(
    [first, second].map((page) => page.evaluate(() => localStorage.getItem('ebb.anon'))),
  );
  assert.equal(anonymous[0], anonymous[1], 'the tabs share one visitor id');
  assert.deepEqual([...firstErrors, ...secondErrors], []);
  await ctx.close();
});

test('a closed tab’s queue is adopted by one of two tabs opening at once: each of its messages arrives once', async () => {
  const ctx = await context();
  const tabA = await openFixture(ctx, collector);
  const errors = [watchPageErrors(tabA)];
  // Tab A's collector is unreachable: nothing listens where it sends. (A route would not
  // do: the requests a page sends as it closes reach the network unrouted.)
  const host = await unreachableHost();
  await start(tabA, 'adopt-user', {
    host,
    flushAt: 1000,
    flushInterval: 600_000,
    retry: { baseDelay: 600_000, maxDelay: 600_000 },
  });
  const events = Array.from({ length: 8 }, (_, n) => `Orphan ${n + 1}`);
  const failed = await tabA.evaluate(async (events) => {
    for (const event of events) await window.ebbSdk.track(event);
    return window.ebbSdk.flush().then(() => 'sent', (error) => error.message);
  }, events);
  await tabA.close();
  // What tab A left: read from a page whose SDK is never loaded, so it adopts nothing.
  const look = await openFixture(ctx, collector);
  const orphaned = await look.evaluate(() =>
    Object.keys(localStorage)
      .filter((name) => name.startsWith('ebb.queue.'))
      .flatMap((name) => localStorage.getItem(name).split('\n').slice(1))
      .map((line) => JSON.parse(line).messageId),
  );
  await look.close();

  const sent = [];
  const openTab = async (name) => {
    const page = await ctx.newPage();
    errors.push(watchPageErrors(page));
    await page.route(
      (url) => url.pathname === '/v1/batch',
      async (route) => {
        const body = JSON.parse(route.request().postData());
        const entry = { tab: name, ids: body.batch.map((m) => m.messageId), status: null };
        sent.push(entry);
        const response = await route.fetch();
        entry.status = response.status();
        await route.fulfill({ response });
      },
    );
    await page.goto(`${collector.base}${FIXTURE}`);
    await page.waitForFunction(() => window.ebbImported === true);
    return page;
  };
  const tabs = await Promise.all([openTab('B'), openTab('C')]);
  await Promise.all(
    tabs.map((page) => page.evaluate((key) => window.ebbSdk.load(key, { flushInterval: 200 }), key)),
  );
  const delivered = () => new Set(sent.filter((e) => e.status === 200).flatMap((e) => e.ids));
  await until(() => orphaned.every((id) => delivered().has(id)), 'every orphaned message');
  const user = await waitForUser(collector, 'adopt-user', (u) => tracked(u).length === 8);

  assert.match(failed, /^ebb: could not reach the collector/);
  assert.equal(orphaned.length, 10, 'the consent record, the identify and 8 tracks');
  const senders = orphaned.map((id) => [
    ...new Set(sent.filter((entry) => entry.ids.includes(id)).map((entry) => entry.tab)),
  ]);
  for (const tabsThatSent of senders) {
    assert.equal(tabsThatSent.length, 1, `sent by one tab only, not by ${tabsThatSent}`);
  }
  assert.equal(new Set(senders.flat()).size, 1, 'one tab adopted the whole queue');
  assert.deepEqual(tracked(user).sort(), events.slice().sort());
  assert.deepEqual(errors.flat(), []);
  await ctx.close();
});

test('with flushAt far off, a single track() is sent once flushInterval has passed, without flush()', async () => {
  const ctx = await context();
  await ctx.addInitScript(noteSends);
  const page = await openFixture(ctx, collector);

  // Opt-out mode: tracking runs from load, so no grant queues a message earlier.
  const calledAt = await page.evaluate(async (key) => {
    const ebb = window.ebbSdk;
    await ebb.load(key, { consent: { mode: 'opt-out' }, flushAt: 100, flushInterval: 1500 });
    await ebb.identify('interval-user');
    const at = Date.now();
    await ebb.track('Waited');
    return at;
  }, key);
  const user = await waitForUser(collector, 'interval-user', (u) => tracked(u).includes('Waited'));
  const sends = await takeSends(page);

  const id = user.events.find((event) => event.event === 'Waited').messageId;
  const carrying = sends.filter((send) => send.ids.includes(id));
  assert.equal(carrying.length, 1, 'one request, no flush() and no retry');
  const waited = carrying[0].at - calledAt;
  assert.ok(waited >= 1400, `sent ${waited} ms after the call, not at once`);
  assert.equal(carrying[0].keepalive, false);
  await ctx.close();
});

test('a page turning hidden sends what waits with keepalive, without flush()', async () => {
  const ctx = await context();
  await ctx.addInitScript(noteSends);
  const page = await openFixture(ctx, collector);
  await start(page, 'hidden-user', { flushAt: 100, flushInterval: 600_000 });
  await page.evaluate(() => window.ebbSdk.flush());

  await page.evaluate(async () => {
    await window.ebbSdk.track('Hidden');
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
    document.dispatchEvent(new Event('visibilitychange', { bubbles: true }));
  });
  const user = await waitForUser(collector, 'hidden-user', (u) => tracked(u).includes('Hidden'));
  const sends = await takeSends(page);

  const id = user.events.find((event) => event.event === 'Hidden').messageId;
  const carrying = sends.filter((send) => send.ids.includes(id));
  assert.deepEqual(
    carrying.map((send) => [send.via, send.keepalive]),
    [['fetch', true]],
    'one keepalive request, which only the page-leave flush makes',
  );
  await ctx.close();
});

/**
 * Queues `count` tracks of about 1.6 KB each in `page` while the collector is out of
 * reach of every request but those of a page leaving (so that they all wait, whatever
 * `flushBytes` says); returns their event names.
 */
async function queueLarge(page, count) {
  const events = Array.from({ length: count }, (_, n) => `Large ${n + 1}`);
  await page.evaluate(async (events) => {
    window.ebbRefusePlain = true;
    for (const event of events) await window.ebbSdk.track(event, { pad: 'x'.repeat(1500) });
  }, events);
  return events;
}

/** Options that keep every message waiting until the page leaves, once a flush failed. */
const WAITING = {
  flushAt: 1000,
  flushInterval: 600_000,
  retry: { baseDelay: 600_000, maxDelay: 600_000 },
};

test('over 64 KiB queued at pagehide leaves in keepalive batches within the budget, the rest from the next page, each message once', async () => {
  for (const flushBytes of [16_000, 512_000]) {
    const relay = await startRelay(collector);
    const ctx = await context();
    await ctx.addInitScript(noteSends);
    const page = await openFixture(ctx, relay);
    const user = `leave-${flushBytes}-user`;
    const options = { ...WAITING, flushBytes };
    await start(page, user, options);
    await page.evaluate(() => window.ebbSdk.flush());
    const events = await queueLarge(page, 60);
    await takeSends(page);

    // The next page, in the same tab, is where the SDK's own sends are read back before its
    // SDK loads: what was noted meanwhile was sent by the page going away.
    await page.goto(`${relay.base}${FIXTURE}`);
    await page.waitForFunction(() => window.ebbImported === true);
    const left = await takeSends(page);
    const keepalive = left.filter((send) => send.via === 'fetch' && send.keepalive);
    const bytes = keepalive.reduce((sum, send) => sum + send.bytes, 0);
    const leftIds = keepalive.flatMap((send) => send.ids);
    const relayed = () => new Set(relay.requests.flatMap((request) => request.ids ?? []));
    await until(() => leftIds.every((id) => relayed().has(id)), 'the leaving page’s batches');
    await page.evaluate(
      async ({ key, options }) => {
        await window.ebbSdk.load(key, options);
        await window.ebbSdk.flush();
      },
      { key, options },
    );
    const stored = await waitForUser(collector, user, (u) => tracked(u).length === events.length);

    const what = `flushBytes ${flushBytes}`;
    for (const send of left) assert.ok(send.bytes <= KEEPALIVE_BUDGET, `${what}: ${send.bytes} bytes`);
    assert.ok(bytes <= KEEPALIVE_BUDGET, `${what}: ${bytes} bytes in flight`);
    assert.ok(bytes > KEEPALIVE_BUDGET - 4000, `${what}: the budget is used, ${bytes} bytes`);
    if (flushBytes < KEEPALIVE_BUDGET / 2) {
      assert.ok(keepalive.length >= 4, `${what}: cut into ${keepalive.length} requests`);
    }
    assert.ok(
      left.filter((send) => send.via === 'beacon').every((send) => !send.taken),
      `${what}: Chromium counts a beacon against the same budget`,
    );
    assert.deepEqual(tracked(stored).sort(), events.slice().sort(), `${what}: each once`);
    await ctx.close();
    await relay.close();
  }
});

test('past the keepalive budget a leaving page hands batches within 64 KiB to sendBeacon, and the next page does not send them again', async () => {
  const relay = await startRelay(collector);
  const ctx = await context();
  await ctx.addInitScript(noteSends);
  const page = await openFixture(ctx, relay);
  const options = WAITING;
  await start(page, 'beacon-user', options);
  await page.evaluate(() => window.ebbSdk.flush());
  const events = await queueLarge(page, 60);
  await takeSends(page);

  // Keepalive requests that never leave the page use up the SDK's budget but not the
  // browser's, which leaves the beacons room: as in a browser without keepalive `fetch`.
  await page.evaluate(() => {
    window.ebbHoldKeepalive = true;
  });
  await page.goto(`${relay.base}${FIXTURE}`);
  await page.waitForFunction(() => window.ebbImported === true);
  const left = await takeSends(page);
  const beacons = left.filter((send) => send.via === 'beacon');
  const beaconIds = beacons.flatMap((send) => send.ids);
  const relayed = () => new Set(relay.requests.flatMap((request) => request.ids ?? []));
  await until(() => beaconIds.every((id) => relayed().has(id)), 'the beacons');
  const before = relay.requests.length;
  await page.evaluate(
    async ({ key, options }) => {
      await window.ebbSdk.load(key, options);
      await window.ebbSdk.flush();
    },
    { key, options },
  );
  const stored = await waitForUser(collector, 'beacon-user', (u) => tracked(u).length === 60);
  const resent = new Set(relay.requests.slice(before).flatMap((request) => request.ids ?? []));

  assert.ok(beacons.length > 0 && beacons.every((send) => send.taken), JSON.stringify(beacons));
  for (const send of left) assert.ok(send.bytes <= KEEPALIVE_BUDGET, `${send.bytes} bytes`);
  const held = left.filter((send) => send.via === 'fetch').flatMap((send) => send.ids);
  assert.ok(held.every((id) => resent.has(id)), 'what never left goes from the next page');
  assert.deepEqual(beaconIds.filter((id) => resent.has(id)), [], 'a taken beacon is not sent again');
  assert.deepEqual(tracked(stored).sort(), events.slice().sort());
  await ctx.close();
  await relay.close();
});
