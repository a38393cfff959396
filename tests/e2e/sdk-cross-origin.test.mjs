// The SDK on a site whose pages come from another origin than the collector, as a real
// site uses it: the page and the built SDK are served by a small static server, `host`
// names the collector, and a forwarder in front of the collector records every request
// the browser makes to it (CORS preflights included, which Playwright's routes and
// request events never show). Batches must go as simple `text/plain` requests, a
// `pagehide` flush must arrive, and the `Retry-After` of a real 429 must reach the SDK.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer, request as httpRequest } from 'node:http';
import { extname, join, normalize } from 'node:path';
import { launchBrowser, repoRoot, startCollector, watchPageErrors } from './harness.mjs';
import { FIXTURE, tracked, waitForUser, writeKey } from './sdk-helpers.mjs';

const TYPES = {
  '.js': 'text/javascript',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.ts': 'text/plain',
};

let collector;
let front;
let site;
let browser;
let key;

/** Starts an HTTP server on a free loopback port; answers `{base, close}`. */
async function listen(handler) {
  const server = createServer(handler);
  await new Promise((listening) => server.listen(0, '127.0.0.1', listening));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((closed) => {
      server.close(closed);
      server.closeAllConnections();
    }),
  };
}

/**
 * A static site on its own origin: the fixture page at `FIXTURE`, which imports the built
 * SDK from `/sdk/` on the same site and puts it on `window.ebbSdk`.
 */
