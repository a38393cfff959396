// The SDK's consent behaviour in headless Chromium against a real collector: nothing before
// consent, replay on grant, drop on deny, erase on withdrawal, GPC, storage that throws,
// and the inline snippet (also under a strict Content-Security-Policy).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, startCollector, watchPageErrors } from './harness.mjs';
import {
  SNIPPET_FIXTURE,
  countStorageWrites,
  openFixture,
  recordBatches,
  serveFixture,
  serveSnippetFixture,
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

async function context({ gpc = false } = {}) {
  const context = await browser.newContext();
  if (gpc) {
    await context.addInitScript(() => {
      Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true });
    });
  }
  await serveFixture(context, collector);
  return context;
}

test('before consent nothing is sent and nothing is written to storage or cookies', async () => {
  const ctx = await context();
  await countStorageWrites(ctx);
  const requests = await recordBatches(ctx);
  const page = await openFixture(ctx, collector);
  const errors = watchPageErrors(page);

  const state = await page.evaluate(async (key) => {
    const ebb = window.ebbSdk;
    await ebb.load(key, { flushInterval: 1, flushAt: 1 });
    await ebb.identify('before-consent', { email: 'x@example.com' });
    await ebb.track('Viewed');
    await ebb.page('Home');
    await ebb.flush();
    await new Promise((resolve) => setTimeout(resolve, 200));
    return {
      consent: ebb.consent.state(),
      writes: window.ebbStorageWrites,
      local: localStorage.length,
      session: sessionStorage.length,
      cookie: document.cookie,
    };
  }, key);

  assert.equal(requests.length, 0, 'no batch request');
  assert.equal(state.writes, 0, 'no storage or cookie write');
  assert.deepEqual([state.local, state.session, state.cookie], [0, 0, '']);
  assert.deepEqual(state.consent, {
    mode: 'opt-in',
    status: 'pending',
    categories: { analytics: false },
    objection: false,
  });
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('a grant replays held calls with their original timestamps', async () => {
  const ctx = await context();
  const requests = await recordBatches(ctx);
  const page = await openFixture(ctx, collector);

  const changes = await page.evaluate(async (key) => {
    const ebb = window.ebbSdk;
    const seen = [];
    ebb.on('consent', (state) => seen.push(state.status));
    await ebb.load(key);
    await ebb.identify('replay-user', { plan: 'pro' });
    await ebb.track('Held');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await ebb.consent.grant('analytics');
    await ebb.flush();
    return seen;
  }, key);
  const user = await waitForUser(collector, 'replay-user', (u) => tracked(u).includes('Held'));

  assert.deepEqual(changes, ['granted']);
  const held = user.events.find((event) => event.event === 'Held');
  const grant = user.events.find((event) => event.event === 'Segment Consent Preference Updated');
  const gap = Date.parse(grant.timestamp) - Date.parse(held.timestamp);
  assert.ok(gap >= 900, `the held call keeps its own time (${gap} ms before the grant)`);
  assert.deepEqual(user.traits, { plan: 'pro' });
  for (const message of requests.flatMap((request) => request.messages)) {
    assert.deepEqual(message.context.consent.categoryPreferences, { analytics: true });
  }
  await ctx.close();
});

test('held calls pushed out by maxPendingCalls are counted in context.dropped after the grant', async () => {
  const ctx = await context();
  const requests = await recordBatches(ctx);
  const page = await openFixture(ctx, collector);

  await page.evaluate(async (key) => {
    const ebb = window.ebbSdk;
    await ebb.load(key, { maxPendingCalls: 2 });
    for (const event of ['Held 1', 'Held 2', 'Held 3', 'Held 4']) await ebb.track(event);
    await ebb.consent.grant();
    await ebb.identify('held-bound-user');
    await ebb.flush();
  }, key);
  await waitForUser(collector, 'held-bound-user', () => true);

  const messages = requests.flatMap((request) => request.messages);
  assert.deepEqual(
    messages.filter((m) => m.event?.startsWith('Held')).map((m) => m.event),
    ['Held 3', 'Held 4'],
  );
  assert.equal(messages[0].context.dropped, 2, 'the two pushed out, on the first message sent');
  assert.ok(messages.slice(1).every((m) => m.context.dropped === undefined));
  await ctx.close();
});

test('a deny drops the held calls; a later grant does not bring them back', async () => {
  const ctx = await context();
  const requests = await recordBatches(ctx);
  const page = await openFixture(ctx, collector);

  await page.evaluate(async (key) => {
    const ebb = window.ebbSdk;
    await ebb.load(key);
    await ebb.identify('deny-user');
    await ebb.track('Dropped');
    await ebb.consent.deny('analytics');
    await ebb.flush();
    await ebb.consent.grant('analytics');
    await ebb.identify('deny-user');
    await ebb.track('After grant');
    await ebb.flush();
  }, key);
  const user = await waitForUser(collector, 'deny-user', (u) => tracked(u).includes('After grant'));

  assert.deepEqual(tracked(user), ['After grant']);
  const sent = requests.flatMap((request) => request.messages.map((m) => m.event ?? m.type));
  assert.ok(!sent.includes('Dropped'));
  await ctx.close();
});

test('withdrawal wipes the browser storage and records the withdrawal once', async () => {
  const ctx = await context();
  const requests = await recordBatches(ctx);
  const page = await openFixture(ctx, collector);

  const keys = await page.evaluate(async (key) => {
    const ebb = window.ebbSdk;
    await ebb.load(key);
    await ebb.consent.grant(['analytics']);
    await ebb.identify('withdraw-user', { email: 'w@example.com' });
    await ebb.track('Before withdrawal');
    await ebb.flush();
    const before = Object.keys(localStorage).filter((name) => name.startsWith('ebb.'));
    await ebb.consent.withdraw();
    await ebb.track('After withdrawal');
    await ebb.flush();
    const left = [...Object.keys(localStorage), ...Object.keys(sessionStorage)];
    return { before, left, state: ebb.consent.state().status };
  }, key);
  await waitForUser(collector, 'withdraw-user', (u) => tracked(u).includes('Before withdrawal'));

  assert.ok(keys.before.includes('ebb.anon') && keys.before.includes('ebb.user'));
  assert.deepEqual(keys.left.filter((name) => name.startsWith('ebb.')), []);
  assert.equal(keys.state, 'denied');
  const messages = requests.flatMap((request) => request.messages);
  const withdrawals = messages.filter(
    (m) => m.event === 'Segment Consent Preference Updated' && !m.context.consent.categoryPreferences.analytics,
  );
  assert.equal(withdrawals.length, 1);
  assert.equal(withdrawals[0].userId, 'withdraw-user');
  assert.ok(!messages.some((m) => m.event === 'After withdrawal'));
  await ctx.close();
});

test('Global Privacy Control is an objection: nothing is sent until an explicit grant', async () => {
  const ctx = await context({ gpc: true });
  const requests = await recordBatches(ctx);
  const page = await openFixture(ctx, collector);

  const before = await page.evaluate(async (key) => {
    const ebb = window.ebbSdk;
    await ebb.load(key, { consent: { mode: 'opt-out' }, flushAt: 1 });
    await ebb.identify('gpc-user');
    await ebb.track('Ignored');
    await ebb.flush();
    return { state: ebb.consent.state(), local: localStorage.length };
  }, key);
  const sentBefore = requests.length;
  await page.evaluate(async () => {
    await window.ebbSdk.consent.grant();
    await window.ebbSdk.identify('gpc-user');
    await window.ebbSdk.track('Explicitly allowed');
    await window.ebbSdk.flush();
  });
  const user = await waitForUser(collector, 'gpc-user', (u) => tracked(u).length > 0);

  assert.equal(sentBefore, 0);
  assert.equal(before.local, 0);
  assert.equal(before.state.status, 'denied');
  assert.equal(before.state.objection, true);
  assert.deepEqual(tracked(user), ['Explicitly allowed']);
  const messages = requests.flatMap((request) => request.messages);
  assert.ok(messages.length > 0 && messages.every((m) => m.context.gpc === true));
  await ctx.close();
});

test('Global Privacy Control in opt-in mode: nothing before a choice, a grant sends the held calls marked gpc, a deny sends and stores nothing', async () => {
  const quietly = async (page, user, decide) => page.evaluate(async ({ key, user, decide }) => {
    const ebb = window.ebbSdk;
    await ebb.load(key, { flushAt: 1, flushInterval: 1 });
    await ebb.identify(user, { plan: 'pro' });
    await ebb.track('Held under GPC');
    await ebb.flush();
    await new Promise((resolve) => setTimeout(resolve, 200));
    const undecided = {
      state: ebb.consent.state(),
      writes: window.ebbStorageWrites,
      stored: localStorage.length + sessionStorage.length,
      cookie: document.cookie,
    };
    if (decide === 'deny') await ebb.consent.deny();
    await ebb.flush();
    await new Promise((resolve) => setTimeout(resolve, 200));
    const decided = { writes: window.ebbStorageWrites, stored: localStorage.length + sessionStorage.length };
    return { undecided, decided };
  }, { key, user, decide });
  const open = async () => {
    const ctx = await context({ gpc: true });
    await countStorageWrites(ctx);
    const requests = await recordBatches(ctx);
    const page = await openFixture(ctx, collector);
    return { ctx, requests, page, errors: watchPageErrors(page) };
  };

  const granting = await open();
  const beforeGrant = await quietly(granting.page, 'gpc-opt-in-user', null);
  const sentBeforeGrant = granting.requests.length;
  await granting.page.evaluate(async () => {
    await window.ebbSdk.consent.grant();
    await window.ebbSdk.flush();
  });
  const user = await waitForUser(collector, 'gpc-opt-in-user', (u) => tracked(u).includes('Held under GPC'));
  const denying = await open();
  const denied = await quietly(denying.page, 'gpc-denied-user', 'deny');
  const deniedUser = await collector.admin('/admin/v1/users/gpc-denied-user');

  assert.deepEqual(beforeGrant.undecided.state,
    { mode: 'opt-in', status: 'pending', categories: { analytics: false }, objection: true });
  assert.equal(sentBeforeGrant, 0, 'no batch request before the grant');
  assert.deepEqual([beforeGrant.undecided.writes, beforeGrant.undecided.stored, beforeGrant.undecided.cookie],
    [0, 0, ''], 'no storage or cookie write before the grant');
  assert.deepEqual(tracked(user), ['Held under GPC'], 'the grant replays the held calls');
  assert.deepEqual(user.traits, { plan: 'pro' });
  const messages = granting.requests.flatMap((request) => request.messages);
  assert.ok(messages.length >= 3, 'the consent record, the identify and the track');
  assert.ok(messages.every((m) => m.context.gpc === true), 'every message is marked gpc');
  assert.ok(messages.every((m) => m.context.consent.categoryPreferences.analytics === true));
  assert.equal(denying.requests.length, 0, 'a deny sends nothing, not even a consent record');
  assert.deepEqual([denied.decided.writes, denied.decided.stored], [0, 0], 'a deny stores nothing');
  assert.equal(deniedUser.status, 404);
  assert.deepEqual([...granting.errors, ...denying.errors], []);
  await granting.ctx.close();
  await denying.ctx.close();
});

test('Do Not Track counts as an objection only with honorDoNotTrack', async () => {
  const ctx = await context();
  await ctx.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, 'doNotTrack', { get: () => '1' });
  });
  const requests = await recordBatches(ctx);
  const open = async () => {
    const page = await openFixture(ctx, collector);
    await page.evaluate(() => localStorage.clear());
    return page;
  };

  const honoured = await open();
  const refused = await honoured.evaluate(async (key) => {
    const ebb = window.ebbSdk;
    await ebb.load(key, { consent: { mode: 'opt-out', honorDoNotTrack: true }, flushAt: 1 });
    await ebb.identify('dnt-honoured-user');
    await ebb.track('Ignored');
    await ebb.flush();
    return { signal: navigator.doNotTrack, state: ebb.consent.state(), local: localStorage.length };
  }, key);
  const sentWhileRefused = requests.length;
  await honoured.evaluate(async () => {
    await window.ebbSdk.consent.grant();
    await window.ebbSdk.identify('dnt-honoured-user');
    await window.ebbSdk.track('Explicitly allowed');
    await window.ebbSdk.flush();
  });
  await honoured.close();
  const ignored = await open();
  const tracking = await ignored.evaluate(async (key) => {
    const ebb = window.ebbSdk;
    await ebb.load(key, { consent: { mode: 'opt-out' } });
    await ebb.identify('dnt-ignored-user');
    await ebb.track('Tracked');
    await ebb.flush();
    return ebb.consent.state();
  }, key);
  const honouredUser = await waitForUser(collector, 'dnt-honoured-user', (u) => tracked(u).length > 0);
  const ignoredUser = await waitForUser(collector, 'dnt-ignored-user', (u) => tracked(u).length > 0);

  assert.equal(refused.signal, '1');
  assert.equal(sentWhileRefused, 0, 'nothing sent while the signal objects');
  assert.equal(refused.local, 0, 'nothing stored while the signal objects');
  assert.deepEqual([refused.state.status, refused.state.objection], ['denied', true]);
  assert.deepEqual(tracked(honouredUser), ['Explicitly allowed']);
  assert.deepEqual([tracking.status, tracking.objection], ['granted', false]);
  assert.deepEqual(tracked(ignoredUser), ['Tracked']);
  const messages = requests.flatMap((request) => request.messages);
  assert.ok(messages.every((m) => m.context.gpc === undefined), 'Do Not Track is not GPC');
  await ctx.close();
});

