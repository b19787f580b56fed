import { createServer } from 'node:net';
import { createNoopMeter, ROOT_CONTEXT, SpanKind, trace, TraceFlags } from '@opentelemetry/api';
import { SamplingDecision, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace';
import { describe, expect, it } from 'vitest';
import { createLogger, silentLogger } from '../log.js';
import { requestContext, type RequestContext } from './request-context.js';
import { newSpanId, newTraceId } from './trace-context.js';
import { requestSampler, startTracing, type DropReason } from './tracing.js';

/** A loopback port nothing listens on: the exporter's connections are refused. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('startTracing', () => {
  it("reports a failed export without the trace and action ids of the request whose span started the batch", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger('info', (line) => lines.push(JSON.parse(line) as Record<string, unknown>), 'json');
    const tracer = startTracing({ endpoint: `http://127.0.0.1:${await closedPort()}`, instance: 'test', scheduledDelayMs: 10, log });
    await requestContext.run({ trace_id: 'a'.repeat(32), action_id: 'act_000000000001' } as RequestContext, async () => {
      tracer.startRequest('POST /mcp', undefined, {}).end();
    });
    for (let waited = 0; !lines.some((l) => l.msg === 'traces not exported; spans are dropped until the endpoint takes them') && waited < 30_000; waited += 50) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const warning = lines.find((l) => l.msg === 'traces not exported; spans are dropped until the endpoint takes them');
    expect(warning).toBeDefined();
    expect(warning).not.toHaveProperty('trace_id');
    expect(warning).not.toHaveProperty('action_id');
    await tracer.shutdown();
  }, 40_000);
});

describe('sampling (--otel-sample-ratio)', () => {
  const CALLER_SPAN = '00f067aa0ba902b7';
  /** Whether a request is recorded, as the server span's sampled flag says (what upstreams are sent, and what the batch processor exports). */
  const recorded = (ratio: number, parent?: { traceId: string; sampled: boolean }) => {
    const tracer = startTracing({ endpoint: 'http://127.0.0.1:9', instance: 'test', sampleRatio: ratio, log: silentLogger });
    const span = tracer.startRequest('POST /mcp', parent && { ...parent, spanId: CALLER_SPAN }, {});
    const decide = span.child('policyguard.decide');
    const upstream = span.child('POST upstream', {}, 'client');
    // Spans inside a request follow it.
    expect([decide.sampled, upstream.sampled]).toEqual([span.sampled, span.sampled]);
    void tracer.shutdown();
    return span.sampled;
  };

  it('a caller that says "not sampled" is recorded all the same at the default ratio: the caller does not decide', () => {
    const traceId = newTraceId();
    expect(recorded(1, { traceId, sampled: false })).toBe(true);
    expect(recorded(1, { traceId, sampled: true })).toBe(true);
    expect(recorded(1)).toBe(true);
  });

  it('at ratio 0 nothing is recorded, a caller that says "sampled" included', () => {
    expect(recorded(0)).toBe(false);
    expect(recorded(0, { traceId: newTraceId(), sampled: true })).toBe(false);
  });

  it('below 1, each request is drawn at random, whatever trace id and flag the caller chose: none the caller can pick is always or never recorded', () => {
    // Trace ids a sampler that decides by trace id (OpenTelemetry's TraceIdRatioBased) always,
    // or never, records: a caller could choose them.
    const always = '00000000000000000000000000000001';
    const never = 'ffffffff000000000000000000000000';
    const byTraceId = new TraceIdRatioBasedSampler(0.25);
    expect([always, never].map((id) => byTraceId.shouldSample(ROOT_CONTEXT, id).decision)).toEqual([SamplingDecision.RECORD_AND_SAMPLED, SamplingDecision.NOT_RECORD]);
    const decide = (draw: number, traceId: string, sampled: boolean) => {
      const parent = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: CALLER_SPAN, traceFlags: sampled ? TraceFlags.SAMPLED : TraceFlags.NONE, isRemote: true });
      return requestSampler(0.25, () => draw).shouldSample(parent, traceId, 'POST /mcp', SpanKind.SERVER, {}, []).decision;
    };
    for (const sampled of [true, false]) {
      expect(decide(0.9, always, sampled)).toBe(SamplingDecision.NOT_RECORD);
      expect(decide(0.1, never, sampled)).toBe(SamplingDecision.RECORD_AND_SAMPLED);
    }
    // A new trace too.
    expect(requestSampler(0.25, () => 0.1).shouldSample(ROOT_CONTEXT, never, 'POST /mcp', SpanKind.SERVER, {}, []).decision).toBe(SamplingDecision.RECORD_AND_SAMPLED);
    expect(requestSampler(0.25, () => 0.9).shouldSample(ROOT_CONTEXT, always, 'POST /mcp', SpanKind.SERVER, {}, []).decision).toBe(SamplingDecision.NOT_RECORD);
  });
});

describe('dropped spans', () => {
  it('spans dropped because the export queue is full are told, as are spans in a batch the endpoint did not take', async () => {
    const dropped: Record<DropReason, number> = { queue_full: 0, export_failed: 0 };
    const tracer = startTracing({
      endpoint: `http://127.0.0.1:${await closedPort()}`,
      instance: 'test',
      maxQueueSize: 2,
      onDroppedSpans: (count, reason) => (dropped[reason] += count),
      log: silentLogger,
    });
    // The first two fill a batch, which goes to the exporter at once (the connection fails
    // later); the next two wait in the queue; the last three find it full.
    for (let i = 0; i < 7; i++) tracer.startRequest('POST /mcp', { traceId: newTraceId(), spanId: newSpanId(), sampled: true }, {}).end();
    expect(dropped.queue_full).toBe(3);
    // Heard through a meter of its own: the API's shared no-op meter, which anything in the process may use, is untouched.
    createNoopMeter().createCounter('otel.sdk.processor.span.processed').add(5, { 'error.type': 'queue_full' });
    expect(dropped.queue_full).toBe(3);
    await tracer.shutdown();
    for (let waited = 0; dropped.export_failed < 4 && waited < 30_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    expect(dropped).toEqual({ queue_full: 3, export_failed: 4 });
  }, 40_000);
});
