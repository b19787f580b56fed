import { describe, expect, it } from 'vitest';
import { parseServeConfig } from './config.js';

describe('size flags', () => {
  const limit = (v: string) => parseServeConfig(['--gateway-response-limit', v, '--data-dir', '/tmp/x'], {}).gatewayResponseLimit;
  it('--gateway-response-limit is bytes, in units of 1,024, 16 MiB by default', () => {
    expect(parseServeConfig(['--data-dir', '/tmp/x'], {}).gatewayResponseLimit).toBe(16 * 1024 * 1024);
    expect(limit('512kb')).toBe(512 * 1024);
    expect(limit('1GB')).toBe(1024 ** 3);
    expect(limit('100b')).toBe(100);
  });
  it.each(['16', '16 mb', '1.5mb', 'lots', '16tb'])('%j is refused, saying what a size looks like', (v) => {
    expect(() => limit(v)).toThrow(/--gateway-response-limit.*use a size like 512kb, 16mb or 1gb/);
  });
});
