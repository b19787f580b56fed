/**
 * OpenTelemetry tracing, exported over OTLP/HTTP (JSON) to `--otel-endpoint`. Imported only when
 * that flag is set (serve.ts loads this module with a dynamic import), so without it none of
 * the SDK is loaded and a request pays for no span. Spans are parented explicitly from the
 * request context (./request-context.ts) rather than through a global context manager.
 */
import { createNoopMeter, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Meter, type MeterProvider, type Span, type Tracer as OtelTracer } from '@opentelemetry/api';
import { ExportResultCode } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, ParentBasedSampler, SamplingDecision, TracerProvider, type Sampler, type SpanExporter } from '@opentelemetry/sdk-trace';
import type { Logger } from '../log.js';
import { VERSION } from '../version.js';
import { requestContext, type SpanHandle, type Tracer } from './request-context.js';
import type { TraceParent } from './trace-context.js';

type Attributes = Record<string, string | number | boolean>;

export interface TracingOptions {
  /** The OTLP/HTTP endpoint, e.g. http://otel-collector:4318; spans go to `<endpoint>/v1/traces`. */
  endpoint: string;
  /** `service.instance.id` of the resource (the replica). */
  instance: string;
  /** The share of requests recorded, drawn at random (`--otel-sample-ratio`, 0 to 1; default 1: all). */
  sampleRatio?: number;
  /** How long spans wait to be batched (default 1 s). */
  scheduledDelayMs?: number;
  /** How many ended spans wait for export, at most (default 2,048, the SDK's); more are dropped. */
  maxQueueSize?: number;
  /** Told of spans lost: dropped because the export queue was full, or in a batch the endpoint did not take. */
  onDroppedSpans?: (count: number, reason: DropReason) => void;
  /** Where failed exports are reported: the first of a run of failures, and the recovery. */
  log: Logger;
}

export type DropReason = 'queue_full' | 'export_failed';

/** The OTLP/HTTP traces URL of an endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT is read. */
export function tracesUrl(endpoint: string): string {
  return `${endpoint.replace(/\/+$/, '')}/v1/traces`;
}

