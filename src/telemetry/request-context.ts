/**
 * What every log line and span about one HTTP request shares: its trace id (from the caller's
 * `traceparent`, or new), the action id of its decision once there is one, and — with tracing
 * on — its span. The HTTP edge runs each request inside {@link requestContext}; the logger,
 * the decision pipeline and the gateway read it from there, so none of them needs the request
 * passed down (docs/observability.md).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { formatTraceparent, newSpanId, type TraceParent } from './trace-context.js';

/** A span of an OpenTelemetry trace (./tracing.ts), as the rest of the code sees it. */
export interface SpanHandle {
  readonly traceId: string;
  readonly spanId: string;
  readonly sampled: boolean;
  setAttributes(attributes: Record<string, string | number | boolean>): void;
  /** Names the span once what it was is known (a request's route). */
  rename(name: string): void;
  /** Marks the span failed, with why. */
  fail(message: string): void;
  end(): void;
  /** A span inside this one: `internal` work of this server, or a `client` request to another. */
  child(name: string, attributes?: Record<string, string | number | boolean>, kind?: 'internal' | 'client'): SpanHandle;
}

/** Starts spans; only exists when tracing is on (`--otel-endpoint`). */
export interface Tracer {
  /** The server span of one request, a child of the caller's span when it sent a `traceparent`. */
  startRequest(name: string, parent: TraceParent | undefined, attributes: Record<string, string | number | boolean>): SpanHandle;
  /** Exports what is buffered and stops. */
  shutdown(): Promise<void>;
}

export interface RequestContext {
  /** 32 hex characters: every log line about the request carries it as `trace_id`. */
  trace_id: string;
  /** The caller's `traceparent`, or the one made up for upstreams (see {@link upstreamTraceparent}). */
  traceparent?: string;
  /** The id of the request's decision (its audit record's `action_id`), once made. */
  action_id?: string;
  /** The request's span, with tracing on. */
  span?: SpanHandle;
}

/** The context of the request being handled; undefined outside one. */
export const requestContext = new AsyncLocalStorage<RequestContext>();

/** Tells the request's later log lines and its span which decision it made. */
export function noteActionId(actionId: string): void {
  const ctx = requestContext.getStore();
  if (!ctx) return;
  ctx.action_id = actionId;
  ctx.span?.setAttributes({ 'policyguard.action_id': actionId });
}

/**
 * A span inside the current request's span, or undefined (tracing off, or no request).
 *
 * @example const span = childSpan('policyguard.decide'); …; span?.end();
 */
export function childSpan(name: string, attributes?: Record<string, string | number | boolean>): SpanHandle | undefined {
  return requestContext.getStore()?.span?.child(name, attributes);
}

/**
 * A CLIENT span inside the current request's span, for one request to another server, or
 * undefined (tracing off, or no request). `attributes` are only worked out for a span that is
 * recorded.
 *
 * @example const span = clientSpan('POST upstream', () => ({ 'url.full': url })); …; span?.end();
 */
export function clientSpan(name: string, attributes: () => Record<string, string | number | boolean>): SpanHandle | undefined {
  const span = requestContext.getStore()?.span;
  return span?.child(name, span.sampled ? attributes() : undefined, 'client');
}

/**
 * The `traceparent` the gateway sends to an upstream for the current request: the request's
 * CLIENT span for that call (`client`, see {@link clientSpan}), or the request's span, with
 * tracing on; else the caller's own header, passed on as it came; else one made up in the
 * request's trace (not sampled), so the upstream's logs share the trace id.
 *
 * @example headers.traceparent = upstreamTraceparent(clientSpan('POST upstream', attributes)) ?? headers.traceparent;
 */
export function upstreamTraceparent(client?: SpanHandle): string | undefined {
  const ctx = requestContext.getStore();
  if (!ctx) return undefined;
  const span = client ?? ctx.span;
  if (span) return formatTraceparent(span.traceId, span.spanId, span.sampled);
  return (ctx.traceparent ??= formatTraceparent(ctx.trace_id, newSpanId(), false));
}
