/**
 * Policy reports on a real kube-apiserver with both report APIs installed from the vendored CRDs
 * (VENDOR_CRDS_DIR, as samples.test.ts installs kagent's): one openreports.io Report and
 * one wgpolicyk8s.io PolicyReport per GuardAgent (`--reports auto` finds both), whose counts
 * match the decisions made, rewritten within the coalescing interval by the Lease holder only,
 * kept whole by the API server's schemas, owned by their GuardAgent, and written under the
 * chart's RBAC; and, with the chart's defaults (--auth kubernetes, ConfigMap sink), the
 * dashboard's data scoped by TokenReview and RBAC.
 *
 * The test control plane runs no kube-controller-manager, so no garbage collector: the deletion
 * test checks the ownerReference against the live GuardAgent and then does what the garbage
 * collector does (delete dependents whose owner, by uid, is gone), see collectGarbage below.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, CustomObjectsApi, KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardAgent } from '../../src/api/builders.js';
import { GROUP, VERSION } from '../../src/api/schemas.js';
import { addDecision, newAggregate } from '../../src/audit/compliance.js';
import { decisionRecord } from '../../src/audit/memory-sink-fixture.js';
import { REPORT_APIS, reportFor, reportName, type ReportApi } from '../../src/controller/reports.js';
import { applyObjects } from '../controlplane/index.js';
import { sharedKubeConfig, sharedKubeconfigPath } from '../controlplane/test-context.js';
import { ensureHelm } from '../helm/binary.js';
import { VENDOR_CRDS_DIR, installCrds, parseObjects, renderChart, serverDryRun } from '../helm/chart.js';
import { applyGuard, createNamespace, deleteGuard, eventually, getGuard, startOperator, validateOverHttp, type Operator } from './harness.js';

const APIS: ReportApi[] = ['openreports', 'wgpolicyk8s'];
const INTERVAL = '1s';
/** Generous: a report is due within one interval; the bound only turns "never" into a failure. */
const BOUND = 30_000;

let kc: KubeConfig;
let custom: CustomObjectsApi;

const getReport = (api: ReportApi, namespace: string, agent: string): Promise<any> => {
  const { group, version, plural } = REPORT_APIS[api];
  return custom.getNamespacedCustomObject({ group, version, plural, namespace, name: reportName(agent) });
};
const listReports = async (api: ReportApi, namespace: string): Promise<any[]> => {
  const { group, version, plural } = REPORT_APIS[api];
  return ((await custom.listNamespacedCustomObject({ group, version, plural, namespace })) as { items: any[] }).items;
};
const metric = async (op: Operator, name: string) => Number((await op.pg.metrics.exposition()).match(new RegExp(`^${name} (\\d+)$`, 'm'))?.[1] ?? NaN);
const decisionsIn = (report: any) => Number(report.metadata.annotations['policyguard.dev/decisions']);

/** What a report should say about one agent, worked out from the decisions validate_action returned. */
class Expected {
  decisions = 0;
  denied = 0;
  readonly results = new Map<string, { count: number; lastTarget: string }>();

  add(d: any, target: string): void {
    this.decisions++;
    if (!d.allowed) this.denied++;
    // The issue's rule: pass for allows, fail for enforced denies, warn for approvals needed and Audit findings.
    const seen = (m: any, result: string) => {
      const key = `${m.namespace ? `${m.namespace}/` : ''}${m.policy} ${m.rule} ${result}`;
      const had = this.results.get(key);
      this.results.set(key, { count: (had?.count ?? 0) + 1, lastTarget: target });
    };
    for (const m of d.matched) seen(m, m.action === 'allow' ? 'pass' : m.action === 'deny' ? 'fail' : 'warn');
    for (const f of d.audit_findings) seen(f, 'warn');
  }

  /** The report's results as `policy rule result` → count and last target. */
  static of(report: any): Map<string, { count: number; lastTarget: string }> {
    return new Map(report.results.map((r: any) => [`${r.policy} ${r.rule} ${r.result}`, { count: Number(r.properties.count), lastTarget: r.properties.lastTarget }]));
  }
}

