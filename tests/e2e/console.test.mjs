// The admin console at /admin/ in headless Chromium against a real collector: signing in
// and being refused, User Segments (filter, count, pages, a user, export, deleting a user,
// deleting a segment and its progress, Last seen and Consent conditions with "not" and
// any / all), Data Settings (retention histogram, identity secret and its rotation, write
// key, environments, purge), Audit (and a chain broken by an edit in the database), empty
// states, user-sent markup shown as text, the CSP and every request on the collector's
// origin, phone width and a 1280×800 window. Every check of the page is matched by one
// through the admin API.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  TRAIT_MARKER, launchBrowser, repoRoot, screenshot, startCollector, watchCspViolations,
  watchPageErrors,
} from './harness.mjs';

const DAY = 86_400_000;
const AGES = [1, 3, 10, 20, 45, 80, 120, 200, 400, 800];
const PLANS = ['pro', 'free', 'team'];
const XSS = {
  userId: '<svg onload=alert(1)>',
  anonymousId: '<iframe src=javascript:alert(1)>',
  key: '<b>bold</b>',
  value: '<img src=x onerror=alert(1)>',
  event: '<script>alert(1)</script>',
};

let collector;
let browser;

/** 40 users spread over the last 800 days, plans cycling, every fourth with a response. */
function seedMessages() {
  const messages = [];
  for (let i = 0; i < 40; i += 1) {
    const timestamp = new Date(Date.now() - AGES[i % AGES.length] * DAY).toISOString();
    const userId = `user-${String(i).padStart(2, '0')}`;
    messages.push({
      type: 'identify', userId, anonymousId: `anon-${i}`, messageId: `seed-identify-${i}`, timestamp,
      traits: { plan: PLANS[i % 3], email: `${userId}@example.com`, seats: i, note: TRAIT_MARKER },
      context: { consent: { categoryPreferences: { analytics: true, surveys: i % 2 === 0 } } },
    });
    messages.push({
      type: 'track', userId, event: 'Product Added', messageId: `seed-track-${i}`, timestamp,
      properties: { price: 12.5 },
    });
    if (i % 4 === 0) {
      messages.push({
        type: 'response', userId, surveyId: 'nps', answers: { score: 9, why: 'fast' },
        messageId: `seed-response-${i}`, timestamp,
      });
    }
  }
  messages.push({
    type: 'identify', userId: XSS.userId, anonymousId: XSS.anonymousId, messageId: 'xss-1',
    traits: { [XSS.key]: XSS.value, plan: 'xss' },
  });
  messages.push({ type: 'track', userId: XSS.userId, event: XSS.event, messageId: 'xss-2' });
  return messages;
}

before(async () => {
  collector = await startCollector();
  browser = await launchBrowser();
  const seeded = await collector.ingest(seedMessages());
  assert.equal(seeded.status, 200, JSON.stringify(seeded.body));
});

after(async () => {
  await browser?.close();
  await collector?.stop();
});

/**
 * A console tab that records CSP violations, page errors, dialogs (alert & co.) and the
 * address of every request its pages make (`requested`), for the console of the collector
 * at `base`.
 */
async function consolePage({ width = 1280, height = 800, base = collector.base } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, acceptDownloads: true });
  const violations = await watchCspViolations(context);
  const requested = [];
  context.on('request', (request) => requested.push(request.url()));
  const page = await context.newPage();
  const errors = watchPageErrors(page);
  const dialogs = [];
  page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    dialog.dismiss();
  });
  const clean = () => {
    assert.deepEqual(violations, [], 'no Content-Security-Policy violation');
    assert.deepEqual(errors, [], 'no error thrown in the page');
    assert.deepEqual(dialogs, [], 'nothing opened a dialog');
    assert.deepEqual(requested.filter((url) => new URL(url).origin !== new URL(base).origin), [],
      'nothing is loaded from outside the collector’s origin');
  };
  return { context, page, clean, requested };
}

async function signIn(page, token = collector.adminToken, base = collector.base) {
  await page.goto(`${base}/admin/`);
  await page.fill('#token', token);
  await page.click('#signin button[type=submit]');
  await page.locator('.topbar').waitFor();
}

async function apiCount(filter, environment = 'default') {
  const { body } = await collector.adminCall(
    'POST', `/admin/v1/environments/${environment}/segments/preview`, { filter });
  return body.count;
}

async function showCount(page, count) {
  await page.locator(`#match-count[data-count="${count}"]`).waitFor();
}

async function addTraitCondition(page, key, op, value) {
  await page.click('#add-condition');
  const row = page.locator('.condition').last();
  await row.getByLabel('Trait key').fill(key);
  await row.getByLabel('Operator').selectOption(op);
  if (value !== undefined) await row.getByLabel('Value', { exact: true }).fill(value);
}

/** Waits until the environment switcher shows `name`. */
async function selected(page, name) {
  await page.waitForFunction((wanted) =>
    document.querySelector('#environment')?.selectedOptions[0]?.textContent === wanted, name);
}

async function showMatching(page) {
  await page.click('#segment-filter button[type=submit]');
}

