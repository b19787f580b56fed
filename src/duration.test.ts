import { describe, expect, it } from 'vitest';
import { parseDuration } from './duration.js';
import { parseRate } from './auth/rate-limit.js';
import { parseServeConfig } from './config.js';

describe('one duration syntax for flags, rates and time ranges', () => {
  it.each([
    ['500ms', 500],
    ['15s', 15_000],
    ['2m', 120_000],
    ['24h', 86_400_000],
    ['7d', 604_800_000],
    [' 1H ', 3_600_000],
  ])('%j is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });
  it.each(['', '15', 's', '1.5s', '-1s', '1w', '1 s', '10000000000s'])('%j is not a duration', (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });
  it('rates and flags use it', () => {
    expect(parseRate('60/1m')).toEqual({ requests: 60, windowMs: 60_000 });
    expect(parseRate('60/1w')).toBeUndefined();
    expect(parseServeConfig(['--reports-window', '24h', '--data-dir', '/tmp/x'], {}).reportsWindow).toBe(86_400_000);
    expect(() => parseServeConfig(['--lease-duration', 'soon', '--data-dir', '/tmp/x'], {})).toThrow(/--lease-duration.*use a whole number and ms, s, m, h or d/);
  });
});