beforeAll(async () => {
  kc = sharedKubeConfig();
  custom = kc.makeApiClient(CustomObjectsApi);
  for (const vendor of ['openreports', 'wgpolicyk8s']) await installCrds(kc, join(VENDOR_CRDS_DIR, vendor));
}, 120_000);

describe('reports per GuardAgent (--reports auto, both report CRDs installed)', () => {
  let ns: string;
  let op: Operator;
  let standby: Operator;
  const expected = { etl: new Expected(), bot: new Expected() };
  const decide = async (agent: 'etl' | 'bot', target: string, parameters: Record<string, unknown> = {}) => {
    const d = await op.validate(target, agent, parameters);
    expected[agent].add(d, target);
    return d;
  };

  beforeAll(async () => {
    ns = await createNamespace(kc, 'pg-reports');
    await applyGuard(kc, 'GuardAgent', ns, 'etl', { trustLevel: 'medium' });
    await applyGuard(kc, 'GuardAgent', ns, 'bot', { trustLevel: 'low', deniedTools: ['send_sms'] });
    await applyGuard(kc, 'GuardPolicy', ns, 'no-drops', { rules: [{ name: 'drops', match: { tools: ['drop_*'] }, action: 'deny', message: 'no drops' }] });
    await applyGuard(kc, 'GuardPolicy', ns, 'refunds', {
      rules: [{ name: 'big', match: { tools: ['issue_refund'], arguments: [{ path: 'amount', operator: 'GreaterThan', values: ['500'] }] }, action: 'require_approval', message: 'a person approves big refunds' }],
    });
    await applyGuard(kc, 'GuardPolicy', ns, 'reads', { rules: [{ name: 'read', match: { tools: ['read_*'] }, action: 'allow' }] });
    await applyGuard(kc, 'GuardPolicy', ns, 'email-dry-run', { enforcement: 'Audit', rules: [{ name: 'external', match: { tools: ['send_*'] }, action: 'deny', message: 'external email' }] });
    op = await startOperator(sharedKubeconfigPath(), ns, ['--replica-id', 'reports-a', '--reports-interval', INTERVAL]);
    await eventually(async () => metric(op, 'policyguard_leader'), (v) => v === 1, 'reports-a to lead');
    // A second replica: it answers decisions too, but only the Lease holder writes reports.
    standby = await startOperator(sharedKubeconfigPath(), ns, ['--replica-id', 'reports-b', '--reports-interval', INTERVAL]);
    // startOperator waited for the first full list: every object above is in force.
    for (let i = 0; i < 3; i++) await decide('etl', `read_${i}`);
    for (const t of ['drop_users', 'drop_orders']) await decide('etl', t);
    await decide('etl', 'issue_refund', { amount: 900 });
    await decide('etl', 'issue_refund', { amount: 100 }); // no rule matches: counted, no result
    for (let i = 0; i < 2; i++) await decide('bot', 'send_email'); // allowed, but the Audit-mode policy reports it
    await decide('bot', 'send_sms'); // the agent's deniedTools
  }, 120_000);
  afterAll(async () => {
    await standby?.close();
    await op?.close();
  });

  it('writes one report per agent in each API, whose counts match the decisions made', async () => {
    for (const api of APIS) {
      for (const agent of ['etl', 'bot'] as const) {
        const want = expected[agent];
        const report = await eventually(() => getReport(api, ns, agent), (r) => decisionsIn(r) === want.decisions, `${api} report of ${agent} with ${want.decisions} decisions`, BOUND);
        expect(report.metadata.annotations['policyguard.dev/decisions-denied']).toBe(String(want.denied));
        expect(Expected.of(report)).toEqual(want.results);
        const summary = { pass: 0, fail: 0, warn: 0, error: 0, skip: 0 };
        for (const r of report.results) summary[r.result as 'pass' | 'fail' | 'warn']++;
        expect(report.summary).toEqual(summary);
      }
    }
    const etl = await getReport('openreports', ns, 'etl');
    expect(Expected.of(etl)).toEqual(
      new Map([
        [`${ns}/no-drops drops fail`, { count: 2, lastTarget: 'drop_orders' }],
        [`${ns}/refunds big warn`, { count: 1, lastTarget: 'issue_refund' }],
        [`${ns}/reads read pass`, { count: 3, lastTarget: 'read_2' }],
      ]),
    );
    expect(etl.summary).toEqual({ pass: 1, fail: 1, warn: 1, error: 0, skip: 0 });
    expect(etl.results[0]).toMatchObject({ result: 'fail', source: 'policyguard', message: 'no drops', properties: { action: 'deny', enforcement: 'Enforce' } });
    const bot = await getReport('wgpolicyk8s', ns, 'bot');
    // send_email twice and send_sms once: the Audit-mode policy reports all three, even the one deniedTools denied.
    expect(bot.results.find((r: any) => r.policy === `${ns}/email-dry-run`)).toMatchObject({ result: 'warn', properties: { count: '3', lastTarget: 'send_sms', enforcement: 'Audit', action: 'deny' } });
    expect(bot.results.find((r: any) => r.policy === 'agent:bot')).toMatchObject({ rule: 'deniedTools', result: 'fail', properties: { count: '1', lastTarget: 'send_sms' } });
  });

  it('scopes each report to its GuardAgent and makes the agent its owner (uid and all)', async () => {
    for (const agent of ['etl', 'bot']) {
      const live = await getGuard(kc, 'GuardAgent', ns, agent);
      const ref = { apiVersion: `${GROUP}/${VERSION}`, kind: 'GuardAgent', name: agent, uid: live.metadata.uid };
      for (const api of APIS) {
        const report = await getReport(api, ns, agent);
        expect(report.scope).toEqual({ ...ref, namespace: ns });
        expect(report.metadata.ownerReferences).toEqual([{ ...ref, controller: true }]);
        expect(report.metadata.labels).toEqual({ 'app.kubernetes.io/managed-by': 'policyguard' });
        expect(report.metadata.managedFields.map((f: any) => f.manager)).toEqual(['policyguard']);
      }
    }
  });

  it('updates a report within the coalescing interval, with one write per changed report per pass, never one per decision', async () => {
    const before = await getReport('openreports', ns, 'etl');
    const writes = await metric(op, 'policyguard_report_writes');
    const started = Date.now();
    const burst = 40;
    for (let i = 0; i < burst; i++) await decide('etl', 'drop_logs');
    const after = await eventually(() => getReport('openreports', ns, 'etl'), (r) => decisionsIn(r) === decisionsIn(before) + burst, `the report to count ${burst} more decisions`, BOUND);
    const elapsed = Date.now() - started;
    await eventually(() => getReport('wgpolicyk8s', ns, 'etl'), (r) => decisionsIn(r) === decisionsIn(after), 'the PolicyReport too', BOUND);
    const written = await metric(op, 'policyguard_report_writes') - writes;
    const passes = Math.ceil((Date.now() - started) / 1000) + 1;
    process.stderr.write(`[reports] ${burst} decisions in ${elapsed} ms: report updated after ${elapsed} ms with ${written} report writes (${passes} passes at most)\n`);
    expect(Expected.of(after).get(`${ns}/no-drops drops fail`)).toEqual({ count: 2 + burst, lastTarget: 'drop_logs' });
    // Only etl's two reports changed: at most two writes per pass, and far fewer than decisions.
    expect(written).toBeLessThanOrEqual(2 * passes);
    expect(written).toBeLessThan(burst);
    expect(await metric(standby, 'policyguard_leader')).toBe(0);
    expect(await metric(standby, 'policyguard_report_writes')).toBe(0);
    // An unchanged report is not written again.
    const settled = await metric(op, 'policyguard_report_writes');
    const version = (await getReport('openreports', ns, 'etl')).metadata.resourceVersion;
    await new Promise((r) => setTimeout(r, 3_000));
    expect(await metric(op, 'policyguard_report_writes')).toBe(settled);
    expect((await getReport('openreports', ns, 'etl')).metadata.resourceVersion).toBe(version);
  });

  it('goes with its GuardAgent: deleted, as the garbage collector deletes dependents whose owner uid is gone', async () => {
    const uid = (await getGuard(kc, 'GuardAgent', ns, 'bot')).metadata.uid;
    await deleteGuard(kc, 'GuardAgent', ns, 'bot');
    const collected = await collectGarbage(ns);
    expect(collected.sort()).toEqual([`PolicyReport ${reportName('bot')}`, `Report ${reportName('bot')}`]);
    for (const api of APIS) {
      await expect(getReport(api, ns, 'bot')).rejects.toMatchObject({ code: 404 });
      expect((await getReport(api, ns, 'etl')).metadata.ownerReferences[0].uid).not.toBe(uid);
    }
    // The operator does not write it back: its agent is gone.
    await new Promise((r) => setTimeout(r, 2_500));
    for (const api of APIS) expect((await listReports(api, ns)).map((r) => r.metadata.name)).toEqual([reportName('etl')]);
  });
});