function handle(tracer: OtelTracer, span: Span): SpanHandle {
  const { traceId, spanId, traceFlags } = span.spanContext();
  return {
    traceId,
    spanId,
    sampled: (traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED,
    setAttributes: (attributes) => void span.setAttributes(attributes),
    rename: (name) => void span.updateName(name),
    fail: (message) => void span.setStatus({ code: SpanStatusCode.ERROR, message }),
    end: () => span.end(),
    child: (name, attributes, kind = 'internal') =>
      handle(tracer, tracer.startSpan(name, { kind: kind === 'client' ? SpanKind.CLIENT : SpanKind.INTERNAL, ...(attributes ? { attributes } : {}) }, trace.setSpan(ROOT_CONTEXT, span))),
  };
}

/**
 * Which requests are recorded: each with probability `ratio`, drawn at random here, whether it
 * starts a trace or continues a caller's, and whatever the caller's trace id and sampled flag
 * say: an untrusted caller can neither switch tracing off for its own calls nor force it on
 * (a sampler that decides by trace id, as OpenTelemetry's TraceIdRatioBased does, lets the
 * caller choose one that is always or never recorded). Spans inside a request (the decision,
 * the gateway's upstream call) follow it.
 */
export function requestSampler(ratio: number, draw: () => number = Math.random): Sampler {
  const drawn: Sampler = {
    shouldSample: () => ({ decision: ratio >= 1 || draw() < ratio ? SamplingDecision.RECORD_AND_SAMPLED : SamplingDecision.NOT_RECORD }),
    toString: () => `PolicyGuardDrawn{${ratio}}`,
  };
  return new ParentBasedSampler({ root: drawn, remoteParentSampled: drawn, remoteParentNotSampled: drawn });
}

/**
 * A meter that hears only the batch processor's count of spans dropped because its queue was
 * full: the SDK counts them as `otel.sdk.processor.span.processed` with `error.type`
 * `queue_full` (semantic conventions, SDK self-observability), and tells nothing else of them
 * but a diagnostics line. Every other instrument is a no-op.
 */
function queueFullMeter(onDropped: (count: number) => void): MeterProvider {
  // A meter of its own over the API's shared no-op one: that one is process-wide.
  const noop = createNoopMeter();
  const meter: Meter = Object.create(noop) as Meter;
  const noopCounter = noop.createCounter.bind(noop);
  meter.createCounter = (name, options) =>
    name === 'otel.sdk.processor.span.processed'
      ? {
          add: (count, attributes) => {
            if (attributes?.['error.type'] === 'queue_full') onDropped(count);
          },
        }
      : noopCounter(name, options);
  return { getMeter: () => meter };
}

/**
 * The OTLP exporter, reporting its failures: the SDK would only tell its own diagnostics
 * logger, which is silent unless configured, so a wrong endpoint would go unnoticed.
 */
function reportingExporter(url: string, log: Logger, onFailed: (count: number) => void): SpanExporter {
  const exporter = new OTLPTraceExporter({ url });
  let failures = 0;
  return {
    export(spans, done) {
      // On a timer the first span of a request started: its log lines are not that request's.
      requestContext.exit(() =>
        exporter.export(spans, (result) => {
          if (result.code !== ExportResultCode.SUCCESS) {
            onFailed(spans.length);
            if (failures++ === 0) log.warn('traces not exported; spans are dropped until the endpoint takes them', { url, error: String(result.error ?? 'failed') });
          } else if (failures > 0) {
            log.info('traces exported again', { url, failedBatches: failures });
            failures = 0;
          }
          done(result);
        }),
      );
    },
    shutdown: () => exporter.shutdown(),
    forceFlush: () => exporter.forceFlush(),
  };
}

/**
 * Starts the tracer provider and its OTLP exporter.
 *
 * @example
 *   const tracer = startTracing({ endpoint: 'http://otel-collector:4318', instance: 'policyguard-0', sampleRatio: 0.1, log });
 *   const span = tracer.startRequest('POST /mcp', parseTraceparent(req.headers.traceparent), { 'http.request.method': 'POST' });
 *   span.end(); await tracer.shutdown();
 */
export function startTracing(opts: TracingOptions): Tracer {
  const dropped = opts.onDroppedSpans ?? (() => undefined);
  const maxQueueSize = opts.maxQueueSize ?? 2048;
  const processor = new BatchSpanProcessor({
    exporter: reportingExporter(tracesUrl(opts.endpoint), opts.log, (count) => dropped(count, 'export_failed')),
    scheduledDelayMillis: opts.scheduledDelayMs ?? 1000,
    maxQueueSize,
    maxExportBatchSize: Math.min(512, maxQueueSize),
    selfObsMeterProvider: queueFullMeter((count) => dropped(count, 'queue_full')),
  });
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'policyguard', 'service.version': VERSION, 'service.instance.id': opts.instance }),
    sampler: requestSampler(opts.sampleRatio ?? 1),
    spanProcessors: [processor],
  });
  const tracer = provider.getTracer('policyguard', VERSION);
  return {
    startRequest(name: string, parent: TraceParent | undefined, attributes: Attributes): SpanHandle {
      const parentContext = parent
        ? trace.setSpanContext(ROOT_CONTEXT, { traceId: parent.traceId, spanId: parent.spanId, traceFlags: parent.sampled ? TraceFlags.SAMPLED : TraceFlags.NONE, isRemote: true })
        : ROOT_CONTEXT;
      return handle(tracer, tracer.startSpan(name, { kind: SpanKind.SERVER, attributes }, parentContext));
    },
    // The last spans are sent on shutdown; an endpoint that is gone must not fail the shutdown.
    shutdown: () => provider.shutdown().catch((err: unknown) => opts.log.warn('traces not exported at shutdown', { error: String(err) })),
  };
}
