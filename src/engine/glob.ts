/**
 * Glob patterns for tool names, action types, agent ids and argument values, with the original
 * project's semantics (Python `fnmatch`, see docs/decisions.md): `*` matches any run of
 * characters, `/` included, so a deny on `*prod*` also catches `svc/prod-db` and URLs.
 * Matching is case-insensitive and over Unicode code points (`?` matches one emoji).
 *
 * Patterns are compiled once into segments (the text between `*`s) and matched without regular
 * expressions and without backtracking: the first segment is anchored at the start, the last at
 * the end, and each middle segment is taken at its leftmost occurrence. The worst case is
 * O(value length × pattern length), whatever the input.
 */

/**
 * At most this many `*` in one pattern. Not what keeps matching fast (the matcher is linear);
 * a sanity bound on what a policy author can mean.
 */
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
   * Lowercased literal text every match starts with (the text before the first wildcard); the
   * whole pattern when `exact`. May be empty.
   */
  readonly prefix: string;
  /** Lowercased literal text every match ends with (after the last wildcard); the whole pattern when `exact`. May be empty. */
  readonly suffix: string;
  /** True when the pattern has no wildcard, so equality (case-insensitive) decides. */
  readonly exact: boolean;
  /**
   * `prefix` when the pattern is `text*`, `suffix` when it is `*text`: then a value matches
   * exactly when it starts (ends) with that text, and nothing else needs checking.
   */
  readonly affix: 'prefix' | 'suffix' | undefined;
  /** Match a value that is already {@link foldCase}d. */
  matchLower(valueLower: string): boolean;
}

/** `[seq]` or `[!seq]`, over code points. */
interface CharSet {
  readonly negated: boolean;
  /** Single members, {@link foldCase}d. */
  readonly singles: ReadonlySet<number>;
  /** Inclusive ranges as written, as flat pairs `lo, hi, lo, hi, …`; an empty range (`z-a`) matches nothing. */
  readonly ranges: readonly number[];
}

/** One step of a segment: literal text, or exactly one code point (any, or one of a set). */
type Atom = { readonly text: string } | { readonly set: CharSet | undefined };

/** The atoms between two runs of `*`. */
type Segment = readonly Atom[];

function inRanges(ranges: readonly number[], cp: number): boolean {
  for (let k = 0; k < ranges.length; k += 2) if (ranges[k]! <= cp && cp <= ranges[k + 1]!) return true;
  return false;
}

/**
 * Whether the {@link foldCase}d code point `cp` is in `set`, ignoring case. Members are folded
 * when the pattern is compiled; a range keeps the code points it was written with (folding its
 * ends would change what lies between them: `[@-Z]` would become `[@-z]`, which holds `_`), so
 * `cp` is in it when `cp` or its uppercase form is.
 */
function inSet(set: CharSet, cp: number): boolean {
  let hit = set.singles.has(cp) || inRanges(set.ranges, cp);
  if (!hit && set.ranges.length > 0) {
    const upper = String.fromCodePoint(cp).toUpperCase();
    const upperCp = upper.codePointAt(0)!;
    hit = upper.length === String.fromCodePoint(upperCp).length && upperCp !== cp && inRanges(set.ranges, upperCp);
  }
  return hit !== set.negated;
}

const isHigh = (unit: number) => unit >= 0xd800 && unit <= 0xdbff;
const isLow = (unit: number) => unit >= 0xdc00 && unit <= 0xdfff;

/** UTF-16 units of the code point starting at `i` (1 on the ASCII path, 2 for a surrogate pair). */
function widthAt(v: string, i: number): number {
  return isHigh(v.charCodeAt(i)) && isLow(v.charCodeAt(i + 1)) ? 2 : 1;
}

/** UTF-16 units of the code point ending just before `end`. */
function widthBefore(v: string, end: number): number {
  return end >= 2 && isLow(v.charCodeAt(end - 1)) && isHigh(v.charCodeAt(end - 2)) ? 2 : 1;
}

/** Match `seg` starting at `i`; the index just after it, or -1. */
function matchAt(seg: Segment, v: string, i: number): number {
  for (const atom of seg) {
    if ('text' in atom) {
      if (!v.startsWith(atom.text, i)) return -1;
      i += atom.text.length;
    } else {
      if (i >= v.length) return -1;
      if (atom.set && !inSet(atom.set, v.codePointAt(i)!)) return -1;
      i += widthAt(v, i);
    }
  }
  return i;
}

