/**
 * The one duration syntax of flags, rates and time ranges: a whole number and a unit, `ms`,
 * `s`, `m`, `h` or `d` (`500ms`, `15s`, `2m`, `24h`, `7d`).
 */
const DURATION = /^(\d{1,9})(ms|s|m|h|d)$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * Milliseconds of a duration, or undefined when it is not one.
 *
 * @example parseDuration('24h') // 86_400_000
 */
export function parseDuration(text: string): number | undefined {
  const m = DURATION.exec(text.trim().toLowerCase());
  return m ? Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS] : undefined;
}

/** What every duration error says. */
export const DURATION_HINT = 'use a whole number and ms, s, m, h or d, e.g. 500ms, 15s, 2m, 24h, 7d';
