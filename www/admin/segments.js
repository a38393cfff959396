// User Segments: build a filter with form controls (or write it as JSON), see how many
// users match and page through them, open one, and delete the whole segment as a
// background job whose progress and receipt the page shows.
import { h, plural, replace, time, valueText } from './dom.js';
import {
  KINDS, TRAIT_OPERATORS, isNumeric, newRow, operatorTakesValue, selectsEveryone, toFilter,
} from './filter.js';
import { card, confirmDialog, counts, empty, errorBox, loading, notice, table } from './ui.js';

const PAGE_SIZE = 25;
const POLL_MS = 400;

// The filter being built and the page shown, per environment, kept while the operator
// opens a user and comes back.
const drafts = new Map();

function draftFor(environmentId) {
  if (!drafts.has(environmentId)) {
    drafts.set(environmentId, { match: 'all', rows: [], custom: null, offset: 0 });
  }
  return drafts.get(environmentId);
}

/** The filter the draft stands for; throws when a row is incomplete. */
function currentFilter(draft) {
  return draft.custom ?? toFilter(draft.match, draft.rows);
}

/** Renders the page into `view`. */
export function renderSegments(view, ctx) {
  const draft = draftFor(ctx.environment.id);
  const results = h('section', { class: 'card results', 'aria-labelledby': 'results-title' });
  const jobArea = h('section', { class: 'job-area', 'aria-live': 'polite' });
  const show = () => showResults(results, jobArea, ctx, draft);
  const builder = filterBuilder(draft, () => {
    draft.offset = 0;
    show();
  });

  replace(view, h('h1', {}, 'User Segments'), lookup(ctx), builder, results, jobArea);
  show();
}

function lookup(ctx) {
  const input = h('input', {
    id: 'lookup-id', required: true, autocomplete: 'off', spellcheck: 'false',
    placeholder: 'user id or anonymous id',
  });
  const form = h('form', { class: 'card lookup', id: 'lookup' },
    h('label', { for: 'lookup-id' }, 'Open a user'), input,
    h('button', { type: 'submit' }, 'Open'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    ctx.navigate(`#/users/${encodeURIComponent(input.value.trim())}`);
  });
  return form;
}

// The filter form ----------------------------------------------------------------------

function filterBuilder(draft, apply) {
  const rowsBox = h('div', { class: 'conditions' });
  const problem = h('div', { class: 'builder-problem' });
  const json = h('textarea', {
    id: 'filter-json', rows: 7, spellcheck: 'false', 'aria-label': 'Filter as JSON',
  });
  const match = h('select', { id: 'filter-match', 'aria-label': 'Match' },
    h('option', { value: 'all', selected: draft.match === 'all' }, 'all'),
    h('option', { value: 'any', selected: draft.match === 'any' }, 'any'));
  match.addEventListener('change', () => {
    draft.match = match.value;
    sync();
  });

  function sync() {
    replace(problem);
    try {
      json.value = JSON.stringify(currentFilter(draft), null, 2);
    } catch (error) {
      replace(problem, h('p', { class: 'state error', role: 'alert' }, error.message));
    }
  }

  function drawRows() {
    if (draft.custom) {
      replace(rowsBox,
        h('p', { class: 'muted' }, 'The JSON filter below is in use.'),
        h('button', {
          type: 'button', class: 'secondary',
          on: { click: () => { draft.custom = null; drawRows(); } },
        }, 'Back to the form'));
    } else if (draft.rows.length === 0) {
      replace(rowsBox, h('p', { class: 'muted' }, 'No conditions yet: every user matches.'));
    } else {
      replace(rowsBox, draft.rows.map((row, index) => conditionRow(row, index, {
        changed: sync,
        redraw: drawRows,
        remove: () => {
          draft.rows.splice(index, 1);
          drawRows();
        },
      })));
    }
    sync();
  }

  const add = h('button', {
    type: 'button', class: 'secondary', id: 'add-condition',
    on: { click: () => { draft.custom = null; draft.rows.push(newRow()); drawRows(); } },
  }, '+ Add condition');
  const useJson = h('button', { type: 'button', class: 'secondary', id: 'use-json' }, 'Use this JSON');
  useJson.addEventListener('click', () => {
    try {
      const parsed = JSON.parse(json.value);
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
        throw new Error('a filter is one JSON object');
      }
      draft.custom = parsed;
    } catch (error) {
      replace(problem, h('p', { class: 'state error', role: 'alert' },
        `The JSON is not a filter: ${error.message}`));
      return;
    }
    drawRows();
    apply();
  });

  const form = h('form', { class: 'card builder', id: 'segment-filter' },
    h('h2', {}, 'Segment'),
    h('p', { class: 'match-line' }, 'Users matching ', match, ' of these conditions:'),
    rowsBox,
    h('div', { class: 'actions' }, add, h('button', { type: 'submit' }, 'Show matching users')),
    problem,
    h('details', { class: 'json' },
      h('summary', {}, 'Filter as JSON'),
      h('p', { class: 'muted' }, 'The admin API’s filter language. Edit it for nested ' +
        'any / all / not, then use it.'),
      json, useJson));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    try {
      currentFilter(draft);
    } catch (error) {
      replace(problem, h('p', { class: 'state error', role: 'alert' }, error.message));
      return;
    }
    apply();
  });

  drawRows();
  return form;
}