test('storage that throws still leaves a working SDK in memory', async () => {
  for (const [name, breakStorage] of [
    [
      'getter',
      () => {
        for (const storage of ['localStorage', 'sessionStorage']) {
          Object.defineProperty(window, storage, {
            get() {
              throw new DOMException('blocked', 'SecurityError');
            },
          });
        }
      },
    ],
    [
      'setItem',
      () => {
        Storage.prototype.setItem = () => {
          throw new DOMException('full', 'QuotaExceededError');
        };
      },
    ],
  ]) {
    const ctx = await context();
    await ctx.addInitScript(breakStorage);
    const page = await openFixture(ctx, collector);
    const errors = watchPageErrors(page);

    await page.evaluate(async ({ key, user }) => {
      const ebb = window.ebbSdk;
      await ebb.load(key, { debug: true });
      await ebb.consent.grant();
      await ebb.identify(user);
      await ebb.track('Works without storage');
      await ebb.flush();
    }, { key, user: `storage-${name}` });
    const user = await waitForUser(collector, `storage-${name}`, (u) => tracked(u).length === 1);

    assert.deepEqual(tracked(user), ['Works without storage'], name);
    assert.deepEqual(errors, [], name);
    await ctx.close();
  }
});

const SNIPPET_CALLS = (key, user, after = '') => `
  window.ebbCalledAt = Date.now();
  ebb.load(${JSON.stringify(key)}, { host: location.origin });
  ebb.consent.grant('analytics');
  ebb.identify(${JSON.stringify(user)}, { via: 'snippet' });
  ebb.track('First');
  ebb.page('Landing', { section: 'top' });
  ebb.track('Second');
  window.ebbDone = ebb.flush().then(() => 'flushed', (e) => 'failed: ' + e.message);
  ${after}
`;

