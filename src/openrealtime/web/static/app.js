// openrealtime playground: talk to the server over WebRTC and watch what happens.
// No build step: plain ES modules served by the server itself (src/openrealtime/web/).

import { LevelMeter, showLevel, silentTrack } from './audio.js';
import { Conversation } from './conversation.js';
import { EventLog } from './event-log.js';
import { RealtimeCall, apiUrl, mintClientSecret } from './realtime.js';
import { DEFAULTS, EXAMPLE_TOOLS, VOICES, buildSession, readForm, validateTools, valuesFromSession, writeForm } from './session.js';
import { Timeline } from './timeline.js';
import { LiveState, TurnTracker } from './turns.js';
import { $, fmtMs, h, icon, isTyping, now, percentiles, renderJson, store } from './util.js';

const SETTINGS_KEY = 'openrealtime.playground.settings';
const MODEL_KEY = 'openrealtime.playground.model';
const AUTH_KEY = 'openrealtime.playground.auth';
const THEME_KEY = 'openrealtime.playground.theme';
const API_KEY_KEY = 'openrealtime.playground.apiKey'; // sessionStorage only, and only with "Remember"
const PTT_TAIL_MS = 200; // audio still in flight over RTP when the button is released
const PTT_MIN_MS = 200;

// ── elements ────────────────────────────────────────────────────────────────────────────

const el = {
  connectForm: $('#connect-form'),
  model: $('#model'),
  modelList: $('#model-list'),
  apiKey: $('#api-key'),
  remember: $('#remember'),
  connectBtn: $('#connect-btn'),
  connStatus: $('#conn-status'),
  connText: $('#conn-text'),
  themeBtn: $('#theme-btn'),
  helpBtn: $('#help-btn'),
  helpDialog: $('#help-dialog'),
  sessionForm: $('#session-form'),
  settingsState: $('#settings-state'),
  instructions: $('#instructions'),
  voice: $('#voice'),
  turn: $('#turn'),
  threshold: $('#threshold'),
  thresholdOut: $('#threshold-out'),
  tools: $('#tools'),
  toolsStatus: $('#tools-status'),
  toolsExample: $('#tools-example'),
  preview: $('#session-preview'),
  previewDetails: $('#preview-details'),
  applyBtn: $('#apply-btn'),
  resetBtn: $('#reset-btn'),
  sessionMeta: $('#session-meta'),
  muteBtn: $('#mute-btn'),
  micMeter: $('#mic-meter'),
  outMeter: $('#out-meter'),
  speakerBtn: $('#speaker-btn'),
  indVad: $('#ind-vad'),
  indResponse: $('#ind-response'),
  indAudio: $('#ind-audio'),
  turnState: $('#turn-state'),
  timeline: $('#timeline'),
  chat: $('#chat'),
  chatEmpty: $('#chat-empty'),
  composer: $('#composer'),
  message: $('#message'),
  sendBtn: $('#send-btn'),
  pttBtn: $('#ptt-btn'),
  interruptBtn: $('#interrupt-btn'),
  tabEvents: $('#tab-events'),
  tabTurns: $('#tab-turns'),
  eventsPane: $('#events-pane'),
  turnsPane: $('#turns-pane'),
  eventLog: $('#event-log'),
  eventFilter: $('#event-filter'),
  copyBtn: $('#copy-btn'),
  clearBtn: $('#clear-btn'),
  expandBtn: $('#expand-btn'),
  turnsBody: $('#turns-body'),
  turnCount: $('#turn-count'),
  latencySummary: $('#latency-summary'),
  audio: $('#remote-audio'),
  toasts: $('#toasts'),
};

// ── state ───────────────────────────────────────────────────────────────────────────────

const state = {
  phase: 'idle', // idle | connecting | connected
  call: null,
  audioContext: null,
  mic: null, // {stream, track, real}
  micMeter: null,
  outMeter: null,
  muted: false,
  holding: false,
  pressedAt: 0,
  effective: null, // the session object from the last session.created / session.updated
  lastSent: null, // JSON of the session config last sent (call setup or session.update)
  lastUpdateId: null,
  updateRejected: null,
  pendingResponseCreate: false,
  sendSessionOnCreate: false,
  callStartedAt: 0,
  modalities: 'audio',
};

const log = new EventLog({
  list: el.eventLog,
  filter: el.eventFilter,
  showIn: $('#show-in'),
  showOut: $('#show-out'),
  showDeltas: $('#show-deltas'),
  followButton: $('#follow-btn'),
  newButton: $('#new-events'),
  count: $('#event-count'),
  visibleLabel: $('#event-visible'),
  empty: $('#event-empty'),
});
const conversation = new Conversation(el.chat, el.chatEmpty, { onToolOutput: sendToolOutput });
const timeline = new Timeline(el.timeline);
const live = new LiveState(renderLiveState);
const turns = new TurnTracker({ onChange: renderTurn });

// ── small UI helpers ────────────────────────────────────────────────────────────────────

