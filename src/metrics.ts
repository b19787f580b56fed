/**
 * Metrics on prom-client (docs/observability.md lists them all). Each server has its own
 * Registry — tests start many servers in one process — holding PolicyGuard's counters, callback
 * gauges and latency histograms; the process-wide `process_*` and `nodejs_*` metrics (CPU,
 * memory, file descriptors, event-loop lag, GC) are collected once per process and shared by
 * every registry, because collecting them per registry starts an event-loop monitor and a GC
 * observer each time that are never stopped. Names follow `policyguard_<noun>_<unit>`.
 */
import client from 'prom-client';

type Labels = Record<string, string>;
/** What a callback gauge reads: one value, or one value per label set. */
type GaugeReading = number | Array<[Labels, number]>;

const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** What prom-client checks when it makes a metric: the metric's name and its label names fit the Prometheus data model. */
function checkNames(name: string, labelNames: readonly string[]): void {
  if (!client.validateMetricName(name)) throw new Error(`${JSON.stringify(name)} is not a valid metric name`);
  const bad = labelNames.find((label) => !LABEL_NAME.test(label));
  if (bad !== undefined) throw new Error(`${name}: ${JSON.stringify(bad)} is not a valid label name`);
}

/** One series of a {@link Counter}, as prom-client's Registry reads a counter's values. */
interface CounterSeries {
  labels: Labels;
  value: number;
}

/** A counter's series by label value: each label in turn leads one level down, the last to the series. */
type SeriesTree = Map<string, SeriesTree | CounterSeries>;

/**
 * A counter in the prom-client registry, exposed exactly as prom-client's own (text and JSON),
 * but cheap to increment: prom-client's inc() checks each label against the label names, builds
 * a key string and looks it up among an object's properties (~0.2 µs in the hotpath bench, more
 * in a busy server; a `validate_action` makes four or five: docs/performance.md, "What the
 * eleventh pass changed"); here each label value is a lookup in a Map, with no string made. The
 * label names are declared, or those of the first inc() that fits, which then registers it;
 * every inc() gives exactly those labels, each a string.
 */
export class Counter {
  readonly type = 'counter';
  readonly aggregator = 'sum';
  private labelNames: readonly string[] | undefined;
  private tree: SeriesTree = new Map();
  /** Every series, in the order made (as prom-client lists them). */
  private list: CounterSeries[] = [];

  constructor(
    private readonly registry: client.Registry,
    readonly name: string,
    readonly help: string,
    labelNames?: readonly string[],
  ) {
    if (labelNames) this.start(labelNames);
  }

  private start(labelNames: readonly string[]): void {
    checkNames(this.name, labelNames);
    this.labelNames = labelNames;
    this.reset();
    this.registry.registerMetric(this as unknown as client.Metric);
  }

  /** Whether `labels` are exactly the label names, each with a string value. */
  private static fits(labels: Labels, names: readonly string[]): boolean {
    let given = 0;
    for (const _ in labels) given++;
    if (given !== names.length) return false;
    for (const n of names) if (typeof labels[n] !== 'string') return false;
    return true;
  }

  /** The series of `labels` (which fit), made when `create` is set. */
  private seriesOf(labels: Labels, names: readonly string[], create: boolean): CounterSeries | undefined {
    if (names.length === 0) return this.list[0]; // the one series, made by reset()
    let level = this.tree;
    for (let i = 0; ; i++) {
      const value = labels[names[i]!]!;
      let next = level.get(value);
      if (i === names.length - 1) {
        if (next === undefined && create) {
          const series: CounterSeries = { labels: { ...labels }, value: 0 };
          level.set(value, series);
          this.list.push(series);
          return series;
        }
        return next as CounterSeries | undefined;
      }
      if (next === undefined) {
        if (!create) return undefined;
        level.set(value, (next = new Map()));
      }
      level = next as SeriesTree;
    }
  }

