// Times 10,000 track() calls of Ebb and of posthog-js in the same page, alternating, and
// publishes the medians on `window.benchResult`. Each sample is the loop plus the work
// both SDKs defer to the end of the task (one timer turn), with consent granted and the
// network stubbed (index.html).
import ebb from '/sdk/index.js';

const CALLS = 10_000;
const ROUNDS = Number(new URLSearchParams(location.search).get('rounds') ?? 7);

const turn = () => new Promise((resolve) => setTimeout(resolve, 0));
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

async function sample(track) {
  const started = performance.now();
  for (let n = 0; n < CALLS; n += 1) track(n);
  await turn();
  return performance.now() - started;
}

async function main() {
  await ebb.load('wk_bench', { host: location.origin, consent: { mode: 'opt-out' } });
  window.posthog.init('phc_bench', {
    api_host: location.origin,
    autocapture: false,
    capture_pageview: false,
    capture_pageleave: false,
    disable_session_recording: true,
    disable_surveys: true,
    advanced_disable_decide: true,
    advanced_disable_flags: true,
  });

  const sdks = {
    ebb: (n) => ebb.track('Bench Event', { n, plan: 'pro', price: 12.5 }),
    posthog: (n) => window.posthog.capture('Bench Event', { n, plan: 'pro', price: 12.5 }),
  };
  // One warm-up round each, not counted: compilation and first allocations.
  for (const track of Object.values(sdks)) await sample(track);

  const times = { ebb: [], posthog: [] };
  for (let round = 0; round < ROUNDS; round += 1) {
    for (const [name, track] of Object.entries(sdks)) times[name].push(await sample(track));
  }

  const result = {
    calls: CALLS,
    rounds: ROUNDS,
    ebbMedianMs: median(times.ebb),
    posthogMedianMs: median(times.posthog),
    samples: times,
    userAgent: navigator.userAgent,
  };
  result.ratio = result.ebbMedianMs / result.posthogMedianMs;
  document.getElementById('out').textContent = JSON.stringify(result, null, 2);
  window.benchResult = result;
}

main().catch((error) => {
  window.benchResult = { error: String(error?.stack ?? error) };
});