test('the console refuses to work without a valid token', async () => {
  const { page, clean } = await consolePage();

  await page.goto(`${collector.base}/admin/#/settings`);
  await page.locator('#signin').waitFor();
  await screenshot(page, 'console-sign-in');
  const withoutToken = await page.locator('.topbar, #view').count();
  await page.fill('#token', 'ebb_admin_not-a-real-token');
  await page.click('#signin button[type=submit]');
  const refused = await page.locator('#signin-message [role=alert]').textContent();
  const storedAfterRefusal = await page.evaluate(() => sessionStorage.getItem('ebb.console.token'));

  const created = await collector.adminCall('POST', '/admin/v1/tokens', { label: 'console test' });
  await signIn(page, created.body.token);
  const shownWhileValid = await page.locator('#match-count').textContent();
  const revoked = await collector.adminCall('DELETE', `/admin/v1/tokens/${created.body.details.id}`);
  await page.click('nav a[href="#/audit"]');
  const ended = await page.locator('#signin-message [role=alert]').textContent();
  const storedAfterRevocation = await page.evaluate(() => sessionStorage.getItem('ebb.console.token'));
  const stillWithRevoked = await fetch(`${collector.base}/admin/v1/environments`, {
    headers: { Authorization: `Bearer ${created.body.token}` },
  });

  assert.equal(withoutToken, 0, 'nothing of the console shows before signing in');
  assert.match(refused, /not valid/);
  assert.equal(storedAfterRefusal, null, 'a refused token is not kept');
  assert.match(shownWhileValid, /\d+ users/);
  assert.equal(revoked.status, 204);
  assert.equal(stillWithRevoked.status, 401);
  assert.match(ended, /session has ended/);
  assert.equal(storedAfterRevocation, null, 'an expired token is forgotten');
  assert.equal(await page.locator('.topbar, #view').count(), 0);
  clean();
});

test('/admin serves the console with a strict CSP and no inline script or style', async () => {
  const pages = await Promise.all(['/admin', '/admin/', '/admin/#/audit'].map((path) =>
    fetch(`${collector.base}${path}`)));
  const html = await readFile(join(repoRoot, 'www', 'admin', 'index.html'), 'utf8');
  const scripts = (await readdir(join(repoRoot, 'www', 'admin'))).filter((f) => f.endsWith('.js'));
  const sources = await Promise.all(scripts.map((f) => readFile(join(repoRoot, 'www', 'admin', f), 'utf8')));

  for (const response of pages) {
    const policy = response.headers.get('content-security-policy');
    assert.equal(response.status, 200);
    assert.match(policy, /frame-ancestors 'none'/);
    assert.match(policy, /script-src 'self';/);
    assert.doesNotMatch(policy, /unsafe-inline|unsafe-eval/);
  }
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/i, 'no inline script');
  assert.doesNotMatch(html, /<style|\sstyle=|\son[a-z]+=/i, 'no inline style or handler');
  for (const [i, source] of sources.entries()) {
    assert.doesNotMatch(source, /\.innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function/,
      `${scripts[i]} builds no markup from strings`);
  }
});

test('segments: a filter shows the matching count, pages of users and a user', async () => {
  const { page, clean } = await consolePage();
  const everyone = await apiCount({});
  const pro = await apiCount({ all: [{ trait: 'plan', equals: 'pro' }] });
  const { body: ada } = await collector.admin('/admin/v1/users/user-00');

  await signIn(page);
  await showCount(page, everyone);
  const firstPage = await page.locator('#page-range').textContent();
  const firstRows = await page.locator('#users tbody tr').count();
  await screenshot(page, 'console-segments');
  await page.click('.pager button:has-text("Next")');
  await page.locator('#page-range', { hasText: `26–${everyone}` }).waitFor();
  const secondRows = await page.locator('#users tbody tr').count();
  await addTraitCondition(page, 'plan', 'equals', 'pro');
  await showMatching(page);
  await showCount(page, pro);
  const proRows = await page.locator('#users tbody tr').allTextContents();
  const filterJson = JSON.parse(await page.inputValue('#filter-json'));
  await screenshot(page, 'console-segments-filtered');
  await page.click('#users a:text-is("user-00")');
  await page.locator('#user-title').waitFor();
  const title = await page.textContent('#user-title');
  const counts = await page.textContent('#user-counts');
  const traits = await page.locator('#traits tbody tr').allTextContents();
  const events = await page.locator('#events li').allTextContents();
  const responses = await page.locator('#responses tbody tr').allTextContents();
  const consentRows = await page.locator('#consent-history tbody tr').count();
  await screenshot(page, 'console-user-detail');
  const download = page.waitForEvent('download');
  await page.click('#export-user');
  const file = await download;
  const exported = JSON.parse(await readFile(await file.path(), 'utf8'));
  const { body: audit } = await collector.admin('/admin/v1/audit?limit=5');

  assert.equal(firstPage, `1–25 of ${everyone}`);
  assert.equal(firstRows, 25);
  assert.equal(secondRows, everyone - 25);
  assert.deepEqual(filterJson, { all: [{ trait: 'plan', equals: 'pro' }] });
  assert.equal(proRows.length, pro);
  assert.ok(proRows.every((row) => row.includes('plan: pro')));
  assert.equal(title, 'user-00');
  assert.deepEqual([ada.counts.events, ada.counts.responses], [1, 1]);
  assert.equal(counts, '1 event, 1 response');
  assert.equal(traits.length, Object.keys(ada.traits).length);
  assert.ok(traits.some((row) => row.includes('user-00@example.com')));
  assert.equal(events.length, ada.events.length);
  assert.match(events[0], /Product Added/);
  assert.equal(responses.length, ada.responses.length);
  assert.match(responses[0], /score\s*9/);
  assert.equal(consentRows, ada.consentHistory.length);
  assert.equal(file.suggestedFilename(), 'ebb-user-user-00.json');
  assert.deepEqual(exported.traits, ada.traits);
  assert.equal(exported.events.length, ada.events.length);
  assert.equal(audit[0].action, 'export_user', 'the export is audited');
  clean();
});

