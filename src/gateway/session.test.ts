import { createSecretKey, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { openSession, sealSession, sessionKey } from './session.js';

const audit = createSecretKey(randomBytes(48));

describe('gateway session ids', () => {
  it('open on any replica that shares the audit key, for the caller and upstream they were sealed for', () => {
    const id = sealSession(sessionKey(audit), 'tools/github', 'upstream-session-1', 'sa:bot');
    expect(openSession(sessionKey(audit), id, 'tools/github', 'sa:bot')).toBe('upstream-session-1');
  });
  it('do not open for another caller, another upstream, another key, or once edited', () => {
    const key = sessionKey(audit);
    const id = sealSession(key, 'tools/github', 'upstream-session-1', 'sa:bot');
    expect(openSession(key, id, 'tools/github', 'sa:mallory')).toBeUndefined();
    expect(openSession(key, id, 'tools/gitlab', 'sa:bot')).toBeUndefined();
    expect(openSession(sessionKey(createSecretKey(randomBytes(48))), id, 'tools/github', 'sa:bot')).toBeUndefined();
    expect(openSession(sessionKey(undefined), id, 'tools/github', 'sa:bot')).toBeUndefined();
    const [prefix, payload, tag] = id.split('.');
    const forged = Buffer.from(JSON.stringify({ u: 'tools/github', s: 'someone-elses-session' })).toString('base64url');
    expect(openSession(key, `${prefix}.${forged}.${tag}`, 'tools/github', 'sa:bot')).toBeUndefined();
    expect(openSession(key, `${prefix}.${payload}`, 'tools/github', 'sa:bot')).toBeUndefined();
    expect(openSession(key, 'upstream-session-1', 'tools/github', 'sa:bot')).toBeUndefined();
  });
  it('never throw on arbitrary input', () => {
    const key = sessionKey(audit);
    fc.assert(
      fc.property(fc.string(), (s) => {
        expect(openSession(key, s, 'tools/github', 'sa:bot')).toBeUndefined();
        expect(openSession(key, `pgs1.${s}`, 'tools/github', 'sa:bot')).toBeUndefined();
      }),
    );
  });
  it('without an audit key each replica has a key of its own: an id opens only where it was sealed', () => {
    const mine = sessionKey(undefined);
    const id = sealSession(mine, 'tools/github', 'upstream-session-1', 'sa:bot');
    expect(openSession(mine, id, 'tools/github', 'sa:bot')).toBe('upstream-session-1');
    expect(openSession(sessionKey(undefined), id, 'tools/github', 'sa:bot')).toBeUndefined();
  });
});