function toast(message, kind = 'info', ms = 5000) {
  const node = h('div', { className: 'toast', dataset: { kind }, role: kind === 'error' ? 'alert' : 'status' }, message);
  el.toasts.append(node);
  while (el.toasts.children.length > 4) el.toasts.firstElementChild.remove();
  setTimeout(() => node.remove(), ms);
}

function setStatus(kind, text, title = '') {
  el.connStatus.dataset.state = kind;
  el.connText.textContent = text;
  el.connStatus.title = title || text;
}

function setPhase(phase) {
  state.phase = phase;
  const connected = phase === 'connected';
  const busy = phase !== 'idle';
  el.connectBtn.classList.toggle('primary', !busy);
  el.connectBtn.classList.toggle('danger', busy);
  el.connectBtn.replaceChildren(
    icon(busy ? 'i-hangup' : 'i-plug'),
    h('span', {}, phase === 'connecting' ? 'Cancel' : connected ? 'Hang up' : 'Connect'),
  );
  el.connectBtn.title = busy ? 'Hang up (C)' : 'Connect (C)';
  for (const input of [el.model, el.apiKey]) input.disabled = busy;
  for (const radio of el.connectForm.querySelectorAll('input[name="auth"]')) radio.disabled = busy;
  el.message.disabled = !connected;
  el.sendBtn.disabled = !connected;
  el.interruptBtn.disabled = !connected;
  el.muteBtn.disabled = !connected;
  el.pttBtn.disabled = !connected;
  live.connected = connected;
  live.changed();
  updateSettingsBadge();
  renderPtt();
}

// ── theme ───────────────────────────────────────────────────────────────────────────────

const THEMES = ['auto', 'light', 'dark'];
function applyTheme(theme) {
  if (theme === 'auto') delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  el.themeBtn.title = `Theme: ${theme} (T)`;
  store.set(localStorage, THEME_KEY, theme === 'auto' ? null : theme);
  timeline.colors = null;
  timeline.draw();
}
function cycleTheme() {
  const current = document.documentElement.dataset.theme ?? 'auto';
  applyTheme(THEMES[(THEMES.indexOf(current) + 1) % THEMES.length]);
}
el.themeBtn.addEventListener('click', cycleTheme);

// ── settings form ───────────────────────────────────────────────────────────────────────

for (const voice of VOICES) el.voice.append(new Option(voice, voice));

function currentValues() {
  return readForm(el.sessionForm);
}

function currentSession() {
  return buildSession(currentValues(), el.model.value.trim());
}

function pttMode() {
  if (state.phase === 'connected' && state.effective) return state.effective.audio?.input?.turn_detection === null;
  return el.turn.value === 'none';
}

function showConditionalFields() {
  const turn = el.turn.value;
  for (const node of el.sessionForm.querySelectorAll('[data-show-for]')) node.hidden = !node.dataset.showFor.split(' ').includes(turn);
  for (const node of el.sessionForm.querySelectorAll('[data-show-if]')) node.hidden = !el.sessionForm.elements[node.dataset.showIf].checked;
  el.thresholdOut.textContent = Number(el.threshold.value).toFixed(2);
  $('#turn-hint').textContent = TURN_HINTS[turn] ?? '';
}

const TURN_HINTS = {
  server_vad: 'silence ends the turn',
  semantic_vad: 'a model judges the end',
  none: 'you commit the turn',
};

function validateToolsField() {
  const result = validateTools(el.tools.value);
  el.toolsStatus.dataset.ok = String(result.ok);
  el.tools.setAttribute('aria-invalid', String(!result.ok));
  if (result.ok) {
    const names = result.tools.map((t) => t.name ?? t.server_label);
    el.toolsStatus.textContent = names.length ? `${names.length} tool${names.length > 1 ? 's' : ''}: ${names.join(', ')}` : 'No tools';
  } else {
    el.toolsStatus.textContent = result.error;
  }
  return result.ok;
}

function updatePreview() {
  if (!el.previewDetails.open) return;
  const { session, error } = currentSession();
  if (error) el.preview.textContent = `// not sent: ${error}`;
  else renderJson(el.preview, { type: 'session.update', session });
}

function updateSettingsBadge() {
  const badge = el.settingsState;
  const { session, error } = currentSession();
  const json = session ? JSON.stringify(session) : null;
  let kind = 'muted';
  let text = state.phase === 'connected' ? 'applied' : 'sent on connect';
  let title = state.phase === 'connected' ? 'The server runs with these settings' : 'These settings are sent when the call starts';
  if (error) { kind = 'err'; text = 'invalid'; title = error; }
  else if (state.phase === 'connected' && state.updateRejected) { kind = 'err'; text = 'rejected'; title = state.updateRejected; }
  else if (state.phase === 'connected' && json !== state.lastSent) { kind = 'dirty'; text = 'unsaved'; title = 'Changed since the last session.update: press Apply (Ctrl+Enter)'; }
  else if (state.phase === 'connected') { kind = 'ok'; text = 'applied'; }
  badge.dataset.kind = kind;
  badge.textContent = text;
  badge.title = title;
  el.applyBtn.disabled = Boolean(error);
}