test('users: deleting a user names their ids and what goes, and the receipt matches', async () => {
  const { page, clean } = await consolePage();
  const consent = (surveys) => ({ consent: { categoryPreferences: { analytics: true, surveys } } });
  const ingested = await collector.ingest([
    { type: 'identify', userId: 'leaving-user', anonymousId: 'leaving-anon-1',
      traits: { plan: 'pro', email: 'leaving@example.com' }, context: consent(true) },
    { type: 'identify', userId: 'leaving-user', anonymousId: 'leaving-anon-2', context: consent(false) },
    ...['Viewed', 'Product Added', 'Checkout Started'].map((event) =>
      ({ type: 'track', userId: 'leaving-user', event })),
    ...['nps', 'onboarding'].map((surveyId) =>
      ({ type: 'response', userId: 'leaving-user', surveyId, answers: { score: 7 } })),
  ]);
  const { body: stored } = await collector.admin('/admin/v1/users/leaving-user');

  await signIn(page);
  await page.goto(`${collector.base}/admin/#/users/leaving-user`);
  await page.locator('#user-title', { hasText: 'leaving-user' }).waitFor();
  await page.click('#delete-user');
  const dialog = page.locator('dialog.confirm');
  const question = await dialog.locator('h2').textContent();
  const willGo = await dialog.locator('ul.will-go li').allTextContents();
  const ids = await dialog.locator('ul.will-go li code').allTextContents();
  await screenshot(page, 'console-user-delete-confirm');
  await dialog.locator('button.danger').click();
  await page.locator('#user-receipt').waitFor();
  const removed = await page.$$eval('#user-receipt dl.counts dt', (terms) => Object.fromEntries(
    terms.map((term) => [term.textContent, Number(term.nextElementSibling.textContent)])));
  const gone = await collector.admin('/admin/v1/users/leaving-user');

  assert.equal(ingested.status, 200);
  assert.deepEqual(stored.anonymousIds, ['leaving-anon-1', 'leaving-anon-2']);
  assert.equal(question, 'Delete leaving-user?');
  assert.deepEqual(ids, ['leaving-user', 'leaving-anon-1', 'leaving-anon-2']);
  assert.deepEqual(willGo, [
    'their 3 ids: leaving-user, leaving-anon-1, leaving-anon-2',
    '2 traits',
    '3 events',
    '2 survey responses',
    '2 consent records',
  ]);
  assert.equal(removed.users, 1);
  assert.equal(removed.events, 3, 'as many events went as the dialog named');
  assert.equal(removed.responses, 2);
  assert.equal(removed.consentRecords, 2);
  assert.equal(gone.status, 404);
  clean();
});

test('segments: errors from the API, empty results and an unknown user are stated', async () => {
  const { page, clean } = await consolePage();

  await signIn(page);
  await addTraitCondition(page, 'plan', 'equals', 'nobody-has-this');
  await showMatching(page);
  await showCount(page, 0);
  const emptyText = await page.locator('.results .state.empty').textContent();
  const deleteDisabled = await page.locator('#delete-segment').isDisabled();
  await page.click('details.json summary');
  await page.fill('#filter-json', '{"trait": "plan", "startsWith": "p"}');
  await page.click('#use-json');
  const refused = await page.locator('.results [role=alert]').textContent();
  const direct = await collector.adminCall('POST', '/admin/v1/environments/default/segments/users',
    { filter: { trait: 'plan', startsWith: 'p' } });
  await page.goto(`${collector.base}/admin/#/users/nobody-at-all`);
  await page.locator('h1', { hasText: 'User not found' }).waitFor();
  const missing = await page.locator('#view .state.empty').textContent();

  assert.equal(emptyText, 'No users match this filter.');
  assert.ok(deleteDisabled);
  assert.equal(direct.status, 400);
  assert.ok(refused.includes(direct.body.message), `${refused} shows ${direct.body.message}`);
  assert.match(refused, /invalid_request/);
  assert.match(missing, /No user with the id “nobody-at-all”/);
  clean();
});

test('segments: deleting a segment previews the count, asks, shows progress and the receipt', async () => {
  const { page, clean } = await consolePage();
  const filter = { all: [{ trait: 'plan', equals: 'team' }] };
  const team = await apiCount(filter);

  await signIn(page);
  await addTraitCondition(page, 'plan', 'equals', 'team');
  await showMatching(page);
  await showCount(page, team);
  await page.click('#delete-segment');
  const dialog = page.locator('dialog.confirm');
  const question = await dialog.locator('h2').textContent();
  const body = await dialog.textContent();
  await screenshot(page, 'console-segment-delete-confirm');
  await dialog.locator('button.danger').click();
  await page.locator('#segment-receipt').waitFor();
  const progress = await page.$eval('#segment-progress', (bar) => [bar.value, bar.max]);
  const receiptText = await page.textContent('#segment-receipt');
  const seq = Number((await page.textContent('#segment-receipt .audit-seq')).slice(1));
  await showCount(page, 0);
  await screenshot(page, 'console-segment-deleted');
  const { body: audit } = await collector.admin('/admin/v1/audit?limit=10');
  const entry = audit.find((e) => e.seq === seq);

  assert.equal(question, `Delete ${team} users?`);
  assert.match(body, /This cannot be undone/);
  assert.match(body, /"equals": "team"/);
  assert.deepEqual(progress, [team, team]);
  assert.match(receiptText, new RegExp(`Segment deleted${team} of ${team} users deleted`));
  assert.equal(await apiCount(filter), 0);
  assert.equal(entry.action, 'delete_segment');
  assert.equal(entry.counts.users, team);
  assert.match(receiptText, new RegExp(`users\\s*${team}`));
  clean();
});

/**
 * `count` users with one event each and the trait `cohort: bulk`, sent as batches of 100
 * messages, two batches at a time.
 */
async function ingestBulkUsers(count) {
  const batches = [];
  for (let first = 0; first < count; first += 50) {
    const batch = [];
    for (let i = first; i < Math.min(first + 50, count); i += 1) {
      batch.push({ type: 'identify', userId: `bulk-${i}`, messageId: `bulk-identify-${i}`,
        traits: { cohort: 'bulk' } });
      batch.push({ type: 'track', userId: `bulk-${i}`, messageId: `bulk-track-${i}`, event: 'Visited' });
    }
    batches.push(batch);
  }
  const sender = async () => {
    for (let batch = batches.shift(); batch; batch = batches.shift()) {
      const sent = await collector.ingest(batch);
      assert.equal(sent.status, 200, JSON.stringify(sent.body));
    }
  };
  await Promise.all([sender(), sender()]);
}

