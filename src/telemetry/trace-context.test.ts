import { describe, expect, it } from 'vitest';
import { formatTraceparent, newSpanId, newTraceId, parseTraceparent } from './trace-context.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';

describe('parseTraceparent', () => {
  it.each([
    [`00-${TRACE}-${SPAN}-01`, { traceId: TRACE, spanId: SPAN, sampled: true }],
    [`00-${TRACE}-${SPAN}-00`, { traceId: TRACE, spanId: SPAN, sampled: false }],
    [` 00-${TRACE}-${SPAN}-03 `, { traceId: TRACE, spanId: SPAN, sampled: true }],
    // A later version may add fields; what version 00 defines is still read.
    [`01-${TRACE}-${SPAN}-01-extra`, { traceId: TRACE, spanId: SPAN, sampled: true }],
  ])('%s is read', (header, expected) => {
    expect(parseTraceparent(header)).toEqual(expected);
  });

  it.each([
    ['missing', undefined],
    ['two headers', [`00-${TRACE}-${SPAN}-01`, `00-${TRACE}-${SPAN}-01`]],
    ['upper case', `00-${TRACE.toUpperCase()}-${SPAN}-01`],
    ['version ff', `ff-${TRACE}-${SPAN}-01`],
    ['version 00 with a fifth field', `00-${TRACE}-${SPAN}-01-x`],
    ['all-zero trace id', `00-${'0'.repeat(32)}-${SPAN}-01`],
    ['all-zero span id', `00-${TRACE}-${'0'.repeat(16)}-01`],
    ['short trace id', `00-${TRACE.slice(1)}-${SPAN}-01`],
  ])('%s: ignored (a new trace starts)', (_what, header) => {
    expect(parseTraceparent(header)).toBeUndefined();
  });
});

describe('ids and formatting', () => {
  it('new ids are valid, distinct and round-trip through a traceparent', () => {
    const ids = new Set(Array.from({ length: 600 }, newTraceId));
    expect(ids.size).toBe(600);
    const trace = newTraceId();
    const span = newSpanId();
    expect(trace).toMatch(/^[0-9a-f]{32}$/);
    expect(span).toMatch(/^[0-9a-f]{16}$/);
    expect(parseTraceparent(formatTraceparent(trace, span, false))).toEqual({ traceId: trace, spanId: span, sampled: false });
  });
});