function onSettingsChanged() {
  showConditionalFields();
  validateToolsField();
  updatePreview();
  updateSettingsBadge();
  store.set(localStorage, SETTINGS_KEY, JSON.stringify(currentValues()));
}

el.sessionForm.addEventListener('input', onSettingsChanged);
el.sessionForm.addEventListener('change', onSettingsChanged);
el.previewDetails.addEventListener('toggle', updatePreview);
el.sessionForm.addEventListener('submit', (e) => { e.preventDefault(); applySession(); });
el.resetBtn.addEventListener('click', () => {
  writeForm(el.sessionForm, DEFAULTS);
  onSettingsChanged();
  toast('Settings reset to the defaults. Apply to send them.');
});
el.toolsExample.addEventListener('click', () => {
  el.tools.value = JSON.stringify(EXAMPLE_TOOLS, null, 2);
  onSettingsChanged();
});
el.tools.addEventListener('keydown', (e) => {
  if (e.key !== 'Tab' || e.shiftKey) return; // Tab indents inside the JSON editor, Shift+Tab leaves
  e.preventDefault();
  el.tools.setRangeText('  ', el.tools.selectionStart, el.tools.selectionEnd, 'end');
  onSettingsChanged();
});

/** Send the settings as `session.update` (or keep them for the next call when disconnected). */
function applySession() {
  const values = currentValues();
  const { session, error } = buildSession(values, el.model.value.trim());
  if (error) {
    toast(`Not sent: ${error}`, 'error');
    el.tools.focus();
    return false;
  }
  store.set(localStorage, SETTINGS_KEY, JSON.stringify(values));
  if (!state.call?.isOpen) {
    toast('Saved. The settings are sent when the call starts.');
    updateSettingsBadge();
    return true;
  }
  const sent = send({ type: 'session.update', session });
  if (!sent) return false;
  state.lastUpdateId = sent.event_id;
  state.lastSent = JSON.stringify(session);
  state.updateRejected = null;
  updateSettingsBadge();
  return true;
}

/** The server's effective session: remember it, and show it in the form unless the user is editing. */
function syncEffectiveSession(session) {
  state.effective = session;
  const td = session?.audio?.input?.turn_detection;
  live.autoRespond = td ? td.create_response !== false : false;
  conversation.transcriptionOn = Boolean(session?.audio?.input?.transcription);
  state.modalities = session?.output_modalities?.[0] ?? 'audio';
  if (typeof session?.instructions === 'string') el.instructions.placeholder = session.instructions || 'No instructions';
  const { session: mine } = currentSession();
  const clean = mine && JSON.stringify(mine) === state.lastSent;
  if (clean) {
    writeForm(el.sessionForm, valuesFromSession(session));
    showConditionalFields();
    validateToolsField();
    const { session: synced } = currentSession();
    if (synced) state.lastSent = JSON.stringify(synced);
  }
  const bits = [session?.id];
  if (session?.expires_at) bits.push(`expires ${new Date(session.expires_at * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}`);
  el.sessionMeta.textContent = bits.filter(Boolean).join(' · ');
  el.sessionMeta.title = el.sessionMeta.textContent;
  updatePreview();
  updateSettingsBadge();
  renderPtt();
}

// ── key, model, auth ────────────────────────────────────────────────────────────────────

function authMode() {
  return el.connectForm.querySelector('input[name="auth"]:checked')?.value ?? 'key';
}

function rememberKey() {
  store.set(sessionStorage, API_KEY_KEY, el.remember.checked && el.apiKey.value ? el.apiKey.value : null);
}
el.remember.addEventListener('change', rememberKey);
el.apiKey.addEventListener('input', rememberKey);
el.apiKey.addEventListener('change', () => fetchModels());
el.model.addEventListener('change', () => { store.set(localStorage, MODEL_KEY, el.model.value.trim()); onSettingsChanged(); });
for (const radio of el.connectForm.querySelectorAll('input[name="auth"]')) radio.addEventListener('change', () => store.set(localStorage, AUTH_KEY, authMode()));

/**
 * Fill the model suggestions from `GET /v1/models`. Runs once a key is entered and after a call
 * connects (the key is known to work then, or auth is off), so a server with auth on is not
 * probed without a key; an ephemeral key cannot list models.
 */
async function fetchModels({ withoutKey = false } = {}) {
  const key = el.apiKey.value.trim();
  if (key.startsWith('ek_') || (!key && !withoutKey)) return;
  try {
    const response = await fetch(apiUrl(baseUrl(), '/v1/models'), { headers: key ? { Authorization: `Bearer ${key}` } : {} });
    if (!response.ok) return;
    const body = await response.json();
    const ids = (body?.data ?? []).map((m) => m.id).filter((id) => typeof id === 'string');
    el.modelList.replaceChildren(...ids.map((id) => new Option(id, id)));
  } catch { /* the list is only a convenience */ }
}

