import { describe, expect, it } from 'vitest';
import { exactNumber, refusedJson } from './json-limits.js';

const inexact = (n: string) => `the number ${n} cannot be kept exactly (JSON numbers here are IEEE doubles: integers up to ±2^53, about 16 significant digits); send it as a string`;

describe('refusedJson: a number parsing would change is found, in any spelling', () => {
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
    expect(refusedJson(`{"a":[1,{"b":${n}}]}`)).toBe(inexact(n));
  });

  it.each(['0.10000000000000001', '0.30000000000000004', '0.1', '150.0', '1.50e2', '-0', '1e15', '-1e-7', '12345678901234.5', '9007199254740991', '0.000000000000001', '"9007199254740993"', '"v1e5"'])(
    '%s reads back as written',
    (n) => {
      expect(refusedJson(`{"a":${n}}`)).toBeUndefined();
    },
  );

  it('names the first such number, and text that is not JSON is left to its parser', () => {
    expect(refusedJson('[1, 1e400, 9007199254740993]')).toBe(inexact('1e400'));
    expect(refusedJson('{"a": 1e400')).toBeUndefined();
  });
});

describe('refusedJson: an object key "__proto__" is refused, however it is spelt', () => {
  it.each(['{"__proto__":{"admin":true}}', '{"a":[{"__proto__":1}]}', '{"\\u005f_proto__":1}', '{"\\u005F\\u005Fproto\\u005F\\u005F":{}}'])('%s', (text) => {
    expect(refusedJson(text)).toMatch(/^the JSON has an object key "__proto__"/);
  });

  it.each(['{"proto":1}', '{"a":"__proto__"}', '{"a":"caf\\u00e9"}', '["__proto__"]'])('%s is taken', (text) => {
    expect(refusedJson(text)).toBeUndefined();
  });
});

describe('exactNumber: the number a decimal string writes, when a double holds it as written', () => {
  it.each([
    [' 600 ', 600],
    ['+6e2', 600],
    ['.5', 0.5],
    ['1e20', 1e20], // an exact double, though beyond 2^53
    ['10000000000000000', 1e16],
    ['0.10000000000000001', 0.1], // %.17g of 0.1
  ])('%j is %d', (text, n) => {
    expect(exactNumber(text)).toBe(n);
  });
  it.each(['9007199254740993', '500.00000000000001', '0x10', '600 USD', 'Infinity', '1e400', '', '.', '-'])('%j is not', (text) => {
    expect(exactNumber(text)).toBeUndefined();
  });
});
