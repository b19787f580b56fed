/**
 * What JSON PolicyGuard takes, wherever it comes from (a request body, or JSON text inside an
 * argument such as validate_action's `parameters`): no deeper than a tool call needs, and no
 * number that parsing would change. A decision must judge exactly what it was asked, and the
 * gateway forward exactly what was decided.
 */

/**
 * Deeper than any tool call needs (audit records keep 32 levels of arguments): refused before
 * decisions, digests, audit records or forwarding walk it.
 */
export const MAX_JSON_DEPTH = 64;

export const tooDeepText = (): string => `the JSON nests deeper than ${MAX_JSON_DEPTH} levels`;

/** Whether `value` nests objects or arrays more than `max` levels deep; iterative, so any depth is safe to ask about. */
export function nestedDeeperThan(value: unknown, max: number): boolean {
  const values: unknown[] = [value];
  const depths: number[] = [1];
  while (values.length > 0) {
    const v = values.pop();
    const depth = depths.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (depth > max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (typeof child === 'object' && child !== null) {
        values.push(child);
        depths.push(depth + 1);
      }
    }
  }
  return false;
}

/**
 * Text that may hold a number parsing would change: 16 or more digits in a row (a decimal point
 * among them counts), or an exponent. Numbers of 15 significant digits or fewer, without an
 * exponent, read back as written and are within ±2^53, so text without either is not parsed
 * again.
 */
const MAYBE_INEXACT = /\d[\d.]{15,}|\d[eE][+-]?\d/;

/** A key spelt `__proto__` could be, escapes of its letters included (`"\u005f_proto__"`). */
const MAYBE_PROTO_KEY = /__proto__|\\u00(?:5[fF]|70|72|6[fF]|74)/;

/**
 * Why PolicyGuard refuses the JSON `text`, or undefined: the first number parsing would change,
 * or an object key `__proto__` (in any escaped spelling). Numbers parsing changes: an integer
 * beyond ±2^53 in any spelling (`9007199254740993`, `900719925474099.3e1`, `1e23`), one out of
 * range (`1e400`, `1e-400`), or one whose double does not read back as written
 * (`500.00000000000001` is 500; `0.1` and `0.30000000000000004`, what every language prints
 * for its doubles, read back as written): a decision judges, an audit record keeps and the
 * gateway forwards the double. A cheap scan first: only text with a long digit run, an exponent,
 * `__proto__` or a `\\u` escape is parsed again. JSON.parse
 * keeps that key as data, but schemas drop it (zod's records skip it), so a decision, an
 * approval's digest and the audit record would never see what a tool written in JavaScript
 * may take as the object's prototype. Text that is not JSON is left to its parser.
 *
 * @example refusedJson('{"a":{"__proto__":{"admin":true}}}') // 'the JSON has an object key "__proto__", …'
 */
export function refusedJson(text: string): string | undefined {
  const numbers = MAYBE_INEXACT.test(text);
  const keys = MAYBE_PROTO_KEY.test(text);
  if (!numbers && !keys) return undefined;
  let found: string | undefined;
  walkParsed(text, (key, value, source) => {
    if (found !== undefined) return;
    if (keys && key === '__proto__') found = PROTO_KEY_TEXT;
    else if (numbers && typeof value === 'number' && changedByParsing(value, source)) found = inexactNumberText(source);
  });
  return found;
}

const PROTO_KEY_TEXT =
  'the JSON has an object key "__proto__", which tools written in JavaScript can take as the object\'s prototype and which PolicyGuard could neither judge nor record; rename the key';

/** Parse `text`, calling `visit` with every member's key, value and (for primitives) source text; nothing when it is not JSON. */
function walkParsed(text: string, visit: (key: string, value: unknown, source: string) => void): void {
  try {
    JSON.parse(text, (key, value: unknown, context?: { source?: string }) => {
      visit(key, value, context?.source ?? String(value));
      return value;
    });
  } catch {
    // Not JSON: its parser says so.
  }
}

/**
 * Whether the double `value` parsed from `source` is not what `source` says: not finite, or
 * read back as another number. Read back means as JavaScript prints it (the shortest text) or
 * with 17 significant digits, as C's `%.17g` prints every double (`0.10000000000000001` is 0.1).
 * `integers`: an integer beyond ±2^53 counts as changed even when this double is exactly it,
 * as JSON tools that read integers into int64 or a big integer would read its neighbours too.
 */
function changedByParsing(value: number, source: string, integers = true): boolean {
  if (!Number.isFinite(value) || (integers && Number.isInteger(value) && !Number.isSafeInteger(value))) return true;
  const written = decimalOf(source);
  return written !== decimalOf(String(value)) && written !== decimalOf(value.toPrecision(17));
}

/**
 * A JSON number's value as text that two spellings of one value share: sign, significant
 * digits, exponent (`1.50e2`, `150` and `150.0` are all `15e1`; zero of either sign is `0`).
 */
function decimalOf(number: string): string {
  const [, sign, whole = '', fraction = '', exponent = '0'] = DECIMAL.exec(number) ?? [];
  const digits = `${whole}${fraction}`.replace(/^0+/, '');
  if (digits === '') return '0';
  const significant = digits.replace(/0+$/, '');
  return `${sign === '-' ? '-' : ''}${significant}e${Number(exponent) - fraction.length + (digits.length - significant.length)}`;
}

/** A plain decimal number as JSON or a person writes it: `600`, `-2.5`, `+6e2`, `.5`, `6.`; not `0x10`, `600 USD`, `Infinity`. */
const DECIMAL = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;

/** Whether `text` (whitespace around it allowed) is a plain decimal number, exact or not. */
export const isPlainDecimal = (text: string): boolean => DECIMAL.test(text.trim()) && /\d/.test(text);

/**
 * The number a plain decimal `text` writes (whitespace around it allowed), when a double holds
 * it exactly as written (see {@link refusedJson}); otherwise undefined: `"9007199254740993"` is
 * not 9007199254740992, and a comparison with it could not be trusted.
 *
 * @example exactNumber(' 600 ') // 600
 * @example exactNumber('9007199254740993') // undefined
 */
export function exactNumber(text: string): number | undefined {
  if (!isPlainDecimal(text)) return undefined;
  const trimmed = text.trim();
  const value = Number(trimmed);
  // A bound or a string is compared as the double it writes: 1e20 is one exactly.
  return changedByParsing(value, trimmed, false) ? undefined : value;
}

const inexactNumberText = (source: string): string =>
  `the number ${source.slice(0, 40)} cannot be kept exactly (JSON numbers here are IEEE doubles: integers up to ±2^53, about 16 significant digits); send it as a string`;
