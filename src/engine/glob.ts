/**
 * Glob patterns for tool names, action types and agent ids: compiled once at load, matched
 * case-insensitively, and screened for patterns that could make matching slow.
 */
import { Minimatch } from 'minimatch';

/** At most this many `*` in one pattern (minimatch ReDoS, CVE-2026-26996). */
export const MAX_STARS = 8;

export class PatternError extends Error {
  constructor(
    readonly pattern: string,
    reason: string,
  ) {
    super(`pattern ${JSON.stringify(pattern)} ${reason}`);
    this.name = 'PatternError';
  }
}

export interface Glob {
  readonly pattern: string;
  /**
   * Lowercased literal text every match starts with (the text before the first wildcard, or
   * less, see {@link literalEnds}); the whole pattern when `exact`. May be empty.
   */
  readonly prefix: string;
  /** Lowercased literal text every match ends with; may be empty. The whole pattern when `exact`. */
  readonly suffix: string;
  /** True when the pattern has no wildcard, so equality (case-insensitive) decides. */
  readonly exact: boolean;
  /** Match a value that is already lowercased. */
  matchLower(valueLower: string): boolean;
}

const MAGIC = /[*?[]/;

/**
 * Literal text that every string a (lowercased, magic) pattern matches must start and end
 * with, for the rule index. Conservative, because minimatch works on `/`-separated segments:
 * `a/**` also matches `a` and `**\/b` also matches `b` (so a `/` next to the wildcard is left
 * out), `\` escapes the next character, and `.`, `..` and empty segments are normalised away
 * (`x/../y*` is `y*`), so such patterns get no literal ends at all. Property-tested in
 * glob.test.ts: a match always starts with `prefix` and ends with `suffix`.
 */
export function literalEnds(lower: string): { prefix: string; suffix: string } {
  if (lower.includes('/') && lower.split('/').some((seg) => seg === '' || seg === '.' || seg === '..')) return { prefix: '', suffix: '' };
  const first = lower.search(/[*?[\\]/);
  let last = -1;
  for (let i = lower.length - 1; i >= 0; i--) {
    if ('*?[]\\'.includes(lower[i]!)) {
      last = i;
      break;
    }
  }
  let prefix = first === -1 ? lower : lower.slice(0, first);
  let suffix = last === -1 ? lower : lower.slice(last + 1);
  if (prefix.endsWith('/')) prefix = prefix.slice(0, -1);
  if (suffix.startsWith('/')) suffix = suffix.slice(1);
  return { prefix, suffix };
}

/**
 * Compile a glob. `*` and `?` do not cross `/` (minimatch semantics); `**` does.
 * Rejected, with a {@link PatternError} naming the pattern: empty patterns, braces, extglobs,
 * negation, more than {@link MAX_STARS} `*`.
 *
 * @example
 *   compileGlob('delete_*').matchLower('delete_users') // true
 */
export function compileGlob(pattern: string): Glob {
  if (pattern.length === 0) throw new PatternError(pattern, 'is empty');
  if (/[{}]/.test(pattern)) throw new PatternError(pattern, 'uses braces, which are not supported');
  if (/[+@!?*]\(/.test(pattern) || /[()|]/.test(pattern)) {
    throw new PatternError(pattern, 'uses extglob syntax ( ) |, which is not supported');
  }
  if (pattern.startsWith('!')) throw new PatternError(pattern, 'starts with "!"; negation is not supported');
  const stars = pattern.split('*').length - 1;
  if (stars > MAX_STARS) throw new PatternError(pattern, `has ${stars} "*"; at most ${MAX_STARS} are allowed`);

  const lower = pattern.toLowerCase();
  if (!MAGIC.test(lower)) {
    return { pattern, prefix: lower, suffix: lower, exact: true, matchLower: (v) => v === lower };
  }
  const mm = new Minimatch(lower, { nocase: true, noext: true, nobrace: true, nonegate: true, nocomment: true, dot: true });
  const re = mm.makeRe();
  if (re === false) throw new PatternError(pattern, 'is not a valid glob');
  return { pattern, ...literalEnds(lower), exact: false, matchLower: (v) => re.test(v) };
}

/** Compile several globs; the first bad one throws. */
export function compileGlobs(patterns: readonly string[]): Glob[] {
  return patterns.map(compileGlob);
}

/** True when any glob matches. `valueLower` must be lowercased by the caller (once per call). */
export function anyMatch(globs: readonly Glob[], valueLower: string): Glob | undefined {
  for (const g of globs) if (g.matchLower(valueLower)) return g;
  return undefined;
}
