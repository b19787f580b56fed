/**
 * The chart's Grafana dashboard and PrometheusRule (docs/observability.md) against the metrics
 * a real server exposes: every metric name their PromQL uses must be one that PolicyGuard in
 * kubernetes mode (on the test control plane) serves at /metrics, so a renamed metric cannot
 * leave a dashboard panel empty or an alert silently never firing.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedKubeConfig, sharedKubeconfigPath } from '../controlplane/test-context.js';
import { applyGuard, createNamespace, startOperator, type Operator } from '../cluster/harness.js';
import { CHART_DIR, findObject, parseObjects, renderChart } from './chart.js';

const PROMQL_KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);
/** Aggregations may put `by (…)` between their name and their parenthesis. */
const AGGREGATIONS = new Set(['sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values', 'bottomk', 'topk', 'quantile']);

/**
 * Metric names in a PromQL expression: identifiers that are not functions (followed by `(`),
 * keywords, label names (inside `{…}` or a `by (…)` list), durations or strings.
 *
 * @example metricNames('sum by (pod) (rate(x_total{a="b"}[5m])) > 0') // ['x_total']
 */
export function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '$1');
  const names: string[] = [];
  for (const m of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const after = bare.slice(m.index + m[0].length).trimStart();
    const before = bare[m.index - 1];
    if (after.startsWith('(') || PROMQL_KEYWORDS.has(m[0].toLowerCase()) || AGGREGATIONS.has(m[0]) || (before !== undefined && /[0-9.]/.test(before))) continue;
    names.push(m[0]);
  }
  return names;
}

/** The metric names of a `label_values(metric{…}, label)` variable query. */
const variableMetric = (query: string) => /label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(query)?.[1];

let op: Operator;
let exposed: Set<string>;
let rule: any;
let dashboardMap: any;

beforeAll(async () => {
  const kc = sharedKubeConfig();
  const namespace = await createNamespace(kc, 'pg-observe');
  op = await startOperator(sharedKubeconfigPath(), namespace);
  await applyGuard(kc, 'GuardPolicy', namespace, 'no-deletes', { rules: [{ match: { tools: ['delete_*'] }, action: 'deny' }] });
  await op.validate('read_customer', 'bot');
  const text = await (await fetch(`${op.pg.url}/metrics`)).text();
  // Sample names and the names TYPE declares, with a histogram's _bucket/_sum/_count: a labelled
  // histogram has no samples until its first observation (nodejs_gc_duration_seconds, before a GC).
  const declared = (l: string) => {
    const [, , name, type] = l.split(' ');
    return type === 'histogram' ? [name!, `${name}_bucket`, `${name}_sum`, `${name}_count`] : [name!];
  };
  exposed = new Set(text.split('\n').flatMap((l) => (l.startsWith('# TYPE ') ? declared(l) : /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(l)?.[0] ?? [])));
  const objects = parseObjects(await renderChart({ set: ['metrics.prometheusRule.enabled=true', 'metrics.grafanaDashboard.enabled=true'] }));
  rule = findObject(objects, 'PrometheusRule');
  dashboardMap = objects.find((o: any) => o.kind === 'ConfigMap' && o.metadata?.name?.endsWith('-dashboard'));
});

afterAll(() => op?.close());

describe('metricNames', () => {
  it.each([
    ['sum by (namespace, pod) (rate(policyguard_decisions_total{decision="deny"}[5m])) > 0.1', ['policyguard_decisions_total']],
    ['time() - max by (pod) (a_seconds{x="y"}) > 900 and on (namespace, pod) (changes(b{kind="watches"}[900s]) == 0)', ['a_seconds', 'b']],
    ['histogram_quantile(0.99, sum by (le) (rate(h_bucket{namespace="$namespace"}[$__rate_interval])))', ['h_bucket']],
    ['c == 0 or absent(d{namespace="x"})', ['c', 'd']],
  ])('%s', (expr, names) => {
    expect(metricNames(expr)).toEqual(names);
  });
});

describe('the dashboard and the alerts use only metrics the server exposes', () => {
  it('the PrometheusRule: audit loss, audit unavailable, audit writes failing, deny spike, not ready, watch stalled, leader lost', () => {
    const rules: Array<{ alert: string; expr: string }> = rule.spec.groups.flatMap((g: any) => g.rules);
    expect(rules.map((r) => r.alert)).toEqual([
      'PolicyGuardAuditRecordsLost',
      'PolicyGuardAuditUnavailable',
      'PolicyGuardAuditWritesFailing',
      'PolicyGuardDenyRateSpike',
      'PolicyGuardNotReady',
      'PolicyGuardWatchStalled',
      'PolicyGuardLeaderLost',
    ]);
    const used = rules.flatMap((r) => metricNames(r.expr).map((name) => ({ alert: r.alert, name })));
    expect(new Set(used.map((u) => u.name)).size).toBeGreaterThanOrEqual(8);
    expect(used.filter((u) => !exposed.has(u.name))).toEqual([]);
  });

  it('the Grafana dashboard, a ConfigMap for the sidecar holding dashboards/policyguard.json as it is', () => {
    expect(dashboardMap.metadata.labels.grafana_dashboard).toBe('1');
    const json = dashboardMap.data['policyguard.json'] as string;
    expect(json.trimEnd()).toBe(readFileSync(join(CHART_DIR, 'dashboards', 'policyguard.json'), 'utf8').trimEnd());
    const dashboard = JSON.parse(json);
    const exprs: string[] = dashboard.panels.flatMap((p: any) => (p.targets ?? []).map((t: any) => t.expr));
    const used = [
      ...exprs.flatMap((e) => metricNames(e)),
      ...dashboard.templating.list.flatMap((v: any) => (typeof v.query === 'object' ? [variableMetric(v.query.query)!] : [])),
    ];
    expect(exprs.length).toBeGreaterThanOrEqual(20);
    expect(used).toContain('policyguard_watch_to_snapshot_duration_seconds_bucket');
    expect(used.filter((name) => !exposed.has(name))).toEqual([]);
  });

  it('kubernetes mode times watch events to the snapshot that has them, and says when the watch last spoke', async () => {
    const text = await (await fetch(`${op.pg.url}/metrics`)).text();
    const value = (series: string) => Number(text.split('\n').find((l) => l.startsWith(`${series} `))?.split(' ')[1]);
    // The first lists and the applied GuardPolicy, each compiled into a snapshot.
    expect(value('policyguard_watch_to_snapshot_duration_seconds_count')).toBeGreaterThanOrEqual(1);
    // Per resource; GuardUpstreams too (their CRD is installed here).
    for (const resource of ['guardagents', 'guardpolicies', 'guardupstreams']) {
      expect(value(`policyguard_watch_last_event_timestamp_seconds{resource="${resource}"}`)).toBeGreaterThan(Date.now() / 1000 - 300);
    }
    expect(value('policyguard_ready')).toBe(1);
  });

  it('neither is rendered unless asked for (their CRD or sidecar may be absent)', async () => {
    const objects = parseObjects(await renderChart());
    expect(findObject(objects, 'PrometheusRule')).toBeUndefined();
    expect(objects.find((o: any) => o.kind === 'ConfigMap' && o.metadata?.name?.endsWith('-dashboard'))).toBeUndefined();
  });
});
