import { describe, expect, it } from 'vitest';
import { guardAgent } from '../api/builders.js';
import { aggregateDecisions, newAggregate, addDecision } from '../audit/compliance.js';
import { decisionRecord, memorySink } from '../audit/memory-sink-fixture.js';
import { SlidingWindow, reportFor, reportName } from './reports.js';

const HOUR = 3_600_000;
const T0 = Date.parse('2026-11-01T00:00:00.000Z');
const deny = { policy: 'no-drops', namespace: 'team-a', rule: 'drops', action: 'deny', enforcement: 'Enforce', message: 'no drops' };
const allow = { policy: 'reads', namespace: 'team-a', rule: 'rule-0', action: 'allow', enforcement: 'Enforce' };

const window = (sink: ReturnType<typeof memorySink>) => new SlidingWindow(sink, { windowMs: 24 * HOUR, bucketMs: HOUR, settleMs: 60_000, aggregate: { rules: true } });

describe('SlidingWindow', () => {
  it('after the first pass reads only the records since the last one, and counts each once', async () => {
    const sink = memorySink();
    for (let i = 0; i < 50; i++) sink.records.push(decisionRecord({ at: T0 + i * 60_000, agent: 'etl', target: `t${i}`, decision: i % 5 === 0 ? 'deny' : 'allow' }));
    const w = window(sink);
    const advance = async (now: number) => {
      const before = sink.read;
      const agg = await w.advance(now);
      return { agg, read: sink.read - before };
    };
    let now = T0 + 50 * 60_000;
    const first = await advance(now);
    expect([first.agg.total, first.read]).toEqual([50, 50]);

    const reads: number[] = [];
    for (let pass = 0; pass < 10; pass++) {
      now += 30_000;
      sink.records.push(decisionRecord({ at: now - 1, agent: 'etl', target: 'late', decision: 'deny' }));
      const { agg, read } = await advance(now);
      reads.push(read);
      const full = await aggregateDecisions(sink, { since: new Date(now - 24 * HOUR) });
      expect([agg.total, agg.denied]).toEqual([full.total, full.denied]);
    }
    // Each later pass re-reads the settle period (60 s) and the interval (30 s): ~3 records, never the window.
    process.stderr.write(`[reports] first pass read ${first.read} records, later passes ${reads.join(', ')}\n`);
    expect(Math.max(...reads)).toBeLessThanOrEqual(4);
  });

  it('counts a record that reaches the log late (another replica flushing) if it is within the settle period', async () => {
    const sink = memorySink([decisionRecord({ at: T0, agent: 'etl', target: 'a', decision: 'allow' })]);
    const w = window(sink);
    expect((await w.advance(T0 + 1_000)).total).toBe(1);
    // Written at T0 + 500 by another replica, visible only now.
    sink.records.push(decisionRecord({ at: T0 + 500, agent: 'etl', target: 'b', decision: 'deny' }));
    expect((await w.advance(T0 + 31_000)).total).toBe(2);
    expect((await w.advance(T0 + 61_000)).total).toBe(2);
    expect((await w.advance(T0 + 121_000)).total).toBe(2);
  });

  it('slides: records leave with their bucket once it is wholly before the window', async () => {
    const sink = memorySink([decisionRecord({ at: T0 + 10 * 60_000, agent: 'etl', target: 'a', decision: 'deny' })]);
    const w = window(sink);
    expect((await w.advance(T0 + HOUR)).total).toBe(1);
    // 24 h later the record is older than the window, but its bucket [T0, T0+1h) still overlaps it.
    expect((await w.advance(T0 + 24 * HOUR + 30 * 60_000)).total).toBe(1);
    expect((await w.advance(T0 + 25 * HOUR)).total).toBe(0);
  });

  it('reset forgets everything: the next pass reads the whole window again', async () => {
    const sink = memorySink([decisionRecord({ at: T0, agent: 'etl', target: 'a', decision: 'allow' })]);
    const w = window(sink);
    await w.advance(T0 + 120_000);
    w.reset();
    const before = sink.read;
    expect((await w.advance(T0 + 150_000)).total).toBe(1);
    expect(sink.read - before).toBe(1);
  });
});

