// Drives openrealtime with the npm `openai` package's OpenAIRealtimeWS (Node `ws`), the
// low-level realtime client: session.update, conversation.item.create, response.create, then
// every server event until response.done.
//
//   NODE_EXTRA_CA_CERTS=cert.pem node openai_realtime_ws.mjs --url https://127.0.0.1:PORT/v1 --key KEY
//
// `--url` is the client's baseURL: openai-node always connects with wss:// (it forces the
// scheme, spec §1.1), so the server must serve TLS. Prints one JSON summary line on stdout;
// exits 1 on any `error` event, an SDK error, or a timeout.

import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';
import { describe, finish, options, startSummary, Waiter } from './harness.mjs';

const INSTRUCTIONS = 'You are a terse assistant.';

const args = options();
const summary = startSummary('openai/realtime/ws');
Object.assign(summary, { url: null, raw: [], textDeltas: [], closed: null });
const waiter = new Waiter(summary);

const client = new OpenAI({ apiKey: args.key, baseURL: args.url });
const rt = new OpenAIRealtimeWS({ model: 'gpt-realtime' }, client);
summary.url = rt.url.toString();

rt.on('event', (event) => {
  summary.events.push(event.type);
  summary.raw.push(event);
  waiter.poke();
});
rt.on('error', (error) => {
  // API `error` events and transport failures both arrive here (OpenAIRealtimeError).
  summary.errors.push({ source: 'rt.error', message: describe(error), error: error.error ?? null });
  waiter.poke();
});
rt.on('response.output_text.delta', (event) => summary.textDeltas.push(event.delta));
rt.socket.on('close', (code, reason) => {
  summary.closed = { code, reason: reason.toString() };
  waiter.poke();
});

function seen(type) {
  return summary.raw.filter((e) => e.type === type);
}

function failed() {
  return summary.errors.length > 0 || summary.closed !== null;
}

async function run() {
  const ms = args.timeoutMs;
  await waiter.until('session.created', () => failed() || seen('session.created').length > 0, ms);
  if (failed()) return;
  rt.send({
    type: 'session.update',
    session: { type: 'realtime', instructions: INSTRUCTIONS, output_modalities: ['text'] },
  });
  await waiter.until('session.updated', () => failed() || seen('session.updated').length > 0, ms);
  if (failed()) return;
  rt.send({
    type: 'conversation.item.create',
    item: { type: 'message', role: 'user', content: [{ type: 'input_text', text: args.text }] },
  });
  rt.send({ type: 'response.create' });
  await waiter.until('response.done', () => failed() || seen('response.done').length > 0, ms);
  if (failed()) return;
  // Let trailing frames (rate_limits.updated) arrive.
  await new Promise((resolve) => setTimeout(resolve, 200));
}

const overall = setTimeout(
  () => finish(summary, new Error(`overall timeout ${args.timeoutMs * 3} ms`)),
  args.timeoutMs * 3,
);
try {
  await run();
  clearTimeout(overall);
  if (summary.closed !== null) {
    summary.errors.push({ source: 'close', message: `server closed: ${describe(summary.closed)}` });
  }
  rt.close();
  finish(summary);
} catch (error) {
  clearTimeout(overall);
  try {
    rt.close();
  } catch {
    // already closed
  }
  finish(summary, error);
}