async function startSite() {
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>Another site</title>
<script type="module">
  import ebb from '/sdk/index.js';
  window.ebbSdk = ebb;
  window.ebbImported = true;
</script></head><body><p>a site on another origin</p></body></html>`;
  const sdkDir = join(repoRoot, 'www', 'sdk');
  return listen(async (request, response) => {
    const path = new URL(request.url, 'http://site').pathname;
    if (path === FIXTURE) {
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end(html);
      return;
    }
    const file = normalize(join(sdkDir, path.replace(/^\/sdk\//, '')));
    if (!path.startsWith('/sdk/') || !file.startsWith(sdkDir)) {
      response.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(file);
      response.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
      response.end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
}

/**
 * A forwarder on its own origin in front of `target` (a collector): every request goes on
 * with its headers and body unchanged, and the collector's answer comes back unchanged.
 * Each is recorded as `{method, path, headers, at, status, answer, answeredAt}` (`answer`:
 * the collector's response headers; times in ms of this process's clock).
 */
async function startFront(target) {
  const requests = [];
  const { hostname, port } = new URL(target.base);
  const server = await listen((incoming, outgoing) => {
    const entry = {
      method: incoming.method,
      path: incoming.url,
      headers: incoming.headers,
      at: Date.now(),
      status: null,
      answer: null,
      answeredAt: null,
    };
    requests.push(entry);
    const onward = httpRequest({
      hostname,
      port,
      method: incoming.method,
      path: incoming.url,
      headers: { ...incoming.headers, host: `${hostname}:${port}` },
    }, (answer) => {
      entry.status = answer.statusCode;
      entry.answer = answer.headers;
      entry.answeredAt = Date.now();
      outgoing.writeHead(answer.statusCode, answer.headers);
      answer.pipe(outgoing);
    });
    onward.on('error', () => outgoing.destroy());
    incoming.pipe(onward);
  });
  return { ...server, requests };
}

before(async () => {
  collector = await startCollector();
  front = await startFront(collector);
  site = await startSite();
  browser = await launchBrowser();
  key = await writeKey(collector);
});

after(async () => {
  await browser?.close();
  await site?.close();
  await front?.close();
  await collector?.stop();
});

/** A page of the static site, with the SDK imported. */
async function openSitePage() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = watchPageErrors(page);
  await page.goto(`${site.base}${FIXTURE}`);
  await page.waitForFunction(() => window.ebbImported === true);
  return { context, page, errors };
}

/** The requests `server` saw for `path`, by method. */
function seen(server, path, method) {
  return server.requests.filter((entry) => entry.path === path && entry.method === method);
}

test('a page on another origin delivers with simple text/plain requests: no preflight, and the answer is read', async () => {
  const { context, page, errors } = await openSitePage();
  const before = front.requests.length;

  const outcome = await page.evaluate(async ({ key, host }) => {
    const ebb = window.ebbSdk;
    await ebb.load(key, { host });
    await ebb.consent.grant();
    await ebb.identify('cross-origin-user', { plan: 'pro' });
    await ebb.track('Crossed');
    return ebb.flush().then(() => 'sent', (error) => error.message);
  }, { key, host: front.base });
  const user = await waitForUser(collector, 'cross-origin-user', (u) => tracked(u).includes('Crossed'));

  const requests = front.requests.slice(before);
  const posts = requests.filter((entry) => entry.path === '/v1/batch' && entry.method === 'POST');
  assert.notEqual(new URL(site.base).origin, new URL(front.base).origin);
  assert.equal(outcome, 'sent', 'flush() read the collector’s answer across origins');
  assert.ok(posts.length > 0);
  assert.deepEqual(requests.filter((entry) => entry.method === 'OPTIONS'), [], 'no preflight');
  for (const post of posts) {
    assert.match(post.headers['content-type'], /^text\/plain(;|$)/);
    assert.equal(post.headers.origin, site.base);
    assert.equal(post.headers['sec-fetch-mode'], 'cors');
    assert.equal(post.status, 200);
    assert.equal(post.answer['access-control-allow-origin'], site.base);
  }
  assert.deepEqual(tracked(user), ['Crossed']);
  assert.deepEqual(user.traits, { plan: 'pro' });
  assert.deepEqual(errors, []);
  await context.close();
});

test('a pagehide flush from a page on another origin arrives', async () => {
  const { context, page, errors } = await openSitePage();
  await page.evaluate(async ({ key, host }) => {
    const ebb = window.ebbSdk;
    await ebb.load(key, { host, flushInterval: 600_000 });
    await ebb.consent.grant();
    await ebb.identify('cross-origin-leaving-user');
    await ebb.flush();
    await ebb.track('Left across origins');
  }, { key, host: front.base });
  const stored = await collector.admin('/admin/v1/users/cross-origin-leaving-user');
  const before = front.requests.length;

  // The next page has no SDK: only the flush of the page going away can deliver it.
  await page.goto('about:blank');
  const user = await waitForUser(collector, 'cross-origin-leaving-user',
    (u) => tracked(u).includes('Left across origins'));

  const requests = front.requests.slice(before);
  const posts = requests.filter((entry) => entry.path === '/v1/batch' && entry.method === 'POST');
  assert.deepEqual(tracked(stored.body), [], 'nothing was sent before the page left');
  assert.deepEqual(tracked(user), ['Left across origins']);
  assert.ok(posts.length > 0);
  assert.deepEqual(requests.filter((entry) => entry.method === 'OPTIONS'), [], 'no preflight');
  for (const post of posts) {
    assert.match(post.headers['content-type'], /^text\/plain(;|$)/);
    assert.equal(post.headers.origin, site.base);
  }
  assert.deepEqual(errors, []);
  await context.close();
});

test('a 429 from a collector on another origin is retried only after its Retry-After, which the page can read', async () => {
  // One request per second per write key: the second batch within a second is refused
  // with `Retry-After: 1`. The backoff alone would retry within 50 ms, so a retry that
  // waits a second shows the SDK read the header across origins.
  const limited = await startCollector({ env: { EBB_RATE_LIMIT: '1' } });
  const limitedFront = await startFront(limited);
  try {
    const { context, page, errors } = await openSitePage();
    const limitedKey = await writeKey(limited);

    const outcomes = await page.evaluate(async ({ key, host }) => {
      const ebb = window.ebbSdk;
      await ebb.load(key, { host, retry: { baseDelay: 50, maxDelay: 50 } });
      await ebb.consent.grant();
      await ebb.identify('rate-limited-user');
      const first = await ebb.flush().then(() => 'sent', (error) => error.message);
      await ebb.track('Over the limit');
      const second = await ebb.flush().then(() => 'sent', (error) => error.message);
      return { first, second };
    }, { key: limitedKey, host: limitedFront.base });
    const user = await waitForUser(limited, 'rate-limited-user',
      (u) => tracked(u).includes('Over the limit'));

    const posts = seen(limitedFront, '/v1/batch', 'POST');
    const refused = posts.filter((entry) => entry.status === 429);
    assert.equal(outcomes.first, 'sent');
    assert.match(outcomes.second, /^ebb: the collector answered 429/);
    assert.ok(refused.length >= 1, `a 429 was answered: ${posts.map((p) => p.status)}`);
    for (const entry of refused) {
      assert.equal(entry.answer['retry-after'], '1');
      assert.match(entry.answer['access-control-expose-headers'], /retry-after/i);
      const next = posts[posts.indexOf(entry) + 1];
      const waited = next.at - entry.answeredAt;
      assert.ok(waited >= 950, `the retry came ${waited} ms after the 429, not after Retry-After`);
    }
    assert.equal(posts.at(-1).status, 200);
    assert.deepEqual(seen(limitedFront, '/v1/batch', 'OPTIONS'), [], 'no preflight');
    assert.deepEqual(tracked(user), ['Over the limit']);
    assert.deepEqual(errors, []);
    await context.close();
  } finally {
    await limitedFront.close();
    await limited.stop();
  }
});