/**
 * Records every state of the segment deletion's progress bar that the page renders, in
 * order, as `{value, max, receipt}` (`receipt`: whether the receipt was shown by then).
 * `rendered()` resolves at the next recorded state. The observer's callback runs after the
 * console has set its next poll's timer, so that a test may fire that timer at once.
 */
async function recordProgress(page) {
  const states = [];
  let wake = () => {};
  await page.exposeBinding('ebbProgressRendered', (_source, state) => {
    states.push(state);
    wake();
  });
  await page.evaluate(() => {
    new MutationObserver(() => {
      const bar = document.getElementById('segment-progress');
      if (!bar) return;
      const receipt = Boolean(document.getElementById('segment-receipt'));
      window.ebbProgressRendered({ value: bar.value, max: bar.max, receipt });
    }).observe(document.body,
      { subtree: true, childList: true, attributes: true, attributeFilter: ['value', 'max'] });
  });
  return { states, rendered: () => new Promise((resolve) => { wake = resolve; }) };
}

test('segments: a deletion of many chunks shows its progress while it runs, then the receipt', async () => {
  // The job deletes 200 users per chunk, a chunk in a few milliseconds, while the console
  // asks for the job's state every 400 ms; so the page's clock is driven to make the
  // console ask as soon as it rendered the last answer, and 2,000 users make ten chunks.
  const { page, clean } = await consolePage();
  await ingestBulkUsers(2000);
  const filter = { all: [{ trait: 'cohort', equals: 'bulk' }] };
  const total = await apiCount(filter);

  await page.clock.install();
  await signIn(page);
  await addTraitCondition(page, 'cohort', 'equals', 'bulk');
  await showMatching(page);
  await showCount(page, total);
  const progress = await recordProgress(page);
  await page.click('#delete-segment');
  const started = progress.rendered();
  await page.locator('dialog.confirm button.danger').click();
  // A console that stops rendering fails here when the receipt does not come in time.
  const receiptShown = page.locator('#segment-receipt').waitFor();
  await Promise.race([started, receiptShown]);
  for (let last = progress.states.at(-1); !last.receipt && last.value < last.max;
    last = progress.states.at(-1)) {
    const next = progress.rendered();
    await page.clock.runFor(1_000);
    await Promise.race([next, receiptShown]);
  }
  await receiptShown;
  const receiptText = await page.textContent('#segment-receipt');
  const seq = Number((await page.textContent('#segment-receipt .audit-seq')).slice(1));
  const totalShown = await page.evaluate((count) => count.toLocaleString(), total);
  const { body: audit } = await collector.admin('/admin/v1/audit?limit=10');
  const entry = audit.find((e) => e.seq === seq);
  const whileRunning = progress.states.filter((state) => !state.receipt);
  const values = whileRunning.map((state) => state.value);

  assert.equal(total, 2000);
  assert.ok(whileRunning.some((state) => state.value > 0 && state.value < state.max),
    `an intermediate value before the receipt: ${values.join(' ')}`);
  assert.deepEqual(values, [...values].sort((a, b) => a - b), 'the bar never goes back');
  assert.ok(progress.states.every((state) => state.max === total), 'the bar counts to the total');
  assert.deepEqual(progress.states.at(-1), { value: total, max: total, receipt: true });
  assert.match(receiptText, new RegExp(`Segment deleted${totalShown} of ${totalShown} users deleted`));
  assert.equal(await apiCount(filter), 0);
  assert.equal(entry.action, 'delete_segment');
  assert.equal(entry.counts.users, total);
  clean();
});

test('settings: the retention histogram draws the cut-off and states what the rule deletes', async () => {
  const { page, clean } = await consolePage();

  await signIn(page);
  await page.click('nav a[href="#/settings"]');
  await page.locator('#retention-histogram').waitFor();
  await page.fill('#retention-days', '90');
  const draftCount = await apiCount({ any: [{ lastSeenDaysAgo: { atLeast: 90 } }] });
  await page.locator(`#would-delete[data-count="${draftCount}"]`).waitFor();
  const draftStatement = await page.textContent('#retention-statement');
  await page.click('#retention-form button[type=submit]');
  await page.locator('#retention .state.notice', { hasText: 'Saved.' }).waitFor();
  await page.locator('#retention-statement', { hasText: /^This rule would delete/ }).waitFor();
  const statement = await page.textContent('#retention-statement');
  const bars = await page.$$eval('#retention-histogram .column', (columns) => columns.map((c) => ({
    users: Number(c.dataset.users),
    height: c.querySelector('.bar').getBoundingClientRect().height,
    due: c.querySelector('.bar').classList.contains('due'),
  })));
  const cutoff = await page.$eval('#retention-histogram .cutoff', (line) => ({
    days: line.dataset.days, left: line.getBoundingClientRect().left,
  }));
  const firstDueBar = await page.$eval('#retention-histogram .bar.due', (bar) => bar.getBoundingClientRect().left);
  await screenshot(page, 'console-settings-retention');
  const { body: retention } = await collector.admin('/admin/v1/environments/default/retention');

  assert.deepEqual(retention.rule, { days: 90, daysWithoutResponse: null });
  assert.match(draftStatement, new RegExp(`Once saved, this rule would delete ${draftCount} users`));
  assert.equal(retention.preview.wouldDelete, draftCount);
  assert.equal(statement,
    `This rule would delete ${retention.preview.wouldDelete} users of ${retention.preview.users} now.`);
  assert.deepEqual(bars.map((b) => b.users), retention.preview.histogram.map((b) => b.users));
  assert.ok(bars.every((b) => (b.users > 0) === (b.height > 1)), 'bars are sized through the CSSOM');
  assert.deepEqual(bars.map((b) => b.due),
    retention.preview.histogram.map((b) => b.fromDays >= 90));
  assert.equal(cutoff.days, '90');
  assert.ok(Math.abs(cutoff.left - firstDueBar) < 12, 'the line stands where the deleted bars start');
  clean();
});

