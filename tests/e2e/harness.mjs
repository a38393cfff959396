// Shared pieces of the browser tests: a real collector process on a free port with its own
// temporary data folder, and headless Chromium from the system (never a downloaded one).
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, mkdir, readFile, rm } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

export const repoRoot = resolve(import.meta.dirname, '..', '..');
export const artifactsDir = process.env.EBB_TEST_ARTIFACTS ?? join(repoRoot, 'test-artifacts');

/**
 * A trait value the tests that send traits include, so that the log check catches a trait
 * value logged on its own, without the `"traits"` key around it.
 */
export const TRAIT_MARKER = 'trait-marker-7d2f91c4';

const collectorBin =
  process.env.EBB_COLLECTOR_BIN ?? join(repoRoot, 'target', 'debug', 'ebb-collector');

// Runs one statement with Python's sqlite3 (Node 20 has no SQLite of its own, and Python is
// on every machine the tests run on) and prints its rows as JSON. The `with` block commits.
const SQLITE_SCRIPT = `import json, sqlite3, sys
with sqlite3.connect(sys.argv[1], timeout=10) as db:
    rows = db.execute(sys.argv[2], json.loads(sys.argv[3])).fetchall()
print(json.dumps(rows))`;

/**
 * Starts a collector; resolves once it printed its address. `options.env` adds
 * environment variables (e.g. `{ EBB_DEMO_USER_HASH: 'true' }`).
 */
export async function startCollector(options = {}) {
  const dataDir = await mkdtemp(join(tmpdir(), 'ebb-e2e-'));
  const adminToken = `ebb_admin_${randomBytes(16).toString('hex')}`;
  const child = spawn(collectorBin, [], {
    env: {
      PATH: process.env.PATH,
      EBB_LISTEN: '127.0.0.1:0',
      EBB_DATA_DIR: dataDir,
      EBB_WWW_DIR: join(repoRoot, 'www'),
      EBB_ADMIN_TOKEN: adminToken,
      EBB_LOG: 'debug',
      ...(options.env ?? {}),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stderr.pipe(createWriteStream(join(dataDir, 'collector.log')));

  const lines = createInterface({ input: child.stdout });
  const base = await new Promise((resolveBase, reject) => {
    const timer = setTimeout(() => reject(new Error('the collector did not start in 30 s')), 30_000);
    child.once('exit', (code) => reject(new Error(`the collector exited with ${code}`)));
    lines.on('line', (line) => {
      const match = line.match(/listening on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolveBase(match[1]);
      }
    });
  });

  const databaseFile = join(dataDir, 'ebb.db');
  return {
    base,
    adminToken,
    /** The collector's SQLite file (unless `options.env` points it at another database). */
    databaseFile,
    /**
     * Runs one SQL statement on the collector's SQLite file behind its back, with `params`
     * bound to its `?`s, and answers the rows as arrays: for tests that play an attacker
     * with access to the file.
     */
    async sql(statement, params = []) {
      const { stdout } = await promisify(execFile)(
        'python3', ['-c', SQLITE_SCRIPT, databaseFile, statement, JSON.stringify(params)]);
      return JSON.parse(stdout);
    },
    async admin(path) {
      const response = await fetch(base + path, {
        headers: { Authorization: `Bearer ${adminToken}` },
      });
      return { status: response.status, body: await response.json() };
    },
    /** Any admin API call; `body` is sent as JSON. Answers `{status, body}` (body null if empty). */
    async adminCall(method, path, body) {
      const response = await fetch(base + path, {
        method,
        headers: {
          Authorization: `Bearer ${adminToken}`,
          ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      return { status: response.status, body: text ? JSON.parse(text) : null };
    },
    /** Sends `messages` as one batch with the default environment's write key (or `writeKey`). */
    async ingest(messages, writeKey) {
      const key = writeKey ?? (await (await fetch(`${base}/demo/config.json`)).json()).writeKey;
      const response = await fetch(`${base}/v1/batch`, {
        method: 'POST',
        headers: {
          Authorization: `Basic ${Buffer.from(`${key}:`).toString('base64')}`,
          'Content-Type': 'application/json',
        },
        body: JSON.stringify({ batch: messages }),
      });
      return { status: response.status, body: await response.json() };
    },
    /**
     * Stops the collector and removes its data; fails when its log holds a secret, an
     * e-mail address, a payload or `TRAIT_MARKER` (see `logLeaks`).
     */
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((done) => child.once('exit', done));
        child.kill('SIGTERM');
        await exited;
      }
      const log = await readFile(join(dataDir, 'collector.log'), 'utf8').catch(() => '');
      await rm(dataDir, { recursive: true, force: true });
      const leaks = logLeaks(log, [adminToken, TRAIT_MARKER]);
      if (leaks.length) {
        throw new Error(`the collector logged secrets, addresses or payloads:\n${leaks.join('\n')}`);
      }
    },
  };
}

/**
 * The log lines that hold one of `secrets`, a generated secret (a write key, admin token
 * or identity secret: a prefix and 32 hex digits), an e-mail address or a message payload.
 */
export function logLeaks(log, secrets = []) {
  const generated = /\b(?:wk_|ebb_admin_|ebb_ivs_)[0-9a-f]{32}/;
  const email = /[\w.+-]+@[\w-]+(?:\.[\w-]+)+/;
  const payload = /"(?:traits|properties|answers)"/;
  return log.split('\n').filter((line) => generated.test(line) || email.test(line)
    || payload.test(line) || secrets.some((secret) => secret && line.includes(secret)));
}

/** Headless Chromium from the system package. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.EBB_CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
}

/** Saves a screenshot of the page under the artifacts folder; returns its path. */
export async function screenshot(page, name) {
  await mkdir(artifactsDir, { recursive: true });
  const path = join(artifactsDir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/**
 * Collects Content-Security-Policy violations reported in every page of `context` (also
 * those Chromium only logs), so that a test can assert there were none.
 */
export async function watchCspViolations(context) {
  const violations = [];
  await context.exposeBinding('ebbReportViolation', (_source, text) => violations.push(text));
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      window.ebbReportViolation(`${event.violatedDirective} ${event.blockedURI}`);
    });
  });
  context.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) violations.push(message.text());
  });
  return violations;
}

/** Collects errors thrown in the page, so that a test can assert there were none. */
export function watchPageErrors(page) {
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  return errors;
}