function select(label, options, value) {
  return h('select', { 'aria-label': label },
    options.map(([optionValue, text]) => h('option', {
      value: optionValue, selected: optionValue === value,
    }, text)));
}

function input(label, value, attrs = {}) {
  return h('input', { 'aria-label': label, value, autocomplete: 'off', spellcheck: 'false', ...attrs });
}

/** One condition: its kind, its fields, "not", and a remove button. */
function conditionRow(row, index, { changed, redraw, remove }) {
  const bind = (element, name, { again = false, property = 'value' } = {}) => {
    element.addEventListener(element.tagName === 'SELECT' || property === 'checked' ? 'change' : 'input',
      () => {
        row[name] = element[property];
        if (again) redraw();
        else changed();
      });
    return element;
  };

  const fields = [];
  switch (row.kind) {
    case 'trait': {
      fields.push(bind(input('Trait key', row.key, { placeholder: 'trait, e.g. plan', class: 'key' }), 'key'));
      fields.push(bind(select('Operator', TRAIT_OPERATORS.map(([v, l]) => [v, l]), row.op), 'op', { again: true }));
      if (operatorTakesValue(row.op)) {
        fields.push(bind(input('Value', row.value, {
          placeholder: 'value', inputmode: isNumeric(row.op) || row.type === 'number' ? 'decimal' : null,
        }), 'value'));
        if (!isNumeric(row.op) && row.op !== 'contains') {
          fields.push(bind(select('Value type', [
            ['text', 'as text'], ['number', 'as number'], ['boolean', 'as true/false'],
          ], row.type), 'type'));
        }
      }
      break;
    }
    case 'lastSeen':
    case 'firstSeen':
      fields.push(h('span', {}, 'at least'),
        bind(input('At least days ago', row.atLeast, { type: 'number', min: 0, class: 'days' }), 'atLeast'),
        h('span', {}, 'and at most'),
        bind(input('At most days ago', row.atMost, { type: 'number', min: 0, class: 'days' }), 'atMost'),
        h('span', {}, 'days ago'));
      break;
    case 'responded':
      fields.push(bind(select('Responded', [
        ['survey', 'responded to survey'], ['any', 'responded to any survey'],
        ['none', 'never responded'],
      ], row.respondedMode), 'respondedMode', { again: true }));
      if (row.respondedMode === 'survey') {
        fields.push(bind(input('Survey id', row.survey, { placeholder: 'survey id' }), 'survey'));
      }
      break;
    case 'consent':
      fields.push(bind(input('Consent category', row.category, { placeholder: 'category' }), 'category'),
        bind(select('Consent given', [['true', 'granted'], ['false', 'denied']], row.granted), 'granted'));
      break;
    case 'gpc':
      fields.push(bind(select('GPC signal', [
        ['true', 'objects (GPC on)'], ['false', 'does not object'],
      ], row.gpc), 'gpc'));
      break;
    default:
      break;
  }

  const kind = select('Condition kind', KINDS, row.kind);
  kind.addEventListener('change', () => {
    Object.assign(row, newRow(kind.value), { negate: row.negate });
    redraw();
  });
  const negate = h('input', { type: 'checkbox', checked: row.negate });
  bind(negate, 'negate', { property: 'checked' });

  return h('div', { class: 'condition', data: { index } },
    h('label', { class: 'negate', title: 'Select the users this condition does not match' },
      negate, 'not'),
    kind,
    h('div', { class: 'fields' }, fields),
    h('button', {
      type: 'button', class: 'icon', 'aria-label': `Remove condition ${index + 1}`,
      on: { click: remove },
    }, '✕'));
}