test('calls made before the module loaded arrive in order with their call time and page', async () => {
  const ctx = await browser.newContext();
  // The page moves on (a single-page app's pushState) right after the calls, and the
  // module arrives 1.5 s later: a replay that took its time or page from the moment it
  // ran would be far off both.
  const moved = "history.pushState({}, '', '/moved-on');";
  await serveSnippetFixture(ctx, collector, SNIPPET_CALLS(key, 'snippet-user', moved));
  let released = null;
  await ctx.route(
    (url) => url.pathname === '/sdk/ebb.min.js',
    async (route) => {
      await new Promise((resolve) => setTimeout(resolve, 1500));
      released = Date.now();
      await route.continue();
    },
  );
  const page = await ctx.newPage();
  const errors = watchPageErrors(page);
  const requests = await recordBatches(ctx);

  await page.goto(`${collector.base}${SNIPPET_FIXTURE}`);
  const done = await page.waitForFunction(() => window.ebbDone).then((handle) => handle.evaluate((p) => p));
  const user = await waitForUser(collector, 'snippet-user', (u) => tracked(u).length === 2);
  const { calledAt, path } = await page.evaluate(() => ({
    calledAt: window.ebbCalledAt,
    path: location.pathname,
  }));

  assert.equal(done, 'flushed');
  assert.equal(path, '/moved-on', 'the page had moved on before the module replayed');
  assert.ok(released - calledAt >= 1400, `the module came ${released - calledAt} ms after the calls`);
  const isConsent = (m) => m.event === 'Segment Consent Preference Updated';
  const activity = user.events.filter((e) => !isConsent(e));
  // Calls made in one millisecond share a timestamp, so the collector's order among them
  // is its own; the order the SDK sent them in is checked on the requests below.
  assert.deepEqual(activity.map((e) => e.event ?? e.name ?? e.type).sort(), ['First', 'Landing', 'Second']);
  for (const event of activity) {
    const at = Date.parse(event.timestamp);
    assert.ok(released - at >= 1000, `stored at the call time, ${released - at} ms before the load`);
  }
  assert.deepEqual(user.traits, { via: 'snippet' });
  const messages = requests.flatMap((r) => r.messages);
  const sent = messages.filter((m) => !isConsent(m));
  assert.deepEqual(sent.map((m) => m.type), ['identify', 'track', 'page', 'track']);
  assert.deepEqual(sent.map((m) => m.event ?? m.name ?? null), [null, 'First', 'Landing', 'Second']);
  for (const message of sent) {
    const at = Date.parse(message.timestamp);
    assert.ok(Math.abs(at - calledAt) < 300, `${message.type} timed ${at - calledAt} ms from its call`);
    assert.equal(message.context.page.path, SNIPPET_FIXTURE);
    assert.equal(new URL(message.context.page.url).pathname, SNIPPET_FIXTURE);
  }
  // The grant's own record is made when the module runs it, on the page as it is then.
  const grant = messages.find(isConsent);
  assert.ok(Date.parse(grant.timestamp) >= released - 50, 'the consent record is timed at the replay');
  assert.equal(grant.context.page.path, '/moved-on');
  assert.equal(await page.evaluate(() => typeof window.ebb.consent.state), 'function');
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('the snippet and SDK work under a CSP without unsafe-eval', async () => {
  const ctx = await browser.newContext();
  const csp =
    "default-src 'none'; script-src 'self' 'nonce-ebbtest' 'wasm-unsafe-eval'; connect-src 'self'";
  await serveSnippetFixture(ctx, collector, SNIPPET_CALLS(key, 'csp-user'), { csp });
  const page = await ctx.newPage();
  const errors = watchPageErrors(page);

  await page.goto(`${collector.base}${SNIPPET_FIXTURE}`);
  const done = await page.waitForFunction(() => window.ebbDone).then((handle) => handle.evaluate((p) => p));
  const user = await waitForUser(collector, 'csp-user', (u) => tracked(u).length === 2);

  assert.equal(done, 'flushed');
  assert.deepEqual(tracked(user).sort(), ['First', 'Second']);
  assert.deepEqual(await page.evaluate(() => window.ebbViolations), []);
  assert.deepEqual(errors, []);
  await ctx.close();
});
