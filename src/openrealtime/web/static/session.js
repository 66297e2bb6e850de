// The session settings: form values <-> the GA session object (realtime-protocol.md §3.1).

/** The voice names the OpenAI Realtime API documents (any string is accepted on the wire). */
export const VOICES = ['alloy', 'ash', 'ballad', 'coral', 'echo', 'sage', 'shimmer', 'verse', 'marin', 'cedar'];

/** The form's defaults: the live service's session defaults, plus input transcription on. */
export const DEFAULTS = Object.freeze({
  instructions: '',
  voice: 'alloy',
  output: 'audio',
  turn: 'server_vad',
  threshold: 0.5,
  prefix_padding_ms: 300,
  silence_duration_ms: 200,
  eagerness: 'auto',
  create_response: true,
  interrupt_response: true,
  transcription: true,
  transcription_model: 'gpt-4o-mini-transcribe',
  transcription_language: '',
  tools: '[]',
  tool_choice: 'auto',
  base_url: '',
  secret_ttl: 600,
  echo_cancellation: true,
  noise_suppression: true,
  auto_gain_control: true,
});

export const EXAMPLE_TOOLS = [
  {
    type: 'function',
    name: 'get_weather',
    description: 'Get the current weather for a city.',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', description: 'City name, e.g. Paris' } },
      required: ['city'],
    },
  },
];

const FUNCTION_KEYS = new Set(['type', 'name', 'description', 'parameters']);
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/**
 * Check the tools textarea before anything is sent. Returns `{ok: true, tools}` or
 * `{ok: false, error}` with a message that points at the offending tool and field.
 */
export function validateTools(text) {
  const source = text.trim();
  if (!source) return { ok: true, tools: [] };
  let value;
  try {
    value = JSON.parse(source);
  } catch (error) {
    return { ok: false, error: `Invalid JSON: ${error.message}` };
  }
  if (!Array.isArray(value)) return { ok: false, error: 'Tools must be a JSON array of tool objects.' };
  const names = new Set();
  for (const [i, tool] of value.entries()) {
    const where = `tools[${i}]`;
    if (!tool || typeof tool !== 'object' || Array.isArray(tool)) return { ok: false, error: `${where} must be an object.` };
    const type = tool.type ?? 'function';
    if (type === 'mcp') {
      if (typeof tool.server_label !== 'string' || !tool.server_label) return { ok: false, error: `${where}.server_label is required for an mcp tool.` };
      continue;
    }
    if (type !== 'function') return { ok: false, error: `${where}.type must be "function" or "mcp", not ${JSON.stringify(type)}.` };
    for (const key of Object.keys(tool)) {
      if (!FUNCTION_KEYS.has(key)) return { ok: false, error: `${where}: unknown parameter "${key}" (allowed: ${[...FUNCTION_KEYS].join(', ')}).` };
    }
    if (typeof tool.name !== 'string' || !TOOL_NAME.test(tool.name)) return { ok: false, error: `${where}.name must match ^[a-zA-Z0-9_-]{1,64}$.` };
    if (names.has(tool.name)) return { ok: false, error: `${where}: duplicate tool name "${tool.name}".` };
    names.add(tool.name);
    if (tool.description !== undefined && typeof tool.description !== 'string') return { ok: false, error: `${where}.description must be a string.` };
    if (tool.parameters !== undefined) {
      const p = tool.parameters;
      if (!p || typeof p !== 'object' || Array.isArray(p)) return { ok: false, error: `${where}.parameters must be a JSON schema object.` };
      if (p.type !== undefined && p.type !== 'object') return { ok: false, error: `${where}.parameters.type must be "object".` };
    }
  }
  return { ok: true, tools: value };
}

/** Read the settings form into a plain values object (same keys as DEFAULTS). */
export function readForm(form) {
  const f = form.elements;
  const num = (name, fallback) => {
    const n = Number(f[name].value);
    return f[name].value === '' || Number.isNaN(n) ? fallback : n;
  };
  return {
    instructions: f.instructions.value,
    voice: f.voice.value,
    output: form.querySelector('input[name="output"]:checked')?.value ?? 'audio',
    turn: f.turn.value,
    threshold: num('threshold', DEFAULTS.threshold),
    prefix_padding_ms: num('prefix_padding_ms', DEFAULTS.prefix_padding_ms),
    silence_duration_ms: num('silence_duration_ms', DEFAULTS.silence_duration_ms),
    eagerness: f.eagerness.value,
    create_response: f.create_response.checked,
    interrupt_response: f.interrupt_response.checked,
    transcription: f.transcription.checked,
    transcription_model: f.transcription_model.value.trim(),
    transcription_language: f.transcription_language.value.trim(),
    tools: f.tools.value,
    tool_choice: f.tool_choice.value,
    base_url: f.base_url.value.trim(),
    secret_ttl: num('secret_ttl', DEFAULTS.secret_ttl),
    echo_cancellation: f.echo_cancellation.checked,
    noise_suppression: f.noise_suppression.checked,
    auto_gain_control: f.auto_gain_control.checked,
  };
}