// The results ---------------------------------------------------------------------------

/** Answers that came back after a newer request for the same results was sent. */
const latestRequest = new WeakMap();

async function showResults(container, jobArea, ctx, draft) {
  const title = h('h2', { id: 'results-title' }, 'Matching users');
  replace(container, title, loading());
  // The filter may change while an answer is on its way, and answers may arrive in any
  // order: only the answer to the latest request is shown.
  const request = {};
  latestRequest.set(container, request);
  const stale = () => latestRequest.get(container) !== request;

  let filter;
  try {
    filter = currentFilter(draft);
  } catch (error) {
    replace(container, title, errorBox(error, 'The filter is incomplete'));
    return;
  }
  let answer;
  try {
    answer = await ctx.api.segmentUsers(ctx.environment.id, filter, PAGE_SIZE, draft.offset);
  } catch (error) {
    if (!stale()) replace(container, title, errorBox(error, 'The collector refused the filter'));
    return;
  }
  if (stale()) return;
  if (answer.users.length === 0 && draft.offset > 0) {
    draft.offset = 0;
    showResults(container, jobArea, ctx, draft);
    return;
  }

  const { count, users } = answer;
  replace(title, h('span', { id: 'match-count', data: { count } }, plural(count, 'user')), ' match');
  const list = count === 0
    ? empty('No users match this filter.')
    : [usersTable(users), pager(count, draft, () => showResults(container, jobArea, ctx, draft))];

  const everyone = selectsEveryone(filter);
  const remove = h('button', {
    type: 'button', class: 'danger', id: 'delete-segment', disabled: everyone || count === 0,
  }, 'Delete this segment…');
  remove.addEventListener('click', () => deleteSegment(ctx, filter, jobArea, () => {
    showResults(container, jobArea, ctx, draft);
  }));
  const hint = everyone
    ? h('p', { class: 'muted' }, 'Add a condition to delete a segment; to delete every user, ' +
      'purge the environment in Data Settings.')
    : null;

  replace(container, title, list, h('div', { class: 'actions segment-actions' }, remove), hint);
}

function usersTable(users) {
  return table(['User', 'Anonymous id', 'Traits', 'Consent', 'First seen', 'Last seen'],
    users.map((user) => {
      const id = user.userId ?? user.anonymousId;
      return [
        h('a', { href: `#/users/${encodeURIComponent(id)}`, class: 'user-link' },
          user.userId ?? 'anonymous visitor'),
        h('code', {}, user.anonymousId ?? '—'),
        traitSummary(user.traits),
        consentSummary(user.consent),
        time(user.firstSeen),
        time(user.lastSeen),
      ];
    }), { id: 'users' });
}

/** A few traits as `key: value`, and how many more there are. */
export function traitSummary(traits) {
  const entries = Object.entries(traits ?? {});
  if (entries.length === 0) return h('span', { class: 'muted' }, 'none');
  const shown = entries.slice(0, 3);
  return h('ul', { class: 'traits' },
    shown.map(([key, value]) => h('li', {}, h('span', { class: 'key' }, key), ': ', valueText(value))),
    entries.length > shown.length ? h('li', { class: 'muted' }, `+${entries.length - shown.length} more`) : null);
}

/** Consent preferences as `analytics ✓ surveys ✗`. */
export function consentSummary(consent) {
  const entries = Object.entries(consent ?? {});
  if (entries.length === 0) return h('span', { class: 'muted' }, 'not recorded');
  return h('ul', { class: 'consent' }, entries.map(([category, granted]) => h('li', {
    class: granted ? 'granted' : 'denied',
  }, `${category} ${granted ? '✓' : '✗'}`)));
}

function pager(count, draft, reload) {
  const first = draft.offset + 1;
  const last = Math.min(draft.offset + PAGE_SIZE, count);
  const move = (offset) => {
    draft.offset = offset;
    reload();
  };
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    h('button', {
      type: 'button', class: 'secondary', disabled: draft.offset === 0,
      on: { click: () => move(Math.max(0, draft.offset - PAGE_SIZE)) },
    }, '← Previous'),
    h('span', { id: 'page-range' }, `${first}–${last} of ${count.toLocaleString()}`),
    h('button', {
      type: 'button', class: 'secondary', disabled: last >= count,
      on: { click: () => move(draft.offset + PAGE_SIZE) },
    }, 'Next →'));
}

// Deleting the segment -------------------------------------------------------------------

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