describe('reportFor', () => {
  const agent = { name: 'etl', namespace: 'team-a', source: guardAgent({ name: 'etl', namespace: 'team-a', uid: '1111-2222' }) };
  const ctx = { windowMs: 24 * HOUR, coverage: 'all replicas (ConfigMap audit sink)' };
  const agg = newAggregate({ rules: true });
  for (const r of [
    decisionRecord({ at: T0 + 1_000, agent: 'etl', target: 'read_a', decision: 'allow', matched: [allow] }),
    decisionRecord({ at: T0 + 2_123, agent: 'etl', target: 'drop_users', decision: 'deny', matched: [deny] }),
    decisionRecord({ at: T0 + 3_000, agent: 'etl', target: 'drop_orders', decision: 'deny', matched: [deny] }),
  ]) addDecision(agg, r);

  it('is scoped to and owned by the GuardAgent, with a result per rule and outcome, its count, last time and last target', () => {
    const report = reportFor('openreports', agent, agg.agents.get('etl'), ctx) as any;
    const ref = { apiVersion: 'policyguard.dev/v1alpha1', kind: 'GuardAgent', name: 'etl', uid: '1111-2222' };
    expect(report).toMatchObject({
      apiVersion: 'openreports.io/v1alpha1',
      kind: 'Report',
      metadata: {
        name: 'policyguard-etl',
        namespace: 'team-a',
        ownerReferences: [{ ...ref, controller: true }],
        annotations: { 'policyguard.dev/decisions': '3', 'policyguard.dev/decisions-denied': '2', 'policyguard.dev/window-seconds': '86400', 'policyguard.dev/audit-coverage': ctx.coverage },
      },
      source: 'policyguard',
      scope: { ...ref, namespace: 'team-a' },
      summary: { pass: 1, fail: 1, warn: 0, error: 0, skip: 0 },
    });
    expect(report.results).toEqual([
      {
        source: 'policyguard', policy: 'team-a/no-drops', rule: 'drops', result: 'fail', message: 'no drops',
        timestamp: { seconds: (T0 + 3_000) / 1000, nanos: 0 },
        properties: { count: '2', lastTime: '2026-11-01T00:00:03.000Z', lastTarget: 'drop_orders', action: 'deny', enforcement: 'Enforce' },
      },
      {
        source: 'policyguard', policy: 'team-a/reads', rule: 'rule-0', result: 'pass', message: '1 decision(s) allowed by this rule',
        timestamp: { seconds: (T0 + 1_000) / 1000, nanos: 0 },
        properties: { count: '1', lastTime: '2026-11-01T00:00:01.000Z', lastTarget: 'read_a', action: 'allow', enforcement: 'Enforce' },
      },
    ]);
  });

  it('wgpolicyk8s.io has no report-level source or configuration; an agent without decisions gets an empty report', () => {
    const report = reportFor('wgpolicyk8s', agent, undefined, ctx) as any;
    expect(report).toMatchObject({ apiVersion: 'wgpolicyk8s.io/v1alpha2', kind: 'PolicyReport', summary: { pass: 0, fail: 0, warn: 0 }, results: [] });
    expect(report).not.toHaveProperty('source');
    expect(report).not.toHaveProperty('configuration');
    expect(report.metadata.annotations['policyguard.dev/decisions']).toBe('0');
  });

  it('is deterministic, so an unchanged report is not rewritten', () => {
    expect(JSON.stringify(reportFor('openreports', agent, agg.agents.get('etl'), ctx))).toBe(JSON.stringify(reportFor('openreports', agent, agg.agents.get('etl'), ctx)));
  });

  it('names stay valid object names', () => {
    expect(reportName('etl')).toBe('policyguard-etl');
    const long = reportName(`${'a'.repeat(240)}.b-c`);
    expect(long.length).toBeLessThanOrEqual(253);
    expect(long).toMatch(/^policyguard-a+-[0-9a-f]{8}$/);
    expect(reportName(`${'a'.repeat(230)}.${'b'.repeat(20)}`)).toMatch(/^policyguard-a{230}-[0-9a-f]{8}$/);
  });
});
