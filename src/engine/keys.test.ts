import { describe, expect, it } from 'vitest';
import { foldKey } from './keys.js';

describe('foldKey: keys Go’s encoding/json takes as one are one', () => {
  it.each([
    ['name', 'NAME'],
    ['arguments', 'Arguments'],
    ['arguments', 'argument\u017f'], // ſ (long s) folds to s
    ['kind', '\u212aind'], // K (Kelvin sign) folds to k
    ['\u00e5', '\u212b'], // Å (Angstrom sign) folds to å
    ['\u00df', '\u1e9e'], // ß and ẞ
    ['\u03d1', '\u03f4'], // ϑ and ϴ: no common upper- or lowercase, one fold orbit (θ)
    ['\u00b5', '\u039c'], // µ (micro sign) and Μ
    ['\u03c2', '\u03a3'], // ς and Σ
    ['a\ud800', 'a\udc00'], // lone surrogates: Go decodes both escapes as U+FFFD
  ])('%j and %j fold alike', (a, b) => {
    expect(foldKey(a)).toBe(foldKey(b));
  });
  it('folds a few pairs Go keeps apart (ß and ss): a refusal too many, never one too few', () => {
    expect(foldKey('stra\u00dfe')).toBe(foldKey('STRASSE'));
  });
  it.each([
    ['name', 'name '],
    ['\u0130', 'i'], // İ folds only to itself in Go
    ['\u00df', 's'],
  ])('%j and %j stay apart', (a, b) => {
    expect(foldKey(a)).not.toBe(foldKey(b));
  });
});