async function deleteSegment(ctx, filter, jobArea, refresh) {
  const environment = ctx.environment.id;
  replace(jobArea, loading('Counting the segment…'));
  let preview;
  try {
    preview = await ctx.api.segmentPreview(environment, filter);
  } catch (error) {
    replace(jobArea, errorBox(error, 'Could not count the segment'));
    return;
  }
  replace(jobArea);
  if (preview.count === 0) {
    replace(jobArea, notice('No user matches any more: there is nothing to delete.'));
    return;
  }

  const examples = preview.sample.slice(0, 5).map((user) => user.userId ?? user.anonymousId);
  const confirmed = await confirmDialog({
    title: `Delete ${plural(preview.count, 'user')}?`,
    confirmLabel: `Delete ${plural(preview.count, 'user')}`,
    body: [
      h('p', {}, `Every one of the ${plural(preview.count, 'user')} matching this filter in ` +
        `“${ctx.environment.name}” goes, with their traits, events, survey responses, ` +
        'consent records and ids.'),
      examples.length
        ? h('p', { class: 'examples' }, 'Among them: ', examples.map((id, i) => [i ? ', ' : '', h('code', {}, id)]),
          preview.count > examples.length ? ', …' : '')
        : null,
      h('p', {}, 'Their ids are kept only as keyed hashes, so that batches still waiting in ' +
        'browsers cannot bring them back. One audit entry records who asked and how many ' +
        'rows went.'),
      h('p', {}, h('strong', {}, 'This cannot be undone.')),
      h('pre', { class: 'filter' }, JSON.stringify(filter, null, 2)),
    ],
  });
  if (!confirmed) return;

  let job;
  try {
    job = await ctx.api.deleteSegment(environment, filter);
  } catch (error) {
    replace(jobArea, errorBox(error, 'The segment was not deleted'));
    return;
  }

  const progress = h('progress', {
    id: 'segment-progress', max: Math.max(job.total, 1), value: 0,
    'aria-label': 'Users deleted',
  });
  const status = h('p', { role: 'status' });
  const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
  cancel.addEventListener('click', async () => {
    cancel.disabled = true;
    try {
      job = await ctx.api.cancelJob(environment, job.id);
    } catch (error) {
      jobArea.append(errorBox(error, 'Could not cancel'));
    }
  });
  const describe = () => {
    progress.max = Math.max(job.total, 1);
    progress.value = job.done;
    replace(status, `${job.status}: ${job.done.toLocaleString()} of ${plural(job.total, 'user')} deleted`);
  };
  replace(jobArea, card('Deleting the segment', progress, status, h('div', { class: 'actions' }, cancel)));
  describe();

  while (!['done', 'cancelled', 'failed'].includes(job.status)) {
    await sleep(POLL_MS);
    try {
      job = await ctx.api.job(environment, job.id);
    } catch (error) {
      jobArea.append(errorBox(error, 'Lost track of the deletion'));
      return;
    }
    describe();
  }
  cancel.remove();

  const entry = await auditEntryOf(ctx, job.id);
  const outcome = {
    done: 'Segment deleted',
    cancelled: 'Deletion cancelled; the users deleted so far stay deleted',
    failed: `The deletion failed: ${job.error ?? 'unknown error'}`,
  }[job.status];
  replace(jobArea, h('section', { class: ['card', 'receipt', job.status === 'failed' ? 'failed' : null], id: 'segment-receipt' },
    h('h2', {}, outcome),
    progress,
    h('p', {}, `${job.done.toLocaleString()} of ${plural(job.total, 'user')} deleted · job `,
      h('code', {}, job.id), ' · ', time(job.updatedAt)),
    entry
      ? h('p', {}, 'Audit entry ', h('strong', { class: 'audit-seq' }, `#${entry.seq}`),
        ' records it.')
      : h('p', { class: 'muted' }, 'The audit entry is not written yet; see Audit.'),
    counts(job.counts)));
  refresh();
}

/** The audit entry a finished job wrote, looked for a few times since it comes last. */
async function auditEntryOf(ctx, jobId) {
  for (let attempt = 0; attempt < 5; attempt += 1) {
    try {
      const entries = await ctx.api.audit({ environment: ctx.environment.id, limit: 50 });
      const found = entries.find((e) => e.action === 'delete_segment' && e.request?.jobId === jobId);
      if (found) return found;
    } catch {
      return null;
    }
    await sleep(POLL_MS);
  }
  return null;
}
