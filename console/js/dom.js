// DOM building and in-place updates. Every piece of server data reaches the
// DOM through textContent (never innerHTML); rows are reconciled by key, so
// polling keeps focus, selection and scroll.

export const $ = (sel, root = document) => root.querySelector(sel);
export const byTid = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

/** Build an element from props; strings among children become text nodes. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === 'text') node.textContent = v;
    else if (k === 'testid') node.dataset.testid = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k === 'attrs') for (const [a, av] of Object.entries(v)) node.setAttribute(a, av);
    else node[k] = v;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

/** Write text only when it changed: no needless reflow, no lost selection. */
export function setText(node, text) {
  const s = text === null || text === undefined || text === '' ? '—' : String(text);
  if (node.textContent !== s) node.textContent = s;
}

/**
 * Fill a row's cells in place. A value is text, or a function given the
 * cell so it updates richer content (badges, buttons) itself. The first
 * cell is the row header, for screen readers.
 */
export function setCells(tr, values) {
  values.forEach((v, i) => {
    let cell = tr.cells[i];
    if (!cell) {
      cell = tr.appendChild(document.createElement(i === 0 ? 'th' : 'td'));
      if (i === 0) cell.scope = 'row';
    }
    if (typeof v === 'function') v(cell); else setText(cell, v);
  });
}

/**
 * Reconcile a container's children with items by key: existing nodes are
 * updated in place and kept (focus and scroll survive polling), new ones
 * created, missing ones removed; order follows the items.
 */
export function reconcile(parent, items, keyOf, render, tag = 'tr') {
  const old = new Map([...parent.children].map((n) => [n.dataset.key, n]));
  let prev = null;
  for (const item of items) {
    const key = String(keyOf(item));
    let node = old.get(key);
    if (node) old.delete(key); else node = el(tag, { dataset: { key } });
    render(node, item);
    const want = prev ? prev.nextSibling : parent.firstChild;
    if (node !== want) parent.insertBefore(node, want);
    prev = node;
  }
  old.forEach((n) => n.remove());
}

// Cell renderers for setCells.
/** A status badge: created once, then only its class and text change. */
export const badge = (state, label = state) => (cell) => {
  let b = cell.firstElementChild;
  if (!b) { b = el('span'); cell.replaceChildren(b); }
  const cls = `badge badge-${String(state).replace(/[^a-z_-]/gi, '')}`;
  if (b.className !== cls) b.className = cls;
  setText(b, label);
};

/** Content built once (buttons): later updates leave it alone. */
export const once = (build) => (cell) => { if (!cell.firstChild) cell.append(...build()); };
export const num = (n) => (cell) => { cell.className = 'num'; setText(cell, n); };
/** Text the fixed layout may cut: the whole of it stays in a tooltip. */
export const clipped = (text) => (cell) => { setText(cell, text); cell.title = text || ''; };
/** Text that must be read whole (resource URIs): it wraps instead of being cut. */
export const wrapped = (text) => (cell) => { cell.classList.add('wrap'); setText(cell, text); cell.title = text || ''; };