function baseUrl() {
  const configured = el.sessionForm.elements.base_url.value.trim();
  return configured || window.location.origin;
}

// ── the call ────────────────────────────────────────────────────────────────────────────

el.connectForm.addEventListener('submit', (e) => {
  e.preventDefault();
  toggleConnect();
});

function toggleConnect() {
  if (state.phase === 'idle') connect();
  else hangUp('You hung up.');
}

async function openMicrophone() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw Object.assign(new Error(window.isSecureContext
      ? 'this browser has no microphone API'
      : 'the page is not a secure context: open it over https:// (openrealtime serve --ssl-certfile …) or from localhost'), { soft: true });
  }
  const values = currentValues();
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: {
      echoCancellation: values.echo_cancellation,
      noiseSuppression: values.noise_suppression,
      autoGainControl: values.auto_gain_control,
      channelCount: 1,
    },
  });
  return { stream, track: stream.getAudioTracks()[0], real: true };
}

async function connect() {
  const { session, error } = currentSession();
  if (error) {
    toast(`Fix the session settings first: ${error}`, 'error');
    return;
  }
  if (!el.model.value.trim()) {
    toast('Choose a model.', 'error');
    el.model.focus();
    return;
  }
  const key = el.apiKey.value.trim();
  const base = baseUrl();
  setPhase('connecting');
  setStatus('connecting', 'Opening the microphone…');
  conversation.clear();
  turns.reset();
  renderAllTurns();
  timeline.clear();
  timeline.thaw();
  state.effective = null;
  state.lastUpdateId = null;
  state.updateRejected = null;
  state.pendingResponseCreate = false;
  state.callStartedAt = now();
  log.setOrigin(state.callStartedAt);
  log.note(`new call to ${base}`);
  const attempt = {};
  state.attempt = attempt;

  try {
    state.audioContext ??= new AudioContext();
    await state.audioContext.resume().catch(() => {});
    let mic;
    try {
      mic = await openMicrophone();
    } catch (micError) {
      mic = { ...silentTrack(state.audioContext), real: false };
      const reason = micError?.message ?? String(micError);
      toast(`No microphone (${reason}). Connected with a silent track: text messages still work.`, 'warn', 9000);
      log.note(`microphone unavailable: ${reason}`);
    }
    if (state.attempt !== attempt) { // cancelled while the permission prompt was open
      for (const track of mic.stream.getTracks()) track.stop();
      return;
    }
    state.mic = mic;
    applyMicEnabled();
    state.micMeter = new LevelMeter(state.audioContext, state.mic.stream, {
      onLevel: (rms, db, t) => { showLevel(el.micMeter, state.mic?.track.enabled ? db : -Infinity); timeline.level('user', state.mic?.track.enabled ? rms : 0, t); },
    });

    let token = key;
    let callSession = session;
    state.sendSessionOnCreate = false;
    if (key.startsWith('ek_')) {
      // an ephemeral key pasted as is: its session config was fixed when it was minted
      callSession = null;
      state.sendSessionOnCreate = true;
    } else if (authMode() === 'ephemeral') {
      setStatus('connecting', 'Minting an ephemeral key…');
      const ttl = Math.min(7200, Math.max(10, Math.round(currentValues().secret_ttl)));
      const secret = await mintClientSecret(base, key, session, ttl);
      if (state.attempt !== attempt) return;
      token = secret.value;
      callSession = null;
      log.note(`client secret ${secret.value.slice(0, 7)}… minted, expires ${secret.expires_at ? new Date(secret.expires_at * 1000).toLocaleTimeString() : '?'}`, { session: secret.session });
    }

    setStatus('connecting', 'Calling /v1/realtime/calls…');
    const call = new RealtimeCall({
      onEvent: onServerEvent,
      onSent: (event) => log.add(event, 'out'),
      onRemoteStream: attachRemoteStream,
      onPeerState: (pcState) => log.note(`peer connection ${pcState}`),
      onClose: (reason) => { if (state.call === call) hangUp(`Call ended: ${reason}.`, 'warn'); },
      onBadMessage: (text, err) => log.note(`unparseable data-channel message (${err.message})`, { data: text.slice(0, 2000) }),
    });
    state.call = call;
    await call.start({ baseUrl: base, token, hangupToken: key || token, session: callSession, track: state.mic.track, stream: state.mic.stream });
    if (state.attempt !== attempt) return;
    state.lastSent = callSession ? JSON.stringify(callSession) : state.sendSessionOnCreate ? null : JSON.stringify(session);
    setPhase('connected');
    setStatus('connected', call.callId ? `Connected · ${call.callId.slice(0, 12)}…` : 'Connected', `WebRTC call ${call.callId ?? ''} to ${base}`);
    timeline.run(true);
    fetchModels({ withoutKey: true });
    if (!pttMode()) el.message.focus();
  } catch (err) {
    if (state.attempt !== attempt) return;
    const message = err?.message ?? String(err);
    teardown();
    setStatus('error', 'Connection failed', message);
    log.note(`connection failed: ${message}`);
    conversation.error({ code: 'connection_failed', message });
    toast(message, 'error', 9000);
  }
}