/** Write values (a full or partial values object) into the settings form. */
export function writeForm(form, values) {
  const f = form.elements;
  for (const [key, value] of Object.entries(values)) {
    if (key === 'output') {
      const radio = form.querySelector(`input[name="output"][value="${value === 'text' ? 'text' : 'audio'}"]`);
      if (radio) radio.checked = true;
      continue;
    }
    const field = f[key];
    if (!field) continue;
    if (field.type === 'checkbox') field.checked = Boolean(value);
    else if (field.tagName === 'SELECT' && ![...field.options].some((o) => o.value === String(value))) {
      field.append(new Option(String(value), String(value)));
      field.value = String(value);
    } else field.value = String(value);
  }
}

/**
 * The session object for `session.update`, the client secret and the call (spec §3.1).
 * Only what the form controls is included; `instructions` is left out when empty, so the
 * server's default stands. Returns `{session, error}`; `error` is set when the tools JSON
 * does not validate (nothing should be sent then).
 */
export function buildSession(values, model) {
  const tools = validateTools(values.tools);
  if (!tools.ok) return { session: null, error: tools.error };
  let turnDetection = null;
  if (values.turn === 'server_vad') {
    turnDetection = {
      type: 'server_vad',
      threshold: values.threshold,
      prefix_padding_ms: Math.round(values.prefix_padding_ms),
      silence_duration_ms: Math.round(values.silence_duration_ms),
      create_response: values.create_response,
      interrupt_response: values.interrupt_response,
    };
  } else if (values.turn === 'semantic_vad') {
    turnDetection = {
      type: 'semantic_vad',
      eagerness: values.eagerness,
      create_response: values.create_response,
      interrupt_response: values.interrupt_response,
    };
  }
  let transcription = null;
  if (values.transcription) {
    transcription = { model: values.transcription_model || DEFAULTS.transcription_model };
    if (values.transcription_language) transcription.language = values.transcription_language;
  }
  const session = { type: 'realtime' };
  if (model) session.model = model;
  if (values.instructions.trim()) session.instructions = values.instructions;
  session.output_modalities = [values.output === 'text' ? 'text' : 'audio'];
  session.audio = {
    input: { transcription, turn_detection: turnDetection },
    output: { voice: values.voice },
  };
  session.tools = tools.tools;
  session.tool_choice = values.tool_choice;
  return { session, error: null };
}

/**
 * The form values an effective session object (from `session.created` / `session.updated`)
 * stands for: used to show what the server actually runs with.
 */
export function valuesFromSession(session) {
  const values = {};
  if (!session || typeof session !== 'object') return values;
  const input = session.audio?.input ?? {};
  const output = session.audio?.output ?? {};
  if (Array.isArray(session.output_modalities)) values.output = session.output_modalities[0] === 'text' ? 'text' : 'audio';
  if (typeof output.voice === 'string') values.voice = output.voice;
  else if (output.voice && typeof output.voice.id === 'string') values.voice = output.voice.id;
  const td = input.turn_detection;
  if (td === null) values.turn = 'none';
  else if (td && typeof td === 'object') {
    values.turn = td.type;
    if (td.type === 'server_vad') {
      if (typeof td.threshold === 'number') values.threshold = td.threshold;
      if (typeof td.prefix_padding_ms === 'number') values.prefix_padding_ms = td.prefix_padding_ms;
      if (typeof td.silence_duration_ms === 'number') values.silence_duration_ms = td.silence_duration_ms;
    }
    if (td.type === 'semantic_vad' && typeof td.eagerness === 'string') values.eagerness = td.eagerness;
    if (typeof td.create_response === 'boolean') values.create_response = td.create_response;
    if (typeof td.interrupt_response === 'boolean') values.interrupt_response = td.interrupt_response;
  }
  if ('transcription' in input) {
    values.transcription = Boolean(input.transcription);
    if (input.transcription?.model) values.transcription_model = input.transcription.model;
    values.transcription_language = input.transcription?.language ?? '';
  }
  if (Array.isArray(session.tools)) values.tools = JSON.stringify(session.tools, null, 2);
  if (typeof session.tool_choice === 'string') values.tool_choice = session.tool_choice;
  return values;
}
