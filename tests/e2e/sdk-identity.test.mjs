// The identity the SDK keeps in the browser, in headless Chromium against a real
// collector: the user id and traits outlive a reload (the next identify merges with the
// stored traits), and the anonymous id minted in the browser is a UUID v4.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TRAIT_MARKER, launchBrowser, startCollector, watchPageErrors } from './harness.mjs';
import {
  openFixture,
  recordBatches,
  serveFixture,
  tracked,
  waitForUser,
  writeKey,
} from './sdk-helpers.mjs';

/** Version nibble 4, variant bits 10 (the nibble 8, 9, a or b), lowercase hex. */
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

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

function sentMessages(requests) {
  return requests.filter((request) => request.status === 200).flatMap((request) => request.messages);
}

test('traits outlive a reload: the next identify merges with them and the next track names the user', async () => {
  const ctx = await context();
  const requests = await recordBatches(ctx);
  const page = await openFixture(ctx, collector);
  const errors = watchPageErrors(page);
  const first = await page.evaluate(async ({ key, marker }) => {
    const ebb = window.ebbSdk;
    await ebb.load(key);
    await ebb.consent.grant();
    await ebb.identify('traits-user', { plan: 'pro', note: marker });
    await ebb.flush();
    return { status: ebb.status(), stored: localStorage.getItem('ebb.traits') };
  }, { key, marker: TRAIT_MARKER });
  const sentBefore = requests.length;

  await page.reload();
  await page.waitForFunction(() => window.ebbImported === true);
  const after = await page.evaluate(async (key) => {
    const ebb = window.ebbSdk;
    await ebb.load(key);
    const status = ebb.status();
    await ebb.track('After reload');
    await ebb.identify(undefined, { seats: 3 });
    await ebb.flush();
    return status;
  }, key);
  const user = await waitForUser(collector, 'traits-user', (u) => tracked(u).includes('After reload'));

  const later = sentMessages(requests.slice(sentBefore));
  const track = later.find((message) => message.event === 'After reload');
  const identify = later.find((message) => message.type === 'identify');
  assert.deepEqual(JSON.parse(first.stored), { plan: 'pro', note: TRAIT_MARKER });
  assert.equal(after.userId, 'traits-user', 'the reloaded page knows the user before any call');
  assert.equal(after.anonymousId, first.status.anonymousId);
  assert.equal(track.userId, 'traits-user');
  assert.equal(track.anonymousId, first.status.anonymousId);
  assert.equal(identify.userId, 'traits-user');
  assert.deepEqual(identify.traits, { plan: 'pro', note: TRAIT_MARKER, seats: 3 },
    'the identify after the reload carries the stored traits merged with the new one');
  assert.deepEqual(user.traits, { plan: 'pro', note: TRAIT_MARKER, seats: 3 });
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('the anonymous id minted in the browser is a UUID v4, stored, sent, and new after each reset', async () => {
  const ctx = await context();
  const requests = await recordBatches(ctx);
  const page = await openFixture(ctx, collector);
  const errors = watchPageErrors(page);

  const minted = await page.evaluate(async (key) => {
    const ebb = window.ebbSdk;
    await ebb.load(key);
    await ebb.consent.grant();
    const ids = [];
    for (let n = 0; n < 24; n += 1) {
      const id = ebb.status().anonymousId;
      ids.push({ id, stored: localStorage.getItem('ebb.anon') });
      await ebb.track(`Visitor ${n}`);
      await ebb.reset();
    }
    await ebb.flush();
    return ids;
  }, key);
  await waitForUser(collector, minted.at(-1).id, (u) => tracked(u).includes('Visitor 23'));

  const ids = minted.map((entry) => entry.id);
  const sent = sentMessages(requests).filter((message) => message.event?.startsWith('Visitor'));
  assert.equal(new Set(ids).size, ids.length, 'each reset mints a new id');
  for (const { id, stored } of minted) {
    assert.match(id, UUID_V4);
    assert.equal(stored, id, 'the id in storage is the one in use');
  }
  assert.deepEqual(sent.map((message) => message.anonymousId), ids, 'each track carries its id');
  assert.deepEqual(errors, []);
  await ctx.close();
});