function attachRemoteStream(stream) {
  el.audio.srcObject = stream;
  el.audio.muted = el.speakerBtn.getAttribute('aria-pressed') === 'true';
  el.audio.play().catch((err) => toast(`The browser blocked audio playback (${err.message}). Click anywhere to allow it.`, 'warn'));
  state.outMeter?.stop();
  state.outMeter = new LevelMeter(state.audioContext, stream, {
    onLevel: (rms, db, t) => { showLevel(el.outMeter, db); timeline.level('audio', rms, t); },
    onRise: (t) => turns.onAudible(t),
  });
}

/** End the call (hang up if it was up) and reset the page to disconnected. */
function hangUp(message, kind = 'info') {
  const wasConnected = state.phase === 'connected';
  state.attempt = null;
  teardown();
  setStatus(kind === 'warn' ? 'error' : 'idle', kind === 'warn' ? 'Call ended' : 'Disconnected', message);
  if (wasConnected) log.note(message);
  if (kind === 'warn') toast(message, 'warn');
}

function teardown() {
  const call = state.call;
  state.call = null;
  call?.close();
  state.micMeter?.stop();
  state.outMeter?.stop();
  state.micMeter = null;
  state.outMeter = null;
  for (const track of state.mic?.stream.getTracks() ?? []) track.stop();
  state.mic = null;
  state.holding = false;
  el.audio.srcObject = null;
  showLevel(el.micMeter, -Infinity);
  showLevel(el.outMeter, -Infinity);
  timeline.endAll();
  timeline.freeze();
  conversation.endAll();
  live.reset(false);
  setPhase('idle');
}

window.addEventListener('pagehide', () => state.call?.close());

/** Send a client event; logs it. Returns the event sent, or null when not connected. */
function send(event) {
  if (!state.call?.isOpen) {
    toast('Not connected.', 'warn');
    return null;
  }
  try {
    return state.call.send(event);
  } catch (err) {
    toast(`Could not send ${event.type}: ${err.message}`, 'error');
    return null;
  }
}

/** `response.create` now, or as soon as the active response is done (one at a time). */
function requestResponse() {
  if (live.responding) state.pendingResponseCreate = true;
  else send({ type: 'response.create' });
}

// ── server events ───────────────────────────────────────────────────────────────────────

function onServerEvent(event) {
  const t = now();
  log.add(event, 'in');
  live.onEvent(event);
  turns.onEvent(event, t);
  switch (event.type) {
    case 'session.created':
      syncEffectiveSession(event.session);
      if (state.sendSessionOnCreate) { state.sendSessionOnCreate = false; applySession(); }
      break;
    case 'session.updated':
      if (state.lastUpdateId) state.updateRejected = null;
      syncEffectiveSession(event.session);
      break;
    case 'error': {
      const err = event.error ?? {};
      if (err.event_id && err.event_id === state.lastUpdateId) {
        state.updateRejected = err.message ?? 'rejected';
        state.lastSent = null;
        updateSettingsBadge();
        toast(`session.update rejected: ${err.message}`, 'error', 8000);
      }
      conversation.error(err);
      break;
    }
    case 'input_audio_buffer.speech_started':
      conversation.speechStarted(event.item_id);
      timeline.begin('user', event.item_id, t);
      break;
    case 'input_audio_buffer.speech_stopped':
      conversation.speechStopped(event.item_id);
      timeline.end('user', event.item_id, t);
      break;
    case 'conversation.item.added':
    case 'conversation.item.done':
    case 'conversation.item.retrieved':
      onItem(event.item, event.type);
      break;
    case 'conversation.item.input_audio_transcription.delta':
      if (event.delta) conversation.transcriptionDelta(event.item_id, event.delta);
      break;
    case 'conversation.item.input_audio_transcription.completed':
      conversation.transcriptionCompleted(event.item_id, event.transcript);
      break;
    case 'conversation.item.input_audio_transcription.failed':
      conversation.transcriptionFailed(event.item_id, event.error);
      break;
    case 'conversation.item.truncated':
      conversation.truncated(event.item_id, event.audio_end_ms);
      timeline.mark('audio', 'truncated', t);
      break;
    case 'response.created':
      timeline.begin('response', event.response?.id, t);
      break;
    case 'response.output_item.added':
      if (event.item?.type === 'message' && event.item.role === 'assistant') conversation.assistantItem(event.item, state.modalities);
      break;
    case 'response.output_audio_transcript.delta':
    case 'response.output_text.delta':
      conversation.assistantDelta(event.item_id, event.delta ?? '');
      break;
    case 'response.output_audio_transcript.done':
      conversation.assistantDone(event.item_id, event.transcript);
      break;
    case 'response.output_text.done':
      conversation.assistantDone(event.item_id, event.text);
      break;
    case 'response.output_item.done':
      onItem(event.item, event.type);
      break;
    case 'response.done':
      conversation.responseDone(event.response ?? {});
      timeline.end('response', event.response?.id, t);
      if (state.pendingResponseCreate && !live.responding) {
        state.pendingResponseCreate = false;
        send({ type: 'response.create' });
      }
      break;
    case 'output_audio_buffer.started':
      timeline.begin('audio', event.response_id, t);
      break;
    case 'output_audio_buffer.stopped':
      timeline.end('audio', event.response_id, t);
      break;
    case 'output_audio_buffer.cleared':
      timeline.end('audio', event.response_id, t);
      timeline.mark('audio', 'cleared', t);
      flash(el.indAudio, 'cleared');
      break;
    default:
      break;
  }
}

