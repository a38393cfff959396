// Building the page. Every piece of text goes into the document as a text node, never as
// markup, so a trait value such as `<img src=x onerror=…>` shows as those characters and
// runs nothing. There is no innerHTML anywhere in the console.

/** Properties set directly on the element; anything else becomes an attribute. */
const PROPERTIES = new Set(['value', 'checked', 'disabled', 'hidden', 'htmlFor', 'selected']);

/**
 * Creates an element: `h('button', { class: 'danger', on: { click } }, 'Delete')`.
 *
 * `attrs.class` sets the class list, `attrs.on` adds event listeners, `attrs.data` sets
 * `data-*` attributes; `style` and `on…` attributes are refused, because the console's
 * Content-Security-Policy forbids inline styles and handlers anyway. Children are nodes
 * or text (strings and numbers); `null`, `undefined` and `false` are skipped, arrays are
 * flattened.
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') {
      element.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
    } else if (name === 'on') {
      for (const [type, listener] of Object.entries(value)) element.addEventListener(type, listener);
    } else if (name === 'data') {
      for (const [key, text] of Object.entries(value)) element.dataset[key] = String(text);
    } else if (name === 'style' || name.toLowerCase().startsWith('on')) {
      throw new Error(`h(): the attribute ${name} is not allowed`);
    } else if (PROPERTIES.has(name)) {
      element[name] = value;
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

/** Appends children (nodes, text, nested arrays) to `parent`. */
export function append(parent, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replaces everything inside `parent` with `children`. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** A time as the operator's locale shows it, with its ISO form as a tooltip. */
export function time(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const date = new Date(iso);
  return h('time', { datetime: iso, title: iso }, date.toLocaleString());
}

/** A JSON value as short text: strings as they are, anything else as JSON. */
export function valueText(value) {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** How long ago `iso` was, in whole days (0 for today or the future). */
export function daysAgo(iso) {
  return Math.max(0, Math.floor((Date.now() - new Date(iso).getTime()) / 86_400_000));
}

/** `1 user`, `3 users`. */
export function plural(count, one, many = `${one}s`) {
  return `${count.toLocaleString()} ${count === 1 ? one : many}`;
}