/**
 * The garbage collector's rule for namespaced dependents (kube-controller-manager is not running
 * here): delete an object when none of the owners its ownerReferences name exists with that uid.
 * Returns `Kind name` of what it deleted.
 */
async function collectGarbage(namespace: string): Promise<string[]> {
  const deleted: string[] = [];
  for (const api of APIS) {
    const { group, version, plural, kind } = REPORT_APIS[api];
    for (const report of await listReports(api, namespace)) {
      const refs: Array<{ name: string; uid: string; kind: string }> = report.metadata.ownerReferences ?? [];
      const alive = await Promise.all(
        refs.map((ref) => getGuard(kc, 'GuardAgent', namespace, ref.name).then((o) => ref.kind === 'GuardAgent' && o.metadata.uid === ref.uid, () => false)),
      );
      if (refs.length === 0 || alive.some(Boolean)) continue;
      await custom.deleteNamespacedCustomObject({ group, version, plural, namespace, name: report.metadata.name, propagationPolicy: 'Background' });
      deleted.push(`${kind} ${report.metadata.name}`);
    }
  }
  return deleted;
}

describe("the API server's schemas accept the reports as written", () => {
  let ns: string;
  beforeAll(async () => {
    ns = await createNamespace(kc, 'pg-reports-schema');
  });

  /** A report with every field PolicyGuard writes: several results, Audit findings, a long target. */
  const fullReport = (api: ReportApi) => {
    const agg = newAggregate({ rules: true });
    const at = Date.parse('2026-11-01T10:00:00.123Z');
    addDecision(agg, decisionRecord({ at, agent: 'etl', target: 'read_x', decision: 'allow', matched: [{ policy: 'reads', namespace: ns, rule: 'read', action: 'allow', enforcement: 'Enforce' }] }));
    addDecision(agg, decisionRecord({ at: at + 1, agent: 'etl', target: `drop_${'x'.repeat(400)}`, decision: 'deny', matched: [{ policy: 'agent:etl', rule: 'deniedTools', action: 'deny', enforcement: 'Enforce', message: 'denied' }] }));
    addDecision(agg, decisionRecord({ at: at + 2, agent: 'etl', target: 'send_email', decision: 'require_approval', matched: [{ policy: 'mail', namespace: ns, rule: 'r', action: 'require_approval', enforcement: 'Enforce' }], findings: [{ policy: 'dry', rule: 'd', action: 'deny', enforcement: 'Audit' }] }));
    const agent = { name: 'etl', namespace: ns, source: guardAgent({ name: 'etl', namespace: ns, uid: '00000000-0000-0000-0000-000000000001' }) };
    return reportFor(api, agent, agg.agents.get('etl'), { windowMs: 86_400_000, coverage: 'all replicas (ConfigMap audit sink)' }) as any;
  };

  // Server-side apply (as the operator writes) refuses a field the schema does not declare instead of pruning it.
  it.each(APIS)('%s: a server-side apply with strict validation accepts every field, and refuses an unknown one (so it is really checked)', async (api) => {
    const report = fullReport(api);
    expect(report.results).toHaveLength(4);
    const ok = await serverDryRun(JSON.stringify(report));
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    const broken = { ...report, results: [{ ...report.results[0], verdict: 'nope' }] };
    const refused = await serverDryRun(JSON.stringify(broken));
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/\.results\[0\]\.verdict: field not declared in schema/);
    // wgpolicyk8s.io has no report-level source: PolicyGuard must not send one.
    if (api === 'wgpolicyk8s') expect((await serverDryRun(JSON.stringify({ ...report, source: 'policyguard' }))).stderr).toMatch(/\.source: field not declared in schema/);
  });
});

