/**
 * A small structured logger: one line per event to stderr, passed down through constructors;
 * tests pass {@link silentLogger} or collect lines. Two formats (`--log-format`):
 *   text  `time LEVEL message key=value…` (the default), for people: control, bidirectional and
 *         zero-width characters in the message and the values are shown as escapes (src/printable.ts),
 *         so one call writes one line;
 *   json  `{"time":…,"level":…,"msg":…,…fields}` per line, for log collectors (the container
 *         image's default: docs/observability.md), with the same characters as escapes.
 * A line written while a request is handled also carries that request's `trace_id` and, once its
 * decision is made, `action_id` (src/telemetry/request-context.ts).
 */
import { printable } from './printable.js';
import { requestContext } from './telemetry/request-context.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'text' | 'json';
export type LogFields = Record<string, string | number | boolean | undefined>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/**
 * A field value of a text line as one word: as it is when that is plain, else a JSON string
 * whose control, bidirectional and zero-width characters are escapes too, so `JSON.parse` gives
 * the value back and nothing in it can end the line, recolour the terminal or reorder the text.
 */
function fieldValue(s: string): string {
  return s !== '' && !/[\s"=]/.test(s) && printable(s) === s ? s : printable(JSON.stringify(s));
}

function renderText(fields: LogFields): string {
  let out = '';
  for (const [k, v] of Object.entries(fields)) {
    if (v !== undefined) out += ` ${k}=${fieldValue(String(v))}`;
  }
  return out;
}

/** The request's ids first, then the caller's fields (which win on a clash). */
function withRequest(fields: LogFields | undefined): LogFields {
  const ctx = requestContext.getStore();
  if (!ctx) return fields ?? {};
  return { trace_id: ctx.trace_id, action_id: ctx.action_id, ...fields };
}

const FORMATS: Record<LogFormat, (time: string, level: LogLevel, msg: string, fields: LogFields) => string> = {
  // The message may quote what a caller or a file holds (a parse error): one call, one line.
  text: (time, level, msg, fields) => `${time} ${level.toUpperCase().padEnd(5)} ${printable(msg)}${renderText(fields)}`,
  // time, level and msg first and never overridden by a field of the same name. JSON.stringify
  // leaves bidirectional and zero-width characters, U+2028/U+2029 and C1 controls as they are;
  // as escapes (still JSON) they cannot break a line in a viewer or reorder what a person reads.
  json: (time, level, msg, fields) =>
    printable(JSON.stringify({ ...fields, time, level, msg }, ['time', 'level', 'msg', ...Object.keys(fields).filter((k) => k !== 'time' && k !== 'level' && k !== 'msg')])),
};

/**
 * @example
 *   const log = createLogger('info');
 *   log.warn('audit sink is behind', { buffered: 1200 });
 *   const json = createLogger('info', undefined, 'json'); // {"time":"…","level":"warn","msg":"audit sink is behind","buffered":1200}
 */
export function createLogger(level: LogLevel = 'info', write: (line: string) => void = (l) => process.stderr.write(l + '\n'), format: LogFormat = 'text'): Logger {
  const line = FORMATS[format];
  const at = (lvl: LogLevel) => (msg: string, fields?: LogFields) => {
    if (ORDER[lvl] >= ORDER[level]) write(line(new Date().toISOString(), lvl, msg, withRequest(fields)));
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

export const silentLogger: Logger = createLogger('error', () => {});