test('settings: the identity secret is shown once, and turns verification on and off', async () => {
  const { page, clean } = await consolePage();

  await signIn(page);
  await page.click('nav a[href="#/settings"]');
  await page.click('#identity-secret-set');
  const secret = await page.textContent('#identity-secret');
  const { body: on } = await collector.admin('/admin/v1/environments/default');
  const hash = createHmac('sha256', secret).update('verified-user').digest('hex');
  const verified = await collector.ingest([{ type: 'identify', userId: 'verified-user', context: { userHash: hash } }]);
  const unverified = await collector.ingest([{ type: 'identify', userId: 'verified-user-2' }]);
  await screenshot(page, 'console-settings-identity-secret');
  await page.reload();
  await page.locator('#identity-status', { hasText: 'On:' }).waitFor();
  const shownAgain = await page.locator('#identity-secret').count();
  await page.click('#identity-secret-remove');
  await page.locator('dialog.confirm button.danger').click();
  await page.locator('#identity-status', { hasText: 'Off:' }).waitFor();
  const { body: off } = await collector.admin('/admin/v1/environments/default');

  assert.match(secret, /^ebb_ivs_/);
  assert.equal(on.identityVerification, true);
  assert.equal(verified.status, 200, 'the shown secret is the one the collector checks');
  assert.equal(unverified.status, 400);
  assert.equal(shownAgain, 0, 'the secret is never shown again');
  assert.equal(off.identityVerification, false);
  clean();
});

test('settings: rotating the identity secret shows the new one once and refuses the old one', async () => {
  const { page, clean } = await consolePage();
  const identify = (userId, secret) => collector.ingest([{
    type: 'identify', userId,
    context: { userHash: createHmac('sha256', secret).update(userId).digest('hex') },
  }]);

  try {
    await signIn(page);
    await page.click('nav a[href="#/settings"]');
    await page.click('#identity-secret-set');
    const first = await page.textContent('#identity-secret');
    const beforeRotation = await identify('rotated-user-1', first);
    await page.click('#identity-secret-set');
    const dialog = page.locator('dialog.confirm');
    const question = await dialog.locator('h2').textContent();
    await dialog.locator('button.danger').click();
    await page.locator('#identity-secret').filter({ hasNotText: first }).waitFor();
    const second = await page.textContent('#identity-secret');
    await screenshot(page, 'console-settings-identity-rotated');
    const withOld = await identify('rotated-user-2', first);
    const withNew = await identify('rotated-user-3', second);
    await page.reload();
    await page.locator('#identity-status', { hasText: 'On:' }).waitFor();
    const shownAgain = await page.locator('#identity-secret').count();
    const { status: oldUserStatus } = await collector.admin('/admin/v1/users/rotated-user-2');
    const { status: newUserStatus } = await collector.admin('/admin/v1/users/rotated-user-3');

    assert.match(first, /^ebb_ivs_/);
    assert.match(second, /^ebb_ivs_/);
    assert.notEqual(second, first);
    assert.equal(beforeRotation.status, 200);
    assert.equal(question, 'Rotate the identity secret?');
    assert.equal(withOld.status, 400, 'a hash made with the old secret is refused');
    assert.equal(withOld.body.rejected[0].error, 'invalid_user_hash');
    assert.equal(withNew.status, 200, 'the shown secret is the one the collector checks');
    assert.equal(oldUserStatus, 404);
    assert.equal(newUserStatus, 200);
    assert.equal(shownAgain, 0, 'the new secret is never shown again');
    clean();
  } finally {
    await collector.adminCall('DELETE', '/admin/v1/environments/default/identity-secret');
  }
});

test('settings: environments are created and renamed, and a write key rotated', async () => {
  const { page, clean } = await consolePage();

  await signIn(page);
  await page.click('nav a[href="#/settings"]');
  await page.fill('#new-environment', 'staging');
  await page.click('#create-form button[type=submit]');
  await selected(page, 'staging');
  const { body: listed } = await collector.admin('/admin/v1/environments');
  const staging = listed.find((e) => e.name === 'staging');
  const oldKey = staging.writeKeys[0];
  await page.click('#rotate-write-key');
  await page.locator('dialog.confirm button.danger').click();
  await page.locator('#write-keys li').filter({ hasNotText: oldKey }).waitFor();
  const shownKey = await page.textContent('#write-keys li');
  await page.fill('#rename-environment', 'staging-eu');
  await page.click('#rename-form button[type=submit]');
  await selected(page, 'staging-eu');
  await screenshot(page, 'console-settings-environments');
  const { body: renamed } = await collector.admin(`/admin/v1/environments/${staging.id}`);
  const withOld = await collector.ingest([{ type: 'track', userId: 'x', event: 'E' }], oldKey);
  const withNew = await collector.ingest([{ type: 'track', userId: 'x', event: 'E' }], shownKey);

  assert.equal(renamed.name, 'staging-eu');
  assert.deepEqual(renamed.writeKeys, [shownKey]);
  assert.equal(withOld.status, 401, 'the old key stops working');
  assert.equal(withNew.status, 200);
  assert.equal(await page.locator('#environment option').count(), listed.length);
  clean();
});

