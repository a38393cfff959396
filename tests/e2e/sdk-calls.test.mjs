// The SDK's calls in headless Chromium against a real collector: no call throws into the
// page, each bad argument rejects the call's promise with an Error that says what is
// wrong, valid calls after them still deliver, and `debug` alone decides whether the SDK
// writes to the console.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, startCollector, watchPageErrors } from './harness.mjs';
import { openFixture, serveFixture, tracked, waitForUser, writeKey } from './sdk-helpers.mjs';

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

// Each bad call (as source, run in the page on `ebb`) and the message its promise must
// reject with.
const BAD_CALLS = [
  ['ebb.track(42)', 'ebb: invalid event: must be a string'],
  ['ebb.track()', 'ebb: invalid event: must be a non-empty string naming what happened'],
  ["ebb.track('')", 'ebb: invalid event: must be a non-empty string naming what happened'],
  ["ebb.track('x', 'not an object')", 'ebb: invalid properties: must be a plain object'],
  ["ebb.track('x', [1, 2])", 'ebb: invalid properties: must be a plain object'],
  ["ebb.track('x', { n: 1n })", 'ebb: invalid properties: cannot be written as JSON (a cycle, or a BigInt?)'],
  ["ebb.track('x', (() => { const o = {}; o.self = o; return o; })())", 'ebb: invalid properties: cannot be written as JSON (a cycle, or a BigInt?)'],
  ['ebb.identify(true)', 'ebb: invalid userId: must be a string'],
  ['ebb.identify(NaN)', 'ebb: invalid userId: must be a string or a finite number'],
  ["ebb.identify('')", 'ebb: invalid userId: must be a non-empty string of at most 1000 characters'],
  ["ebb.identify('u', 5)", 'ebb: invalid traits: must be a plain object'],
  ["ebb.identify('u', {}, { userHash: 7 })", 'ebb: invalid options.userHash: must be a string'],
  ['ebb.group()', 'ebb: invalid groupId: is required'],
  ['ebb.group({})', 'ebb: invalid groupId: must be a string'],
  ["ebb.respond('x')", 'ebb: invalid answers: must be an object of question → answer'],
  ['ebb.respond()', 'ebb: invalid surveyId: is required'],
  ['ebb.alias()', 'ebb: invalid userId: is required'],
  ["ebb.alias('u', false)", 'ebb: invalid previousId: must be a string'],
  ['ebb.page(123)', 'ebb: invalid name: must be a string'],
  ["ebb.page('Home', 'x')", 'ebb: invalid properties: must be a plain object'],
  ['ebb.consent.grant(42)', 'ebb: invalid categories: must be a category name or an array of names'],
  ["ebb.consent.deny(['analytics', 7])", 'ebb: invalid categories: must be a category name or an array of names'],
  ["ebb.load('wk_again')", 'ebb: already loaded: load may be called once per page'],
];

/**
 * Loads the SDK in a fresh page with `debug`, grants consent, makes every bad call, then
 * valid ones as `user`; returns what each bad call did and the console lines the page
 * printed.
 */
async function misuse(debug, user) {
  const ctx = await browser.newContext();
  await serveFixture(ctx, collector);
  const page = await openFixture(ctx, collector);
  const errors = watchPageErrors(page);
  const consoleLines = [];
  page.on('console', (message) => consoleLines.push(`${message.type()}: ${message.text()}`));

  const outcomes = await page.evaluate(
    async ({ key, debug, user, calls }) => {
      const ebb = window.ebbSdk;
      window.ebbUnhandled = [];
      window.addEventListener('unhandledrejection', (event) => {
        window.ebbUnhandled.push(String(event.reason?.message ?? event.reason));
      });
      await ebb.load(key, { debug });
      await ebb.consent.grant();
      const outcomes = [];
      for (const source of calls) {
        let returned;
        let thrown = null;
        try {
          // The calls are written as source so that each runs here, in the page.
          returned = new Function('ebb', `return ${source};`)(ebb);
        } catch (error) {
          thrown = String(error?.message ?? error);
        }
        const isPromise = returned instanceof Promise;
        const settled = isPromise
          ? await returned.then(
              () => ({ rejected: false }),
              (error) => ({ rejected: true, isError: error instanceof Error, message: error?.message }),
            )
          : null;
        outcomes.push({ source, thrown, isPromise, ...settled });
      }
      await ebb.identify(user);
      await ebb.identify({});
      await ebb.track('Valid after', { n: 1 });
      await ebb.flush();
      return { outcomes, unhandled: window.ebbUnhandled };
    },
    { key, debug, user, calls: BAD_CALLS.map(([source]) => source) },
  );
  const stored = await waitForUser(collector, user, (u) => tracked(u).includes('Valid after'));
  await ctx.close();
  return { ...outcomes, errors, consoleLines, stored };
}

test('no call throws: each bad argument rejects its promise with an Error saying what is wrong, and valid calls still deliver', async () => {
  const { outcomes, unhandled, errors, stored } = await misuse(false, 'bad-calls-user');

  for (const [index, [source, message]] of BAD_CALLS.entries()) {
    const outcome = outcomes[index];
    assert.equal(outcome.thrown, null, `${source} throws nothing`);
    assert.equal(outcome.isPromise, true, `${source} returns a promise`);
    assert.equal(outcome.rejected, true, `${source} rejects`);
    assert.equal(outcome.isError, true, `${source} rejects with an Error`);
    assert.equal(outcome.message, message, source);
  }
  assert.deepEqual(unhandled, []);
  assert.deepEqual(errors, []);
  assert.deepEqual(tracked(stored), ['Valid after']);
});

test('debug logs a rejected call to the console; without debug the SDK writes nothing there', async () => {
  const quiet = await misuse(false, 'quiet-user');
  const chatty = await misuse(true, 'debug-user');

  assert.deepEqual(quiet.consoleLines, [], 'not a line, for the bad calls or the good ones');
  assert.ok(
    chatty.consoleLines.includes('warning: ebb: invalid event: must be a string'),
    chatty.consoleLines.join('\n'),
  );
  assert.ok(chatty.consoleLines.includes('log: ebb: call queued'), chatty.consoleLines.join('\n'));
  assert.deepEqual([...quiet.errors, ...chatty.errors], []);
});
