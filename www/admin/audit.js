// Audit: the log of every admin action and deletion, newest first, and whether its hash
// chain still holds.
import { h, plural, replace, time } from './dom.js';
import { empty, errorBox, loading, table, tableRow } from './ui.js';

const PAGE = 50;
const COLUMNS = ['#', 'When', 'Action', 'Who', 'Environment', 'Request', 'Counts'];

// Whether the log shows every environment or the selected one; kept between visits.
let scope = 'environment';
// Counts the loads of the log, so that a load overtaken by a newer one (the scope changed
// while it waited) leaves the page alone.
let generation = 0;

/** Renders the page into `view`. */
export function renderAudit(view, ctx) {
  const chain = h('section', { class: 'card chain', id: 'chain', 'aria-live': 'polite' });
  const log = h('section', { class: 'card' });
  const scopeSelect = h('select', { id: 'audit-scope', 'aria-label': 'Entries of' },
    h('option', { value: 'environment', selected: scope === 'environment' },
      `“${ctx.environment.name}”`),
    h('option', { value: 'all', selected: scope === 'all' }, 'the whole instance'));
  scopeSelect.addEventListener('change', () => {
    scope = scopeSelect.value;
    showEntries(log, ctx);
  });

  replace(view,
    h('div', { class: 'page-head' }, h('h1', {}, 'Audit'),
      h('label', { class: 'scope' }, 'Entries of ', scopeSelect)),
    chain, log);
  showChain(chain, ctx);
  showEntries(log, ctx);
}

async function showChain(container, ctx) {
  replace(container, loading('Checking the hash chain…'));
  try {
    const check = await ctx.api.verifyAudit();
    replace(container, check.valid
      ? h('p', { class: 'chain-status ok', id: 'chain-status', data: { valid: true } },
        h('strong', {}, '✓ The chain holds. '),
        check.entries === 0
          ? 'Nothing is audited yet.'
          : check.entries === 1
            ? 'Its one entry was recomputed.'
            : `All ${plural(check.entries, 'entry', 'entries')} were recomputed; each links to the one before.`)
      : h('p', { class: 'chain-status broken', id: 'chain-status', role: 'alert', data: { valid: false } },
        h('strong', {}, '✗ The chain is broken '),
        `at entry #${check.firstBroken}: an entry was changed or removed there. ` +
        `${check.entries.toLocaleString()} entries checked.`));
  } catch (error) {
    replace(container, errorBox(error, 'Could not check the chain'));
  }
}

function environmentName(ctx, id) {
  if (!id) return h('span', { class: 'muted' }, 'instance');
  return ctx.environments.find((environment) => environment.id === id)?.name ?? id;
}

function compact(value) {
  const text = JSON.stringify(value ?? {});
  return text === '{}' ? h('span', { class: 'muted' }, '—') : h('code', { class: 'json' }, text);
}

async function showEntries(container, ctx) {
  const title = h('h2', {}, 'Log (newest first)');
  const mine = ++generation;
  replace(container, title, loading());
  const environment = scope === 'environment' ? ctx.environment.id : undefined;
  const rows = h('tbody', {});
  const more = h('button', { type: 'button', class: 'secondary', id: 'audit-more' }, 'Older entries');
  let oldest = null;

  async function page() {
    more.disabled = true;
    let entries;
    try {
      entries = await ctx.api.audit({ environment, before: oldest ?? undefined, limit: PAGE });
    } catch (error) {
      if (mine !== generation) return null;
      const box = errorBox(error, 'Could not load the audit log');
      if (oldest === null) replace(container, title, box);
      else container.append(box);
      more.disabled = false;
      return null;
    }
    if (mine !== generation) return null;
    for (const entry of entries) {
      rows.append(tableRow(COLUMNS, [
        h('strong', {}, `#${entry.seq}`),
        time(entry.at),
        h('span', { class: 'action' }, entry.action),
        entry.actor,
        environmentName(ctx, entry.environmentId),
        compact(entry.request),
        compact(entry.counts),
      ], { data: { seq: entry.seq } }));
    }
    if (entries.length) oldest = entries[entries.length - 1].seq;
    more.disabled = false;
    more.hidden = entries.length < PAGE;
    return entries;
  }

  more.addEventListener('click', page);
  const first = await page();
  if (first === null) return;
  if (first.length === 0) {
    replace(container, title, empty('No audit entries yet.'));
    return;
  }
  const wrapped = table(COLUMNS, [],
    { id: 'audit-log' });
  wrapped.querySelector('tbody').replaceWith(rows);
  replace(container, title, wrapped, more);
}
