import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { compileGlob, literalEnds } from './glob.js';

describe('literal ends of a glob (what the rule index relies on)', () => {
  it.each([
    ['delete_*', 'delete_', ''],
    ['*_production', '', '_production'],
    ['mid*dle', 'mid', 'dle'],
    ['svc_*_prod', 'svc_', '_prod'],
    ['a/**', 'a', ''],
    ['**/foo', '', 'foo'],
    ['a/**/b', 'a', 'b'],
    ['x/../y*', '', ''],
    ['a//b*', '', ''],
    ['a\\*b', 'a', 'b'],
    ['[ab]x', '', 'x'],
    ['*', '', ''],
  ])('%s → prefix %j, suffix %j', (pattern, prefix, suffix) => {
    expect(literalEnds(pattern)).toEqual({ prefix, suffix });
  });

  it('every string a glob matches starts with its prefix and ends with its suffix', () => {
    const patternChar = fc.constantFrom('a', 'b', '_', '.', '/', '*', '?', '[ab]', '\\*', '**', '..');
    const valueChar = fc.constantFrom('a', 'b', '_', '.', '/', '*');
    fc.assert(
      fc.property(fc.array(patternChar, { minLength: 1, maxLength: 8 }), fc.array(fc.array(valueChar, { maxLength: 8 }), { minLength: 1, maxLength: 30 }), (parts, values) => {
        const pattern = parts.join('');
        if (pattern.split('*').length - 1 > 8) return;
        const glob = compileGlob(pattern);
        for (const chars of values) {
          const value = chars.join('');
          if (glob.matchLower(value)) {
            expect(value.startsWith(glob.prefix), `${pattern} matches ${value}`).toBe(true);
            expect(value.endsWith(glob.suffix), `${pattern} matches ${value}`).toBe(true);
          }
        }
        // Strings built from the pattern's own literal text are the likely matches: try them too.
        // `/**` and `**/` may match nothing at all, slash included.
        const literal = pattern.replace(/\[ab\]/g, 'a').replace(/\\\*/g, '*');
        for (const filler of ['', 'a', 'a/b', '.']) {
          for (const value of [literal.replace(/\*+|\?/g, filler), literal.replace(/\/\*\*|\*\*\//g, '').replace(/\*+|\?/g, filler)]) {
            if (glob.matchLower(value)) {
              expect(value.startsWith(glob.prefix), `${pattern} matches ${value}`).toBe(true);
              expect(value.endsWith(glob.suffix), `${pattern} matches ${value}`).toBe(true);
            }
          }
        }
      }),
      { numRuns: 3000 },
    );
  });
});
