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

/** Text that may hold a number parsing would change: a long run of digits, or an exponent of two digits or more. */
const MAYBE_INEXACT = /\d{16,}|[eE][+-]?\d{2,}/;

/**
 * The source text of the first number in the JSON `text` that parsing would change — an
 * integer beyond ±2^53 in any spelling (`9007199254740993`, `9007199254740993.0`, `1e23`) or
 * one out of range (`1e400`) — or undefined. Fractions keep their usual rounding. A cheap scan
 * first: only text with a long digit run or a large exponent is parsed again. Text that is not
 * JSON is not judged here (its parser says so).
 *
 * @example inexactNumber('{"id":1234567890123456789}') // '1234567890123456789'
 */
export function inexactNumber(text: string): string | undefined {
  if (!MAYBE_INEXACT.test(text)) return undefined;
  let found: string | undefined;
  try {
    JSON.parse(text, (_key, value: unknown, context?: { source?: string }) => {
      if (found === undefined && typeof value === 'number' && (!Number.isFinite(value) || (Number.isInteger(value) && !Number.isSafeInteger(value)))) {
        found = context?.source ?? String(value);
      }
      return value;
    });
  } catch {
    return undefined;
  }
  return found;
}

export const inexactNumberText = (source: string): string =>
  `the number ${source.slice(0, 40)} cannot be kept exactly (JSON numbers here are IEEE doubles: integers up to ±2^53); send it as a string`;
