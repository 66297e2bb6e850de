// The conversation view: user and assistant turns as they stream in, keyed by item id.

import { clockTime, fmtMs, h } from './util.js';

const WHO = { user: 'You', assistant: 'Assistant', tool: 'Tool call', system: 'Error' };

export class Conversation {
  /** `onToolOutput(callId, output)` is called when the user answers a function call. */
  constructor(container, empty, { onToolOutput } = {}) {
    this.container = container;
    this.empty = empty;
    this.onToolOutput = onToolOutput;
    this.rows = new Map(); // item id -> row record
    this.transcriptionOn = true;
  }

  clear() {
    this.rows.clear();
    this.container.replaceChildren(this.empty);
    this.empty.hidden = false;
  }

  _stick() {
    const c = this.container;
    return c.scrollTop + c.clientHeight >= c.scrollHeight - 48;
  }

  _append(node) {
    const stick = this._stick();
    this.empty.hidden = true;
    this.container.append(node);
    if (stick) this.container.scrollTop = this.container.scrollHeight;
  }

  _keepBottom(fn) {
    const stick = this._stick();
    fn();
    if (stick) this.container.scrollTop = this.container.scrollHeight;
  }

  /** Get or create the row of an item. `role` is user | assistant | tool | system. */
  row(itemId, role, { kind } = {}) {
    let rec = this.rows.get(itemId);
    if (rec) return rec;
    const who = h('span', { className: 'who' }, WHO[role] ?? role);
    const tags = h('span', { className: 'tags' });
    if (kind) tags.append(h('span', { className: 'tag' }, kind));
    const body = h('div', { className: 'body' });
    const lat = h('div', { className: 'lat', hidden: true });
    const node = h(
      'div',
      { className: `msg ${role}`, dataset: { itemId: itemId ?? '' } },
      h('div', { className: 'meta' }, who, tags, h('span', { className: 'time' }, clockTime().slice(0, 8)), itemId ? h('span', { className: 'item-id' }, itemId) : null),
      body,
      lat,
    );
    rec = { itemId, role, node, body, tags, lat, text: '', final: false };
    if (itemId) this.rows.set(itemId, rec);
    this._append(node);
    return rec;
  }

  _setText(rec, text, { pending = false, live = false } = {}) {
    this._keepBottom(() => {
      rec.body.textContent = text;
      rec.body.classList.toggle('pending', pending);
      rec.node.classList.toggle('live', live);
    });
  }

  _tag(rec, className, label, title) {
    if (rec.tags.querySelector(`.tag.${className}`)) {
      const existing = rec.tags.querySelector(`.tag.${className}`);
      existing.textContent = label;
      if (title) existing.title = title;
      return;
    }
    rec.tags.append(h('span', { className: `tag ${className}`, title }, label));
  }

  // ── user side ──────────────────────────────────────────────────────────────────────

  speechStarted(itemId) {
    const rec = this.row(itemId, 'user', { kind: 'voice' });
    if (!rec.text) this._setText(rec, 'Listening…', { pending: true, live: true });
  }

  speechStopped(itemId) {
    const rec = this.row(itemId, 'user', { kind: 'voice' });
    if (!rec.text) this._setText(rec, this.transcriptionOn ? 'Transcribing…' : 'Voice message (input transcription is off)', { pending: true, live: this.transcriptionOn });
  }

  /** A user item from `conversation.item.added` / `.done`. */
  userItem(item) {
    const content = Array.isArray(item.content) ? item.content : [];
    const text = content.filter((p) => p.type === 'input_text').map((p) => p.text).join('\n');
    const audio = content.find((p) => p.type === 'input_audio');
    const rec = this.row(item.id, 'user', { kind: audio ? 'voice' : 'text' });
    if (text) {
      rec.text = text;
      rec.final = true;
      this._setText(rec, text);
    } else if (audio && typeof audio.transcript === 'string' && audio.transcript) {
      rec.text = audio.transcript;
      rec.final = true;
      this._setText(rec, audio.transcript);
    } else if (audio && !rec.text && !rec.final) {
      this._setText(rec, this.transcriptionOn ? 'Transcribing…' : 'Voice message (input transcription is off)', { pending: true, live: this.transcriptionOn });
    }
  }

  transcriptionDelta(itemId, delta) {
    const rec = this.row(itemId, 'user', { kind: 'voice' });
    if (rec.final) return;
    rec.text += delta;
    this._setText(rec, rec.text, { live: true });
  }

  transcriptionCompleted(itemId, transcript) {
    const rec = this.row(itemId, 'user', { kind: 'voice' });
    rec.text = transcript ?? rec.text;
    rec.final = true;
    if (rec.text.trim()) this._setText(rec, rec.text);
    else this._setText(rec, '(no words recognised)', { pending: true });
  }

