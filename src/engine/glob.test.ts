import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { compileGlob, foldCase, MAX_STARS, PatternError } from './glob.js';

const matches = (pattern: string, value: string) => compileGlob(pattern).matchLower(foldCase(value));

describe('glob semantics (fnmatch, case-insensitive)', () => {
  it.each([
    // `*` crosses `/`: targets are tool names, URLs and paths, and a deny must catch them all.
    ['*prod*', 'svc/prod-db', true],
    ['*prod*', 'https://prod.example.com/x', true],
    ['*prod*', 'svc/staging-db', false],
    ['delete_*', 'delete_users/all', true],
    ['delete_*', 'delete_', true],
    ['delete_*', 'undelete_x', false],
    ['a/**', 'a/b/c', true],
    ['**/foo', 'x/y/foo', true],
    ['**', '', true],
    ['*', 'a/b', true],
    ['a*b*c', 'a/b/c', true],
    ['a*b*c', 'acb', false],
    ['mid*dle', 'middle', true],
    ['mid*dle', 'midle', false],
    // case-insensitive, both ways
    ['DROP_*', 'drop_table', true],
    ['drop_*', 'DROP_TABLE', true],
    ['[A-C]x', 'bX', true],
    // Σ lowercases to ς at the end of a word and to σ elsewhere: both sides fold ς into σ
    ['*Σ', 'ΑΣ', true],
    ['*σ', 'ΑΣ', true],
    ['*ς', 'ΑΣΑ', false],
    ['aΣ*', 'AΣB', true],
    ['[Σ]', 'ς', true],
    // İ lowercases to two code points (i and a combining dot): both sides take it as i, one character
    ['kill_?', 'kill_İ', true],
    ['drop_[İ]', 'drop_İ', true],
    ['drop_i', 'DROP_İ', true],
    ['drop_İ*', 'drop_ix', true],
    // `?` is one character: one code point, an emoji included, a `/` too
    ['?', 'a', true],
    ['?', '/', true],
    ['?', '😀', true],
    ['?', 'ab', false],
    ['?', '', false],
    ['a?c', 'a😀c', true],
    ['*?', '😀', true],
    ['??', '😀', false],
    ['x[😀-😂]y', 'x😁y', true],
    ['x[!😀]y', 'x😀y', false],
    ['x[!😀]y', 'x😁y', true],
    ['*[!😀]a*', 'x😀a', false], // never half of a surrogate pair
    // A range is the code points between its ends as written, and matches either case of them.
    ['[@-Z]', 'q', true],
    ['[@-Z]', '@', true],
    ['[@-Z]', '_', false], // folding the ends first made it [@-z], which holds _
    ['[Z-a]', '_', true],
    ['[Z-a]', 'z', true], // Z is in it
    ['[Z-a]', 'b', false],
    ['[A-C]', '\u212a', false], // the Kelvin sign is k, not in A-C
    ['[J-L]', '\u212a', true],
    ['[!A-Z]', 'q', false],
    ['*[!😀]a*', 'x😁a', true],
    ['*[!😀]', 'x😀', false],
    // sets
    ['[!a]', 'b', true],
    ['[!a]', 'a', false],
    ['[!a]', 'A', false],
    ['[!a]', '', false],
    ['[a-c]', 'b', true],
    ['[a-c]', 'd', false],
    ['[]]', ']', true], // `]` first in a set is a member
    ['[!]]', 'a', true],
    ['[!]]', ']', false],
    ['[a-]', '-', true], // `-` last (or first) is literal
    ['[-a]', '-', true],
    ['[*]', '*', true], // the way to write a literal `*`
    ['[*]', 'x', false],
    ['[?]', 'x', false],
    ['[[]', '[', true],
    ['[{}()|]', '{', true], // inside a set these are plain characters
    ['[{}()|]x', '|x', true],
    ['[a^]', '^', true], // `^` is a member in fnmatch (first in a set it is refused: see below)
    ['[a^]', 'b', false],
    // everything else is literal, backslash included (fnmatch has no escapes)
    ['a\\*', 'a\\', true],
    ['a\\*', 'a\\xyz', true],
    ['a\\*', 'a*', false],
    ['a.b', 'a.b', true],
    ['a.b', 'axb', false],
    ['a+b', 'a+b', true],
    ['x!', 'x!', true],
    ['$^', '$^', true],
    // whitespace inside a pattern is literal; at an end it is written as a set
    ['drop table', 'DROP TABLE', true],
    ['drop_*[ ]', 'drop_x ', true],
    ['drop_*[ ]', 'drop_x', false],
  ])('%j vs %j → %s', (pattern, value, expected) => {
    expect(matches(pattern, value)).toBe(expected);
  });

  it.each([
    ['', /is empty/],
    ['a{b,c}', /braces/],
    ['}', /braces/],
    ['+(a|b)', /"\(": alternation is not supported/],
    ['a|b', /"\|": alternation is not supported/],
    ['x)', /"\)": alternation/],
    ['!(x)', /starts with "!"; negation is not supported/],
    ['!delete', /starts with "!"; negation is not supported/],
    ['a[bc', /unclosed "\["/],
    ['a[', /unclosed "\["/],
    ['[]', /unclosed "\["/], // `]` right after `[` is a member, so this set never closes
    ['[!]', /unclosed "\["/],
    ['*a*a*a*a*a*a*a*a*a', /has 9 "\*"; at most 8 are allowed/],
    // Half of 😀 would match every character that starts (ends) with it.
    ['\uD83D*', /contains U\+D83D, half of a surrogate pair/],
    ['*\uDE00', /contains U\+DE00, half of a surrogate pair/],
    ['[\uD83D]x', /contains U\+D83D/],
    // A slip from copying: it would match only names with the same whitespace.
    ['drop_* ', /ends with whitespace, so it matches only names that do too; remove it, or write "\[ \]"/],
    [' drop_*', /starts with whitespace/],
    ['drop_*\t', /ends with whitespace/],
    ['\u00A0drop_*', /starts with whitespace/],
    ['drop_*\n', /ends with whitespace/],
    // Invisible: no name holding one is ever decided by a rule (it is denied first).
    ['rm_*\u200b', /contains U\+200B, an invisible or control character/],
    ['rm_\u00ad*', /contains U\+00AD/],
    ['kill\u0000_*', /contains U\+0000/],
    ['x_\t*', /contains U\+0009/],
    // Sets that can only be mistakes: empty, or read otherwise than meant.
    ['drop_[z-a]*', /has the range "z-a", whose ends are reversed \(U\+007A after U\+0061\), so it matches nothing/],
    ['wipe_[a-Z]', /range "a-Z", whose ends are reversed/],
    ['del_[^t]*', /starts a set with "\^", which here is a member, not "not"; write "\[!…\]"/],
  ])('rejects %j: %s', (pattern, message) => {
    let err: unknown;
    try {
      compileGlob(pattern);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PatternError);
    expect((err as Error).message).toContain(`pattern ${JSON.stringify(pattern)} `);
    expect((err as Error).message).toMatch(message);
  });

  it('an argument value pattern may hold a control or format character: a rule may look for one', () => {
    expect(compileGlob('*\n*', 'value').matchLower(foldCase('rm -rf /\necho ok'))).toBe(true);
    expect(compileGlob('*\u200b*', 'value').matchLower('a\u200bb')).toBe(true);
    expect(() => compileGlob('*\n*')).toThrow(/contains U\+000A, an invisible or control character/);
  });

  it(`allows ${MAX_STARS} "*" and counts only those outside sets`, () => {
    expect(matches('*a'.repeat(MAX_STARS), 'xaya'.repeat(4))).toBe(true);
    expect(matches(`*${'[*]'.repeat(20)}*`, `x${'*'.repeat(20)}`)).toBe(true);
  });

  it('matches hostile inputs in linear-ish time (no backtracking)', () => {
    // Exponential for a backtracking matcher: many stars, a value that almost matches at every split.
    const value = 'a'.repeat(200_000);
    const t0 = process.hrtime.bigint();
    expect(compileGlob('*a*a*a*a*a*a*b*').matchLower(value)).toBe(false);
    expect(compileGlob('*?a?a?a?a?a?a?a?b*').matchLower(value)).toBe(false);
    expect(compileGlob('*[a-z]a[!b]a?a?a?[!a]*a').matchLower(value)).toBe(false);
    expect(compileGlob('*a?a?a?a*a*').matchLower(value)).toBe(true);
    // Printed, not asserted (the machine is shared): a backtracking matcher would not return at all.
    process.stderr.write(`[glob] hostile matches took ${Number(process.hrtime.bigint() - t0) / 1e6} ms\n`);
  });
});