  /** Label names not declared up front are those of the first inc(); every inc() must use the same ones. */
  inc(labels: Labels = {}, by = 1): void {
    const names = this.labelNames ?? Object.keys(labels);
    if (!Counter.fits(labels, names)) throw new TypeError(`${this.name}: inc(${JSON.stringify(labels)}) does not give exactly its labels (${names.join(', ') || 'none'})`);
    if (!(by >= 0 && by < Infinity)) throw new TypeError(`${this.name}: a counter goes up by a finite number of 0 or more, not ${by}`);
    if (!this.labelNames) this.start(names); // the first inc() names the labels once they fit
    this.seriesOf(labels, names, true)!.value += by;
  }

  /** Current value for exactly these labels (0 when never incremented). */
  value(labels: Labels = {}): number {
    const names = this.labelNames;
    return names && Counter.fits(labels, names) ? (this.seriesOf(labels, names, false)?.value ?? 0) : 0;
  }

  /** What prom-client's Registry reads, for text and JSON alike. */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: CounterSeries[] }> {
    const values = this.list.map(({ labels, value }) => ({ labels: { ...labels }, value }));
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.tree = new Map();
    this.list = this.labelNames?.length === 0 ? [{ labels: {}, value: 0 }] : [];
  }
}

/** A gauge read from a callback at scrape time. */
export class Gauge {
  constructor(
    registry: client.Registry,
    readonly name: string,
    readonly help: string,
    read: () => GaugeReading,
    labelNames: readonly string[] = [],
  ) {
    new client.Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        const v = read();
        this.reset();
        if (typeof v === 'number') this.set(v);
        else for (const [labels, n] of v) this.set(labels, n);
      },
    });
  }
}

interface HistogramSeries {
  labels: Labels;
  /** Observations per bucket (not cumulative); the last one is +Inf. */
  counts: Float64Array;
  sum: number;
  count: number;
}

/** One line of prom-client's exposition of a metric (what Registry formats). */
interface ExportedValue {
  labels: Labels | { le: number | string };
  sharedLabels?: Labels;
  value: number;
  metricName: string;
}

/**
 * A histogram in the prom-client registry, exposed exactly as prom-client's own, but cheap to
 * observe: prom-client's observe() makes a closure and a label object and turns the bucket
 * bound into a property key on every call (0.3–1 µs; a request makes four or five of them;
 * docs/performance.md, "What observability costs"). Labels, when declared, must be the
 * declared ones; values are the caller's business, as in prom-client.
 */