  transcriptionFailed(itemId, error) {
    const rec = this.row(itemId, 'user', { kind: 'voice' });
    rec.final = true;
    this._setText(rec, rec.text || 'Transcription failed', { pending: !rec.text });
    this._tag(rec, 'failed', 'transcription failed', error?.message ?? error?.code ?? '');
  }

  // ── assistant side ─────────────────────────────────────────────────────────────────

  assistantItem(item, modality) {
    const rec = this.row(item.id, 'assistant', { kind: modality });
    if (!rec.text && !rec.final) this._setText(rec, '', { live: true });
    return rec;
  }

  assistantDelta(itemId, delta) {
    const rec = this.row(itemId, 'assistant');
    if (rec.final) return;
    rec.text += delta;
    this._setText(rec, rec.text, { live: true });
  }

  assistantDone(itemId, text) {
    const rec = this.row(itemId, 'assistant');
    if (typeof text === 'string' && !rec.truncated) rec.text = text;
    rec.final = true;
    this._setText(rec, rec.text || (rec.truncated ? '' : '(no text)'), { pending: !rec.text });
  }

  /** `conversation.item.done` / `response.output_item.done` of any item. */
  itemDone(item) {
    const rec = this.rows.get(item.id);
    if (!rec) return;
    if (item.status === 'incomplete' && rec.role === 'assistant') {
      rec.final = true;
      rec.node.classList.remove('live');
      if (!rec.truncated) this._tag(rec, 'cancelled', 'interrupted', 'The response was cancelled before this item finished (status "incomplete")');
    }
  }

  /** `conversation.item.truncated`: the unplayed audio after `audio_end_ms` was cut off. */
  truncated(itemId, audioEndMs) {
    const rec = this.rows.get(itemId);
    if (!rec) return;
    rec.truncated = true;
    rec.node.classList.add('truncated');
    rec.node.classList.remove('live');
    rec.tags.querySelector('.tag.cancelled')?.remove();
    this._tag(rec, 'truncated', `truncated at ${fmtMs(audioEndMs)}`, 'conversation.item.truncated: the audio after this point was never played, and the server dropped it (and its transcript) from the conversation');
  }

  responseDone(response) {
    for (const item of response.output ?? []) this.itemDone(item);
    if (response.status === 'failed') {
      const err = response.status_details?.error ?? {};
      this.error({ code: err.code ?? 'response_failed', message: err.message ?? 'The response failed.' });
    }
    for (const item of response.output ?? []) {
      const rec = this.rows.get(item.id);
      if (rec && rec.role === 'assistant') { rec.final = true; rec.node.classList.remove('live'); }
    }
  }

  /** The call ended: nothing is streaming any more; unfinished items say so. */
  endAll() {
    for (const rec of this.rows.values()) {
      if (!rec.node.classList.contains('live')) continue;
      rec.node.classList.remove('live');
      if (rec.role === 'assistant' && !rec.final && !rec.truncated) this._tag(rec, 'cancelled', 'unfinished', 'The call ended before this item was done');
      if (rec.body.classList.contains('pending') && !rec.text) rec.body.textContent = '(call ended)';
    }
  }

  // ── tools and errors ───────────────────────────────────────────────────────────────

  functionCall(item) {
    const rec = this.row(item.id, 'tool');
    rec.body.replaceChildren(h('div', { className: 'tool-call' }, `${item.name}(${item.arguments ?? ''})`));
    if (item.status !== 'completed' || rec.replied) return;
    const input = h('input', { placeholder: 'Output to send back, e.g. {"temperature_c": 21}', spellcheck: 'false', 'aria-label': `Output of ${item.name}` });
    const send = h('button', { className: 'btn small primary', type: 'submit' }, 'Send output');
    const form = h('form', { className: 'tool-reply' }, input, send);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (!this.onToolOutput?.(item.call_id, input.value || '{}')) return;
      rec.replied = true;
      form.replaceWith(h('div', { className: 'tool-call' }, `→ ${input.value || '{}'}`));
    });
    this._keepBottom(() => rec.body.append(form));
  }

  error(err) {
    const rec = this.row(null, 'system');
    const text = `${err.code ? `${err.code}: ` : ''}${err.message ?? 'Unknown error'}`;
    this._setText(rec, text);
  }

  /** Show a turn's client-side latency under its assistant item. */
  setLatency(itemId, parts) {
    const rec = this.rows.get(itemId);
    if (!rec) return;
    const chips = parts.filter(([, v]) => v !== null && v !== undefined);
    rec.lat.hidden = chips.length === 0;
    rec.lat.replaceChildren(...chips.map(([label, v, title]) => h('span', { title }, `${label} `, h('b', {}, fmtMs(v)))));
  }
}
