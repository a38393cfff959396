// One user: ids, traits, consent and its history, the events timeline and the survey
// responses; export everything as a JSON file, or delete the user with a receipt.
import { h, plural, replace, time, valueText } from './dom.js';
import { card, confirmDialog, download, empty, errorBox, loading, notice, receipt, table } from './ui.js';

/** Events shown before "Show all". */
const FIRST_EVENTS = 50;

/** Renders the user `id` (a user id or an anonymous id) into `view`. */
export async function renderUser(view, ctx, id) {
  const back = h('a', { href: '#/segments', class: 'back' }, '← User Segments');
  replace(view, back, loading());

  let user;
  try {
    user = await ctx.api.user(ctx.environment.id, id);
  } catch (error) {
    if (error.code === 'user_not_found') {
      replace(view, back, h('h1', {}, 'User not found'),
        empty(`No user with the id “${id}” is stored in “${ctx.environment.name}”. ` +
          'A deleted user stays gone.'));
    } else {
      replace(view, back, errorBox(error, 'Could not load the user'));
    }
    return;
  }

  const messages = h('div', { class: 'messages', 'aria-live': 'polite' });
  const exportButton = h('button', { type: 'button', class: 'secondary', id: 'export-user' },
    'Export JSON');
  exportButton.addEventListener('click', () => exportUser(ctx, id, user, messages));
  const deleteButton = h('button', { type: 'button', class: 'danger', id: 'delete-user' },
    'Delete user…');
  deleteButton.addEventListener('click', () => deleteUser(view, ctx, id, user, back, messages));

  replace(view, back,
    h('div', { class: 'page-head' },
      h('div', {},
        h('h1', { id: 'user-title' }, user.userId ?? user.anonymousIds[0] ?? id),
        h('p', { class: 'muted' }, 'First seen ', time(user.firstSeen), ' · last seen ',
          time(user.lastSeen), ' · ', h('span', { id: 'user-counts' },
            `${plural(user.counts.events, 'event')}, ${plural(user.counts.responses, 'response')}`))),
      h('div', { class: 'actions' }, exportButton, deleteButton)),
    messages,
    h('div', { class: 'grid' }, idsCard(user), traitsCard(user)),
    consentCard(user),
    eventsCard(user),
    responsesCard(user));
}

function idsCard(user) {
  return card('Ids', h('dl', { class: 'ids' },
    h('dt', {}, 'User id'), h('dd', {}, user.userId ? h('code', {}, user.userId) : h('span', { class: 'muted' }, 'not identified')),
    h('dt', {}, user.anonymousIds.length === 1 ? 'Anonymous id' : 'Anonymous ids'),
    h('dd', {}, user.anonymousIds.length
      ? h('ul', { class: 'plain' }, user.anonymousIds.map((anon) => h('li', {}, h('code', {}, anon))))
      : h('span', { class: 'muted' }, 'none')),
    h('dt', {}, 'Global Privacy Control'),
    h('dd', {}, user.gpc === null || user.gpc === undefined ? 'no signal' : user.gpc ? 'objects' : 'does not object')));
}

function traitsCard(user) {
  const entries = Object.entries(user.traits ?? {});
  return card('Traits', entries.length
    ? table(['Trait', 'Value'], entries.map(([key, value]) => [
      h('span', { class: 'key' }, key), valueText(value),
    ]), { id: 'traits' })
    : empty('No traits.'));
}

function preferences(value) {
  const entries = Object.entries(value ?? {});
  if (entries.length === 0) return h('span', { class: 'muted' }, 'none');
  return h('ul', { class: 'consent' }, entries.map(([category, granted]) =>
    h('li', { class: granted ? 'granted' : 'denied' }, `${category} ${granted ? '✓' : '✗'}`)));
}

function consentCard(user) {
  const history = [...user.consentHistory].reverse();
  return card('Consent',
    h('p', {}, 'Now: ', preferences(user.consent)),
    h('h3', {}, 'History (newest first)'),
    history.length
      ? table(['When', 'Preferences', 'Recorded from'], history.map((record) => [
        time(record.recordedAt), preferences(record.preferences), record.source,
      ]), { id: 'consent-history' })
      : empty('No consent was recorded.'));
}