export class Histogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, HistogramSeries>();

  constructor(
    registry: client.Registry,
    readonly name: string,
    readonly help: string,
    private readonly buckets: readonly number[],
    private readonly labelNames: readonly string[] = [],
  ) {
    checkNames(name, labelNames);
    if (labelNames.length === 0) this.series.set('', this.fresh({}));
    registry.registerMetric(this as unknown as client.Metric);
  }

  private fresh(labels: Labels): HistogramSeries {
    return { labels, counts: new Float64Array(this.buckets.length + 1), sum: 0, count: 0 };
  }

  /** `observe(seconds)`, or `observe({ route: '/mcp', … }, seconds)` for a labelled histogram. */
  observe(labelsOrValue: Labels | number, value?: number): void {
    let series: HistogramSeries | undefined;
    let v: number;
    if (typeof labelsOrValue === 'number') {
      series = this.series.get('');
      v = labelsOrValue;
    } else {
      let key = '';
      for (const n of this.labelNames) key += `${labelsOrValue[n]}\u0000`;
      series = this.series.get(key);
      if (!series) this.series.set(key, (series = this.fresh({ ...labelsOrValue })));
      v = value!;
    }
    if (!series || !Number.isFinite(v)) throw new TypeError(`${this.name}: observe(${JSON.stringify(labelsOrValue)}, ${value}) does not fit this histogram`);
    let i = 0;
    while (i < this.buckets.length && v > this.buckets[i]!) i++;
    series.counts[i]!++;
    series.sum += v;
    series.count++;
  }

  /** What prom-client's Registry writes: cumulative buckets, +Inf, _sum and _count per series. */
  async getForPromString(): Promise<{ name: string; help: string; type: string; aggregator: string; values: ExportedValue[] }> {
    const values: ExportedValue[] = [];
    for (const { labels, counts, sum, count } of this.series.values()) {
      let cumulative = 0;
      this.buckets.forEach((le, i) => {
        cumulative += counts[i]!;
        values.push({ labels: { le }, sharedLabels: labels, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { le: '+Inf' }, sharedLabels: labels, value: count, metricName: `${this.name}_bucket` });
      values.push({ labels: {}, sharedLabels: labels, value: sum, metricName: `${this.name}_sum` });
      values.push({ labels: {}, sharedLabels: labels, value: count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** The same as JSON (Registry.getMetricsAsJSON): each value's labels in one object. */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Array<{ labels: Labels; value: number; metricName: string }> }> {
    const exported = await this.getForPromString();
    return { ...exported, values: exported.values.map(({ labels, sharedLabels, value, metricName }) => ({ labels: { ...sharedLabels, ...labels } as Labels, value, metricName })) };
  }

  reset(): void {
    for (const [key, series] of this.series) this.series.set(key, this.fresh(series.labels));
  }
}

/** Seconds from `start` (a `performance.now()`) until now: what the histograms below observe. */
export const secondsSince = (start: number): number => (performance.now() - start) / 1000;

/** A decision in the engine: about a microsecond to tens of them (docs/performance.md). */
const ENGINE_BUCKETS = [1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2];
/**
 * The decision pipeline and an audit append: tens of microseconds, unless something is wrong;
 * a decision that asks for or uses a GuardApproval waits on the API server (and, through the
 * gateway, may list the upstream first), so seconds too.
 */
const DECISION_BUCKETS = [1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1, 10];
/**
 * HTTP requests (2 ms: the p99 target of docs/performance.md; up to a held call's 20 s and an
 * upstream's 30 s timeout), audit batch writes (an fdatasync, or a ConfigMap replace) and
 * watch-to-snapshot.
 */
const SECONDS_BUCKETS = [0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30, 60];

/**
 * Watch liveness and watch-to-snapshot latency (src/controller/reflector.ts, WatchObserver): each
 * reflector reports what arrives through the observer {@link WatchTiming.watch} gave it, the
 * store reports each snapshot it compiled, and the time from the first change not yet in force
 * to the snapshot that has it is observed.
 */
export class WatchTiming {
  /** Per watch (one reflector): its resource, and when its last list, event or connection arrived (ms since the epoch; 0: none yet). */
  private readonly watches: Array<{ resource: string; at: number }> = [];
  /** When the oldest change not yet compiled arrived (a performance.now()). */
  private pendingSince: number | undefined;

  constructor(private readonly histogram: Histogram) {}

  /** The observer of one watch of `resource` (a plural, e.g. guardagents). */
  watch(resource: string): { received(changed: boolean): void } {
    const slot = { resource, at: 0 };
    this.watches.push(slot);
    return {
      received: (changed) => {
        slot.at = Date.now();
        if (changed) this.pendingSince ??= performance.now();
      },
    };
  }

  /**
   * Per resource, when its stalest watch last heard from the API server (ms since the epoch; 0
   * while one of them has not yet): one watch that hangs shows, however lively the others are.
   */
  lastHeard(): Map<string, number> {
    const out = new Map<string, number>();
    for (const w of this.watches) out.set(w.resource, Math.min(out.get(w.resource) ?? Infinity, w.at));
    return out;
  }

  /** A snapshot with everything received so far is in force. */
  compiled(): void {
    if (this.pendingSince === undefined) return;
    this.histogram.observe(secondsSince(this.pendingSince));
    this.pendingSince = undefined;
  }
}

let processRegistry: client.Registry | undefined;
/** The `process_*` and `nodejs_*` metrics, collected once per process (see the file comment). */
function processMetrics(): client.Registry {
  if (!processRegistry) {
    processRegistry = new client.Registry();
    client.collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/**
 * The metrics of one server. Counters and gauges are made with {@link counter} and
 * {@link gauge}; the latency histograms are {@link Histogram}s (`observe(seconds)`).
 *
 * @example
 *   const metrics = new Metrics();
 *   metrics.decisions.inc({ decision: 'deny' });
 *   metrics.gauge('policyguard_agents', 'GuardAgents in force.', () => store.snapshot().counts.agents);
 *   const text = await metrics.exposition(); // what GET /metrics serves
 */
export class Metrics {
  readonly registry = new client.Registry();

  readonly decisions = this.counter('policyguard_decisions_total', 'Decisions made, by decision (allow, deny, require_approval).', ['decision']);
  readonly auditFindings = this.counter('policyguard_audit_findings_total', 'Audit-mode rule matches (dry-run findings), by policy.', ['policy']);
  readonly incidents = this.counter('policyguard_incidents_total', 'Incidents recorded, by type and severity.', ['type', 'severity']);
  readonly toolCalls = this.counter('policyguard_tool_calls_total', 'MCP tool calls, by tool and outcome (ok, error).', ['tool', 'outcome']);
  readonly autoRegistrations = this.counter('policyguard_auto_registrations_total', 'Unknown agents registered automatically, by outcome.', ['outcome']);
  readonly auditUnavailableDenials = this.counter(
    'policyguard_audit_unavailable_denials_total',
    'Decisions denied because the audit log could not take their record (--audit-failure-mode closed).',
    [],
  );

  readonly decisionSeconds = this.histogram(
    'policyguard_decision_duration_seconds',
    'One decision end to end in the pipeline: identity, evaluation, limits and the audit append.',
    DECISION_BUCKETS,
  );
  readonly evaluationSeconds = this.histogram('policyguard_engine_evaluation_duration_seconds', 'Policy evaluation alone (the engine), per decision.', ENGINE_BUCKETS);
  readonly httpSeconds = this.histogram(
    'policyguard_http_request_duration_seconds',
    'HTTP requests from the first byte read to the last byte written, by route (the path pattern), method and status.',
    SECONDS_BUCKETS,
    ['route', 'method', 'status'],
  );
  readonly auditAppendSeconds = this.histogram('policyguard_audit_append_duration_seconds', 'Building an audit record (redaction, hash chain, MAC) and buffering it.', DECISION_BUCKETS);
  readonly auditWriteSeconds = this.histogram('policyguard_audit_write_duration_seconds', 'Writing one batch of audit records to storage (file write and fdatasync, or a ConfigMap update).', SECONDS_BUCKETS);
  /** What the audit sinks report (src/audit/batching-sink.ts, AuditTimings). */
  readonly auditTimings = {
    appended: (seconds: number) => this.auditAppendSeconds.observe(seconds),
    written: (seconds: number) => this.auditWriteSeconds.observe(seconds),
  };
  readonly watchToSnapshotSeconds = this.histogram(
    'policyguard_watch_to_snapshot_duration_seconds',
    'From a GuardAgent/GuardPolicy watch event arriving to the policy snapshot that includes it being in force.',
    SECONDS_BUCKETS,
  );

  /** Fed by the reflectors and the Kubernetes store; also the last-event gauge (serve.ts). */
  readonly watchTiming = new WatchTiming(this.watchToSnapshotSeconds);

  constructor() {
    for (const m of processMetrics().getMetricsAsArray()) this.registry.registerMetric(m as unknown as client.Metric);
  }

  /** A counter; `labelNames` default to the labels of its first inc(). */
  counter(name: string, help: string, labelNames?: readonly string[]): Counter {
    return new Counter(this.registry, name, help, labelNames);
  }

  /** A gauge read at scrape time; `labelNames` when `read` returns labelled values. */
  gauge(name: string, help: string, read: () => GaugeReading, labelNames?: readonly string[]): Gauge {
    return new Gauge(this.registry, name, help, read, labelNames);
  }

  private histogram(name: string, help: string, buckets: number[], labelNames: string[] = []): Histogram {
    return new Histogram(this.registry, name, help, buckets, labelNames);
  }

  /** Everything in the registry in the Prometheus text format: what GET /metrics serves. */
  exposition(): Promise<string> {
    return this.registry.metrics();
  }

  /** The Content-Type of {@link exposition}. */
  get contentType(): string {
    return this.registry.contentType;
  }
}
