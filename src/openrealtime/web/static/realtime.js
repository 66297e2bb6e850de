// The WebRTC call, done the way a browser app does it against OpenAI (realtime-protocol.md §1.2, §1.3):
//   (ephemeral) POST /v1/realtime/client_secrets with the API key  ->  an `ek_` value
//   RTCPeerConnection + microphone track + data channel "oai-events"
//   POST /v1/realtime/calls, SDP offer in, 201 + SDP answer + Location: /v1/realtime/calls/rtc_… out
//   POST /v1/realtime/calls/{id}/hangup when leaving.
// The data channel then carries the same JSON events as the WebSocket, one per message; audio
// goes over RTP both ways (no input_audio_buffer.append, no response.output_audio.delta).

/** An HTTP failure with the server's OpenAI-shaped message (`{"error": {"message", ...}}`) when it has one. */
export class HttpError extends Error {
  constructor(what, status, detail) {
    super(`${what}: HTTP ${status}${detail ? ` — ${detail}` : ''}`);
    this.status = status;
  }
}

async function httpError(response, what) {
  const text = await response.text().catch(() => '');
  let detail = text.trim().slice(0, 300);
  try {
    const body = JSON.parse(text);
    detail = body?.error?.message ?? body?.detail ?? detail;
    if (typeof detail !== 'string') detail = JSON.stringify(detail);
  } catch { /* not JSON: keep the text */ }
  return new HttpError(what, response.status, detail);
}

function bearer(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** Join the server base (`https://host[:port][/prefix]`) and an API path. */
export function apiUrl(baseUrl, path) {
  return `${baseUrl.replace(/\/+$/, '')}${path}`;
}

/**
 * Mint an ephemeral client secret (spec §1.2) the way an app's backend would.
 * Returns the response body: `{value: "ek_…", expires_at, session}`.
 */
export async function mintClientSecret(baseUrl, apiKey, session, ttlSeconds) {
  const response = await fetch(apiUrl(baseUrl, '/v1/realtime/client_secrets'), {
    method: 'POST',
    headers: { ...bearer(apiKey), 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ expires_after: { anchor: 'created_at', seconds: ttlSeconds }, session }),
  });
  if (!response.ok) throw await httpError(response, 'POST /v1/realtime/client_secrets');
  const body = await response.json();
  if (typeof body?.value !== 'string') throw new Error('POST /v1/realtime/client_secrets: the response has no "value"');
  return body;
}

/**
 * The body of `POST /v1/realtime/calls`. With a session config it is the multipart "unified
 * interface" (parts `sdp` and `session`, each with its own Content-Type, exactly what
 * openai-python's `realtime.calls.create(sdp, session=…)` sends); without one it is the raw
 * `application/sdp` offer (the ephemeral-key flow: the config came with the secret).
 */
export function callRequestBody(sdp, session) {
  if (!session) return { contentType: 'application/sdp', body: sdp };
  const boundary = `----openrealtime-${crypto.getRandomValues(new Uint32Array(2)).join('')}`;
  const part = (name, type, content) =>
    `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\nContent-Type: ${type}\r\n\r\n${content}\r\n`;
  const body = part('sdp', 'application/sdp', sdp) + part('session', 'application/json', JSON.stringify(session)) + `--${boundary}--\r\n`;
  return { contentType: `multipart/form-data; boundary=${boundary}`, body };
}

/**
 * One WebRTC call. Callbacks (all optional):
 *   onEvent(event)          a server event from the data channel (parsed JSON)
 *   onSent(event)           a client event that was just sent
 *   onOpen()                the data channel opened
 *   onClose(reason)         the call ended (data channel or peer connection closed / failed)
 *   onRemoteStream(stream)  the assistant's audio arrived as a MediaStream
 *   onPeerState(state)      RTCPeerConnection.connectionState changed
 *   onBadMessage(text, error) a data-channel message that is not a JSON object with a `type`
 */
export class RealtimeCall {
  constructor(callbacks = {}) {
    this.cb = callbacks;
    this.pc = null;
    this.dc = null;
    this.callId = null;
    this.baseUrl = '';
    this.hangupToken = null;
    this.closed = false;
    this.sentCount = 0;
  }

