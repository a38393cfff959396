// The demo shop served by a real collector, in headless Chromium: the consent banner
// (accept, reject, choose categories), signing in with `identify` (verified when the
// environment has identity verification on), the product buttons, the survey, and the
// panel of what the SDK holds (also while the collector is unreachable); every request
// goes to the collector's origin and no CSP rule is broken. Then the whole story: a
// visitor who first refuses and then accepts is found by an operator in the console,
// exported and deleted, and is gone.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import {
  launchBrowser, screenshot, startCollector, watchCspViolations, watchPageErrors,
} from './harness.mjs';

let collector;
let browser;

before(async () => {
  collector = await startCollector({ env: { EBB_DEMO_USER_HASH: 'true' } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await collector?.stop();
});

/**
 * A fresh visitor on the demo, with every request to the ingest API recorded (`sent`),
 * the address of every request the page makes (`requested`), and the Content-Security-Policy
 * violations of its pages (`violations`).
 */
async function visit() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const violations = await watchCspViolations(context);
  const page = await context.newPage();
  const errors = watchPageErrors(page);
  const sent = [];
  const requested = [];
  page.on('request', (request) => {
    requested.push(request.url());
    if (new URL(request.url()).pathname.startsWith('/v1/')) sent.push(request.postData() ?? '');
  });
  await page.goto(`${collector.base}/`);
  await page.locator('body[data-sdk="ready"]').waitFor();
  return { context, page, errors, sent, requested, violations };
}

/** The requested addresses whose origin is not the collector's. */
function foreign(requested) {
  return requested.filter((url) => new URL(url).origin !== new URL(collector.base).origin);
}

async function consentIs(page, status) {
  await page.locator('#consent-state', { hasText: status }).waitFor();
}

async function delivered(page, what) {
  await page.locator('#status', { hasText: `delivered: ${what}` }).waitFor();
}

async function signInAs(page, userId, email, name) {
  await page.fill('#user-id', userId);
  await page.fill('#email', email);
  await page.fill('#name', name);
  await page.click('#identify');
}

async function answerSurvey(page) {
  await page.check('#recommend input[value="9"]');
  await page.selectOption('#next-roast', 'A decaf');
  await page.click('#survey-submit');
}

/** `1 event`, `3 events`: a count as the console writes it. */
function plural(count, what) {
  return `${count} ${what}${count === 1 ? '' : 's'}`;
}

async function user(id) {
  return collector.admin(`/admin/v1/users/${encodeURIComponent(id)}`);
}

test('accepting, signing in, shopping and answering the survey are stored and shown', async () => {
  const { context, page, errors, sent } = await visit();

  const bannerShown = await page.locator('#consent-banner').isVisible();
  const anonymousBefore = await page.textContent('#panel-anonymous-id');
  const heldBefore = await page.getAttribute('#panel-queue', 'data-held');
  const storedBefore = await page.evaluate(() => Object.keys(localStorage));
  const deliveryBefore = await page.textContent('#panel-delivery');
  await screenshot(page, 'demo-banner');
  await page.click('#consent-accept');
  await consentIs(page, 'granted');
  await delivered(page, 'page view');
  await signInAs(page, 'demo-ada', 'ada@example.com', 'Ada');
  await delivered(page, 'identify');
  const deliveryAfterIdentify = await page.textContent('#panel-delivery');
  // The panel read while the tracked event's batch is on its way: not delivered yet.
  let deliveryInFlight;
  await page.route((url) => url.pathname.startsWith('/v1/'), async (route) => {
    deliveryInFlight ??= await page.textContent('#panel-delivery');
    await route.continue();
  });
  await page.click('#track-add');
  await delivered(page, 'track Product Added');
  await page.unrouteAll();
  const deliveryAfterTrack = await page.textContent('#panel-delivery');
  await answerSurvey(page);
  await delivered(page, 'survey response');
  const anonymousAfter = await page.textContent('#panel-anonymous-id');
  const queuedAfter = await page.getAttribute('#panel-queue', 'data-queued');
  const account = await page.textContent('#account-name');
  await screenshot(page, 'demo-after-shopping');
  const { status, body: stored } = await user('demo-ada');

  assert.equal(bannerShown, true);
  assert.match(anonymousBefore, /^none/, 'no anonymous id before consent');
  assert.equal(heldBefore, '1', 'the page view waits for consent');
  assert.deepEqual(storedBefore, [], 'nothing stored before consent');
  assert.equal(deliveryBefore, 'none yet');
  assert.match(deliveryAfterIdentify, /^\d{1,2}:\d{2}:\d{2}.*: identify$/);
  assert.equal(deliveryInFlight, deliveryAfterIdentify, 'no delivery is shown before the collector answered');
  assert.match(deliveryAfterTrack, /^\d{1,2}:\d{2}:\d{2}.*: track Product Added$/);
  assert.equal(status, 200);
  assert.deepEqual(stored.traits, { email: 'ada@example.com', name: 'Ada' });
  assert.deepEqual(stored.anonymousIds, [anonymousAfter], 'the panel shows the id the SDK sends');
  assert.equal(queuedAfter, '0');
  assert.equal(account, 'Signed in as demo-ada');
  const kinds = stored.events.map((event) => (event.type === 'track' ? event.event : event.type));
  assert.ok(kinds.includes('page'), kinds.join());
  assert.ok(kinds.includes('Product Added'), kinds.join());
  assert.equal(stored.events.find((e) => e.event === 'Product Added').properties.product, 'House Blend');
  assert.equal(stored.responses.length, 1);
  assert.deepEqual(stored.responses[0].answers, { recommend: 9, nextRoast: 'A decaf' });
  assert.deepEqual(stored.consent, { analytics: true, surveys: true });
  assert.ok(sent.length > 0);
  assert.deepEqual(errors, []);
  await context.close();
});

test('choosing only analytics records the shop but keeps the survey closed', async () => {
  const { context, page, errors } = await visit();

  await page.click('#consent-choose');
  await page.check('#category-analytics');
  await page.click('#consent-save');
  await consentIs(page, 'granted');
  await signInAs(page, 'demo-bea', 'bea@example.com', 'Bea');
  await delivered(page, 'identify');
  const surveyDisabled = await page.locator('#survey-submit').isDisabled();
  const note = await page.textContent('#survey-note');
  const chips = await page.locator('#panel-consent .chip').allTextContents();
  await screenshot(page, 'demo-analytics-only');
  const { body: stored } = await user('demo-bea');

  assert.equal(surveyDisabled, true);
  assert.match(note, /Surveys/);
  assert.deepEqual(chips, ['analytics ✓', 'surveys ✗']);
  assert.deepEqual(stored.consent, { analytics: true, surveys: false });
  assert.deepEqual(errors, []);
  await context.close();
});

test('the demo loads nothing from outside the collector’s origin and breaks no CSP rule', async () => {
  const { context, page, errors, requested, violations } = await visit();

  await page.click('#consent-accept');
  await consentIs(page, 'granted');
  await delivered(page, 'page view');
  await signInAs(page, 'demo-local', 'local@example.com', 'Lou');
  await delivered(page, 'identify');
  await page.click('#track-wishlist');
  await delivered(page, 'track Product Wishlisted');
  await answerSurvey(page);
  await delivered(page, 'survey response');
  await screenshot(page, 'demo-same-origin');
  const paths = requested.map((url) => new URL(url).pathname);

  for (const path of ['/', '/demo.css', '/demo.js', '/sdk/index.js', '/sdk/ebb_sdk_bg.wasm',
    '/demo/config.json', '/v1/batch']) {
    assert.ok(paths.includes(path), `the page requested ${path}: ${paths.join(' ')}`);
  }
  assert.deepEqual(foreign(requested), [], 'every request goes to the collector’s origin');
  assert.deepEqual(violations, [], 'no Content-Security-Policy violation');
  assert.deepEqual(errors, []);
  await context.close();
});

test('the panel counts the messages waiting while the collector is unreachable, then 0 once they are delivered', async () => {
  const { context, page, errors } = await visit();
  const unreachable = (url) => url.pathname === '/v1/batch';
  await page.route(unreachable, (route) => route.abort('internetdisconnected'));
  const queued = async () => Number(await page.getAttribute('#panel-queue', 'data-queued'));

  await page.click('#consent-accept');
  await consentIs(page, 'granted');
  await page.locator('#status', { hasText: 'delivery failed' }).waitFor();
  const afterConsent = await queued();
  await page.click('#track-add');
  await page.locator('#status', { hasText: 'delivery failed' }).waitFor();
  const afterTrack = await queued();
  const waitingText = await page.textContent('#panel-queue');
  await screenshot(page, 'demo-queue-waiting');
  const anonymousId = await page.textContent('#panel-anonymous-id');
  // The collector is back; nobody clicks anything: the SDK retries on its own, and the
  // panel has to follow.
  await page.unroute(unreachable);
  await page.locator('#panel-queue[data-queued="0"]').waitFor({ timeout: 30_000 });
  await delivered(page, 'page view, track Product Added');
  const deliveredText = await page.textContent('#panel-queue');
  await screenshot(page, 'demo-queue-delivered');
  const { status, body: stored } = await user(anonymousId);

  assert.ok(afterConsent >= 2, `the consent record and the page view wait: ${afterConsent}`);
  assert.equal(afterTrack, afterConsent + 1, 'the tracked event joins them');
  assert.equal(waitingText, `${afterTrack} messages`);
  assert.equal(deliveredText, '0 messages');
  assert.equal(status, 200);
  const kinds = stored.events.map((event) => (event.type === 'track' ? event.event : event.type));
  assert.ok(kinds.includes('page') && kinds.includes('Product Added'), kinds.join());
  assert.deepEqual(errors, []);
  await context.close();
});

test('with identity verification on, the demo signs in with the user hash', async () => {
  const { status: secretStatus } = await collector.adminCall(
    'POST', '/admin/v1/environments/default/identity-secret');
  try {
    const { context, page, errors } = await visit();

    await page.click('#consent-accept');
    await consentIs(page, 'granted');
    await signInAs(page, 'demo-verified', 'v@example.com', 'Vera');
    await delivered(page, 'identify (verified)');
    const { status, body: stored } = await user('demo-verified');
    const unverified = await collector.ingest([
      { type: 'identify', userId: 'demo-verified', traits: { name: 'Mallory' }, messageId: 'forged-1' },
    ]);

    assert.equal(secretStatus, 200);
    assert.equal(status, 200);
    assert.equal(stored.traits.name, 'Vera');
    assert.equal(unverified.status, 400, 'a message without the hash is refused');
    assert.deepEqual(errors, []);
    await context.close();
  } finally {
    await collector.adminCall('DELETE', '/admin/v1/environments/default/identity-secret');
  }
});

test('story: refused, then accepted, found in a segment, exported, deleted and gone', async () => {
  // The visitor refuses: nothing leaves the page and nothing is stored.
  const everyone = async () => (await collector.adminCall(
    'POST', '/admin/v1/environments/default/segments/preview', { filter: {} })).body.count;
  const usersBefore = await everyone();
  const visitor = await visit();
  await visitor.page.click('#consent-reject');
  await consentIs(visitor.page, 'denied');
  await visitor.page.click('#track-add');
  await visitor.page.locator('#status', { hasText: 'not recorded' }).waitFor();
  const sentWhileRefused = visitor.sent.length;
  const usersWhileRefused = await everyone();

  // Then accepts, signs in, shops and answers the survey.
  await visitor.page.click('#privacy-settings');
  await visitor.page.click('#consent-accept');
  await consentIs(visitor.page, 'granted');
  await signInAs(visitor.page, 'story-cleo', 'cleo@story.example', 'Cleo');
  await delivered(visitor.page, 'identify');
  await visitor.page.click('#track-checkout');
  await delivered(visitor.page, 'track Checkout Started');
  await answerSurvey(visitor.page);
  await delivered(visitor.page, 'survey response');
  const anonymousId = await visitor.page.textContent('#panel-anonymous-id');
  await screenshot(visitor.page, 'story-visitor');
  assert.deepEqual(visitor.errors, []);
  await visitor.context.close();

  // The operator finds her in a segment, opens her, exports her and deletes her.
  const operator = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const console_ = await operator.newPage();
  const consoleErrors = watchPageErrors(console_);
  await console_.goto(`${collector.base}/admin/`);
  await console_.fill('#token', collector.adminToken);
  await console_.click('#signin button[type=submit]');
  await console_.locator('.topbar').waitFor();
  await console_.click('#add-condition');
  const condition = console_.locator('.condition').last();
  await condition.getByLabel('Trait key').fill('email');
  await condition.getByLabel('Operator').selectOption('equals');
  await condition.getByLabel('Value', { exact: true }).fill('cleo@story.example');
  await console_.click('#segment-filter button[type=submit]');
  await console_.locator('#match-count[data-count="1"]').waitFor();
  await screenshot(console_, 'story-segment');
  await console_.click('#users a:text-is("story-cleo")');
  await console_.locator('#user-title', { hasText: 'story-cleo' }).waitFor();
  const download = console_.waitForEvent('download');
  await console_.click('#export-user');
  const exported = JSON.parse(await readFile(await (await download).path(), 'utf8'));
  await console_.click('#delete-user');
  const confirmation = await console_.locator('dialog.confirm').textContent();
  const willGo = await console_.locator('dialog.confirm ul.will-go li').allTextContents();
  await console_.locator('dialog.confirm button.danger').click();
  await console_.locator('#user-receipt').waitFor();
  const receipt = await console_.textContent('#user-receipt');
  const receiptSeq = Number((await console_.textContent('#user-receipt .audit-seq')).slice(1));
  await screenshot(console_, 'story-deleted');

  // She is gone from the console's pages and from the API; the receipt is audited.
  await console_.goto(`${collector.base}/admin/#/segments`);
  await console_.locator('#lookup-id').fill('story-cleo');
  await console_.click('#lookup button[type=submit]');
  await console_.locator('h1', { hasText: 'User not found' }).waitFor();
  await console_.goto(`${collector.base}/admin/#/segments`);
  await console_.click('#add-condition');
  const again = console_.locator('.condition').last();
  await again.getByLabel('Trait key').fill('email');
  await again.getByLabel('Operator').selectOption('equals');
  await again.getByLabel('Value', { exact: true }).fill('cleo@story.example');
  await console_.click('#segment-filter button[type=submit]');
  await console_.locator('#match-count[data-count="0"]').waitFor();
  await console_.click('nav a[href="#/audit"]');
  const auditRow = console_.locator(`#audit-log tr[data-seq="${receiptSeq}"]`);
  await auditRow.waitFor();
  const auditRowAction = await auditRow.locator('.action').textContent();
  const auditRowText = await auditRow.textContent();
  await screenshot(console_, 'story-audit');
  const byUserId = await user('story-cleo');
  const byAnonymousId = await user(anonymousId);
  const { body: audit } = await collector.admin('/admin/v1/audit?limit=5');
  const deletion = audit.find((entry) => entry.seq === receiptSeq);

  assert.equal(sentWhileRefused, 0, 'nothing was sent while consent was refused');
  assert.equal(usersWhileRefused, usersBefore, 'nothing was stored while consent was refused');
  assert.equal(exported.userId, 'story-cleo');
  assert.equal(exported.traits.email, 'cleo@story.example');
  assert.ok(exported.events.some((event) => event.event === 'Checkout Started'));
  assert.equal(exported.responses.length, 1);
  assert.match(confirmation, /This cannot be undone/);
  assert.deepEqual(willGo, [
    `their 2 ids: story-cleo, ${anonymousId}`,
    '2 traits',
    plural(exported.events.length, 'event'),
    '1 survey response',
    plural(exported.consentHistory.length, 'consent record'),
  ], 'the confirmation says what the export holds will go');
  assert.match(receipt, /Receipt/);
  assert.equal(byUserId.status, 404);
  assert.equal(byAnonymousId.status, 404);
  assert.ok(receiptSeq > 0, 'the receipt names its audit entry');
  assert.equal(deletion?.action, 'delete_user', 'the receipt\'s entry records the deletion');
  assert.equal(auditRowAction, 'delete_user', 'the audit page shows the receipt\'s entry');
  assert.ok(auditRowText.includes(JSON.stringify(deletion.counts)), auditRowText);
  assert.ok(deletion.counts.events >= 1 && deletion.counts.responses === 1, JSON.stringify(deletion.counts));
  assert.ok(!JSON.stringify(audit).includes('story-cleo'), 'the audit log holds no id');
  assert.deepEqual(consoleErrors, []);
  await operator.close();
});