test('settings: purge asks for the environment name and leaves a receipt', async () => {
  const { page, clean } = await consolePage();
  const { body: listed } = await collector.admin('/admin/v1/environments');
  const staging = listed.find((e) => e.name === 'staging-eu');
  await collector.ingest(['p1', 'p2', 'p3'].map((userId) => ({ type: 'identify', userId })),
    staging.writeKeys[0]);
  const before = await apiCount({}, staging.id);

  await signIn(page);
  await page.selectOption('#environment', staging.id);
  await page.click('nav a[href="#/settings"]');
  await page.click('#purge');
  const dialog = page.locator('dialog.confirm');
  const confirm = dialog.locator('button.danger');
  const disabledAtFirst = await confirm.isDisabled();
  await dialog.locator('input.typed-confirmation').fill('staging');
  const disabledWhenWrong = await confirm.isDisabled();
  await dialog.locator('input.typed-confirmation').fill('staging-eu');
  await screenshot(page, 'console-settings-purge-confirm');
  await confirm.click();
  await page.locator('#purge-receipt').waitFor();
  const receiptText = await page.textContent('#purge-receipt');
  const seq = Number((await page.textContent('#purge-receipt .audit-seq')).slice(1));
  const { body: audit } = await collector.admin(`/admin/v1/audit?environment=${staging.id}`);

  assert.ok(before >= 3, `${before} users to purge`);
  assert.ok(disabledAtFirst && disabledWhenWrong, 'only the exact name enables the purge');
  assert.equal(await apiCount({}, staging.id), 0);
  assert.match(receiptText, new RegExp(`users\\s*${before}`));
  assert.equal(audit[0].seq, seq);
  assert.equal(audit[0].action, 'purge_environment');
  clean();
});

test('audit: the log is newest first and shows the verified chain', async () => {
  const { page, clean } = await consolePage();
  const { body: entries } = await collector.admin('/admin/v1/audit?limit=500');
  const { body: check } = await collector.admin('/admin/v1/audit/verify');

  await signIn(page);
  await page.click('nav a[href="#/audit"]');
  await page.selectOption('#audit-scope', 'all');
  await page.locator(`#audit-log tr[data-seq="${entries[0].seq}"]`).waitFor();
  const seqs = await page.$$eval('#audit-log tbody tr', (rows) => rows.map((r) => Number(r.dataset.seq)));
  const status = await page.textContent('#chain-status');
  const actions = await page.locator('#audit-log .action').allTextContents();
  await screenshot(page, 'console-audit');

  assert.equal(check.valid, true);
  assert.deepEqual(seqs, entries.map((e) => e.seq));
  assert.deepEqual(seqs, [...seqs].sort((a, b) => b - a));
  assert.match(status, new RegExp(`The chain holds\\. All ${check.entries} entries`));
  assert.ok(actions.includes('delete_segment') && actions.includes('purge_environment'));
  clean();
});

test('audit: an entry edited in the database shows the chain as broken at that entry', async () => {
  const { page, clean } = await consolePage();
  const { body: entries } = await collector.admin('/admin/v1/audit?limit=500');
  const edited = entries.find((entry) => entry.action === 'delete_segment');
  const [[original]] = await collector.sql('SELECT counts FROM audit_entries WHERE seq = ?', [edited.seq]);

  try {
    // Someone with the database file hides how many users a deletion removed.
    await collector.sql('UPDATE audit_entries SET counts = ? WHERE seq = ?',
      [JSON.stringify({ ...edited.counts, users: 0 }), edited.seq]);
    const { body: check } = await collector.admin('/admin/v1/audit/verify');
    await signIn(page);
    await page.click('nav a[href="#/audit"]');
    const status = page.locator('#chain-status');
    await status.waitFor();
    const valid = await status.getAttribute('data-valid');
    const role = await status.getAttribute('role');
    const text = await status.textContent();
    await screenshot(page, 'console-audit-broken-chain');

    assert.ok(edited.seq < entries[0].seq, 'an entry before the newest is edited');
    assert.deepEqual(check, { valid: false, entries: entries.length, firstBroken: edited.seq });
    assert.equal(valid, 'false');
    assert.equal(role, 'alert');
    assert.match(text, new RegExp(`The chain is broken at entry #${edited.seq}:`));
    assert.match(text, new RegExp(`${entries.length} entries checked`));
    clean();
  } finally {
    await collector.sql('UPDATE audit_entries SET counts = ? WHERE seq = ?', [original, edited.seq]);
  }
  const { body: restored } = await collector.admin('/admin/v1/audit/verify');
  assert.equal(restored.valid, true, 'the original entry makes the chain whole again');
});

test('values a user sent are shown as text and run nothing', async () => {
  const { page, clean } = await consolePage();

  await signIn(page);
  await addTraitCondition(page, XSS.key, 'exists');
  await showMatching(page);
  await showCount(page, 1);
  const row = await page.locator('#users tbody tr').textContent();
  await page.click('#users a.user-link');
  await page.locator('#user-title').waitFor();
  const title = await page.textContent('#user-title');
  const counts = await page.textContent('#user-counts');
  const trait = await page.locator('#traits tbody tr').filter({ hasText: XSS.key }).textContent();
  const event = await page.locator('#events .event-name').first().textContent();
  const anonymous = await page.locator('.ids code').allTextContents();
  await screenshot(page, 'console-user-markup-as-text');
  const injected = await page.$$eval('#app img, #app svg, #app iframe, #app script, #app b',
    (found) => found.map((e) => e.outerHTML));

  assert.ok(row.includes(XSS.userId) && row.includes(XSS.value), row);
  assert.equal(title, XSS.userId);
  assert.equal(trait, `${XSS.key}${XSS.value}`);
  assert.equal(event, XSS.event);
  assert.ok(anonymous.includes(XSS.anonymousId));
  assert.deepEqual(injected, [], 'no element was made from user data');
  clean();
});

