// Pieces every page uses: loading, empty and error states, the confirmation dialog,
// deletion receipts and file downloads.
import { h, plural, time } from './dom.js';

/** A placeholder while something loads. */
export function loading(text = 'Loading…') {
  return h('p', { class: 'state loading', role: 'status' }, text);
}

/** What an empty list says instead of an empty table. */
export function empty(text) {
  return h('p', { class: 'state empty' }, text);
}

/** An error from the API (or the network), with the collector's own message. */
export function errorBox(error, what = 'That did not work') {
  const code = error?.code && error.code !== 'http_error' ? ` (${error.code})` : '';
  return h('div', { class: 'state error', role: 'alert' },
    h('strong', {}, `${what}: `),
    `${error?.message ?? String(error)}${code}`);
}

/** A short confirmation that something was done. */
export function notice(text) {
  return h('p', { class: 'state notice', role: 'status' }, text);
}

/** A titled card. */
export function card(title, ...children) {
  return h('section', { class: 'card' }, title ? h('h2', {}, title) : null, ...children);
}

/**
 * A table; `columns` are header labels, `rows` arrays of cells (nodes or text). Each cell
 * carries its column's label, which narrow screens show beside it instead of the header.
 */
export function table(columns, rows, attrs = {}) {
  return h('div', { class: 'table-wrap' },
    h('table', attrs,
      h('thead', {}, h('tr', {}, columns.map((label) => h('th', { scope: 'col' }, label)))),
      h('tbody', {}, rows.map((cells) => tableRow(columns, cells)))));
}

/** One row of {@link table}. */
export function tableRow(columns, cells, attrs = {}) {
  return h('tr', attrs, cells.map((cell, i) => h('td', { data: { label: columns[i] } }, cell)));
}

/**
 * Asks before something that cannot be undone. `body` is what will go, as nodes or text.
 * With `typed`, the confirm button stays disabled until exactly that text is typed.
 * Resolves to true when confirmed.
 */
export function confirmDialog({ title, body, confirmLabel, typed }) {
  return new Promise((resolve) => {
    const input = typed
      ? h('input', { class: 'typed-confirmation', autocomplete: 'off', spellcheck: 'false' })
      : null;
    const confirm = h('button', { type: 'submit', class: 'danger', value: 'confirm' }, confirmLabel);
    const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
    const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'dialog-title' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'dialog-title' }, title),
        h('div', { class: 'dialog-body' }, body),
        typed
          ? h('label', {}, 'Type ', h('code', {}, typed), ' to confirm', input)
          : null,
        h('div', { class: 'actions' }, cancel, confirm)));

    if (typed) {
      confirm.disabled = true;
      input.addEventListener('input', () => {
        confirm.disabled = input.value !== typed;
      });
    }
    cancel.addEventListener('click', () => dialog.close('cancel'));
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue === 'confirm');
    });

    document.body.append(dialog);
    dialog.showModal();
    (input ?? cancel).focus();
  });
}

/** Rows removed per table, as a definition list; tables with nothing removed are left out. */
export function counts(removed) {
  const entries = Object.entries(removed ?? {}).filter(([, count]) => count > 0);
  if (entries.length === 0) return h('p', { class: 'muted' }, 'No rows were removed.');
  return h('dl', { class: 'counts' },
    entries.map(([name, count]) => [h('dt', {}, name), h('dd', {}, count.toLocaleString())]));
}

/** The proof of a deletion, as the API returned it. */
export function receipt(title, answer) {
  return h('section', { class: 'receipt', 'aria-label': 'Deletion receipt' },
    h('h3', {}, title),
    h('p', {},
      'Audit entry ', h('strong', { class: 'audit-seq' }, `#${answer.auditEntry}`),
      ' · ', time(answer.at),
      answer.idHashes?.length
        ? ` · ${plural(answer.idHashes.length, 'id')} suppressed (kept only as keyed hashes)`
        : ''),
    counts(answer.removed));
}

/** Offers `text` as a file download. */
export function download(filename, text, type = 'application/json') {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h('a', { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
