// The demo shop. It loads the SDK with opt-in consent (the default) and two categories,
// asks for consent with a banner, signs visitors in with `identify` (with the user hash
// that the collector's demo endpoint computes when identity verification is on), tracks
// the product buttons, records the survey with `respond`, and shows what the SDK holds.
// The panel reads the SDK's own `status()` (ids, queue, held calls) after every change.
import {
  consent, flush, identify, load, on, page, reset, respond, status as sdkStatus, track,
} from '/sdk/index.js';

const SURVEY_ID = 'tidewater-2026';
const CATEGORIES = ['analytics', 'surveys'];

const $ = (id) => document.getElementById(id);

/** Calls made on this page that the collector has not confirmed yet. */
const waiting = [];
let lastDelivery = null;

function text(element, ...parts) {
  element.replaceChildren(...parts.map((part) => (part instanceof Node ? part : document.createTextNode(String(part)))));
}

function report(message) {
  text($('status'), message);
  const item = document.createElement('li');
  const at = document.createElement('time');
  at.textContent = new Date().toLocaleTimeString();
  item.append(at, ` ${message}`);
  $('log').prepend(item);
  while ($('log').children.length > 12) $('log').lastElementChild.remove();
}

function consentStatus() {
  return consent.state()?.status ?? 'pending';
}

function renderPanel() {
  const state = consent.state();
  if (state) {
    const chips = Object.entries(state.categories).map(([name, granted]) => {
      const chip = document.createElement('span');
      chip.className = `chip ${granted ? 'on' : 'off'}`;
      chip.textContent = `${name} ${granted ? '✓' : '✗'}`;
      return chip;
    });
    const status = document.createElement('strong');
    status.id = 'consent-state';
    status.textContent = state.status;
    text($('panel-consent'), status, ' ', ...chips,
      state.objection ? ' (your browser objects: Global Privacy Control)' : '');
  }
  const holds = sdkStatus();
  const anonymousId = holds?.anonymousId;
  text($('panel-anonymous-id'), anonymousId ?? 'none (minted only once consent allows)');
  $('panel-anonymous-id').className = anonymousId ? 'mono' : 'muted';
  const queued = holds?.queued ?? 0;
  const held = holds?.held ?? 0;
  const calls = (count) => `${count} message${count === 1 ? '' : 's'}`;
  text($('panel-queue'), held ? `${calls(queued)}, ${calls(held)} held until you decide` : calls(queued));
  $('panel-queue').dataset.queued = String(queued);
  $('panel-queue').dataset.held = String(held);
  if (lastDelivery) {
    text($('panel-delivery'), `${lastDelivery.at.toLocaleTimeString()}: ${lastDelivery.what.join(', ')}`);
  }

  const surveys = state?.status === 'granted' && state.categories.surveys;
  $('survey-submit').disabled = !surveys;
  text($('survey-note'), surveys
    ? 'Recorded with respond().'
    : 'Allow the “Surveys” category (Privacy settings) to answer.');
}

/** The timer that follows the SDK's queue after a failed delivery, while one runs. */
let following = null;

/**
 * After a failed delivery the SDK retries on its own, with no call of this page to show
 * for it: the panel reads the queue every half second until nothing waits in it, then
 * confirms the delivery (the flush then only waits for a request under way, if any).
 */
function followQueue() {
  if (following) return;
  following = setInterval(() => {
    renderPanel();
    if ((sdkStatus()?.queued ?? 0) > 0) return;
    clearInterval(following);
    following = null;
    deliverWaiting();
  }, 500);
}

/** Sends everything waiting, and notes the delivery. */
async function deliverWaiting() {
  if (waiting.length === 0) return;
  const what = waiting.slice();
  try {
    await flush();
    waiting.splice(0, what.length);
    lastDelivery = { at: new Date(), what };
    report(`delivered: ${what.join(', ')}`);
  } catch (error) {
    report(`delivery failed: ${error.message}`);
    followQueue();
  }
  renderPanel();
}

/** Makes a recording call, then reports what became of it under the current consent. */
async function record(label, call) {
  const status = consentStatus();
  if (status === 'denied') {
    await call().catch(() => {});
    report(`${label}: not recorded (consent refused)`);
    return;
  }
  waiting.push(label);
  try {
    await call();
  } catch (error) {
    waiting.splice(waiting.indexOf(label), 1);
    report(`${label} failed: ${error.message}`);
    renderPanel();
    return;
  }
  if (status === 'pending') {
    report(`${label}: held in memory until you decide about consent`);
    renderPanel();
    return;
  }
  renderPanel();
  await deliverWaiting();
}

