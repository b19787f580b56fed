/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` and `tracestate`
 * headers a caller may send on /mcp and that the gateway sends on to upstreams. Parsed here without
 * OpenTelemetry, so a trace id for the logs costs nothing when tracing is off
 * (docs/observability.md).
 */
import { randomFillSync } from 'node:crypto';

/** What a `traceparent` carries. */
export interface TraceParent {
  /** 32 lowercase hex characters, not all zero. */
  traceId: string;
  /** The caller's span: 16 lowercase hex characters, not all zero. */
  spanId: string;
  /** The caller's sampled flag (trace-flags bit 0). */
  sampled: boolean;
}

// version-traceid-parentid-flags; a future version may append fields after a dash.
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZEROS = /^0+$/;

/**
 * The trace parent of a request, or undefined when the header is missing or invalid (an
 * invalid one is ignored, as the specification says: the request starts a new trace).
 *
 * @example parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'); // { traceId: '4bf9…', spanId: '00f0…', sampled: true }
 */
export function parseTraceparent(header: string | string[] | undefined): TraceParent | undefined {
  if (typeof header !== 'string') return undefined;
  const m = TRACEPARENT.exec(header.trim());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  // Version ff is invalid; version 00 has exactly four fields.
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (ZEROS.test(traceId) || ZEROS.test(spanId)) return undefined;
  return { traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1 };
}

/** The `traceparent` header value for a span. */
export function formatTraceparent(traceId: string, spanId: string, sampled: boolean): string {
  return `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`;
}

/** The specification's limits for passing `tracestate` on: 32 list members, and 512 characters every vendor propagates. */
export const TRACESTATE_MAX_MEMBERS = 32;
export const TRACESTATE_MAX_CHARS = 512;
// key=value: a simple key or tenant@system, a value of printable ASCII but `,` and `=`, not ending in a space.
const TRACESTATE_MEMBER = /^(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})=[ -+\--<>-~]{0,255}[!-+\--<>-~]$/;

/**
 * The `tracestate` header as it came when it is valid and within the limits (one header, or
 * several already joined with commas; empty members allowed), else undefined: the
 * specification lets a list that cannot be passed on whole be dropped.
 *
 * @example parseTracestate('congo=t61rcWkgMzE,rojo=00f067aa0ba902b7'); // 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7'
 */
export function parseTracestate(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string' || header.length > TRACESTATE_MAX_CHARS) return undefined;
  const members = header.split(',').map((m) => m.trim()).filter((m) => m !== '');
  if (members.length === 0 || members.length > TRACESTATE_MAX_MEMBERS || !members.every((m) => TRACESTATE_MEMBER.test(m))) return undefined;
  // Each key at most once.
  const keys = new Set(members.map((m) => m.slice(0, m.indexOf('='))));
  return keys.size === members.length ? header : undefined;
}

/**
 * The trace headers a request sends to a server it calls (the gateway to an upstream), from the
 * `traceparent` it sends on (its span's, or the caller's: request-context.ts,
 * upstreamTraceparent) and the caller's own headers. The `traceparent` is written anew as
 * version 00 from what it says, so nothing a caller appended to it travels on; the caller's
 * `tracestate` goes with it only when it is valid and belongs to that trace: the caller's
 * `traceparent` was valid and names the same trace (with tracing on, a caller without one, or
 * with an invalid one, starts a new trace that its `tracestate` says nothing about).
 *
 * @example Object.assign(headers, outgoingTraceHeaders(upstreamTraceparent(), req.headers));
 */
export function outgoingTraceHeaders(
  traceparent: string | undefined,
  incoming: Readonly<Record<string, string | string[] | undefined>>,
): { traceparent?: string; tracestate?: string } {
  const out = parseTraceparent(traceparent);
  if (!out) return {};
  const headers = { traceparent: formatTraceparent(out.traceId, out.spanId, out.sampled) };
  const tracestate = parseTraceparent(incoming['traceparent'])?.traceId === out.traceId ? parseTracestate(incoming['tracestate']) : undefined;
  return tracestate === undefined ? headers : { ...headers, tracestate };
}

// Random bytes a block at a time: one randomFillSync per 256 trace ids, not one call each.
const pool = Buffer.alloc(16 * 256);
let offset = pool.length;

function randomHex(bytes: number): string {
  if (offset + bytes > pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const hex = pool.toString('hex', offset, offset + bytes);
  offset += bytes;
  // All zeros is invalid; at 2^-64 odds, draw again rather than send an invalid id.
  return ZEROS.test(hex) ? randomHex(bytes) : hex;
}

/** @example newTraceId(); // '4bf92f3577b34da6a3ce929d0e0e4736' */
export const newTraceId = (): string => randomHex(16);
/** @example newSpanId(); // '00f067aa0ba902b7' */
export const newSpanId = (): string => randomHex(8);