/** Match `seg` ending exactly at `end`; the index where it starts, or -1. */
function matchBefore(seg: Segment, v: string, end: number): number {
  for (let k = seg.length - 1; k >= 0; k--) {
    const atom = seg[k]!;
    if ('text' in atom) {
      if (!v.endsWith(atom.text, end)) return -1;
      end -= atom.text.length;
    } else {
      if (end <= 0) return -1;
      const w = widthBefore(v, end);
      if (atom.set && !inSet(atom.set, v.codePointAt(end - w)!)) return -1;
      end -= w;
    }
  }
  return end;
}

/**
 * The leftmost occurrence of a (non-empty) middle segment starting at or after `from` and
 * ending at or before `limit`; the index just after it, or -1. Leftmost is always right: every
 * atom takes one code point or fixed text, so a later start can only end later.
 */
function findBetween(seg: Segment, v: string, from: number, limit: number): number {
  const only = seg.length === 1 ? seg[0]! : undefined;
  if (only && 'text' in only) {
    const text = only.text;
    const i = v.indexOf(text, from);
    return i >= 0 && i + text.length <= limit ? i + text.length : -1;
  }
  for (let i = from; i < limit; i += widthAt(v, i)) {
    const end = matchAt(seg, v, i);
    if (end >= 0) return end <= limit ? end : -1;
  }
  return -1;
}

function matchSegments(segments: readonly Segment[], v: string): boolean {
  const first = segments[0]!;
  if (segments.length === 1) return matchAt(first, v, 0) === v.length;
  let pos = matchAt(first, v, 0);
  if (pos < 0) return false;
  const tail = matchBefore(segments[segments.length - 1]!, v, v.length);
  if (tail < pos) return false;
  for (let s = 1; s < segments.length - 1 && pos >= 0; s++) pos = findBetween(segments[s]!, v, pos, tail);
  return pos >= 0;
}

/**
 * Index of the `]` closing the set opened at `open`, or -1. As in fnmatch, a `]` right after
 * `[` or `[!` is a member, not the end.
 */
function closingBracket(cps: readonly string[], open: number): number {
  let j = open + 1;
  if (cps[j] === '!') j++;
  if (cps[j] === ']') j++;
  while (j < cps.length && cps[j] !== ']') j++;
  return j < cps.length ? j : -1;
}

/**
 * The members between `[` (or `[!`) and `]`: single characters and `a-z` ranges; `-` first or
 * last is literal. A set that could only be a mistake is refused: a range whose ends are
 * reversed (`[z-a]`, `[a-Z]`: empty, it matches nothing) and `^` first (`[^a]` is "not a" in
 * regular expressions and bash, but a member in fnmatch).
 */
function parseSet(pattern: string, cps: readonly string[], from: number, to: number): CharSet {
  const negated = cps[from] === '!';
  if (cps[from] === '^') throw new PatternError(pattern, 'starts a set with "^", which here is a member, not "not"; write "[!…]" for the characters not in a set, or put "^" later in it for a literal "^"');
  const singles = new Set<number>();
  const ranges: number[] = [];
  for (let p = negated ? from + 1 : from; p < to; ) {
    if (p + 2 < to && cps[p + 1] === '-') {
      const [lo, hi] = [cps[p]!.codePointAt(0)!, cps[p + 2]!.codePointAt(0)!];
      if (lo > hi) throw new PatternError(pattern, `has the range "${cps[p]}-${cps[p + 2]}", whose ends are reversed (${codePointName(lo)} after ${codePointName(hi)}), so it matches nothing; write the lower end first`);
      ranges.push(lo, hi);
      p += 3;
    } else {
      for (const folded of foldCase(cps[p]!)) singles.add(folded.codePointAt(0)!);
      p++;
    }
  }
  return { negated, singles, ranges };
}

/**
 * Split a pattern into segments, literal text {@link foldCase}d; throws a {@link PatternError}
 * for what we refuse.
 */