describe("with the chart's defaults (--auth kubernetes, ConfigMap audit sink)", () => {
  let ns: string;
  let op: Operator;
  const core = () => kc.makeApiClient(CoreV1Api);
  const tokenFor = async (sa: string) =>
    (await core().createNamespacedServiceAccountToken({ name: sa, namespace: ns, body: { spec: { audiences: ['policyguard'], expirationSeconds: 3600 } } })).status!.token!;
  const dashboard = async (token?: string) => {
    const res = await fetch(`${op.pg.url}/ui/api/dashboard?range=1h`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    return { status: res.status, body: (await res.json()) as any };
  };

  beforeAll(async () => {
    ns = await createNamespace(kc, 'pg-reports-auth');
    for (const name of ['etl', 'auditor', 'stranger']) await core().createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name } } });
    // `get auditlogs` lets the auditor read every agent's records (docs/decisions.md, "Identity").
    await applyObjects(kc, [
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: `${ns}-auditor` }, rules: [{ apiGroups: [GROUP], resources: ['auditlogs'], verbs: ['get'] }] },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: `${ns}-auditor` },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: `${ns}-auditor` }, subjects: [{ kind: 'ServiceAccount', name: 'auditor', namespace: ns }],
      },
    ] as unknown as KubernetesObject[]);
    await applyGuard(kc, 'GuardAgent', ns, 'etl', { trustLevel: 'medium', identities: [{ serviceAccount: { namespace: ns, name: 'etl' } }] });
    await applyGuard(kc, 'GuardAgent', ns, 'other', { trustLevel: 'low' });
    await applyGuard(kc, 'GuardPolicy', ns, 'no-drops', { rules: [{ name: 'drops', match: { tools: ['drop_*'] }, action: 'deny' }] });
    op = await startOperator(sharedKubeconfigPath(), ns, ['--auth', 'kubernetes', '--audit-sink', 'configmap', '--reports-interval', INTERVAL]);
    const token = await tokenFor('etl');
    for (const target of ['read_x', 'drop_x', 'drop_y']) await validateOverHttp(op.pg.url, target, 'etl', token);
  });
  afterAll(async () => {
    await op?.close();
  });

  it('the report counts the decisions from the ConfigMap ring and says whose they are', async () => {
    const report = await eventually(() => getReport('openreports', ns, 'etl'), (r) => decisionsIn(r) === 3, 'the report of etl', BOUND);
    expect(report.metadata.annotations['policyguard.dev/audit-coverage']).toBe('all replicas (ConfigMap audit sink)');
    expect(Expected.of(report)).toEqual(new Map([[`${ns}/no-drops drops fail`, { count: 2, lastTarget: 'drop_y' }]]));
    expect(decisionsIn(await getReport('openreports', ns, 'other'))).toBe(0);
  });

  it("the dashboard's data: a token is required (TokenReview), an agent sees its own, RBAC `get auditlogs` sees everyone's", async () => {
    expect((await dashboard()).status).toBe(401);
    expect((await dashboard('not-a-token')).status).toBe(401);
    const own = await dashboard(await tokenFor('etl'));
    expect(own.status).toBe(200);
    expect(own.body.scope).toEqual({ all: false, agents: ['etl'], caller: `system:serviceaccount:${ns}:etl` });
    expect(own.body.metrics).toMatchObject({ total_actions: 3, denied_actions: 2 });
    expect(own.body.agents.map((a: any) => a.id)).toEqual(['etl']);
    const all = await dashboard(await tokenFor('auditor'));
    expect(all.body.scope).toEqual({ all: true });
    expect(all.body.metrics.total_actions).toBe(3);
    expect(all.body.agents.map((a: any) => a.id).sort()).toEqual(['etl', 'other']);
    const stranger = await dashboard(await tokenFor('stranger'));
    expect(stranger.body.scope).toEqual({ all: false, agents: [], caller: `system:serviceaccount:${ns}:stranger` });
    expect(stranger.body.metrics.total_actions).toBe(0);
    expect(stranger.body.agents).toEqual([]);
  });
});