function onItem(item, eventType) {
  if (!item) return;
  if (item.type === 'function_call') {
    if (eventType !== 'conversation.item.added' || !conversation.rows.has(item.id)) conversation.functionCall(item);
    return;
  }
  if (item.type === 'function_call_output') return;
  if (item.type !== 'message') return;
  if (item.role === 'user') conversation.userItem(item);
  else if (item.role === 'assistant') {
    if (eventType === 'conversation.item.added') conversation.assistantItem(item, state.modalities);
    else conversation.itemDone(item);
  }
}

function flash(node, kind) {
  node.dataset.flash = kind;
  clearTimeout(node.flashTimer);
  node.flashTimer = setTimeout(() => delete node.dataset.flash, 1200);
}

// ── live state, mic, push-to-talk ───────────────────────────────────────────────────────

const STATE_LABELS = {
  offline: 'Offline',
  listening: 'Listening',
  user: 'User speaking',
  thinking: 'Waiting for response',
  generating: 'Generating',
  speaking: 'Assistant speaking',
};

function renderLiveState(s) {
  el.indVad.dataset.on = String(s.speech || s.holding);
  el.indResponse.dataset.on = String(s.responding);
  el.indAudio.dataset.on = String(Boolean(s.audio));
  const label = s.state === 'listening' && pttMode() ? 'Ready · hold Space' : STATE_LABELS[s.state];
  el.turnState.dataset.state = s.state;
  el.turnState.textContent = label;
}

function applyMicEnabled() {
  if (!state.mic) return;
  state.mic.track.enabled = !state.muted && (!pttMode() || state.holding);
}

function setMuted(muted) {
  state.muted = muted;
  el.muteBtn.setAttribute('aria-pressed', String(muted));
  el.muteBtn.title = muted ? 'Unmute microphone (M)' : 'Mute microphone (M)';
  applyMicEnabled();
}
el.muteBtn.addEventListener('click', () => setMuted(!state.muted));

el.speakerBtn.addEventListener('click', () => {
  const off = el.speakerBtn.getAttribute('aria-pressed') !== 'true';
  el.speakerBtn.setAttribute('aria-pressed', String(off));
  el.speakerBtn.title = off ? 'Unmute assistant audio' : 'Mute assistant audio';
  el.audio.muted = off;
});

function renderPtt() {
  const on = pttMode();
  el.pttBtn.hidden = !on;
  el.pttBtn.disabled = state.phase !== 'connected';
  applyMicEnabled();
  live.changed();
}

function pttDown() {
  if (state.phase !== 'connected' || !pttMode() || state.holding) return;
  if (state.muted) { toast('The microphone is muted (M).', 'warn'); return; }
  state.holding = true;
  state.pressedAt = now();
  el.pttBtn.setAttribute('aria-pressed', 'true');
  if (live.responding) send({ type: 'response.cancel' });
  if (live.audio) send({ type: 'output_audio_buffer.clear' });
  send({ type: 'input_audio_buffer.clear' });
  live.holding = true;
  live.changed();
  applyMicEnabled();
  timeline.begin('user', 'ptt', state.pressedAt);
}

function pttUp() {
  if (!state.holding) return;
  const released = now();
  state.holding = false;
  live.holding = false;
  el.pttBtn.setAttribute('aria-pressed', 'false');
  timeline.end('user', 'ptt', released);
  setTimeout(applyMicEnabled, PTT_TAIL_MS);
  if (released - state.pressedAt < PTT_MIN_MS) {
    live.changed();
    toast('Hold Space (or the button) while you talk.', 'info', 2500);
    return;
  }
  turns.endOfUserTurn('ptt', null, released);
  live.waiting = true;
  live.changed();
  setTimeout(() => {
    if (state.phase !== 'connected') return;
    send({ type: 'input_audio_buffer.commit' });
    requestResponse();
  }, PTT_TAIL_MS);
}

