import { describe, expect, it } from 'vitest';
import { formatTraceparent, newSpanId, newTraceId, outgoingTraceHeaders, parseTraceparent, parseTracestate, TRACESTATE_MAX_CHARS, TRACESTATE_MAX_MEMBERS } from './trace-context.js';

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

describe('parseTracestate', () => {
  const members = (n: number) => Array.from({ length: n }, (_, i) => `k${i}=v`).join(',');
  it.each([
    ['one member', 'rojo=00f067aa0ba902b7'],
    ['two, as the specification writes them', 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7'],
    ['spaces and empty members between them', 'congo=t61rcWkgMzE ,\t, rojo=00f067aa0ba902b7'],
    ['a multi-tenant key, and a value with spaces inside', 'fw529a3039@dt=a b/c*d'],
    [`${TRACESTATE_MAX_MEMBERS} members`, members(TRACESTATE_MAX_MEMBERS)],
    [`${TRACESTATE_MAX_CHARS} characters`, `a=${'v'.repeat(255)},b=${'v'.repeat(TRACESTATE_MAX_CHARS - 260)}`],
  ])('%s: passed on as it came', (_what, header) => {
    expect(parseTracestate(header)).toBe(header);
  });

  it.each([
    ['missing', undefined],
    ['empty', ''],
    ['only commas', ' , '],
    ['two headers not joined', ['a=1', 'b=2']],
    [`${TRACESTATE_MAX_MEMBERS + 1} members`, members(TRACESTATE_MAX_MEMBERS + 1)],
    [`${TRACESTATE_MAX_CHARS + 1} characters`, `a=${'v'.repeat(255)},b=${'v'.repeat(TRACESTATE_MAX_CHARS - 259)}`],
    ['a key twice', 'a=1,b=2,a=3'],
    ['an upper-case key', 'Rojo=1'],
    ['a member without =', 'rojo'],
    ['an empty value', 'rojo='],
    ['a value with =', 'rojo=a=b'],
    ['a value longer than 256', `rojo=${'v'.repeat(257)}`],
    ['a control character', 'rojo=1\u001b[2K'],
    ['a non-ASCII character', 'rojo=\u202e1'],
  ])('%s: dropped', (_what, header) => {
    expect(parseTracestate(header)).toBeUndefined();
  });
});

describe('outgoingTraceHeaders', () => {
  const CALLER = `00-${TRACE}-${SPAN}-01`;
  const STATE = 'rojo=00f067aa0ba902b7';
  it('sends the traceparent as version 00, with the caller\'s tracestate when it is in the same trace', () => {
    expect(outgoingTraceHeaders(CALLER, { traceparent: CALLER, tracestate: STATE })).toEqual({ traceparent: CALLER, tracestate: STATE });
    // The request's own span, a child of the caller's.
    const child = formatTraceparent(TRACE, 'b7ad6b7169203331', true);
    expect(outgoingTraceHeaders(child, { traceparent: CALLER, tracestate: STATE })).toEqual({ traceparent: child, tracestate: STATE });
    expect(outgoingTraceHeaders(` 02-${TRACE}-${SPAN}-00-${'x'.repeat(3000)}`, {})).toEqual({ traceparent: `00-${TRACE}-${SPAN}-00` });
  });

  it('drops the caller\'s tracestate when its traceparent is missing, invalid or of another trace, or the tracestate is invalid', () => {
    const other = formatTraceparent(newTraceId(), newSpanId(), false);
    expect(outgoingTraceHeaders(other, { tracestate: STATE })).toEqual({ traceparent: other });
    expect(outgoingTraceHeaders(other, { traceparent: `00-${TRACE}-${SPAN}-01-x`, tracestate: STATE })).toEqual({ traceparent: other });
    expect(outgoingTraceHeaders(other, { traceparent: CALLER, tracestate: STATE })).toEqual({ traceparent: other });
    expect(outgoingTraceHeaders(CALLER, { traceparent: CALLER, tracestate: 'rojo=1,rojo=2' })).toEqual({ traceparent: CALLER });
  });

  it('sends nothing without a valid traceparent to send', () => {
    expect(outgoingTraceHeaders(undefined, { traceparent: CALLER, tracestate: STATE })).toEqual({});
    expect(outgoingTraceHeaders('junk', { traceparent: CALLER, tracestate: STATE })).toEqual({});
  });
});
