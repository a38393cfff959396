// The SDK as an npm package: its TypeScript declarations type-check an app, Vite bundles
// that app and the bundle works in Chromium against a real collector, and importing the
// entry where there is no `window` (server-side rendering) neither throws nor does anything.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import { promisify } from 'node:util';
import { build } from 'vite';
import { launchBrowser, repoRoot, startCollector, watchPageErrors } from './harness.mjs';
import { tracked, waitForUser, writeKey } from './sdk-helpers.mjs';

const run = promisify(execFile);
const app = join(repoRoot, 'tests', 'e2e', 'fixtures', 'vite-app');
const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };

let collector;
let browser;
let outDir;

before(async () => {
  collector = await startCollector();
  browser = await launchBrowser();
  outDir = await mkdtemp(join(tmpdir(), 'ebb-vite-'));
});

after(async () => {
  await browser?.close();
  await collector?.stop();
  if (outDir) await rm(outDir, { recursive: true, force: true });
});

test('the TypeScript declarations type-check an app using the whole API', async () => {
  const tsc = join(repoRoot, 'node_modules', '.bin', 'tsc');

  const { stdout } = await run(tsc, ['-p', join(app, 'tsconfig.json')]);

  assert.equal(stdout, '');
});

test('a misuse of the API is a type error', async () => {
  const tsc = join(repoRoot, 'node_modules', '.bin', 'tsc');
  const dir = await mkdtemp(join(tmpdir(), 'ebb-tsc-'));
  const { writeFile } = await import('node:fs/promises');
  await writeFile(join(dir, 'wrong.ts'), "import { track } from 'ebb-sdk';\ntrack(42);\n");
  await writeFile(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        module: 'ESNext',
        moduleResolution: 'Bundler',
        lib: ['ES2022', 'DOM'],
        paths: { 'ebb-sdk': [join(repoRoot, 'www', 'sdk', 'index.d.ts')] },
      },
      files: ['wrong.ts'],
    }),
  );

  const failed = await run(tsc, ['-p', join(dir, 'tsconfig.json')]).then(() => null, (error) => error);
  await rm(dir, { recursive: true, force: true });

  assert.ok(failed, 'tsc refuses track(42)');
  assert.match(failed.stdout, /wrong\.ts/);
});

test('Vite bundles the npm package and the bundle delivers to the collector', async () => {
  await build({
    root: app,
    base: '/vite-app/',
    logLevel: 'warn',
    resolve: { alias: { 'ebb-sdk': join(repoRoot, 'www', 'sdk', 'index.js') } },
    build: { outDir, emptyOutDir: true },
  });
  const context = await browser.newContext();
  await context.route(
    (url) => url.pathname.startsWith('/vite-app/'),
    async (route) => {
      const path = new URL(route.request().url()).pathname.slice('/vite-app/'.length) || 'index.html';
      const body = await readFile(join(outDir, path)).catch(() => null);
      if (!body) return route.fulfill({ status: 404, body: 'not found' });
      return route.fulfill({ status: 200, contentType: types[extname(path)] ?? 'application/octet-stream', body });
    },
  );
  const page = await context.newPage();
  const errors = watchPageErrors(page);
  const key = await writeKey(collector);

  await page.goto(`${collector.base}/vite-app/index.html?writeKey=${key}&user=vite-user`);
  await page.locator('#status', { hasText: /done|failed/ }).waitFor();
  const user = await waitForUser(collector, 'vite-user', (u) => tracked(u).includes('Bundled Event'));

  assert.equal(await page.textContent('#status'), 'done');
  assert.equal(await page.getAttribute('#status', 'data-consent'), 'granted');
  assert.deepEqual(user.traits, { plan: 'pro' });
  assert.ok(user.events.some((event) => event.type === 'page' && event.name === 'Vite home'));
  assert.deepEqual(errors, []);
  await context.close();
});

test('importing the entry without a window neither throws nor does anything', async () => {
  assert.equal(typeof globalThis.window, 'undefined');

  const sdk = await import(join(repoRoot, 'www', 'sdk', 'index.js'));
  const results = await Promise.all([
    sdk.load('wk_ssr', { host: 'https://collector.example' }),
    sdk.identify('ssr-user', { a: 1 }),
    sdk.track('Rendered'),
    sdk.page('Home'),
    sdk.consent.grant(),
    sdk.flush(),
    sdk.ready(),
  ]);

  assert.deepEqual(results, Array(7).fill(undefined));
  assert.equal(sdk.consent.state(), null);
  assert.equal(typeof sdk.default.track, 'function');
});