el.pttBtn.addEventListener('pointerdown', (e) => { e.preventDefault(); el.pttBtn.setPointerCapture(e.pointerId); pttDown(); });
el.pttBtn.addEventListener('pointerup', pttUp);
el.pttBtn.addEventListener('pointercancel', pttUp);
window.addEventListener('blur', pttUp);

/** Switch push-to-talk on/off and apply it at once (the P shortcut). */
function togglePtt() {
  const on = !pttMode();
  if (on && el.turn.value !== 'none') state.lastVadType = el.turn.value;
  el.turn.value = on ? 'none' : state.lastVadType ?? 'server_vad';
  onSettingsChanged();
  if (state.phase === 'connected') applySession();
  else renderPtt();
  toast(on ? 'Push-to-talk on: hold Space to talk.' : `Push-to-talk off: ${el.turn.value}.`, 'info', 2500);
}
el.turn.addEventListener('change', () => { if (el.turn.value !== 'none') state.lastVadType = el.turn.value; if (state.phase !== 'connected') renderPtt(); });

/** Interrupt the assistant: cancel the response and drop the audio not yet played. */
function interrupt() {
  if (state.phase !== 'connected') return;
  let did = false;
  if (live.responding) { send({ type: 'response.cancel' }); did = true; }
  if (live.audio) { send({ type: 'output_audio_buffer.clear' }); did = true; }
  state.pendingResponseCreate = false;
  if (!did) toast('Nothing to interrupt.', 'info', 1800);
}
el.interruptBtn.addEventListener('click', interrupt);

// ── composer and tools ──────────────────────────────────────────────────────────────────

function autosize() {
  el.message.style.setProperty('height', 'auto');
  el.message.style.setProperty('height', `${Math.min(140, el.message.scrollHeight + 2)}px`);
}
el.message.addEventListener('input', autosize);
el.message.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    el.composer.requestSubmit();
  }
});
el.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = el.message.value.trim();
  if (!text || state.phase !== 'connected') return;
  if (live.audio) send({ type: 'output_audio_buffer.clear' });
  if (live.responding) send({ type: 'response.cancel' });
  const sent = send({ type: 'conversation.item.create', item: { type: 'message', role: 'user', content: [{ type: 'input_text', text }] } });
  if (!sent) return;
  turns.endOfUserTurn('text');
  requestResponse();
  el.message.value = '';
  autosize();
});

function sendToolOutput(callId, output) {
  if (state.phase !== 'connected') { toast('Not connected.', 'warn'); return false; }
  const sent = send({ type: 'conversation.item.create', item: { type: 'function_call_output', call_id: callId, output } });
  if (!sent) return false;
  turns.responseRequested('tool');
  requestResponse();
  return true;
}

// ── latency view ────────────────────────────────────────────────────────────────────────

const turnRows = new Map();

function grade(ms) {
  if (ms === null) return 'na';
  if (ms < 800) return 'good';
  if (ms < 1600) return 'slow';
  return 'bad';
}

function renderTurn(turn) {
  let row = turnRows.get(turn.n);
  if (!row) {
    row = { main: h('tr'), server: h('tr', { className: 'server', hidden: true }) };
    turnRows.set(turn.n, row);
    el.turnsBody.prepend(row.server);
    el.turnsBody.prepend(row.main);
  }
  const cell = (ms, graded = false) => h('td', { className: ms === null ? 'na' : graded ? grade(ms) : '' }, fmtMs(ms));
  const cut = turn.status && turn.status !== 'completed';
  const statusTag = cut ? h('span', { className: `tag ${turn.status === 'failed' ? 'failed' : 'cancelled'}`, title: `response.done: ${turn.status}${turn.reason ? ` (${turn.reason})` : ''}` }, turn.reason === 'turn_detected' ? 'barge-in' : turn.status) : null;
  row.main.replaceChildren(
    h('td', {}, String(turn.n)),
    h('td', { title: turn.userItemId ?? '' }, turn.trigger, statusTag),
    cell(turn.stt),
    cell(turn.firstText, state.modalities === 'text'),
    cell(turn.firstAudio),
    cell(turn.heard, true),
    cell(turn.response),
  );
  if (turn.server) {
    row.server.hidden = false;
    row.server.replaceChildren(h('td'), h('td', { colSpan: 6 }, `server: ${Object.entries(turn.server).map(([k, v]) => `${k} +${fmtMs(v)}`).join(' · ')}`));
  }
  el.turnCount.textContent = String(turns.turns.length);
  if (turn.assistantItemId) {
    const parts = state.modalities === 'text'
      ? [['first text', turn.firstText, 'end of your turn → first text delta'], ['response', turn.response, 'response.created → response.done']]
      : [['heard', turn.heard, 'end of your turn → first audible sample received'], ['1st audio', turn.firstAudio, 'end of your turn → output_audio_buffer.started'], ['response', turn.response, 'response.created → response.done']];
    conversation.setLatency(turn.assistantItemId, parts);
  }
  renderSummary();
}

function renderAllTurns() {
  turnRows.clear();
  el.turnsBody.replaceChildren();
  el.turnCount.textContent = '0';
  renderSummary();
}

