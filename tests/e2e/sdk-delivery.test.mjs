// The SDK's delivery in headless Chromium against a real collector: a reload keeps the
// queue, offline then online delivers exactly once, 500 and 429 are retried with the same
// message ids, a pagehide flush arrives, and two tabs never send the same message.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, startCollector, watchPageErrors } from './harness.mjs';
import {
  deliveredIds,
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

async function context() {
  const context = await browser.newContext();
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
