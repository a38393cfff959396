// The demo shop: loads the SDK (opt-in consent, the default) with the collector's default
// write key, asks for consent with three buttons, and reports each call's delivery on the
// page.
import { load, identify, track, flush, consent, on } from '/sdk/index.js';

const status = document.getElementById('status');
const log = document.getElementById('log');

function report(text) {
  status.textContent = text;
  const item = document.createElement('li');
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  log.prepend(item);
}

async function deliver(label, call) {
  try {
    await call();
    await flush();
    report(`${label} delivered`);
  } catch (error) {
    report(`${label} failed: ${error.message}`);
  }
}

async function start() {
  const config = await (await fetch('/demo/config.json')).json();
  await load(config.writeKey, { host: location.origin });
  report('SDK ready');

  const consentState = document.getElementById('consent-state');
  on('consent', (state) => {
    consentState.textContent = `consent: ${state.status}`;
  });
  for (const [id, change] of [
    ['consent-grant', () => consent.grant(['analytics'])],
    ['consent-deny', () => consent.deny(['analytics'])],
    ['consent-withdraw', () => consent.withdraw()],
  ]) {
    document.getElementById(id).addEventListener('click', () => deliver(id, change));
  }

  document.getElementById('login').addEventListener('submit', (event) => {
    event.preventDefault();
    const userId = document.getElementById('user-id').value.trim();
    const traits = {};
    for (const field of ['email', 'name']) {
      const value = document.getElementById(field).value.trim();
      if (value) traits[field] = value;
    }
    deliver('identify', () => identify(userId, traits));
  });

  document.getElementById('track').addEventListener('click', () => {
    const name = document.getElementById('event-name').value.trim() || 'Product Added';
    deliver('track', () => track(name, { product: 'House Blend', price: 12.5 }));
  });
}

start().catch((error) => report(`the SDK could not load: ${error.message}`));
