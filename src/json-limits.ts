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

/**
 * The source text of the first number in the JSON `text` that parsing would change, or
 * undefined: an integer beyond ±2^53 in any spelling (`9007199254740993`,
 * `900719925474099.3e1`, `1e23`), one out of range (`1e400`, `1e-400`), or one whose double
 * does not read back as written (`500.00000000000001` is 500; `0.1` and `0.30000000000000004`,
 * what every language prints for its doubles, read back as written). A decision judges, an
 * audit record keeps and the gateway forwards the double. A cheap scan first: only text with a
 * long digit run or an exponent is parsed again. Text that is not JSON is not judged here (its
 * parser says so).
 *
 * @example inexactNumber('{"id":1234567890123456789}') // '1234567890123456789'
 */
export function inexactNumber(text: string): string | undefined {
  if (!MAYBE_INEXACT.test(text)) return undefined;
  let found: string | undefined;
  try {
    JSON.parse(text, (_key, value: unknown, context?: { source?: string }) => {
      if (found === undefined && typeof value === 'number') {
        const source = context?.source ?? String(value);
        if (!Number.isFinite(value) || (Number.isInteger(value) && !Number.isSafeInteger(value)) || decimalOf(source) !== decimalOf(String(value))) found = source;
      }
      return value;
    });
  } catch {
    return undefined;
  }
  return found;
}

/**
 * A JSON number's value as text that two spellings of one value share: sign, significant
 * digits, exponent (`1.50e2`, `150` and `150.0` are all `15e1`; zero of either sign is `0`).
 */
function decimalOf(number: string): string {
  const [, sign, whole, fraction = '', exponent = '0'] = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(number)!;
  const digits = `${whole}${fraction}`.replace(/^0+/, '');
  if (digits === '') return '0';
  const significant = digits.replace(/0+$/, '');
  return `${sign}${significant}e${Number(exponent) - fraction.length + (digits.length - significant.length)}`;
}

export const inexactNumberText = (source: string): string =>
  `the number ${source.slice(0, 40)} cannot be kept exactly (JSON numbers here are IEEE doubles: integers up to ±2^53, about 16 significant digits); send it as a string`;
