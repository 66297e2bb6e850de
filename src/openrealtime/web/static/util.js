// Small DOM and formatting helpers shared by the playground modules.

/** `document.querySelector`, throwing when the element is missing (a broken page fails loudly). */
export function $(selector, root = document) {
  const found = root.querySelector(selector);
  if (!found) throw new Error(`playground: missing element ${selector}`);
  return found;
}

/**
 * Create an element: `h('div', {className: 'x', dataset: {a: 1}, onclick}, 'text', child)`.
 * Strings become text nodes (never HTML), `null`/`false` children are skipped.
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'className') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== 'string') node[key] = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An icon from the page's SVG sprite (`<symbol id="i-…">`). */
export function icon(name) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  const use = document.createElementNS(ns, 'use');
  use.setAttribute('href', `#${name}`);
  svg.append(use);
  return svg;
}

/** A duration for people: `840 ms`, `1.24 s`, or an em dash when unknown. */
export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  if (Math.abs(ms) < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** Wall-clock time with milliseconds, `14:03:27.418`. */
export function clockTime(date = new Date()) {
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** Monotonic milliseconds (all latency arithmetic uses this clock). */
export const now = () => performance.now();

/** Median and 90th percentile of the non-null values, or nulls when there are none. */
export function percentiles(values) {
  const xs = values.filter((v) => typeof v === 'number' && Number.isFinite(v)).sort((a, b) => a - b);
  if (!xs.length) return { p50: null, p90: null, n: 0 };
  const at = (q) => xs[Math.min(xs.length - 1, Math.max(0, Math.ceil(q * xs.length) - 1))];
  return { p50: at(0.5), p90: at(0.9), n: xs.length };
}

/**
 * Pretty-print a JSON value into `pre`, colouring keys, strings, numbers and literals with
 * spans (text nodes only: event contents are never parsed as HTML). Long strings (base64
 * audio) are shortened for display; the copy buttons use the original event.
 */
export function renderJson(pre, value) {
  pre.replaceChildren();
  const text = JSON.stringify(value, (key, v) => (typeof v === 'string' && v.length > 2000 ? `${v.slice(0, 120)}… (${v.length} chars)` : v), 2);
  if (text === undefined) return;
  const token = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  let last = 0;
  for (const match of text.matchAll(token)) {
    if (match.index > last) pre.append(text.slice(last, match.index));
    if (match[1] !== undefined) {
      pre.append(h('span', { className: match[2] ? 'k' : 's' }, match[1]));
      if (match[2]) pre.append(match[2]);
    } else if (match[3] !== undefined) {
      pre.append(h('span', { className: 'b' }, match[3]));
    } else {
      pre.append(h('span', { className: 'n' }, match[4]));
    }
    last = match.index + match[0].length;
  }
  pre.append(text.slice(last));
}

/** True when keyboard input is going to a text field (shortcuts must then stay out of the way). */
export function isTyping(target) {
  if (!(target instanceof Element)) return false;
  if (target.closest('textarea, select, [contenteditable="true"]')) return true;
  const input = target.closest('input');
  return Boolean(input && !['checkbox', 'radio', 'range', 'button', 'submit'].includes(input.type));
}

/** Storage that never throws (private windows, disabled storage). */
export const store = {
  get(area, key) {
    try { return area.getItem(key); } catch { return null; }
  },
  set(area, key, value) {
    try {
      if (value === null) area.removeItem(key);
      else area.setItem(key, value);
    } catch { /* storage unavailable: settings just are not remembered */ }
  },
};