function parse(pattern: string): Segment[] {
  const cps = Array.from(pattern);
  const segments: Atom[][] = [[]];
  let text = '';
  let stars = 0;
  const flush = () => {
    if (text) segments[segments.length - 1]!.push({ text: foldCase(text) });
    text = '';
  };
  for (let i = 0; i < cps.length; i++) {
    const c = cps[i]!;
    switch (c) {
      case '*':
        stars++;
        flush();
        if (cps[i - 1] !== '*') segments.push([]); // `**` is `*`
        break;
      case '?':
        flush();
        segments[segments.length - 1]!.push({ set: undefined });
        break;
      case '[': {
        const close = closingBracket(cps, i);
        if (close < 0) throw new PatternError(pattern, 'has an unclosed "["; write "[[]" for a literal "["');
        const set = parseSet(pattern, cps, i + 1, close);
        const only = set.singles.size === 1 && set.ranges.length === 0 && !set.negated ? [...set.singles][0]! : undefined;
        if (only !== undefined) text += String.fromCodePoint(only); // `[*]` is a literal `*`
        else {
          flush();
          segments[segments.length - 1]!.push({ set });
        }
        i = close;
        break;
      }
      case '{':
      case '}':
        throw new PatternError(pattern, 'uses braces, which are not supported; list each alternative as its own pattern');
      case '(':
      case ')':
      case '|':
        throw new PatternError(pattern, `uses "${c}": alternation is not supported; list each alternative as its own pattern (inside [...] it is a plain character)`);
      default:
        text += c;
    }
  }
  flush();
  if (stars > MAX_STARS) throw new PatternError(pattern, `has ${stars} "*"; at most ${MAX_STARS} are allowed`);
  return segments;
}

/** With the `u` flag a surrogate pair is one code point, so this finds only unpaired halves. */
export const LONE_SURROGATE = /\p{Cs}/u;
/**
 * Control, format and other default-ignorable characters (a zero-width space, a byte order
 * mark, a bidi override, a variation selector, NUL, a tab): invisible, or stripped by clients
 * and servers. A name holding one is denied before any rule (docs/decisions.md, §1).
 */
export const INVISIBLE = /[\p{Cc}\p{Cf}\p{Default_Ignorable_Code_Point}]/u;
/** `U+200B` for a code point. */
export const codePointName = (codePoint: number): string => `U+${codePoint.toString(16).toUpperCase().padStart(4, '0')}`;

/**
 * Compile a glob with fnmatch semantics, case-insensitive: `*` any run of characters (`/`
 * included, `**` is the same), `?` one character, `[a-z]` / `[!a-z]` one character in / not in
 * a set (`]` first in a set is a member; a literal `*` is `[*]`); everything else, backslash
 * included, is literal. Rejected with a {@link PatternError} naming the pattern, so that a
 * rule never silently matches nothing, or more than it says: an empty pattern, a leading `!`,
 * braces, `(` `)` `|` outside a set, an unclosed `[`, more than {@link MAX_STARS} `*`, half
 * of a surrogate pair (which would match the start or end of every character that begins or
 * ends with it: `\uD83D*` would match `😀x`), whitespace at either end (`"drop_* "` would
 * match only names ending in a space; `[ ]` writes a space that is meant), a control or format
 * character (a zero-width space), a reversed range (`[z-a]`) and a set starting with `^`.
 *
 * @example
 *   compileGlob('*prod*').matchLower('svc/prod-db') // true
 *   compileGlob('delete_*').matchLower('delete_users/all') // true
 */
export function compileGlob(pattern: string, kind: 'name' | 'value' = 'name'): Glob {
  if (pattern.length === 0) throw new PatternError(pattern, 'is empty');
  if (pattern.startsWith('!')) throw new PatternError(pattern, 'starts with "!"; negation is not supported');
  // A copy-paste slip (`"drop_* "`) that would leave a deny matching nothing anyone calls.
  const edge = /^\s/u.test(pattern) ? 'starts' : /\s$/u.test(pattern) ? 'ends' : undefined;
  if (edge) throw new PatternError(pattern, `${edge} with whitespace, so it matches only names that do too; remove it, or write "[ ]" for a space you mean`);
  const lone = LONE_SURROGATE.exec(pattern);
  if (lone) throw new PatternError(pattern, `contains ${codePointName(lone[0].charCodeAt(0))}, half of a surrogate pair, which is not a character; write the whole character`);
  // An argument value may well hold one, and a rule may look for it (`*\n*`).
  const invisible = kind === 'name' ? INVISIBLE.exec(pattern) : null;
  if (invisible) throw new PatternError(pattern, `contains ${codePointName(invisible[0].codePointAt(0)!)}, an invisible or control character; a name holding one is always denied, so the pattern could match only what no rule decides`);
  const segments = parse(pattern);
  const head = segments[0]![0];
  const tail = segments[segments.length - 1]!.at(-1);
  const prefix = head && 'text' in head ? head.text : '';
  const suffix = tail && 'text' in tail ? tail.text : '';
  if (segments.length === 1 && segments[0]!.length === 1 && head === tail && prefix) {
    return { pattern, prefix, suffix, exact: true, affix: undefined, matchLower: (v) => v === prefix };
  }
  // `text*`, `*text` and `text*text`: what matchSegments does for them (the text is matched by
  // UTF-16 units there too), without walking segments.
  const literalEnds = segments.length === 2 && segments.every((seg) => seg.length === 0 || (seg.length === 1 && 'text' in seg[0]!));
  if (literalEnds) {
    const least = prefix.length + suffix.length;
    const affix = suffix === '' ? 'prefix' : prefix === '' ? 'suffix' : undefined;
    return { pattern, prefix, suffix, exact: false, affix, matchLower: (v) => v.length >= least && v.startsWith(prefix) && v.endsWith(suffix) };
  }
  return { pattern, prefix, suffix, exact: false, affix: undefined, matchLower: (v) => matchSegments(segments, v) };
}

