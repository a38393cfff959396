// The SDK as an npm package: an app that depends on the built package (installed in a
// temporary project, found through its package.json) type-checks against its
// declarations, Vite bundles that app and the bundle works in Chromium against a real
// collector, and importing the entry where there is no `window` (server-side rendering)
// neither throws nor does anything.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import { promisify } from 'node:util';
import { build } from 'vite';
import { launchBrowser, repoRoot, startCollector, watchPageErrors } from './harness.mjs';
import { tracked, waitForUser, writeKey } from './sdk-helpers.mjs';

const run = promisify(execFile);
const app = join(repoRoot, 'tests', 'e2e', 'fixtures', 'vite-app');
const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };

const tsc = join(repoRoot, 'node_modules', '.bin', 'tsc');

let collector;
let browser;
let project;
let outDir;

before(async () => {
  collector = await startCollector();
  browser = await launchBrowser();
  project = await appProject();
  outDir = await mkdtemp(join(tmpdir(), 'ebb-vite-'));
});

after(async () => {
  await browser?.close();
  await collector?.stop();
  for (const dir of [project, outDir]) if (dir) await rm(dir, { recursive: true, force: true });
});

/**
 * A temporary project holding the app, with the built package installed as
 * `node_modules/ebb-sdk`: a link to `www/sdk/`, as npm makes for a `file:` dependency. tsc
 * and Vite find the SDK through its package.json (`exports`, `types`), as an app would.
 */
async function appProject() {
  const dir = await mkdtemp(join(tmpdir(), 'ebb-app-'));
  await cp(app, dir, { recursive: true });
  await mkdir(join(dir, 'node_modules'));
  await symlink(join(repoRoot, 'www', 'sdk'), join(dir, 'node_modules', 'ebb-sdk'), 'dir');
  return dir;
}

test('the TypeScript declarations type-check an app using the whole API', async () => {
  const { stdout } = await run(tsc, ['-p', join(project, 'tsconfig.json')]);

  assert.equal(stdout, '');
});

test('a misuse of the API is a type error', async () => {
  await writeFile(join(project, 'wrong.ts'), "import { track } from 'ebb-sdk';\ntrack(42);\n");
  const config = JSON.parse(await readFile(join(project, 'tsconfig.json'), 'utf8'));
  await writeFile(join(project, 'wrong.json'), JSON.stringify({ ...config, files: ['wrong.ts'] }));

  const failed = await run(tsc, ['-p', join(project, 'wrong.json')]).then(() => null, (error) => error);
  await rm(join(project, 'wrong.ts'));
  await rm(join(project, 'wrong.json'));

  assert.ok(failed, 'tsc refuses track(42)');
  assert.match(failed.stdout, /wrong\.ts.*TS2345/);
});

test('Vite bundles the installed package and the bundle delivers to the collector', async () => {
  await build({
    root: project,
    base: '/vite-app/',
    logLevel: 'warn',
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

  const data = await page.evaluate(() => ({ ...document.getElementById('status').dataset }));
  const left = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('ebb.')));

  assert.equal(await page.textContent('#status'), 'done');
  assert.equal(data.consent, 'granted', 'the listener stopped before the deny and the withdrawal');
  assert.equal(data.changes, '1', 'off() stopped the other listener after the grant');
  assert.equal(data.after, 'denied');
  assert.ok(data.anonymousId && data.resetId && data.resetId !== data.anonymousId, 'reset');
  assert.deepEqual(left, [], 'the withdrawal erased what the SDK kept');
  assert.deepEqual(user.traits, { plan: 'pro', seats: 3 });
  const kinds = user.events.map((event) => event.type);
  assert.ok(user.events.some((event) => event.type === 'page' && event.name === 'Vite home'));
  assert.ok(kinds.includes('group') && kinds.includes('alias'), kinds.join());
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
