// The event log: every event in both directions, filterable, expandable, copyable.

import { clockTime, h, renderJson } from './util.js';

const FAMILIES = [
  ['error', 'error'],
  ['session.', 'session'],
  ['input_audio_buffer.', 'input'],
  ['conversation.', 'conversation'],
  ['response.', 'response'],
  ['output_audio_buffer.', 'output'],
  ['rate_limits.', 'output'],
];

function familyOf(type, dir) {
  if (dir === 'note') return 'note';
  for (const [prefix, family] of FAMILIES) if (type.startsWith(prefix)) return family;
  return 'other';
}

const clip = (text, n = 140) => (text.length > n ? `${text.slice(0, n)}…` : text);
const quote = (text) => JSON.stringify(clip(String(text), 160));

function itemSummary(item) {
  if (!item) return '';
  const bits = [item.type === 'message' ? item.role : item.type];
  if (item.status) bits.push(item.status);
  if (item.name) bits.push(item.name);
  const content = Array.isArray(item.content) ? item.content : [];
  for (const part of content) {
    const text = part.text ?? part.transcript;
    if (typeof text === 'string' && text) { bits.push(quote(text)); break; }
    if (part.type === 'input_audio' && !text) bits.push('[audio]');
  }
  if (item.arguments) bits.push(clip(item.arguments, 80));
  if (item.id) bits.push(item.id);
  return bits.join(' · ');
}

/** A one-line summary of an event, for the collapsed row. */
export function summarize(event) {
  const e = event;
  switch (e.type) {
    case 'error': {
      const err = e.error ?? {};
      return `${err.code ?? err.type ?? 'error'}: ${err.message ?? ''}`;
    }
    case 'session.created':
    case 'session.updated':
    case 'session.update': {
      const s = e.session ?? {};
      const td = s.audio?.input?.turn_detection;
      const bits = [];
      if (s.id) bits.push(s.id);
      if (s.model) bits.push(s.model);
      if (s.output_modalities) bits.push(s.output_modalities.join('+'));
      if (s.audio?.output?.voice) bits.push(`voice=${typeof s.audio.output.voice === 'string' ? s.audio.output.voice : s.audio.output.voice.id}`);
      if (td !== undefined) bits.push(`turn=${td ? td.type : 'none'}`);
      if (Array.isArray(s.tools) && s.tools.length) bits.push(`${s.tools.length} tool${s.tools.length > 1 ? 's' : ''}`);
      return bits.join(' · ');
    }
    case 'input_audio_buffer.speech_started':
      return `audio_start_ms=${e.audio_start_ms} · ${e.item_id}`;
    case 'input_audio_buffer.speech_stopped':
      return `audio_end_ms=${e.audio_end_ms} · ${e.item_id}`;
    case 'input_audio_buffer.committed':
      return e.item_id ?? '';
    case 'conversation.item.added':
    case 'conversation.item.done':
    case 'conversation.item.retrieved':
    case 'conversation.item.create':
    case 'response.output_item.added':
    case 'response.output_item.done':
      return itemSummary(e.item);
    case 'conversation.item.truncated':
    case 'conversation.item.truncate':
      return `${e.item_id} · audio_end_ms=${e.audio_end_ms}`;
    case 'conversation.item.input_audio_transcription.completed':
      return quote(e.transcript ?? '');
    case 'conversation.item.input_audio_transcription.failed':
      return e.error?.message ?? e.error?.code ?? '';
    case 'response.created':
      return e.response?.id ?? '';
    case 'response.done': {
      const r = e.response ?? {};
      const bits = [r.status];
      if (r.status_details?.reason) bits.push(r.status_details.reason);
      if (r.status_details?.error?.message) bits.push(r.status_details.error.message);
      if (r.usage?.total_tokens !== undefined) bits.push(`${r.usage.total_tokens} tokens`);
      if (r.id) bits.push(r.id);
      return bits.filter(Boolean).join(' · ');
    }
    case 'response.output_audio_transcript.done':
      return quote(e.transcript ?? '');
    case 'response.output_text.done':
      return quote(e.text ?? '');
    case 'response.function_call_arguments.done':
      return `${e.name ?? ''}(${clip(e.arguments ?? '', 100)})`;
    case 'response.output_audio.delta':
    case 'input_audio_buffer.append':
      return `${Math.floor(((e.delta ?? e.audio ?? '').length * 3) / 4)} bytes`;
    case 'output_audio_buffer.started':
    case 'output_audio_buffer.stopped':
    case 'output_audio_buffer.cleared':
      return e.response_id ?? '';
    case 'rate_limits.updated':
      return (e.rate_limits ?? []).map((r) => `${r.name}: ${r.remaining}/${r.limit}`).join(' · ');
    case 'response.create': {
      const r = e.response;
      return r ? Object.keys(r).join(', ') : '';
    }
    case 'response.cancel':
      return e.response_id ?? '';
    default:
      if (typeof e.delta === 'string') return quote(e.delta);
      if (typeof e.message === 'string') return e.message; // notes
      return [e.item_id, e.response_id].filter(Boolean).join(' · ');
  }
}