test('segments: an answer that arrives after a newer one is not shown', async () => {
  const { page, clean } = await consolePage();
  // The first list (every user, asked for as the page opens) is held back until the
  // filtered one has been shown, as a slow answer would be.
  let releaseFirst;
  const firstHeld = new Promise((resolve) => { releaseFirst = resolve; });
  let asked = 0;
  await page.route((url) => url.pathname.endsWith('/segments/users'), async (route) => {
    asked += 1;
    if (asked === 1) await firstHeld;
    await route.continue();
  });

  await signIn(page);
  await addTraitCondition(page, XSS.key, 'exists');
  await showMatching(page);
  await showCount(page, 1);
  const firstAnswered = page.waitForResponse((response) =>
    new URL(response.url()).pathname.endsWith('/segments/users'));
  releaseFirst();
  await firstAnswered;
  // Give the stale answer the time it would take to be drawn.
  await page.waitForTimeout(300);
  const count = await page.getAttribute('#match-count', 'data-count');
  const rows = await page.locator('#users tbody tr').count();
  const everyone = (await apiCount({ all: [] })).toString();

  assert.equal(asked, 2);
  assert.notEqual(everyone, '1', 'the test needs more than one user to tell the lists apart');
  assert.equal(count, '1');
  assert.equal(rows, 1);
  clean();
});

test('every console page loads from the collector’s origin alone', async () => {
  const { page, clean, requested } = await consolePage();

  await page.goto(`${collector.base}/admin/`);
  await page.locator('#signin').waitFor();
  await signIn(page);
  await page.locator('#users').waitFor();
  await page.goto(`${collector.base}/admin/#/users/user-01`);
  await page.locator('#user-title', { hasText: 'user-01' }).waitFor();
  await page.click('nav a[href="#/settings"]');
  await page.locator('#retention-histogram').waitFor();
  await page.click('nav a[href="#/audit"]');
  await page.locator('#audit-log').waitFor();
  await screenshot(page, 'console-same-origin-audit');
  const paths = requested.map((url) => new URL(url).pathname);

  for (const path of ['/admin/', '/admin/app.js', '/admin/console.css', '/admin/segments.js',
    '/admin/v1/environments', '/admin/v1/audit/verify']) {
    assert.ok(paths.includes(path), `the console requested ${path}: ${paths.join(' ')}`);
  }
  assert.deepEqual(requested.filter((url) => new URL(url).origin !== new URL(collector.base).origin),
    [], 'every request goes to the collector’s origin');
  clean();
});

/**
 * Adds a condition of `kind` (a value of the "Condition kind" select) with the form's
 * controls; answers its row.
 */
async function addCondition(page, kind) {
  await page.click('#add-condition');
  await page.locator('.condition').last().getByLabel('Condition kind').selectOption(kind);
  return page.locator('.condition').last();
}

/** Shows the users matching the form's filter; answers their ids (sorted) and the filter. */
async function matching(page, count) {
  await showMatching(page);
  await showCount(page, count);
  const ids = await page.locator('#users a.user-link').allTextContents();
  return { ids: ids.sort(), filter: JSON.parse(await page.inputValue('#filter-json')) };
}

test('segments: Last seen and Consent conditions, “not” and any / all, built with the form, match the right users', async () => {
  const { page, clean } = await consolePage();
  const { body: environment } = await collector.adminCall(
    'POST', '/admin/v1/environments', { name: 'filter-form' });
  // Last seen so many days ago; every other user granted surveys, the others denied them;
  // one user never answered for surveys at all.
  const people = [2, 5, 15, 25, 40, 70, 150, 400].map((days, i) => ({
    id: `form-${i}`, days, surveys: i % 2 === 0,
  }));
  people.push({ id: 'form-undecided', days: 1, surveys: undefined });
  const seeded = await collector.ingest(people.map((person) => ({
    type: 'identify', userId: person.id, messageId: `form-identify-${person.id}`,
    timestamp: new Date(Date.now() - person.days * DAY).toISOString(),
    ...(person.surveys === undefined ? {} : {
      context: { consent: { categoryPreferences: { analytics: true, surveys: person.surveys } } },
    }),
  })), environment.writeKeys[0]);
  const who = (pick) => people.filter(pick).map((person) => person.id).sort();
  const results = [];
  const step = async (expected) => {
    const shown = await matching(page, expected.length);
    results.push({ ...shown, expected, api: await apiCount(shown.filter, environment.id) });
  };

  await signIn(page);
  await page.selectOption('#environment', environment.id);
  await showCount(page, people.length);
  const seen = await addCondition(page, 'lastSeen');
  await seen.getByLabel('At least days ago').fill('10');
  await seen.getByLabel('At most days ago').fill('100');
  await step(who((p) => p.days >= 10 && p.days <= 100));
  await seen.getByLabel('At least days ago').fill('');
  await seen.getByLabel('At most days ago').fill('30');
  await step(who((p) => p.days <= 30));
  const consent = await addCondition(page, 'consent');
  await consent.getByLabel('Consent category').fill('surveys');
  await consent.getByLabel('Consent given').selectOption('true');
  await step(who((p) => p.days <= 30 && p.surveys === true));
  await page.selectOption('#filter-match', 'any');
  await step(who((p) => p.days <= 30 || p.surveys === true));
  await screenshot(page, 'console-segments-form-any');
  await page.selectOption('#filter-match', 'all');
  await consent.getByLabel('not', { exact: true }).check();
  await step(who((p) => p.days <= 30 && p.surveys !== true));
  await screenshot(page, 'console-segments-form-not');
  await consent.getByLabel('not', { exact: true }).uncheck();
  await consent.getByLabel('Consent given').selectOption('false');
  await step(who((p) => p.days <= 30 && p.surveys === false));

  assert.equal(seeded.status, 200, JSON.stringify(seeded.body));
  assert.deepEqual(results.map((r) => r.filter), [
    { all: [{ lastSeenDaysAgo: { atLeast: 10, atMost: 100 } }] },
    { all: [{ lastSeenDaysAgo: { atMost: 30 } }] },
    { all: [{ lastSeenDaysAgo: { atMost: 30 } }, { consent: 'surveys', granted: true }] },
    { any: [{ lastSeenDaysAgo: { atMost: 30 } }, { consent: 'surveys', granted: true }] },
    { all: [{ lastSeenDaysAgo: { atMost: 30 } }, { not: { consent: 'surveys', granted: true } }] },
    { all: [{ lastSeenDaysAgo: { atMost: 30 } }, { consent: 'surveys', granted: false }] },
  ]);
  for (const [n, result] of results.entries()) {
    assert.deepEqual(result.ids, result.expected, `step ${n + 1}: the users listed`);
    assert.equal(result.api, result.expected.length, `step ${n + 1}: the API counts as many`);
  }
  assert.deepEqual(results.map((r) => r.ids.length), [4, 5, 2, 7, 3, 2]);
  clean();
});