  /**
   * Open the call. `track`/`stream` are the microphone; `token` is the Bearer value for
   * `/calls` (an API key or an `ek_` secret); `session` (optional) goes in the multipart body.
   */
  async start({ baseUrl, token, hangupToken, session, track, stream, openTimeoutMs = 15000 }) {
    this.baseUrl = baseUrl;
    this.hangupToken = hangupToken ?? token;
    const pc = new RTCPeerConnection();
    this.pc = pc;
    pc.addEventListener('track', (e) => this.cb.onRemoteStream?.(e.streams[0] ?? new MediaStream([e.track])));
    pc.addEventListener('connectionstatechange', () => {
      this.cb.onPeerState?.(pc.connectionState);
      if (pc.connectionState === 'failed') this._ended('the peer connection failed (ICE/DTLS)');
    });
    pc.addTrack(track, stream);

    const dc = pc.createDataChannel('oai-events');
    this.dc = dc;
    const opened = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the data channel did not open within ${openTimeoutMs / 1000} s (ICE or DTLS did not complete)`)), openTimeoutMs);
      dc.addEventListener('open', () => { clearTimeout(timer); resolve(); }, { once: true });
      dc.addEventListener('close', () => { clearTimeout(timer); reject(new Error('the data channel closed before it opened')); }, { once: true });
    });
    opened.catch(() => {}); // awaited below; avoid an unhandled rejection if start() throws first
    dc.addEventListener('open', () => this.cb.onOpen?.());
    dc.addEventListener('close', () => this._ended('the data channel closed'));
    dc.addEventListener('message', (e) => this._onMessage(e.data));

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const { contentType, body } = callRequestBody(offer.sdp, session);
    const response = await fetch(apiUrl(baseUrl, '/v1/realtime/calls'), {
      method: 'POST',
      headers: { ...bearer(token), 'Content-Type': contentType, Accept: 'application/sdp' },
      body,
    });
    if (!response.ok) throw await httpError(response, 'POST /v1/realtime/calls');
    const location = response.headers.get('Location') ?? '';
    this.callId = location.split('/').filter(Boolean).pop() ?? null;
    const answer = await response.text();
    if (this.closed) throw new Error('cancelled');
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    await opened;
  }

  /** Send one client event over the data channel; returns the event (with its `event_id`). */
  send(event) {
    if (!this.dc || this.dc.readyState !== 'open') throw new Error('not connected');
    const withId = event.event_id ? event : { event_id: `evt_pg${String(++this.sentCount).padStart(6, '0')}`, ...event };
    this.dc.send(JSON.stringify(withId));
    this.cb.onSent?.(withId);
    return withId;
  }

  get isOpen() {
    return Boolean(this.dc && this.dc.readyState === 'open');
  }

  /** Hang up (best effort, `POST …/calls/{id}/hangup`) and close everything. Safe to call twice. */
  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.callId) {
      const url = apiUrl(this.baseUrl, `/v1/realtime/calls/${encodeURIComponent(this.callId)}/hangup`);
      // keepalive lets the request outlive the page when this runs from `pagehide`
      fetch(url, { method: 'POST', headers: bearer(this.hangupToken), keepalive: true }).catch(() => {});
    }
    try { this.dc?.close(); } catch { /* already closed */ }
    try { this.pc?.close(); } catch { /* already closed */ }
  }

  _ended(reason) {
    if (this._endedOnce) return;
    this._endedOnce = true;
    this.cb.onClose?.(reason);
  }

  _onMessage(data) {
    // A message the data channel queued before close() must not reach a page that hung up
    // (it would start a row streaming again after the page marked everything ended).
    if (this.closed) return;
    let event;
    try {
      event = JSON.parse(data);
    } catch (error) {
      this.cb.onBadMessage?.(String(data), error);
      return;
    }
    if (!event || typeof event !== 'object' || typeof event.type !== 'string') {
      this.cb.onBadMessage?.(String(data), new Error('not an event object'));
      return;
    }
    this.cb.onEvent?.(event);
  }
}