/** Parse the filter box: space-separated terms, all must match; `-term` must not match. */
function parseQuery(text) {
  const terms = text.toLowerCase().split(/\s+/).filter(Boolean);
  return {
    include: terms.filter((t) => !t.startsWith('-') || t.length === 1),
    exclude: terms.filter((t) => t.startsWith('-') && t.length > 1).map((t) => t.slice(1)),
  };
}

export class EventLog {
  constructor({ list, filter, showIn, showOut, showDeltas, followButton, newButton, count, visibleLabel, empty, max = 4000 }) {
    Object.assign(this, { list, filter, showIn, showOut, showDeltas, followButton, newButton, count, visibleLabel, empty, max });
    this.entries = [];
    this.pending = [];
    this.byEventId = new Map();
    this.seq = 0;
    this.origin = performance.now();
    this.follow = true;
    this.unseen = 0;
    this.query = parseQuery('');
    this.frame = 0;

    filter.addEventListener('input', () => { this.query = parseQuery(filter.value); this.refilter(); });
    for (const box of [showIn, showOut, showDeltas]) box.addEventListener('change', () => this.refilter());
    followButton.addEventListener('click', () => this.setFollow(!this.follow));
    newButton.addEventListener('click', () => this.setFollow(true));
    list.addEventListener('scroll', () => {
      const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 24;
      if (atBottom !== this.follow) this.setFollow(atBottom, { scroll: false });
    });
    list.addEventListener('click', (e) => this._onClick(e));
    list.addEventListener('keydown', (e) => this._onKey(e));
  }

  /** Times in the log are shown relative to this moment (the start of the call). */
  setOrigin(t = performance.now()) {
    this.origin = t;
  }

  /** Log an event. `dir` is 'in' (server → page), 'out' (page → server) or 'note' (the page itself). */
  add(event, dir) {
    const entry = { id: ++this.seq, dir, event, t: performance.now(), wall: new Date(), row: null, blob: null };
    if (dir === 'out' && event.event_id) this.byEventId.set(event.event_id, entry);
    this.pending.push(entry);
    if (!this.frame) this.frame = requestAnimationFrame(() => this._flush());
  }

  note(message, extra = {}) {
    this.add({ type: 'note', message, ...extra }, 'note');
  }

  clear() {
    this.entries = [];
    this.pending = [];
    this.byEventId.clear();
    this.list.replaceChildren();
    this.unseen = 0;
    this._updateCounts();
    this.setFollow(true);
  }

  /** The visible events as JSON lines (what the Copy button puts on the clipboard). */
  visibleJsonl() {
    return this.entries.filter((e) => e.row && !e.row.hidden).map((e) => JSON.stringify(e.dir === 'note' ? e.event : { direction: e.dir === 'out' ? 'sent' : 'received', ...e.event })).join('\n');
  }

  collapseAll() {
    for (const entry of this.entries) if (entry.row?.classList.contains('open')) this._toggle(entry, false);
  }

  setFollow(on, { scroll = true } = {}) {
    this.follow = on;
    this.followButton.setAttribute('aria-pressed', String(on));
    if (on) {
      this.unseen = 0;
      this.newButton.hidden = true;
      if (scroll) this.list.scrollTop = this.list.scrollHeight;
    }
  }

  refilter() {
    for (const entry of this.entries) if (entry.row) entry.row.hidden = !this._matches(entry);
    this._updateCounts();
    if (this.follow) this.list.scrollTop = this.list.scrollHeight;
  }

  _matches(entry) {
    const { dir, event } = entry;
    if (dir === 'in' && !this.showIn.checked) return false;
    if (dir === 'out' && !this.showOut.checked) return false;
    if (!this.showDeltas.checked && event.type.endsWith('.delta')) return false;
    const { include, exclude } = this.query;
    if (!include.length && !exclude.length) return true;
    if (entry.blob === null) entry.blob = `${event.type} ${JSON.stringify(event)}`.toLowerCase();
    return include.every((t) => entry.blob.includes(t)) && !exclude.some((t) => entry.blob.includes(t));
  }

