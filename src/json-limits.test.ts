import { describe, expect, it } from 'vitest';
import { inexactNumber } from './json-limits.js';

describe('inexactNumber: a number parsing would change is found, in any spelling', () => {
  it.each([
    ['9007199254740993', 'an integer beyond 2^53'],
    ['-9007199254740993', 'below -2^53'],
    ['9007199254740993.0', 'with a fraction of zeros'],
    ['900719925474099.3e1', 'with fifteen digits before the point and a one-digit exponent'],
    ['9007199.254740993e9', 'with the point moved'],
    ['9.1e15', 'with two digits and an exponent'],
    ['1e23', 'as a power of ten'],
    ['1e400', 'out of range'],
    ['1e-400', 'too small: it parses to 0'],
    ['500.00000000000001', 'a decimal whose double is 500'],
    ['0.12345678901234567', 'a decimal whose double reads back as 0.12345678901234566'],
  ])('%s (%s)', (n) => {
    expect(inexactNumber(`{"a":[1,{"b":${n}}]}`)).toBe(n);
  });

  it.each(['0.30000000000000004', '0.1', '150.0', '1.50e2', '-0', '1e15', '-1e-7', '12345678901234.5', '9007199254740991', '0.000000000000001', '"9007199254740993"', '"v1e5"'])(
    '%s reads back as written',
    (n) => {
      expect(inexactNumber(`{"a":${n}}`)).toBeUndefined();
    },
  );

  it('names the first such number, and text that is not JSON is left to its parser', () => {
    expect(inexactNumber('[1, 1e400, 9007199254740993]')).toBe('1e400');
    expect(inexactNumber('{"a": 1e400')).toBeUndefined();
  });
});
