// The segment filter builder's model: rows of form fields turned into the API's filter
// language (see collector/src/segment.rs). Pure functions, no DOM, so the rules are easy
// to read in one place.

/** The kinds of condition the form offers, with their labels. */
export const KINDS = [
  ['trait', 'Trait'],
  ['lastSeen', 'Last seen'],
  ['firstSeen', 'First seen'],
  ['responded', 'Survey response'],
  ['consent', 'Consent'],
  ['gpc', 'Global Privacy Control'],
];

/** Trait operators: [value, label, whether it takes a value]. */
export const TRAIT_OPERATORS = [
  ['equals', 'equals', true],
  ['notEquals', 'does not equal', true],
  ['contains', 'contains', true],
  ['exists', 'is set', false],
  ['missing', 'is not set', false],
  ['gt', '>', true],
  ['gte', '≥', true],
  ['lt', '<', true],
  ['lte', '≤', true],
];

const NUMERIC = new Set(['gt', 'gte', 'lt', 'lte']);

/** A new row of the given kind, with its default fields. */
export function newRow(kind = 'trait') {
  return {
    kind,
    negate: false,
    key: '',
    op: 'equals',
    value: '',
    type: 'text',
    atLeast: '',
    atMost: '',
    survey: '',
    respondedMode: 'survey',
    category: 'analytics',
    granted: 'true',
    gpc: 'true',
  };
}

/** Whether a trait operator takes a value, and of which types. */
export function operatorTakesValue(op) {
  return TRAIT_OPERATORS.find(([value]) => value === op)?.[2] ?? false;
}

/** Whether the operator compares numbers only. */
export function isNumeric(op) {
  return NUMERIC.has(op);
}

/** A row the operator left incomplete; `row` is its position from 1. */
export class RowError extends Error {
  constructor(row, message) {
    super(`condition ${row}: ${message}`);
  }
}

function days(text, row, label) {
  if (text === '' || text === null || text === undefined) return undefined;
  const number = Number(text);
  if (!Number.isInteger(number) || number < 0) {
    throw new RowError(row, `${label} is a whole number of days`);
  }
  return number;
}

function typedValue(row, index) {
  if (isNumeric(row.op) || row.type === 'number') {
    const number = Number(row.value);
    if (row.value.trim() === '' || !Number.isFinite(number)) {
      throw new RowError(index, 'the value is not a number');
    }
    return number;
  }
  if (row.type === 'boolean') return row.value.trim().toLowerCase() === 'true';
  if (row.type === 'null') return null;
  return row.value;
}

function condition(row, index) {
  switch (row.kind) {
    case 'trait': {
      const key = row.key.trim();
      if (!key) throw new RowError(index, 'name the trait');
      if (row.op === 'exists') return { trait: key, exists: true };
      if (row.op === 'missing') return { trait: key, exists: false };
      return { trait: key, [row.op]: typedValue(row, index) };
    }
    case 'lastSeen':
    case 'firstSeen': {
      const range = {
        atLeast: days(row.atLeast, index, '“at least”'),
        atMost: days(row.atMost, index, '“at most”'),
      };
      if (range.atLeast === undefined && range.atMost === undefined) {
        throw new RowError(index, 'give at least or at most a number of days');
      }
      return { [`${row.kind}DaysAgo`]: JSON.parse(JSON.stringify(range)) };
    }
    case 'responded':
      if (row.respondedMode === 'any') return { responded: true };
      if (row.respondedMode === 'none') return { responded: false };
      if (!row.survey.trim()) throw new RowError(index, 'name the survey');
      return { responded: row.survey.trim() };
    case 'consent':
      if (!row.category.trim()) throw new RowError(index, 'name the consent category');
      return { consent: row.category.trim(), granted: row.granted === 'true' };
    case 'gpc':
      return { gpc: row.gpc === 'true' };
    default:
      throw new RowError(index, `unknown kind ${row.kind}`);
  }
}

/**
 * The filter for `rows` joined by `match` (`all` or `any`); each row may be negated.
 * Throws a {@link RowError} naming the first incomplete row.
 */
export function toFilter(match, rows) {
  const conditions = rows.map((row, index) => {
    const built = condition(row, index + 1);
    return row.negate ? { not: built } : built;
  });
  return { [match === 'any' ? 'any' : 'all']: conditions };
}

/** Whether a filter selects every user (so that deleting it would delete everyone). */
export function selectsEveryone(filter) {
  const keys = Object.keys(filter ?? {});
  return keys.length === 0 || (keys.length === 1 && Array.isArray(filter.all) && filter.all.length === 0);
}
