// The console's frame: signing in with an admin token, the environment switcher, the
// navigation between pages, and what happens when the token stops working.
//
// The token is kept in sessionStorage, so it lasts as long as the tab and is not shared
// with other tabs. Any 401 from the API (a wrong, revoked or expired token) ends the
// session and shows the sign-in form again, with the reason.
import { createApi } from './api.js';
import { renderAudit } from './audit.js';
import { h, replace } from './dom.js';
import { renderSegments } from './segments.js';
import { renderSettings } from './settings.js';
import { errorBox } from './ui.js';
import { renderUser } from './user.js';

const TOKEN_KEY = 'ebb.console.token';
const ENVIRONMENT_KEY = 'ebb.console.environment';

const PAGES = [
  ['segments', 'User Segments'],
  ['settings', 'Data Settings'],
  ['audit', 'Audit'],
];

const root = document.getElementById('app');

/** The signed-in session: the API client, the environments, the one being looked at. */
let session = null;

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  session = null;
  showSignIn(reason);
}

function showSignIn(reason) {
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', required: true, autocomplete: 'off',
    spellcheck: 'false',
  });
  const message = h('div', { id: 'signin-message' }, reason ?? null);
  const form = h('form', { id: 'signin', class: 'card signin' },
    h('h1', {}, 'Ebb console'),
    h('p', {}, 'Sign in with an admin token. It is kept in this browser tab only and ' +
      'forgotten when the tab closes.'),
    h('label', { for: 'token' }, 'Admin token'),
    input,
    h('button', { type: 'submit' }, 'Sign in'),
    message);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    replace(message, h('p', { class: 'state loading', role: 'status' }, 'Checking the token…'));
    const problem = await signIn(input.value.trim());
    if (problem) replace(message, problem);
  });

  document.title = 'Sign in — Ebb console';
  replace(root, h('main', { class: 'signin-page' }, form));
  input.focus();
}

/** Tries `token`; on success shows the console, else returns what to tell the operator. */
async function signIn(token) {
  let ended = false;
  const api = createApi(token, () => {
    if (ended || session?.api !== api) return;
    ended = true;
    signOut(h('div', { class: 'state error', role: 'alert' },
      'Your session has ended: the admin token is no longer valid. Sign in again.'));
  });

  let environments;
  try {
    environments = await api.environments();
  } catch (error) {
    if (error.status === 401) {
      return h('div', { class: 'state error', role: 'alert' },
        'That admin token is not valid. Check it and try again.');
    }
    return errorBox(error, 'Could not sign in');
  }
  if (environments.length === 0) {
    return h('div', { class: 'state error', role: 'alert' },
      'This token has access to no environment.');
  }

  sessionStorage.setItem(TOKEN_KEY, token);
  session = { api, environments, environmentId: null };
  selectEnvironment(sessionStorage.getItem(ENVIRONMENT_KEY));
  if (!location.hash || location.hash === '#/') history.replaceState(null, '', '#/segments');
  render();
  return null;
}

function selectEnvironment(id) {
  const found = session.environments.find((environment) => environment.id === id);
  session.environmentId = (found ?? session.environments[0]).id;
  sessionStorage.setItem(ENVIRONMENT_KEY, session.environmentId);
}

function current() {
  return session.environments.find((environment) => environment.id === session.environmentId);
}

/** Reloads the environment list (after a rename or a new one), keeping the selection. */
async function refreshEnvironments(selectId) {
  session.environments = await session.api.environments();
  selectEnvironment(selectId ?? session.environmentId);
  render();
}

function route() {
  const [, page = 'segments', ...rest] = location.hash.split('/');
  return { page, argument: rest.length ? decodeURIComponent(rest.join('/')) : null };
}

function header(active) {
  const switcher = h('select', { id: 'environment', 'aria-label': 'Environment' },
    session.environments.map((environment) => h('option', {
      value: environment.id, selected: environment.id === session.environmentId,
    }, environment.name)));
  switcher.addEventListener('change', () => {
    selectEnvironment(switcher.value);
    if (route().page === 'users') location.hash = '#/segments';
    else render();
  });

  return h('header', { class: 'topbar' },
    h('a', { class: 'brand', href: '#/segments' }, 'Ebb console'),
    h('label', { class: 'switcher' }, h('span', {}, 'Environment'), switcher),
    h('nav', { 'aria-label': 'Console' },
      PAGES.map(([page, label]) => h('a', {
        href: `#/${page}`,
        'aria-current': page === active ? 'page' : null,
      }, label))),
    h('button', {
      type: 'button', class: 'secondary sign-out',
      on: { click: () => signOut(h('p', { class: 'state notice' }, 'Signed out.')) },
    }, 'Sign out'));
}

function render() {
  if (!session) return;
  const { page, argument } = route();
  const view = h('main', { id: 'view' });
  const context = {
    api: session.api,
    environment: current(),
    environments: session.environments,
    refreshEnvironments,
    navigate: (hash) => {
      location.hash = hash;
    },
  };

  const activeTab = page === 'users' ? 'segments' : page;
  replace(root, header(activeTab), view);
  const label = PAGES.find(([name]) => name === activeTab)?.[1] ?? 'User Segments';
  document.title = `${label} — ${context.environment.name} — Ebb console`;

  if (page === 'users' && argument) renderUser(view, context, argument);
  else if (page === 'settings') renderSettings(view, context);
  else if (page === 'audit') renderAudit(view, context);
  else renderSegments(view, context);
}

window.addEventListener('hashchange', () => {
  if (session) render();
  else showSignIn();
});

const stored = sessionStorage.getItem(TOKEN_KEY);
if (stored) {
  replace(root, h('p', { class: 'state loading', role: 'status' }, 'Signing in…'));
  signIn(stored).then((problem) => {
    if (problem) signOut(problem);
  });
} else {
  showSignIn();
}