/**
 * The case-insensitive form patterns and values are compared in: `toLowerCase()`, with the
 * Greek final sigma `ς` (what `toLowerCase()` makes of `Σ` at the end of a word, and only there)
 * taken as `σ`, so `*Σ` matches `ΑΣ` as it matches `ΑΣΑ`, and the capital dotted `İ` taken as
 * `i`: `toLowerCase()` makes it two code points (`i` and a combining dot, the one character
 * whose lower case is longer), so `?` and `[İ]` would not match it. Used for both sides, always.
 *
 * @example foldCase('ΑΣ') // 'ασ'
 */
export function foldCase(s: string): string {
  const lower = (s.includes('İ') ? s.replaceAll('İ', 'i') : s).toLowerCase();
  return lower.includes('ς') ? lower.replaceAll('ς', 'σ') : lower;
}

/**
 * Whether some `namespace/name` (two non-empty parts, one `/` between them) can match `pattern`:
 * an `upstreams` pattern that none can would leave its rule matching nothing. Worked out over the
 * pattern's atoms with four states — no `/` yet (nothing, or something before it), one `/`
 * (nothing, or something after it) — a `*` taking any run of characters.
 *
 * @example matchesSomeNamespacedName('tools?github') // true: `?` may be the `/`
 * @example matchesSomeNamespacedName('*\/') // false
 */
export function matchesSomeNamespacedName(pattern: string): boolean {
  // States: 0 nothing yet, 1 a namespace, 2 a namespace and `/`, 3 and a name; a bit each.
  const step = (states: number, slash: boolean, other: boolean): number =>
    (other ? (states & 0b0011 ? 0b0010 : 0) | (states & 0b1100 ? 0b1000 : 0) : 0) | (slash && states & 0b0010 ? 0b0100 : 0);
  let states = 0b0001;
  for (const [i, segment] of parse(pattern).entries()) {
    // A `*` before this segment: any run of characters, so whatever more of them reach.
    for (let before = i > 0 ? -1 : states; before !== states; ) {
      before = states;
      states |= step(states, true, true);
    }
    for (const atom of segment) {
      if ('text' in atom) for (const c of atom.text) states = step(states, c === '/', c !== '/');
      else states = step(states, atom.set === undefined || setHas(atom.set, 0x2f), atom.set === undefined || !onlySlash(atom.set));
    }
  }
  return (states & 0b1000) !== 0;
}

const setHas = (set: CharSet, cp: number): boolean => set.negated !== (set.singles.has(cp) || inRanges(set.ranges, cp));
/** A set whose one member is `/` (`[/-/]`; `[/]` alone is parsed as literal text; a reversed range is refused). */
const onlySlash = (set: CharSet): boolean => !set.negated && [...set.singles].every((cp) => cp === 0x2f) && set.ranges.every((cp) => cp === 0x2f);

/** Compile several globs; the first bad one throws. */
export function compileGlobs(patterns: readonly string[]): Glob[] {
  return patterns.map((p) => compileGlob(p));
}

/** True when any glob matches. `valueLower` must be {@link foldCase}d by the caller (once per call). */
export function anyMatch(globs: readonly Glob[], valueLower: string): Glob | undefined {
  for (const g of globs) if (g.matchLower(valueLower)) return g;
  return undefined;
}