function eventLabel(event) {
  return event.event ?? event.name ?? '';
}

function eventsCard(user) {
  const events = [...user.events].reverse();
  const list = h('ol', { class: 'timeline', id: 'events' });
  const draw = (all) => replace(list, (all ? events : events.slice(0, FIRST_EVENTS)).map((event) =>
    h('li', {},
      time(event.timestamp),
      h('span', { class: `badge ${event.type}` }, event.type),
      h('span', { class: 'event-name' }, eventLabel(event)),
      Object.keys(event.properties ?? {}).length
        ? h('code', { class: 'properties' }, JSON.stringify(event.properties))
        : null)));
  draw(false);
  const more = events.length > FIRST_EVENTS
    ? h('button', {
      type: 'button', class: 'secondary',
      on: { click: (e) => { draw(true); e.target.remove(); } },
    }, `Show all ${events.length}`)
    : null;
  // The profile lists at most the latest 1,000 events; the count covers all of them.
  const shown = user.counts.events > events.length
    ? `the latest ${events.length.toLocaleString()} of ${user.counts.events.toLocaleString()}`
    : events.length.toLocaleString();
  return card(`Events (${shown}, newest first)`,
    events.length ? [list, more] : empty('No events.'));
}

function responsesCard(user) {
  const responses = [...user.responses].reverse();
  return card(`Survey responses (${responses.length})`, responses.length
    ? table(['When', 'Survey', 'Answers'], responses.map((response) => [
      time(response.timestamp),
      h('code', {}, response.surveyId),
      h('dl', { class: 'answers' }, Object.entries(response.answers ?? {}).map(([question, answer]) =>
        [h('dt', {}, question), h('dd', {}, valueText(answer))])),
    ]), { id: 'responses' })
    : empty('No survey responses.'));
}

/** A file name made of the id's safe characters. */
function fileName(id) {
  const safe = id.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 60) || 'user';
  return `ebb-user-${safe}.json`;
}

async function exportUser(ctx, id, user, messages) {
  replace(messages, loading('Exporting…'));
  try {
    const text = await ctx.api.exportUser(ctx.environment.id, id);
    download(fileName(user.userId ?? id), text);
    replace(messages, notice('Exported: the download holds every stored record of this user. ' +
      'The export is recorded in the audit log.'));
  } catch (error) {
    replace(messages, errorBox(error, 'Could not export the user'));
  }
}

async function deleteUser(view, ctx, id, user, back, messages) {
  const ids = [user.userId, ...user.anonymousIds].filter(Boolean);
  const confirmed = await confirmDialog({
    title: `Delete ${user.userId ?? 'this visitor'}?`,
    confirmLabel: 'Delete user',
    body: [
      h('p', {}, `Everything stored of this user in “${ctx.environment.name}” goes at once:`),
      h('ul', { class: 'will-go' },
        h('li', {}, `their ${plural(ids.length, 'id')}: `, ids.map((value, i) => [i ? ', ' : '', h('code', {}, value)])),
        h('li', {}, `${plural(Object.keys(user.traits ?? {}).length, 'trait')}`),
        h('li', {}, `${plural(user.counts.events, 'event')}`),
        h('li', {}, `${plural(user.counts.responses, 'survey response')}`),
        h('li', {}, `${plural(user.counts.consentRecords, 'consent record')}`)),
      h('p', {}, 'Their ids are kept only as keyed hashes for a while, so that batches still ' +
        'waiting in browsers cannot bring them back. An audit entry records the counts, ' +
        'not the ids.'),
      h('p', {}, h('strong', {}, 'This cannot be undone.')),
    ],
  });
  if (!confirmed) return;

  replace(messages, loading('Deleting…'));
  try {
    const answer = await ctx.api.deleteUser(ctx.environment.id, id);
    replace(view, back,
      h('h1', {}, 'User deleted'),
      h('section', { class: 'card', id: 'user-receipt' }, receipt('Receipt', answer)));
  } catch (error) {
    replace(messages, errorBox(error, 'The user was not deleted'));
  }
}
