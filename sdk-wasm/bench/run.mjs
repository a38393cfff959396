// Runs the benchmark page (index.html, bench.js) in headless Chromium and prints the
// medians of 10,000 track() calls of Ebb and of posthog-js, and their ratio.
//
//   npm run bench:sdk            (after scripts/build-sdk.sh)
//   node sdk-wasm/bench/run.mjs --rounds 11 --json
//   EBB_BENCH_SDK=/tmp/other-build node sdk-wasm/bench/run.mjs
//
// The page is served from memory through Playwright's routing on a made-up origin; no
// request leaves the machine.
import { readFile } from 'node:fs/promises';
import { extname, join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const root = resolve(import.meta.dirname, '..', '..');
const args = process.argv.slice(2);
const rounds = Number(args[args.indexOf('--rounds') + 1]) || 7;
const asJson = args.includes('--json');
const origin = 'http://bench.ebb.test';
const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };

// EBB_BENCH_SDK names another build of the SDK to measure (a copy of www/sdk/), for
// comparing two builds in turn.
const sdkDir = process.env.EBB_BENCH_SDK ?? join(root, 'www', 'sdk');

const files = (path) => {
  if (path.startsWith('/sdk/')) return join(sdkDir, path.slice(5));
  if (path.startsWith('/posthog/')) return join(root, 'node_modules', 'posthog-js', 'dist', path.slice(9));
  if (path.startsWith('/bench/')) return join(root, 'sdk-wasm', 'bench', path.slice(7));
  return null;
};

const browser = await chromium.launch({
  executablePath: process.env.EBB_CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage',
  ],
});
try {
  const context = await browser.newContext();
  await context.route('**/*', async (route) => {
    const path = new URL(route.request().url()).pathname;
    const file = files(path);
    const body = file && (await readFile(file).catch(() => null));
    if (!body) return route.fulfill({ status: 404, body: 'not found' });
    return route.fulfill({ status: 200, contentType: types[extname(path)] ?? 'text/plain', body });
  });
  const page = await context.newPage();
  await page.goto(`${origin}/bench/index.html?rounds=${rounds}`);
  await page.waitForFunction(() => window.benchResult, null, { timeout: 300_000 });
  const result = await page.evaluate(() => window.benchResult);
  if (result.error) throw new Error(result.error);

  if (asJson) {
    console.log(JSON.stringify(result, null, 2));
  } else {
    console.log(`${result.calls} track() calls, median of ${result.rounds} rounds, ${result.userAgent}`);
    console.log(`  Ebb         ${result.ebbMedianMs.toFixed(1)} ms`);
    console.log(`  posthog-js  ${result.posthogMedianMs.toFixed(1)} ms`);
    console.log(`  ratio Ebb / posthog-js: ${result.ratio.toFixed(2)} (below 1: Ebb is faster)`);
  }
} finally {
  await browser.close();
}
