import client from 'prom-client';
import { describe, expect, it } from 'vitest';
import { Counter, Histogram, Metrics } from './metrics.js';

describe('Metrics', () => {
  it('counters keep their names and labels, and read back synchronously', async () => {
    const m = new Metrics();
    m.decisions.inc({ decision: 'deny' });
    m.decisions.inc({ decision: 'deny' }, 2);
    expect(m.decisions.value({ decision: 'deny' })).toBe(3);
    expect(m.decisions.value({ decision: 'allow' })).toBe(0);
    const text = await m.exposition();
    expect(text).toMatch(/^policyguard_decisions_total\{decision="deny"\} 3$/m);
    expect(text).toContain('# HELP policyguard_decisions_total Decisions made, by decision (allow, deny, require_approval).\n# TYPE policyguard_decisions_total counter\n');
  });

  it('a counter made without label names takes those of its first inc()', async () => {
    const m = new Metrics();
    const c = m.counter('policyguard_test_requests_total', 'Test.');
    expect(await m.exposition()).not.toContain('policyguard_test_requests_total');
    c.inc({ method: 'tools/call', outcome: 'forwarded' });
    c.inc({ method: 'tools/call', outcome: 'denied' });
    expect(c.value({ outcome: 'forwarded', method: 'tools/call' })).toBe(1);
    expect(await m.exposition()).toMatch(/^policyguard_test_requests_total\{method="tools\/call",outcome="denied"\} 1$/m);
    expect(() => c.inc({ other: 'x' })).toThrow(/does not give exactly its labels \(method, outcome\)/);
    expect(() => c.inc({ method: 'tools/call', outcome: 'denied', other: 'x' })).toThrow(/exactly its labels/);
    expect(() => c.inc({ method: 'tools/call' })).toThrow(/exactly its labels/);
    expect(c.value({ method: 'tools/call' })).toBe(0);
  });

  it('metric and label names are checked as prom-client checks them, for counters and histograms', () => {
    const m = new Metrics();
    expect(() => m.counter('policyguard-bad', 'Test.', [])).toThrow(/"policyguard-bad" is not a valid metric name/);
    expect(() => m.counter('policyguard_ok_total', 'Test.', ['tool', 'bad-label'])).toThrow(/"bad-label" is not a valid label name/);
    expect(() => new Histogram(m.registry, 'policyguard_x seconds', 'Test.', [1])).toThrow(/not a valid metric name/);
    expect(() => new Histogram(m.registry, 'policyguard_x_seconds', 'Test.', [1], ['0route'])).toThrow(/"0route" is not a valid label name/);
    const lazy = m.counter('policyguard_lazy_total', 'Test.');
    expect(() => lazy.inc({ 'bad-label': 'x' })).toThrow(/not a valid label name/);
    lazy.inc({ good: 'x' }); // the refused first inc() did not name the labels
    expect(lazy.value({ good: 'x' })).toBe(1);
  });

  it("a first inc() whose labels are not all strings is refused without naming the counter's labels", async () => {
    const m = new Metrics();
    const c = m.counter('policyguard_test_calls_total', 'Test.');
    expect(() => c.inc({ method: undefined as unknown as string })).toThrow(/does not give exactly its labels/);
    c.inc({ tool: 'validate_action' });
    expect(await m.exposition()).toMatch(/^policyguard_test_calls_total\{tool="validate_action"\} 1$/m);
  });

  it('a Counter is exposed exactly as prom-client exposes its own, labelled or not, in text and JSON', async () => {
    const theirs = new client.Registry();
    const ours = new client.Registry();
    const plainTheirs = new client.Counter({ name: 'x_total', help: 'X.', registers: [theirs] });
    const plainOurs = new Counter(ours, 'x_total', 'X.', []);
    new client.Counter({ name: 'idle_total', help: 'Never incremented.', labelNames: ['kind'], registers: [theirs] });
    new Counter(ours, 'idle_total', 'Never incremented.', ['kind']);
    const byTheirs = new client.Counter({ name: 'y_total', help: 'Y.', labelNames: ['tool', 'outcome'], registers: [theirs] });
    const byOurs = new Counter(ours, 'y_total', 'Y.', ['tool', 'outcome']);
    expect(await ours.metrics()).toBe(await theirs.metrics()); // `x_total 0` before any inc()
    for (const [labels, by] of [
      [{ tool: 'validate_action', outcome: 'ok' }, 1],
      [{ outcome: 'error', tool: 'a"b\\c\nd' }, 2],
      [{ tool: 'validate_action', outcome: 'ok' }, 0.5],
      [{ tool: '', outcome: 'ok' }, 1],
    ] as const) {
      byTheirs.inc(labels, by);
      byOurs.inc(labels, by);
      plainTheirs.inc(by);
      plainOurs.inc({}, by);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    const plain = (metrics: any[]) => metrics.map((m) => ({ ...m, values: m.values.map(({ labels, value }: any) => ({ labels, value })) }));
    expect(plain(await ours.getMetricsAsJSON())).toEqual(plain(await theirs.getMetricsAsJSON()));
    expect(byOurs.value({ outcome: 'ok', tool: 'validate_action' })).toBe(1.5);
    for (const by of [-1, Number.NaN, Infinity]) expect(() => plainOurs.inc({}, by)).toThrow(/a counter goes up by a finite number/);
    ours.resetMetrics();
    theirs.resetMetrics();
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  it('gauges are read at scrape time, with or without labels', async () => {
    const m = new Metrics();
    let n = 1;
    m.gauge('policyguard_test_things', 'Test.', () => n);
    m.gauge('policyguard_test_by_kind', 'Test.', () => [[{ kind: 'lists' }, n * 2]], ['kind']);
    n = 5;
    const text = await m.exposition();
    expect(text).toMatch(/^policyguard_test_things 5$/m);
    expect(text).toMatch(/^policyguard_test_by_kind\{kind="lists"\} 10$/m);
  });

  it('histograms observe seconds; the watch timing measures from the first change not yet compiled', async () => {
    const m = new Metrics();
    const agents = m.watchTiming.watch('guardagents');
    m.decisionSeconds.observe(0.00003);
    agents.received(false); // a bookmark: alive, nothing to compile
    m.watchTiming.compiled();
    expect(await m.exposition()).toMatch(/^policyguard_watch_to_snapshot_duration_seconds_count 0$/m);
    agents.received(true);
    agents.received(true);
    m.watchTiming.compiled();
    m.watchTiming.compiled(); // nothing new: not observed again
    const text = await m.exposition();
    expect(text).toMatch(/^policyguard_decision_duration_seconds_bucket\{le="0\.00005"\} 1$/m);
    expect(text).toMatch(/^policyguard_watch_to_snapshot_duration_seconds_count 1$/m);
  });

  it('a resource\'s last-heard time is its stalest watch\'s: one that hangs shows however lively the others are, and 0 until each has heard', () => {
    const timing = new Metrics().watchTiming;
    const inA = timing.watch('guardagents');
    const inB = timing.watch('guardagents');
    const policies = timing.watch('guardpolicies');
    inA.received(true);
    policies.received(true);
    expect(timing.lastHeard().get('guardagents')).toBe(0);
    expect(timing.lastHeard().get('guardpolicies')).toBeGreaterThan(Date.now() - 60_000);
    inB.received(false);
    expect(timing.lastHeard().get('guardagents')).toBeGreaterThan(Date.now() - 60_000);
  });

  it('a Histogram is exposed exactly as prom-client exposes its own, labelled or not, in text and JSON', async () => {
    const buckets = [0.001, 0.01, 0.1];
    const values = [0.0005, 0.001, 0.002, 0.05, 0.1, 3];
    const theirs = new client.Registry();
    const ours = new client.Registry();
    const plainTheirs = new client.Histogram({ name: 'x_seconds', help: 'X.', buckets, registers: [theirs] });
    const plainOurs = new Histogram(ours, 'x_seconds', 'X.', buckets);
    const byRouteTheirs = new client.Histogram({ name: 'y_seconds', help: 'Y.', buckets, labelNames: ['route', 'status'], registers: [theirs] });
    const byRouteOurs = new Histogram(ours, 'y_seconds', 'Y.', buckets, ['route', 'status']);
    for (const v of values) {
      plainTheirs.observe(v);
      plainOurs.observe(v);
      for (const labels of [{ route: '/mcp', status: '200' }, { route: '/a"b', status: '500' }]) {
        byRouteTheirs.observe(labels, v);
        byRouteOurs.observe(labels, v);
      }
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    // JSON as well (prom-client adds exemplar: null to its own values; there are no exemplars here).
    const plain = (metrics: any[]) => metrics.map((m) => ({ ...m, values: m.values.map(({ labels, value, metricName }: any) => ({ labels, value, metricName })) }));
    expect(plain(await ours.getMetricsAsJSON())).toEqual(plain(await theirs.getMetricsAsJSON()));
    expect(() => plainOurs.observe(Number.NaN)).toThrow(TypeError);
  });

  it('every registry has the process metrics, collected once per process', async () => {
    const [a, b] = [new Metrics(), new Metrics()];
    for (const m of [a, b]) {
      const text = await m.exposition();
      for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_gc_duration_seconds']) expect(text).toContain(`# TYPE ${name} `);
    }
    expect(a.registry.getSingleMetric('nodejs_eventloop_lag_p99_seconds')).toBe(b.registry.getSingleMetric('nodejs_eventloop_lag_p99_seconds'));
  });
});
