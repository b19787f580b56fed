/**
 * describeKubeError: one line that says what went wrong, for the error shapes client-node
 * gives (an API status with or without a body) and for a connection that failed before any.
 */
import { describe, expect, it } from 'vitest';
import { describeKubeError } from './client.js';

/** An API error as client-node 2.x throws it: the HTTP code and the response body. */
const apiError = (code: number, body: unknown) => Object.assign(new Error(`HTTP-Code: ${code}\nMessage: Unknown API Status Code!\nBody: ${String(body)}`), { code, body });

describe('describeKubeError', () => {
  it.each([
    ['a Status body', apiError(403, JSON.stringify({ kind: 'Status', message: 'forbidden: cannot get' })), 'HTTP 403: forbidden: cannot get'],
    ['a body that is not JSON', apiError(502, 'Bad Gateway'), 'HTTP 502: Bad Gateway'],
    ['no body (a 401 from a bad token)', apiError(401, undefined), 'HTTP 401'],
    ['an empty body', apiError(500, ''), 'HTTP 500'],
    ['a refused connection', new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }) }), 'fetch failed: ECONNREFUSED'],
    ['a cause without a code', new TypeError('fetch failed', { cause: new Error('other side closed') }), 'fetch failed: other side closed'],
    ['a plain error', new Error('no answer from the API server within 10000 ms'), 'no answer from the API server within 10000 ms'],
    ['not an Error', 'boom', 'boom'],
  ])('%s', (_what, err, text) => {
    expect(describeKubeError(err)).toBe(text);
  });
});