/** The metacharacters of a pattern, and whitespace (refused at either end), each written as a one-character set. */
const escape = (s: string) => s.replace(/[*?[\]{}()|\s]/g, (c) => `[${c}]`);

describe('glob properties', () => {
  // Without control and format characters: a pattern holding one is refused (no rule decides such a name).
  const anyString = fc
    .string({ unit: fc.oneof(fc.constantFrom('*', '?', '[', ']', '{', '}', '(', ')', '|', '!', '/', '\\', '-', 'A', 'É', '😀'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })), maxLength: 24 })
    .filter((s) => !/[\p{Cc}\p{Cf}\p{Default_Ignorable_Code_Point}]/u.test(s));

  it('for any string s, with its metacharacters escaped, `*`, `*s*`, `s*`, `*s` and `s` all match s', () => {
    fc.assert(
      fc.property(anyString, (s) => {
        const e = escape(s);
        for (const pattern of ['*', `*${e}*`, `*${e}`]) expect(matches(pattern, s), pattern).toBe(true);
        for (const pattern of [`${e}*`, e].filter((p) => p.length > 0)) {
          // A leading "!" cannot be written at all ([!] would open a negated set): refused, never misread.
          if (s.startsWith('!')) expect(() => compileGlob(pattern)).toThrow(/starts with "!"/);
          else expect(matches(pattern, s), pattern).toBe(true);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('agrees with fnmatch (a port of CPython fnmatch.translate to a RegExp) on random patterns and values', () => {
    const token = fc.constantFrom('a', 'b', 'B', '/', '-', '!', '^', ']', '[', '*', '**', '?', '\\', '😀', 'é', 'É', 'Σ', 'ς', '[a-c]', '[!a]', '[]a]', '[z-a]', '[!-]', '[a-]', '[😀-😂]', '[!😀]', '[*]');
    const valueChar = fc.constantFrom('a', 'b', 'c', 'B', '/', '-', '!', '^', ']', '[', '*', '?', '\\', '😀', '😁', 'é', 'É', 'z', 'Σ', 'σ', 'ς');
    fc.assert(
      fc.property(fc.array(token, { minLength: 1, maxLength: 9 }), fc.array(fc.array(valueChar, { maxLength: 9 }), { minLength: 1, maxLength: 20 }), (tokens, values) => {
        const pattern = tokens.join('');
        // Case-insensitive as a RegExp's `iu` flags make it: a range matches a letter whose
        // other case is in it, as written (`[@-Z]` holds `a`, not `_`).
        const reference = fnmatchReference(pattern);
        let glob;
        try {
          glob = compileGlob(pattern);
        } catch (err) {
          const message = (err as Error).message;
          // Refused on purpose; an unclosed "[" must be one that fnmatch saw too.
          if (/unclosed/.test(message)) expect(reference.unclosed, pattern).toBe(true);
          else expect(message).toMatch(/starts with "!"|at most 8|whose ends are reversed|starts a set with "\^"/);
          return;
        }
        expect(reference.unclosed, pattern).toBe(false);
        for (const chars of values) {
          const value = chars.join('');
          expect(glob.matchLower(foldCase(value)), `${pattern} vs ${value}`).toBe(reference.re.test(value));
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('every string a glob matches starts with its prefix and ends with its suffix', () => {
    const patternPart = fc.constantFrom('a', 'b', '_', '.', '/', '*', '?', '[ab]', '[!a]', '[*]', '\\', '**', '😀');
    const valueChar = fc.constantFrom('a', 'b', '_', '.', '/', '*', '\\', '😀');
    fc.assert(
      fc.property(fc.array(patternPart, { minLength: 1, maxLength: 8 }), fc.array(fc.array(valueChar, { maxLength: 8 }), { minLength: 1, maxLength: 30 }), (parts, values) => {
        const pattern = parts.join('');
        if (pattern.split('*').length - 1 > MAX_STARS) return;
        const glob = compileGlob(pattern);
        // Strings built from the pattern's own literal text are the likely matches: try them too.
        const literal = pattern.replace(/\[ab\]|\[!a\]/g, 'b').replace(/\[\*\]/g, '*');
        const likely = ['', 'a', 'a/b', '😀'].map((filler) => literal.replace(/\*+|\?/g, filler));
        for (const value of [...values.map((chars) => chars.join('')), ...likely]) {
          if (!glob.matchLower(value)) continue;
          expect(value.startsWith(glob.prefix), `${pattern} matches ${value}`).toBe(true);
          expect(value.endsWith(glob.suffix), `${pattern} matches ${value}`).toBe(true);
          if (glob.exact) expect(value).toBe(glob.prefix);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it.each([
    ['delete_*', 'delete_', '', false],
    ['*_production', '', '_production', false],
    ['mid*dle', 'mid', 'dle', false],
    ['a/**', 'a/', '', false],
    ['**/foo', '', '/foo', false],
    ['a?b', 'a', 'b', false],
    ['[ab]x', '', 'x', false],
    ['a\\*b', 'a\\', 'b', false],
    ['[*]x*', '*x', '', false],
    ['*', '', '', false],
    ['Exact_Name', 'exact_name', 'exact_name', true],
    ['a[*]b', 'a*b', 'a*b', true],
  ])('%j has prefix %j, suffix %j (exact: %s)', (pattern, prefix, suffix, exact) => {
    expect(compileGlob(pattern)).toMatchObject({ prefix, suffix, exact });
  });
});

/**
 * CPython's `fnmatch.translate` (3.11), ported line by line to a JavaScript RegExp over code
 * points: an independent implementation to compare the matcher with. `unclosed` tells whether
 * it met a `[` without a `]` (fnmatch takes it literally; we refuse the pattern).
 */
function fnmatchReference(pat: string): { re: RegExp; unclosed: boolean } {
  const p = Array.from(pat);
  const n = p.length;
  const out: string[] = [];
  let unclosed = false;
  // With the u flag only syntax characters may be escaped (and `-`, inside a class only).
  const esc = (c: string) => (/[\^$\\.*+?()[\]{}|/]/u.test(c) ? `\\${c}` : c);
  const escInSet = (c: string) => (c === '-' ? '\\-' : esc(c));
  let i = 0;
  while (i < n) {
    const c = p[i]!;
    i++;
    if (c === '*') {
      if (out[out.length - 1] !== '.*') out.push('.*');
    } else if (c === '?') out.push('.');
    else if (c === '[') {
      let j = i;
      if (j < n && p[j] === '!') j++;
      if (j < n && p[j] === ']') j++;
      while (j < n && p[j] !== ']') j++;
      if (j >= n) {
        out.push('\\[');
        unclosed = true;
        continue;
      }
      const negated = p[i] === '!';
      // Chunks separated by range hyphens, as in CPython; then empty ranges removed.
      const chunks: string[][] = [];
      let k = negated ? i + 2 : i + 1;
      let start = i;
      for (;;) {
        k = p.indexOf('-', k);
        if (k < 0 || k >= j) break;
        chunks.push(p.slice(start, k));
        start = k + 1;
        k += 3;
      }
      const rest = p.slice(start, j);
      if (rest.length > 0) chunks.push(rest);
      else if (chunks.length > 0) chunks[chunks.length - 1]!.push('-');
      for (let m = chunks.length - 1; m > 0; m--) {
        if (chunks[m - 1]!.at(-1)!.codePointAt(0)! > chunks[m]![0]!.codePointAt(0)!) {
          chunks[m - 1] = [...chunks[m - 1]!.slice(0, -1), ...chunks[m]!.slice(1)];
          chunks.splice(m, 1);
        }
      }
      let members = chunks.map((chunk) => chunk.map(escInSet).join('')).join('-');
      if (negated) members = members.slice(1); // drop the "!"
      i = j + 1;
      if (members === '') out.push(negated ? '.' : '(?!)');
      else out.push(`[${negated ? '^' : ''}${members}]`);
    } else out.push(esc(c));
  }
  return { re: new RegExp(`^(?:${out.join('')})$`, 'siu'), unclosed };
}
