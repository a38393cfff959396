// Shared pieces of the SDK's browser tests: a fixture page on the collector's origin that
// exposes the SDK as `window.ebbSdk`, a recorder of the batches a browser context posts,
// a relay that records the batches a leaving page posts, and polling of the admin API
// until what a test expects has arrived.
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { repoRoot } from './harness.mjs';

export const FIXTURE = '/sdk-fixture.html';
export const SNIPPET_FIXTURE = '/sdk-snippet.html';

/** The collector's default write key, as the demo reads it. */
export async function writeKey(collector) {
  const response = await fetch(`${collector.base}/demo/config.json`);
  return (await response.json()).writeKey;
}

/**
 * Serves the fixture page at `FIXTURE` in `context`: a page that imports the npm entry
 * (`/sdk/index.js`) and puts it on `window.ebbSdk`.
 */
export async function serveFixture(context, collector) {
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>SDK fixture</title>
<script type="module">
  import ebb from '/sdk/index.js';
  window.ebbSdk = ebb;
  window.ebbImported = true;
</script></head><body><p>fixture</p></body></html>`;
  await context.route(
    (url) => url.pathname === FIXTURE,
    (route) => route.fulfill({ status: 200, contentType: 'text/html', body: html }),
  );
}

/**
 * Serves a page at `SNIPPET_FIXTURE` that pastes the minified inline snippet and makes
 * `calls` (JavaScript source) right after it, before the module can have loaded. With
 * `csp`, the page is served under that Content-Security-Policy, and the inline script
 * carries the nonce `ebbtest`.
 */
export async function serveSnippetFixture(context, collector, calls, { csp } = {}) {
  const snippet = await readFile(join(repoRoot, 'www', 'sdk', 'snippet.min.js'), 'utf8');
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>Snippet fixture</title>
<script nonce="ebbtest">
window.ebbViolations = [];
document.addEventListener('securitypolicyviolation', (e) => window.ebbViolations.push(e.violatedDirective));
${snippet}
${calls}
</script></head><body><p>snippet fixture</p></body></html>`;
  const headers = csp ? { 'content-security-policy': csp } : {};
  await context.route(
    (url) => url.pathname === SNIPPET_FIXTURE,
    (route) => route.fulfill({ status: 200, contentType: 'text/html', headers, body: html }),
  );
}

/**
 * Opens the fixture page at `server.base` (the collector, or a relay in front of it) and
 * waits for the SDK module to be imported.
 */
export async function openFixture(context, server) {
  const page = await context.newPage();
  await page.goto(`${server.base}${FIXTURE}`);
  await page.waitForFunction(() => window.ebbImported === true);
  return page;
}

/**
 * Records every batch request the context sends (including keepalive ones) and lets a
 * test answer it: `answer(request, attempt)` returns `undefined` to pass the request on to
 * the collector, `'abort'`, or `{status, headers, body}` to answer in its place, or a
 * promise of one of these to hold the request until it settles.
 */
export async function recordBatches(context, answer = () => undefined) {
  const requests = [];
  await context.route(
    (url) => url.pathname === '/v1/batch',
    async (route) => {
      const request = route.request();
      // A body that is not JSON is recorded as `body: null`, for a test to see.
      let body = null;
      try {
        body = JSON.parse(request.postData() ?? '{}');
      } catch {}
      const entry = { body, messages: body?.batch ?? [], headers: request.headers(), status: null };
      requests.push(entry);
      const reply = await answer(entry, requests.length);
      if (reply === 'abort') {
        entry.status = 'aborted';
        await route.abort('internetdisconnected');
      } else if (reply) {
        entry.status = reply.status;
        await route.fulfill({
          status: reply.status,
          headers: { 'content-type': 'application/json', ...(reply.headers ?? {}) },
          body: reply.body ?? '{}',
        });
      } else {
        const response = await route.fetch();
        entry.status = response.status();
        await route.fulfill({ response });
      }
    },
  );
  return requests;
}

/**
 * Starts an HTTP relay on a free port in front of the collector: it passes every request
 * on and answers with the collector's answer, and records each batch it passes
 * (`{bytes, ids, status}`, ids `null` for a body that is not JSON). A page opened at
 * `relay.base` sends its batches there, same-origin. Playwright's routes do not see the
 * requests a page sends as it goes away (they reach the network unrouted); the relay
 * does. `close()` stops it.
 */
export async function startRelay(collector) {
  const requests = [];
  const server = createServer(async (request, response) => {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    const batch = request.method === 'POST' && request.url === '/v1/batch';
    let entry = null;
    if (batch) {
      let ids = null;
      try {
        ids = JSON.parse(body.toString('utf8')).batch.map((message) => message.messageId);
      } catch {}
      entry = { bytes: body.length, ids, status: null };
      requests.push(entry);
    }

    const headers = {};
    for (const name of ['content-type', 'authorization']) {
      if (request.headers[name]) headers[name] = request.headers[name];
    }
    const answer = await fetch(collector.base + request.url, {
      method: request.method,
      headers,
      body: request.method === 'GET' || request.method === 'HEAD' ? undefined : body,
    });
    if (entry) entry.status = answer.status;
    response.writeHead(answer.status, {
      'content-type': answer.headers.get('content-type') ?? 'application/octet-stream',
    });
    response.end(Buffer.from(await answer.arrayBuffer()));
  });
  await new Promise((listening) => server.listen(0, '127.0.0.1', listening));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () => new Promise((closed) => server.close(closed)),
  };
}

/** An origin where nothing listens: a port taken from the system and let go again. */
export async function unreachableHost() {
  const server = createServer();
  await new Promise((listening) => server.listen(0, '127.0.0.1', listening));
  const { port } = server.address();
  await new Promise((closed) => server.close(closed));
  return `http://127.0.0.1:${port}`;
}

/** Message ids of the messages that the collector answered 200 for. */
export function deliveredIds(requests) {
  return requests
    .filter((request) => request.status === 200)
    .flatMap((request) => request.messages.map((message) => message.messageId));
}

/**
 * Polls the admin API for user `id` until `done(user)` holds; returns the user. Fails after
 * `timeout` ms with the last answer.
 */
export async function waitForUser(collector, id, done, timeout = 15_000) {
  const until = Date.now() + timeout;
  let last;
  while (Date.now() < until) {
    last = await collector.admin(`/admin/v1/users/${encodeURIComponent(id)}`);
    if (last.status === 200 && done(last.body)) return last.body;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`user ${id} never matched; last answer: ${JSON.stringify(last)}`);
}

/** The names of a user's track events, oldest first, consent records left out. */
export function tracked(user) {
  return user.events
    .filter((event) => event.type === 'track' && event.event !== 'Segment Consent Preference Updated')
    .map((event) => event.event);
}

/** Counts writes to localStorage and sessionStorage and to document.cookie in every page. */
export async function countStorageWrites(context) {
  await context.addInitScript(() => {
    window.ebbStorageWrites = 0;
    const setItem = Storage.prototype.setItem;
    Storage.prototype.setItem = function (...args) {
      window.ebbStorageWrites += 1;
      return setItem.apply(this, args);
    };
    const cookie = Object.getOwnPropertyDescriptor(Document.prototype, 'cookie');
    Object.defineProperty(Document.prototype, 'cookie', {
      get() {
        return cookie.get.call(this);
      },
      set(value) {
        window.ebbStorageWrites += 1;
        cookie.set.call(this, value);
      },
    });
  });
}
