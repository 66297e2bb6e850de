// Turn state and per-turn latency, as far as a client can see them.
//
// A turn starts at the end of the user's turn as the page knows it: `speech_stopped` (VAD),
// the release of the talk button (push-to-talk) or sending a text message. The page then
// stamps, on its own monotonic clock, what it receives: the input transcript, the first
// text/transcript delta, `output_audio_buffer.started`, the first audible sample on the
// received track, and `response.created` → `response.done`. These are client-side figures:
// they include the network and the jitter buffer, which is what a user hears.

import { now } from './util.js';

/**
 * Plug-in point for a latency breakdown measured by the server.
 *
 * The server computes one per turn (`core/latency.py`, `TurnLatency.stages()`: vad_end,
 * turn_decision, stt_final, llm_first_token, tts_first_audio, first_delta_sent, each in ms
 * after the end of speech) but today it only logs it: no wire event carries it, and this page
 * must not invent wire fields. If the server ever sends it (for example in a documented
 * event or in `response.metadata`), parse it here and return
 * `{responseId?, itemId?, stages: {name: ms, ...}}`; the latency table then shows those
 * stages under the turn it belongs to. Returning `null` (today, always) changes nothing.
 */
export function serverLatencyBreakdown(event) { // eslint-disable-line no-unused-vars
  return null;
}

/** The columns of one turn (ms after the turn ended), with what each one measures. */
export const TURN_METRICS = [
  ['stt', 'STT', 'end of turn → input_audio_transcription.completed'],
  ['firstText', '1st text', 'end of turn → first output_audio_transcript.delta / output_text.delta'],
  ['firstAudio', '1st audio', 'end of turn → output_audio_buffer.started'],
  ['heard', 'heard', 'end of turn → first audible sample on the received audio track'],
];

export class TurnTracker {
  /** `onChange(turn)` runs whenever a turn's figures change (to re-render it). */
  constructor({ onChange } = {}) {
    this.onChange = onChange ?? (() => {});
    this.turns = [];
    this.pending = null;
    this.byResponse = new Map();
    this.byItem = new Map();
  }

  reset() {
    this.turns = [];
    this.pending = null;
    this.byResponse.clear();
    this.byItem.clear();
  }

  /** The user's turn ended: `trigger` is 'vad', 'ptt' or 'text'; `userItemId` when known. */
  endOfUserTurn(trigger, userItemId = null, t = now()) {
    const turn = {
      n: this.turns.length + 1, trigger, t0: t, userItemId, responseId: null, assistantItemId: null,
      stt: null, firstText: null, firstAudio: null, heard: null, tCreated: null, tDone: null,
      response: null, status: null, server: null,
    };
    this.turns.push(turn);
    if (userItemId) this.byItem.set(userItemId, turn);
    this.pending = turn;
    this.onChange(turn);
    return turn;
  }

  /** The page itself sent `response.create` (after a tool output): that starts a turn too. */
  responseRequested(trigger = 'client', t = now()) {
    if (!this.pending) this.endOfUserTurn(trigger, null, t);
  }

  _since(turn, t) {
    return Math.max(0, t - turn.t0);
  }