test('a user with no traits, consent, events or responses shows the stated empty messages', async () => {
  const { page, clean } = await consolePage();
  const ingested = await collector.ingest([
    { type: 'identify', userId: 'bare-user', messageId: 'bare-identify' },
  ]);
  const { body: stored } = await collector.admin('/admin/v1/users/bare-user');

  await signIn(page);
  await page.goto(`${collector.base}/admin/#/users/bare-user`);
  await page.locator('#user-title', { hasText: 'bare-user' }).waitFor();
  const empties = await page.locator('#view .state.empty').allTextContents();
  const headings = await page.locator('#view .card h2').allTextContents();
  const counts = await page.textContent('#user-counts');
  const consentNow = await page.locator('#view .card', { hasText: 'History (newest first)' })
    .locator('p').first().textContent();
  await screenshot(page, 'console-user-empty');

  assert.equal(ingested.status, 200);
  assert.deepEqual(stored.traits ?? {}, {});
  assert.deepEqual([stored.events, stored.responses, stored.consentHistory], [[], [], []]);
  assert.deepEqual(empties,
    ['No traits.', 'No consent was recorded.', 'No events.', 'No survey responses.']);
  assert.ok(headings.includes('Events (0, newest first)'), headings.join(' | '));
  assert.ok(headings.includes('Survey responses (0)'), headings.join(' | '));
  assert.equal(counts, '0 events, 0 responses');
  assert.equal(consentNow, 'Now: none');
  assert.equal(await page.locator('#traits, #consent-history, #events li, #responses').count(), 0);
  clean();
});

test('audit: on a fresh collector the log and the chain state that nothing is audited yet', async () => {
  // A collector that has done nothing yet: the shared one has audited the tests before.
  const fresh = await startCollector();
  try {
    const { page, clean } = await consolePage({ base: fresh.base });
    const { body: entries } = await fresh.admin('/admin/v1/audit?limit=5');
    const { body: check } = await fresh.admin('/admin/v1/audit/verify');

    await signIn(page, fresh.adminToken, fresh.base);
    await page.click('nav a[href="#/audit"]');
    const log = page.locator('#view .state.empty', { hasText: 'No audit entries yet.' });
    await log.waitFor();
    const chain = await page.textContent('#chain-status');
    await screenshot(page, 'console-audit-empty');
    await page.selectOption('#audit-scope', 'all');
    await log.waitFor();
    const tables = await page.locator('#audit-log').count();

    assert.deepEqual(entries, []);
    assert.deepEqual(check, { valid: true, entries: 0, firstBroken: null });
    assert.equal(chain, '✓ The chain holds. Nothing is audited yet.');
    assert.equal(tables, 0, 'no empty table in place of the message');
    clean();
  } finally {
    await fresh.stop();
  }
});

/**
 * Opens the main pages (segments, a user, settings, audit) one after the other, saving a
 * screenshot of each as `<name>-<page>`, and answers for each how far it is wider than the
 * window (0 when it does not scroll sideways) and which tables scroll sideways inside it.
 */
async function overflowOfMainPages(page, name) {
  const measure = async (what) => {
    await screenshot(page, `${name}-${what}`);
    return page.evaluate(() => ({
      page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
      tables: [...document.querySelectorAll('.table-wrap')]
        .filter((wrap) => wrap.scrollWidth > wrap.clientWidth)
        .map((wrap) => wrap.querySelector('table')?.id || 'a table'),
    }));
  };
  const widths = {};
  // An export is audited, so that the audit page has rows even when this test runs alone.
  await collector.admin('/admin/v1/users/user-04/export?format=json');
  await signIn(page);
  await page.locator('#match-count').waitFor();
  await page.locator('#users').waitFor();
  widths.segments = await measure('segments');
  await page.goto(`${collector.base}/admin/#/users/user-04`);
  await page.locator('#user-title').waitFor();
  widths.user = await measure('user-detail');
  await page.click('nav a[href="#/settings"]');
  await page.locator('#retention-histogram').waitFor();
  widths.settings = await measure('settings');
  await page.click('nav a[href="#/audit"]');
  await page.locator('#audit-log').waitFor();
  widths.audit = await measure('audit');
  return widths;
}

test('the console is usable at phone width', async () => {
  const { page, clean } = await consolePage({ width: 390, height: 844 });

  const overflow = await overflowOfMainPages(page, 'console-phone');
  const navVisible = await page.locator('nav a[href="#/segments"]').isVisible();

  assert.deepEqual(Object.values(overflow).map((o) => o.page), [0, 0, 0, 0],
    `no page scrolls sideways: ${JSON.stringify(overflow)}`);
  assert.ok(navVisible);
  clean();
});

test('the console fits a 1280×800 window: no page and no table scrolls sideways', async () => {
  const { page, clean } = await consolePage({ width: 1280, height: 800 });

  const overflow = await overflowOfMainPages(page, 'console-desktop');
  const viewWidth = await page.$eval('#view', (view) => view.getBoundingClientRect().width);

  assert.deepEqual(overflow, {
    segments: { page: 0, tables: [] },
    user: { page: 0, tables: [] },
    settings: { page: 0, tables: [] },
    audit: { page: 0, tables: [] },
  });
  assert.ok(viewWidth > 1000, `the pages use the width (${viewWidth} px)`);
  clean();
});