function renderSummary() {
  const heard = percentiles(turns.turns.map((t) => t.heard));
  const text = percentiles(turns.turns.map((t) => t.firstText));
  const resp = percentiles(turns.turns.map((t) => t.response));
  const stat = (label, p, sub) => h('div', { className: 'stat' },
    h('div', { className: 'stat-label' }, label),
    h('div', { className: 'stat-value' }, fmtMs(p.p50)),
    h('div', { className: 'stat-sub' }, p.n ? `p90 ${fmtMs(p.p90)} · n=${p.n}` : sub));
  el.latencySummary.replaceChildren(
    stat('Heard · p50', heard, 'end of turn → sound'),
    stat('First text · p50', text, 'end of turn → delta'),
    stat('Response · p50', resp, 'created → done'),
  );
}
renderSummary();

// ── tabs ────────────────────────────────────────────────────────────────────────────────

function selectTab(which) {
  const events = which === 'events';
  el.tabEvents.setAttribute('aria-selected', String(events));
  el.tabTurns.setAttribute('aria-selected', String(!events));
  el.eventsPane.hidden = !events;
  el.turnsPane.hidden = events;
}
el.tabEvents.addEventListener('click', () => selectTab('events'));
el.tabTurns.addEventListener('click', () => selectTab('turns'));

el.copyBtn.addEventListener('click', async () => {
  const text = log.visibleJsonl();
  try {
    await navigator.clipboard.writeText(text);
    toast(`Copied ${text ? text.split('\n').length : 0} events as JSON lines.`, 'info', 2000);
  } catch {
    toast('The clipboard is not available here.', 'warn');
  }
});
el.clearBtn.addEventListener('click', () => log.clear());
el.expandBtn.addEventListener('click', () => log.collapseAll());

// ── keyboard ────────────────────────────────────────────────────────────────────────────

el.helpBtn.addEventListener('click', () => el.helpDialog.showModal());

document.addEventListener('keydown', (e) => {
  if (e.key === ' ' && pttMode() && state.phase === 'connected' && !isTyping(e.target) && !e.ctrlKey && !e.metaKey && !e.altKey) {
    e.preventDefault();
    if (!e.repeat) pttDown();
    return;
  }
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
    if (e.target === el.message) return; // the composer sends on Enter already
    e.preventDefault();
    applySession();
    return;
  }
  if (e.key === 'Escape') {
    if (el.helpDialog.open) return;
    if (isTyping(e.target)) { e.target.blur(); return; }
    interrupt();
    return;
  }
  if (isTyping(e.target) || e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  const actions = {
    c: toggleConnect,
    m: () => state.phase === 'connected' && setMuted(!state.muted),
    p: togglePtt,
    '/': () => { selectTab('events'); el.eventFilter.focus(); el.eventFilter.select(); },
    '?': () => el.helpDialog.showModal(),
    e: () => selectTab('events'),
    l: () => selectTab('turns'),
    t: cycleTheme,
  };
  const action = actions[e.key.toLowerCase()] ?? actions[e.key];
  if (action) {
    e.preventDefault();
    action();
  }
});
document.addEventListener('keyup', (e) => {
  if (e.key === ' ' && state.holding) { e.preventDefault(); pttUp(); }
});

// ── start-up ────────────────────────────────────────────────────────────────────────────

function restore() {
  applyTheme(store.get(localStorage, THEME_KEY) ?? 'auto');
  let saved = {};
  try { saved = JSON.parse(store.get(localStorage, SETTINGS_KEY) ?? '{}') ?? {}; } catch { saved = {}; }
  writeForm(el.sessionForm, { ...DEFAULTS, ...saved });
  const model = store.get(localStorage, MODEL_KEY);
  if (model) el.model.value = model;
  const auth = store.get(localStorage, AUTH_KEY);
  const radio = auth && el.connectForm.querySelector(`input[name="auth"][value="${auth === 'ephemeral' ? 'ephemeral' : 'key'}"]`);
  if (radio) radio.checked = true;
  const key = store.get(sessionStorage, API_KEY_KEY);
  if (key) { el.apiKey.value = key; el.remember.checked = true; }
  if (el.turn.value !== 'none') state.lastVadType = el.turn.value;
  onSettingsChanged();
  setPhase('idle');
  timeline.draw();
  fetchModels();
}
restore();

// For debugging from the console and for the browser tests: read-only views and a way to
// replay a server event into the page as if it had arrived on the data channel.
window.__playground = Object.freeze({
  get phase() { return state.phase; },
  get callId() { return state.call?.callId ?? null; },
  get effectiveSession() { return state.effective; },
  get turns() { return turns.turns.map((t) => ({ ...t })); },
  audioStats: () => ({ outputPeakRms: state.outMeter?.peakRms ?? 0, micPeakRms: state.micMeter?.peakRms ?? 0 }),
  ingest: (event) => onServerEvent(event),
});
