// Shared plumbing of the JS conformance scripts: arguments, SDK-error capture, timeouts, the
// JSON summary on stdout. Run by tests/conformance/test_js_clients.py.

import { parseArgs } from 'node:util';

/** `--url`, `--key`, `--text`, `--timeout-ms` from the command line. */
export function options() {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      key: { type: 'string' },
      text: { type: 'string', default: 'Hello from JavaScript' },
      'timeout-ms': { type: 'string', default: '20000' },
    },
  });
  if (!values.url || !values.key) {
    throw new Error('usage: node <script> --url URL --key KEY [--text TEXT] [--timeout-ms MS]');
  }
  return { ...values, timeoutMs: Number(values['timeout-ms']) };
}

/**
 * A summary that collects what the SDK reported. Everything the SDK logs through
 * console.error / console.warn (that is how agents-js reports failed parses of server events),
 * every uncaught exception or unhandled rejection (a throwing zod `.parse` inside the message
 * listener) and every `error` the scripts record counts as an SDK error.
 */
export function startSummary(client) {
  const summary = { client, events: [], errors: [], logs: [] };
  for (const level of ['error', 'warn']) {
    const original = console[level].bind(console);
    console[level] = (...args) => {
      summary.logs.push({ level, text: args.map(describe).join(' ') });
      original(...args); // stderr: visible in the pytest failure output
    };
  }
  process.on('uncaughtException', (error) => {
    summary.errors.push({ source: 'uncaughtException', message: describe(error) });
  });
  process.on('unhandledRejection', (error) => {
    summary.errors.push({ source: 'unhandledRejection', message: describe(error) });
  });
  return summary;
}

/** Print the summary as one JSON line and exit: 1 on any SDK error or log, else 0. */
export function finish(summary, failure) {
  if (failure) {
    summary.errors.push({ source: 'script', message: describe(failure) });
  }
  const failed = summary.errors.length > 0 || summary.logs.some((l) => l.level === 'error');
  summary.ok = !failed;
  process.stdout.write(`${JSON.stringify(summary)}\n`, () => process.exit(failed ? 1 : 0));
}

/**
 * Resolves when `predicate()` holds (checked on every `poke()`); rejects after `ms`, or as soon
 * as the summary has an error (no point waiting for what an error has already stopped).
 */
export class Waiter {
  #waits = [];

  constructor(summary) {
    this.summary = summary;
    // Errors also come from process-level handlers that know nothing of the waits.
    setInterval(() => this.poke(), 50).unref();
  }

  #failure(what) {
    return this.summary.errors.length > 0
      ? new Error(`gave up waiting for ${what} after an SDK error`)
      : null;
  }

  until(what, predicate, ms) {
    if (predicate()) return Promise.resolve();
    const failure = this.#failure(what);
    if (failure) return Promise.reject(failure);
    return new Promise((resolve, reject) => {
      const wait = { what, predicate, resolve, reject };
      wait.timer = setTimeout(() => {
        this.#waits = this.#waits.filter((w) => w !== wait);
        reject(new Error(`timeout after ${ms} ms waiting for ${what}`));
      }, ms);
      this.#waits.push(wait);
    });
  }

  poke() {
    for (const wait of [...this.#waits]) {
      let failure = null;
      if (!wait.predicate()) {
        failure = this.#failure(wait.what);
        if (failure === null) continue;
      }
      clearTimeout(wait.timer);
      this.#waits = this.#waits.filter((w) => w !== wait);
      if (failure) wait.reject(failure);
      else wait.resolve();
    }
  }
}

export function describe(value) {
  if (value instanceof Error) {
    return `${value.name}: ${value.message}${value.cause ? ` (cause: ${describe(value.cause)})` : ''}`;
  }
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}
