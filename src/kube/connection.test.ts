import { describe, expect, it } from 'vitest';
import { connectionFailure, neverSent } from './connection.js';

/** What client-node throws when undici gets no answer: a "fetch failed" TypeError, wrapped by our stores. */
const failed = (code: string) => new Error('GuardApproval team-a/apr-3f9c2a1b7d4e not read: fetch failed', { cause: new TypeError('fetch failed', { cause: Object.assign(new Error(code), { code }) }) });

describe('connectionFailure and neverSent', () => {
  it('a refused or unresolvable connection never reached the server; a reset after sending may have', () => {
    expect([connectionFailure(failed('ECONNREFUSED')), neverSent(failed('ECONNREFUSED'))]).toEqual(['ECONNREFUSED', true]);
    expect([connectionFailure(failed('ENOTFOUND')), neverSent(failed('ENOTFOUND'))]).toEqual(['ENOTFOUND', true]);
    expect([connectionFailure(failed('ECONNRESET')), neverSent(failed('ECONNRESET'))]).toEqual(['ECONNRESET', false]);
    expect([connectionFailure(failed('UND_ERR_HEADERS_TIMEOUT')), neverSent(failed('UND_ERR_HEADERS_TIMEOUT'))]).toEqual(['UND_ERR_HEADERS_TIMEOUT', false]);
  });

  it('an answer from the server (an HTTP error) is no connection failure', () => {
    const http = new Error('HTTP 403: forbidden', { cause: { code: 403 } });
    expect([connectionFailure(http), neverSent(http)]).toEqual([undefined, false]);
  });
});