// Consent --------------------------------------------------------------------------------

function showBanner(show, choosing = false) {
  $('consent-banner').hidden = !show;
  $('consent-choices').hidden = !choosing;
  $('consent-choose').hidden = choosing;
  if (choosing) {
    const state = consent.state();
    for (const name of CATEGORIES) $(`category-${name}`).checked = Boolean(state?.categories[name]);
  }
}

async function decide(label, change) {
  try {
    await change();
  } catch (error) {
    report(`${label} failed: ${error.message}`);
    return;
  }
  showBanner(false);
  const status = consentStatus();
  if (status === 'denied' && waiting.length) {
    report(`consent refused: ${waiting.length} held call(s) dropped`);
    waiting.splice(0);
  } else {
    report(`consent: ${status}`);
  }
  renderPanel();
  if (status === 'granted') await deliverWaiting();
}

function wireConsent() {
  $('consent-accept').addEventListener('click', () => decide('accept', () => consent.grant(CATEGORIES)));
  $('consent-reject').addEventListener('click', () => decide('reject', () => consent.deny(CATEGORIES)));
  $('consent-choose').addEventListener('click', () => showBanner(true, true));
  $('consent-save').addEventListener('click', () => {
    const chosen = CATEGORIES.filter((name) => $(`category-${name}`).checked);
    const refused = CATEGORIES.filter((name) => !chosen.includes(name));
    decide('choices', async () => {
      if (chosen.length) await consent.grant(chosen);
      if (refused.length) await consent.deny(refused);
    });
  });
  $('privacy-settings').addEventListener('click', () => showBanner(true, true));
  $('consent-withdraw').addEventListener('click', () => decide('withdraw', async () => {
    await consent.withdraw();
    waiting.splice(0);
    signedIn(null);
  }));
  on('consent', renderPanel);
}

// Sign-in, shop and survey ---------------------------------------------------------------

function signedIn(userId) {
  text($('account-name'), userId ? `Signed in as ${userId}` : 'Not signed in');
  $('sign-out').hidden = !userId;
}

/** The identity-verification hash from the shop's server side, or undefined. */
async function userHash(userId) {
  const response = await fetch(`/demo/user-hash?userId=${encodeURIComponent(userId)}`);
  if (!response.ok) return undefined;
  const { userHash: hash } = await response.json();
  return hash ?? undefined;
}

function wireShop() {
  $('login').addEventListener('submit', async (event) => {
    event.preventDefault();
    const userId = $('user-id').value.trim();
    const traits = {};
    for (const field of ['email', 'name']) {
      const value = $(field).value.trim();
      if (value) traits[field] = value;
    }
    let hash;
    try {
      hash = await userHash(userId);
    } catch {
      hash = undefined;
    }
    await record(hash ? 'identify (verified)' : 'identify',
      () => identify(userId, traits, hash ? { userHash: hash } : undefined));
    signedIn(userId);
  });
  $('sign-out').addEventListener('click', async () => {
    await reset().catch(() => {});
    signedIn(null);
    report('signed out: the SDK forgot the user and started a new anonymous id');
  });

  for (const button of document.querySelectorAll('[data-event]')) {
    button.addEventListener('click', () => record(`track ${button.dataset.event}`,
      () => track(button.dataset.event, { product: 'House Blend', price: 12.5, currency: 'EUR' })));
  }

  $('survey').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = new FormData($('survey'));
    const answers = {
      recommend: Number(form.get('recommend')),
      nextRoast: form.get('nextRoast'),
    };
    await record('survey response', () => respond(SURVEY_ID, answers));
  });
}

async function start() {
  wireConsent();
  wireShop();
  const config = await (await fetch('/demo/config.json')).json();
  await load(config.writeKey, { consent: { categories: CATEGORIES } });
  report('SDK ready');
  document.body.dataset.sdk = 'ready';
  renderPanel();
  showBanner(consentStatus() === 'pending');
  await record('page view', () => page('House Blend'));
}

start().catch((error) => report(`the SDK could not load: ${error.message}`));
