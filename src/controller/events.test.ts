/**
 * Event fields are cut to the API server's limits in bytes of UTF-8, never inside a character
 * (src/controller/events.ts). That the API server accepts the result is checked against a real
 * one in tests/cluster/events.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { incidentEvent, truncateUtf8 } from './events.js';

const bytes = (s: string) => Buffer.byteLength(s);
/** True when `s` has no lone surrogate: a cut inside a pair would leave one. */
const wellFormed = (s: string) => !/\p{Cs}/u.test(s);

describe('truncateUtf8', () => {
  it.each([
    ['1,000 emoji (4,000 bytes, 2,000 UTF-16 code units)', '😀'.repeat(1000), 1024, '😀'.repeat(255) + '…'],
    ['1,023 ASCII then an emoji (a cut at 1,024 code units splits its surrogate pair)', `${'a'.repeat(1023)}😀`, 1024, `${'a'.repeat(1021)}…`],
    ['an emoji across the cut', `${'a'.repeat(1020)}😀b`, 1024, `${'a'.repeat(1020)}…`],
    ['3-byte characters (CJK)', '漢'.repeat(400), 1024, '漢'.repeat(340) + '…'],
    ['an ASCII note 1 byte too long', 'a'.repeat(1025), 1024, `${'a'.repeat(1021)}…`],
  ])('a note of %s is cut to at most 1024 bytes, ending with the marker', (_what, note, max, cut) => {
    const out = truncateUtf8(note, max, '…');
    expect(out).toBe(cut);
    expect(bytes(out)).toBeLessThanOrEqual(max);
    expect(wellFormed(out)).toBe(true);
  });

  it.each([
    ['exactly the limit in bytes', '😀'.repeat(256)],
    ['ASCII under the limit', 'Tool drop_table denied by policy no-drops'],
    ['empty', ''],
  ])('a text of %s is unchanged', (_what, text) => {
    expect(truncateUtf8(text, 1024, '…')).toBe(text);
  });

  it('a reportingInstance of 64 two-byte characters (128 UTF-16 units, 256 bytes) is cut to 128 bytes, with no marker', () => {
    const out = truncateUtf8('é'.repeat(100), 128);
    expect(out).toBe('é'.repeat(64));
    expect(truncateUtf8('é'.repeat(100), 127)).toBe('é'.repeat(63)); // never half of one
  });

  it('a lone surrogate counts as the 3 bytes of U+FFFD it is sent as', () => {
    const lone = '\uD83D';
    expect(truncateUtf8(`${lone}${'a'.repeat(1021)}`, 1024)).toBe(`${lone}${'a'.repeat(1021)}`);
    expect(truncateUtf8(`${lone}${'a'.repeat(1022)}`, 1024)).toBe(`${lone}${'a'.repeat(1021)}`);
  });
});

describe('incidentEvent', () => {
  it("PolicyGuard's own findings keep their reason; one a caller filed is IncidentReported and names who filed it, whatever type it claims", () => {
    expect(incidentEvent({ type: 'identity_mismatch', severity: 'high', description: 'Caller x is not bound to agent y', evidence: { claimed_agent: 'y' } })).toEqual({
      reason: 'IdentityMismatch',
      note: 'high: Caller x is not bound to agent y',
    });
    expect(incidentEvent({ type: 'identity_mismatch', severity: 'high', description: 'Caller x is not bound to agent y', evidence: { reported_by: 'system:serviceaccount:team-b:bot-b' } })).toEqual({
      reason: 'IncidentReported',
      note: 'high: reported by system:serviceaccount:team-b:bot-b: Caller x is not bound to agent y',
    });
    expect(incidentEvent({ type: 'data_exfiltration', severity: 'critical', description: 'exfil', evidence: {} }).reason).toBe('IncidentReported');
  });
});
