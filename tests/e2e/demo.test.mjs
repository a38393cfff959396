// The walking skeleton end to end: the demo page served by a real collector loads the
// wasm SDK in headless Chromium; what a visitor clicks arrives in SQLite and reads back
// through the admin API and the admin page.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, screenshot, startCollector, watchPageErrors } from './harness.mjs';

let collector;
let browser;

before(async () => {
  collector = await startCollector();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await collector?.stop();
});

test('identify and track clicked in the demo are stored and read back', async () => {
  const page = await browser.newPage();
  const errors = watchPageErrors(page);
  await page.goto(`${collector.base}/`);
  await page.locator('#status', { hasText: 'SDK ready' }).waitFor();
  await page.click('#consent-grant');
  await page.locator('#consent-state', { hasText: 'consent: granted' }).waitFor();

  await page.fill('#user-id', 'e2e-ada');
  await page.fill('#email', 'ada@example.com');
  await page.fill('#name', 'Ada');
  await page.click('#identify');
  await page.locator('#status', { hasText: 'identify delivered' }).waitFor();
  await page.fill('#event-name', 'Coffee Added');
  await page.click('#track');
  await page.locator('#status', { hasText: 'track delivered' }).waitFor();
  await screenshot(page, 'demo-after-identify-and-track');
  const { status, body: user } = await collector.admin('/admin/v1/users/e2e-ada');

  assert.equal(status, 200);
  assert.deepEqual(user.traits, { email: 'ada@example.com', name: 'Ada' });
  assert.equal(user.anonymousIds.length, 1, 'the SDK sends its anonymous id');
  const tracked = user.events.filter((event) => event.type === 'track');
  assert.deepEqual(tracked.map((event) => event.event), [
    'Segment Consent Preference Updated',
    'Coffee Added',
  ]);
  tracked.shift();
  assert.equal(tracked[0].properties.product, 'House Blend');
  assert.deepEqual(errors, []);
});

test('the admin page finds a user by id with the admin token', async () => {
  const page = await browser.newPage();
  const errors = watchPageErrors(page);
  await page.goto(`${collector.base}/admin/`);

  await page.fill('#token', collector.adminToken);
  await page.fill('#user', 'e2e-ada');
  await page.click('button[type=submit]');
  await page.locator('#result-status', { hasText: 'found' }).waitFor();
  await screenshot(page, 'admin-user-lookup');
  const shown = JSON.parse(await page.textContent('#result'));

  assert.equal(shown.userId, 'e2e-ada');
  assert.equal(shown.traits.email, 'ada@example.com');
  assert.deepEqual(errors, []);
});

test('the admin page refuses a wrong token', async () => {
  const page = await browser.newPage();
  await page.goto(`${collector.base}/admin/`);

  await page.fill('#token', 'not-a-token');
  await page.fill('#user', 'e2e-ada');
  await page.click('button[type=submit]');
  await page.locator('#result-status', { hasText: '401' }).waitFor();

  assert.equal(await page.textContent('#result'), '');
});