  _row(entry) {
    const { event, dir } = entry;
    const rel = (entry.t - this.origin) / 1000;
    const row = h(
      'div',
      {
        className: `ev${event.type.endsWith('.delta') ? ' delta' : ''}`,
        dataset: { dir, family: familyOf(event.type, dir), id: entry.id },
        title: `${clockTime(entry.wall)} — ${dir === 'out' ? 'sent by the page' : dir === 'in' ? 'received from the server' : 'note from the page'}`,
        role: 'button',
        tabindex: '-1',
      },
      h('span', { className: 'ev-time' }, rel >= 0 ? `+${rel.toFixed(3)}` : rel.toFixed(3)),
      h('span', { className: 'ev-dir' }, dir === 'out' ? '↑' : dir === 'in' ? '↓' : '·'),
      h('span', { className: 'ev-type' }, event.type),
      h('span', { className: 'ev-sum' }, clip(summarize(event), 220)),
    );
    return row;
  }

  _flush() {
    this.frame = 0;
    if (!this.pending.length) return;
    const fragment = document.createDocumentFragment();
    let shown = 0;
    for (const entry of this.pending) {
      entry.row = this._row(entry);
      entry.row.hidden = !this._matches(entry);
      if (!entry.row.hidden) shown += 1;
      fragment.append(entry.row);
      this.entries.push(entry);
    }
    this.pending = [];
    this.list.append(fragment);
    const overflow = this.entries.length - this.max;
    if (overflow > 0) {
      for (const old of this.entries.splice(0, overflow)) {
        old.row?.nextElementSibling?.classList.contains('ev-json') && old.row.nextElementSibling.remove();
        old.row?.remove();
        if (old.event.event_id) this.byEventId.delete(old.event.event_id);
      }
    }
    if (this.follow) this.list.scrollTop = this.list.scrollHeight;
    else if (shown) {
      this.unseen += shown;
      this.newButton.hidden = false;
      this.newButton.querySelector('span').textContent = String(this.unseen);
    }
    this._updateCounts();
  }

  _updateCounts() {
    const total = this.entries.length;
    const visible = this.entries.reduce((n, e) => n + (e.row && !e.row.hidden ? 1 : 0), 0);
    this.count.textContent = String(total);
    if (this.empty) this.empty.hidden = total > 0;
    this.visibleLabel.textContent = visible === total ? `${total} events` : `${visible} of ${total} events`;
  }

  _entryOf(row) {
    const id = Number(row?.dataset.id);
    return this.entries.find((e) => e.id === id);
  }

  _toggle(entry, open = !entry.row.classList.contains('open')) {
    const { row } = entry;
    const next = row.nextElementSibling;
    if (!open) {
      row.classList.remove('open');
      if (next?.classList.contains('ev-json')) next.remove();
      return;
    }
    if (row.classList.contains('open')) return;
    row.classList.add('open');
    const pre = h('pre', { className: 'ev-json' });
    renderJson(pre, entry.event);
    const cause = entry.event.type === 'error' && entry.event.error?.event_id;
    if (cause) {
      const target = this.byEventId.get(cause);
      pre.append('\n', h('span', {
        className: 'link',
        text: target ? `↳ caused by ${cause} (${target.event.type}) — show` : `↳ caused by ${cause}`,
        onclick: (e) => { e.stopPropagation(); if (target?.row) this.reveal(target); },
      }));
    }
    row.after(pre);
  }

  /** Scroll an entry into view, open it and flash it. */
  reveal(entry) {
    this.setFollow(false, { scroll: false });
    entry.row.hidden = false;
    this._toggle(entry, true);
    entry.row.scrollIntoView({ block: 'center' });
    entry.row.classList.remove('flash');
    void entry.row.offsetWidth; // restart the animation
    entry.row.classList.add('flash');
    entry.row.focus({ preventScroll: true });
  }

  _onClick(e) {
    if (e.target.closest('.ev-json')) return; // selecting text inside an expanded event
    const row = e.target.closest('.ev');
    const entry = this._entryOf(row);
    if (!entry) return;
    this._toggle(entry);
    if (row.classList.contains('open')) this.setFollow(false, { scroll: false });
    row.focus({ preventScroll: true });
  }

  _onKey(e) {
    const current = document.activeElement?.closest?.('.ev');
    if (e.key === 'Enter' || e.key === ' ') {
      const entry = this._entryOf(current);
      if (entry) { e.preventDefault(); this._toggle(entry); }
      return;
    }
    if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp' && e.key !== 'j' && e.key !== 'k') return;
    e.preventDefault();
    const down = e.key === 'ArrowDown' || e.key === 'j';
    const rows = [...this.list.querySelectorAll('.ev:not([hidden])')];
    if (!rows.length) return;
    let index = rows.indexOf(current);
    index = index < 0 ? (down ? 0 : rows.length - 1) : Math.max(0, Math.min(rows.length - 1, index + (down ? 1 : -1)));
    this.setFollow(false, { scroll: false });
    rows[index].focus();
    rows[index].scrollIntoView({ block: 'nearest' });
  }
}