  /** Feed every server event with its arrival time. */
  onEvent(event, t = now()) {
    switch (event.type) {
      case 'input_audio_buffer.speech_stopped':
        this.endOfUserTurn('vad', event.item_id, t);
        break;
      case 'input_audio_buffer.committed': {
        // push-to-talk: the commit names the user item the release produced
        if (this.pending && !this.pending.userItemId && this.pending.trigger === 'ptt') {
          this.pending.userItemId = event.item_id;
          this.byItem.set(event.item_id, this.pending);
        }
        break;
      }
      case 'conversation.item.input_audio_transcription.completed': {
        const turn = this.byItem.get(event.item_id);
        if (turn && turn.stt === null) { turn.stt = this._since(turn, t); this.onChange(turn); }
        break;
      }
      case 'response.created': {
        const id = event.response?.id;
        if (event.response?.conversation_id === null) break; // out-of-band responses are not turns
        const turn = this.pending ?? this.endOfUserTurn('server', null, t);
        this.pending = null;
        turn.responseId = id;
        turn.tCreated = t;
        if (id) this.byResponse.set(id, turn);
        this.onChange(turn);
        break;
      }
      case 'response.output_item.added': {
        const turn = this.byResponse.get(event.response_id);
        if (turn && !turn.assistantItemId && event.item?.type === 'message') { turn.assistantItemId = event.item.id; this.onChange(turn); }
        break;
      }
      case 'response.output_audio_transcript.delta':
      case 'response.output_text.delta': {
        const turn = this.byResponse.get(event.response_id);
        if (turn && turn.firstText === null) { turn.firstText = this._since(turn, t); this.onChange(turn); }
        break;
      }
      case 'output_audio_buffer.started': {
        const turn = this.byResponse.get(event.response_id);
        if (turn && turn.firstAudio === null) { turn.firstAudio = this._since(turn, t); this.onChange(turn); }
        break;
      }
      case 'response.done': {
        const turn = this.byResponse.get(event.response?.id);
        if (turn) {
          turn.tDone = t;
          turn.response = turn.tCreated === null ? null : t - turn.tCreated;
          turn.status = event.response?.status ?? null;
          turn.reason = event.response?.status_details?.reason ?? null;
          this.onChange(turn);
        }
        break;
      }
      default:
        break;
    }
    const breakdown = serverLatencyBreakdown(event);
    if (breakdown) {
      const turn = (breakdown.responseId && this.byResponse.get(breakdown.responseId)) || (breakdown.itemId && this.byItem.get(breakdown.itemId));
      if (turn) { turn.server = breakdown.stages; this.onChange(turn); }
    }
  }

  /** The received audio became audible (a rising edge of the output meter). */
  onAudible(t = now()) {
    for (let i = this.turns.length - 1; i >= 0; i -= 1) {
      const turn = this.turns[i];
      if (turn.tCreated !== null && turn.tCreated <= t) {
        if (turn.heard === null) { turn.heard = this._since(turn, t); this.onChange(turn); }
        return;
      }
    }
  }
}

/**
 * What the session is doing right now, from the events: the indicator above the chat.
 * States: offline, connecting, listening, user (speaking), thinking (turn ended, no response
 * yet), generating (response in progress), speaking (assistant audio playing).
 */
export class LiveState {
  constructor(onChange) {
    this.autoRespond = true; // turn_detection.create_response: a response follows speech_stopped
    this.reset(false);
    this.onChange = onChange; // set last: the first render is the caller's
  }

  reset(connected) {
    this.connected = connected;
    this.speech = false;
    this.holding = false;
    this.waiting = false;
    this.responses = new Set();
    this.audio = null; // response id whose audio is playing
    this.changed();
  }

  get responding() {
    return this.responses.size > 0;
  }

  get state() {
    if (!this.connected) return 'offline';
    if (this.speech || this.holding) return 'user';
    if (this.audio) return 'speaking';
    if (this.responding) return 'generating';
    if (this.waiting) return 'thinking';
    return 'listening';
  }

  changed() {
    this.onChange?.(this);
  }

  onEvent(event) {
    switch (event.type) {
      case 'input_audio_buffer.speech_started': this.speech = true; break;
      case 'input_audio_buffer.speech_stopped': this.speech = false; this.waiting = this.autoRespond; break;
      case 'input_audio_buffer.cleared': this.speech = false; break;
      case 'response.created':
        if (event.response?.id) this.responses.add(event.response.id);
        this.waiting = false;
        break;
      case 'response.done':
        this.responses.delete(event.response?.id);
        this.waiting = false;
        break;
      case 'output_audio_buffer.started': this.audio = event.response_id ?? 'audio'; break;
      case 'output_audio_buffer.stopped':
      case 'output_audio_buffer.cleared':
        this.audio = null;
        break;
      default: return;
    }
    this.changed();
  }
}
