// Drives openrealtime with @openai/agents-realtime's RealtimeSession over its WebSocket
// transport, as a Node app would: an agent with instructions and one tool, a plain text turn,
// then a turn whose response must call the tool (the SDK runs it and asks for the answer).
//
//   node agents_realtime.mjs --url ws://127.0.0.1:PORT/v1/realtime?model=gpt-realtime --key KEY
//
// Prints one JSON summary line on stdout; exits 1 on any SDK error or a timeout.
//
// Besides the SDK's own error reporting, it applies spec §8.4: the transport emits every frame
// on '*' and only the frames its zod schema (`realtimeServerEventSchema`) accepts under their
// own type; a frame of a type that schema knows which is not emitted typed was rejected by the
// SDK (and is ignored by all its logic), so it is an error.

import { RealtimeAgent, RealtimeSession, tool } from '@openai/agents-realtime';
import { z } from 'zod';
import { describe, finish, options, startSummary, Waiter } from './harness.mjs';

/** The server event types @openai/agents-realtime's zod union knows (openaiRealtimeEvents.ts). */
const SCHEMA_TYPES = new Set([
  'conversation.created',
  'conversation.item.added',
  'conversation.item.deleted',
  'conversation.item.done',
  'conversation.item.input_audio_transcription.completed',
  'conversation.item.input_audio_transcription.delta',
  'conversation.item.input_audio_transcription.failed',
  'conversation.item.retrieved',
  'conversation.item.truncated',
  'error',
  'input_audio_buffer.cleared',
  'input_audio_buffer.committed',
  'input_audio_buffer.speech_started',
  'input_audio_buffer.speech_stopped',
  'mcp_list_tools.completed',
  'mcp_list_tools.failed',
  'mcp_list_tools.in_progress',
  'output_audio_buffer.cleared',
  'output_audio_buffer.started',
  'output_audio_buffer.stopped',
  'rate_limits.updated',
  'response.content_part.added',
  'response.content_part.done',
  'response.created',
  'response.done',
  'response.function_call_arguments.delta',
  'response.function_call_arguments.done',
  'response.mcp_call.completed',
  'response.mcp_call.in_progress',
  'response.mcp_call_arguments.delta',
  'response.mcp_call_arguments.done',
  'response.output_audio.delta',
  'response.output_audio.done',
  'response.output_audio_transcript.delta',
  'response.output_audio_transcript.done',
  'response.output_item.added',
  'response.output_item.done',
  'response.output_text.delta',
  'response.output_text.done',
  'session.created',
  'session.updated',
]);

const TOOL_QUESTION = 'What is the weather in Paris?';

const args = options();
const summary = startSummary('@openai/agents-realtime');
Object.assign(summary, {
  raw: [], // every server frame, audio payloads replaced by their length
  untyped: [], // frames of a schema-known type the SDK's schema rejected
  agentEnds: [], // `agent_end` outputs, one per response
  toolCalls: [], // the arguments `execute` was called with
  toolResults: [], // what `execute` returned
  toolStarts: 0,
  toolEnds: [],
  sessionErrors: [],
  history: [],
});
const waiter = new Waiter(summary);

const getWeather = tool({
  name: 'get_weather',
  description: 'Get the current weather for a city.',
  parameters: z.object({ city: z.string().describe('The city name.') }),
  execute: async (input) => {
    summary.toolCalls.push(input);
    const result = `sunny and 21 degrees in ${input.city}`;
    summary.toolResults.push(result);
    return result;
  },
});

const agent = new RealtimeAgent({
  name: 'Weather assistant',
  instructions: 'You answer questions about the weather. Be brief.',
  tools: [getWeather],
});

const session = new RealtimeSession(agent, { transport: 'websocket', model: 'gpt-realtime' });
const transport = session.transport;

// §8.4: '*' is emitted just before the typed emit of the same frame (synchronously), so the
// frame is pending until its typed listener (or the next '*') runs.
let pending = null;
const typedListeners = new Set();
function settlePending() {
  if (pending && SCHEMA_TYPES.has(pending.type)) {
    summary.untyped.push(pending);
  }
  pending = null;
}
transport.on('*', (raw) => {
  settlePending();
  summary.events.push(raw.type);
  summary.raw.push(stripAudio(raw));
  pending = raw;
  const typed = raw.type === 'error' ? 'error' : raw.type;
  if (SCHEMA_TYPES.has(raw.type) && !typedListeners.has(typed)) {
    typedListeners.add(typed);
    transport.on(typed, () => {
      if (pending && (pending.type === typed || (typed === 'error' && pending.type === 'error'))) {
        pending = null;
      }
    });
  }
  queueMicrotask(() => waiter.poke());
});

session.on('error', (event) => {
  summary.sessionErrors.push(describe(event.error ?? event));
  summary.errors.push({ source: 'session.error', message: describe(event.error ?? event) });
  waiter.poke();
});
session.on('agent_end', (_context, _agent, output) => {
  summary.agentEnds.push(output);
  waiter.poke();
});
session.on('agent_tool_start', () => {
  summary.toolStarts += 1;
});
session.on('agent_tool_end', (_context, _agent, _tool, result) => {
  summary.toolEnds.push(result);
  waiter.poke();
});

function stripAudio(raw) {
  if (raw.type === 'response.output_audio.delta' && typeof raw.delta === 'string') {
    return { ...raw, delta: `<${raw.delta.length} base64 chars>` };
  }
  return raw;
}

function seen(type, predicate = () => true) {
  return summary.raw.filter((e) => e.type === type && predicate(e));
}

async function run() {
  const ms = args.timeoutMs;
  await session.connect({ apiKey: args.key, url: args.url });
  // The agent's config (instructions, tools) goes out in the first session.update.
  await waiter.until(
    'session.updated with the agent tool',
    () => seen('session.updated', (e) => e.session?.tools?.some((t) => t.name === 'get_weather')).length > 0,
    ms,
  );

  // Turn 1: plain text; the model answers (tool_choice is "auto").
  session.sendMessage(args.text);
  await waiter.until('the answer to the text message', () => summary.agentEnds.length >= 1, ms);
  await waiter.until('response.done', () => seen('response.done').length >= 1, ms);

  // Turn 2: this response must call the tool; the SDK runs it, sends the function_call_output
  // and a response.create (session tool_choice "auto") for the answer.
  transport.sendMessage(TOOL_QUESTION, {}, { triggerResponse: false });
  transport.requestResponse({ tool_choice: 'required' });
  await waiter.until('the tool to run', () => summary.toolEnds.length >= 1, ms);
  await waiter.until('the answer after the tool', () => summary.agentEnds.length >= 3, ms);
  await waiter.until('the third response.done', () => seen('response.done').length >= 3, ms);

  // Let trailing frames (rate_limits.updated, retrieves) arrive and be checked.
  await new Promise((resolve) => setTimeout(resolve, 300));
  settlePending();
  summary.history = session.history;
}

const overall = setTimeout(() => finish(summary, new Error(`overall timeout ${args.timeoutMs * 3} ms`)), args.timeoutMs * 3);
try {
  await run();
  clearTimeout(overall);
  for (const frame of summary.untyped) {
    summary.errors.push({
      source: 'schema',
      message: `agents-realtime's realtimeServerEventSchema rejected a ${frame.type} frame`,
      frame,
    });
  }
  session.close();
  finish(summary);
} catch (error) {
  clearTimeout(overall);
  settlePending();
  summary.history = session.history;
  try {
    session.close();
  } catch {
    // already closed
  }
  finish(summary, error);
}