describe("under the chart's RBAC (the operator runs as the chart's ServiceAccount)", () => {
  let tmp: string;
  const running: Operator[] = [];
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'policyguard-reports-rbac-'));
    await ensureHelm();
  }, 20 * 60_000);
  afterAll(async () => {
    for (const op of running) await op.close();
    await rm(tmp, { recursive: true, force: true });
  });

  /** Creates the chart's RBAC objects for a release in `ns` (watching `ns`) and starts the operator with its ServiceAccount's token. */
  async function operatorAsChart(ns: string, set: string[], flags: string[]): Promise<Operator> {
    const release = `rep-${ns.slice(-6)}`;
    const objects = parseObjects(await renderChart({ release, namespace: ns, set: [`watchNamespaces[0]=${ns}`, ...set] })).filter((o) =>
      ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding'].includes(o.kind ?? ''),
    );
    await applyObjects(kc, objects as KubernetesObject[]);
    const sa = objects.find((o) => o.kind === 'ServiceAccount')!.metadata!.name!;
    const tr = await kc.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({ name: sa, namespace: ns, body: { spec: { audiences: [], expirationSeconds: 3600 } } });
    const asSa = new KubeConfig();
    const cluster = kc.getCurrentCluster()!;
    asSa.loadFromOptions({ clusters: [{ name: 'test', server: cluster.server, caData: cluster.caData }], users: [{ name: sa, token: tr.status!.token }], contexts: [{ name: 'sa', cluster: 'test', user: sa }], currentContext: 'sa' });
    const path = join(tmp, `${release}.kubeconfig`);
    await writeFile(path, asSa.exportConfig(), { mode: 0o600 });
    await applyGuard(kc, 'GuardAgent', ns, 'etl', { trustLevel: 'medium' });
    const op = await startOperator(path, ns, ['--reports-interval', INTERVAL, ...flags]);
    running.push(op);
    return op;
  }

  it('with the default values (reports.api=auto) it writes both reports', async () => {
    const ns = await createNamespace(kc, 'pg-reports-rbac');
    const op = await operatorAsChart(ns, [], []);
    await op.validate('read_x', 'etl');
    for (const api of APIS) await eventually(() => getReport(api, ns, 'etl'), (r) => decisionsIn(r) === 1, `the ${api} report`, BOUND);
    expect(await metric(op, 'policyguard_report_write_failures')).toBe(0);
  });

  it('without the reports ClusterRole (reports.api=off in the chart, --reports forced on) every write is refused, and counted', async () => {
    const ns = await createNamespace(kc, 'pg-reports-norbac');
    const op = await operatorAsChart(ns, ['reports.api=off'], ['--reports', 'both']);
    await op.validate('read_x', 'etl');
    await eventually(async () => metric(op, 'policyguard_report_write_failures'), (n) => n >= 2, 'refused report writes', BOUND);
    expect(await metric(op, 'policyguard_report_writes')).toBe(0);
    for (const api of APIS) expect(await listReports(api, ns)).toEqual([]);
  });
});
