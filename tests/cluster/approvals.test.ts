/**
 * Approvals end to end on the real API server (docs/decisions.md, "Approvals"): the operator
 * runs as the chart's ServiceAccount with the chart's RBAC and approvals admission policy, the
 * agent calls with its own ServiceAccount token, and people decide with the real CLI
 * (`policyguard approvals … --kubeconfig`): alice holds the chart's approver role, bob may
 * write the status but lacks verb approve, and the agent's ServiceAccount holds the approver
 * role but asked (no self-approval).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, CustomObjectsApi, EventsV1Api, KubernetesObjectApi, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROUP, VERSION } from '../../src/api/schemas.js';
import { apiErrorMessage, applyObjects } from '../controlplane/index.js';
import { sharedKubeConfig } from '../controlplane/test-context.js';
import { ensureHelm } from '../helm/binary.js';
import { runCli } from '../standalone/cli.js';
import { readResult } from '../standalone/clients.js';
import { callAs, connect } from '../standalone/harness.js';
import { pythonAvailability } from '../standalone/python-client.js';
import { startPythonUpstream, type Upstream } from '../standalone/upstreams.js';
import { applyGuard, createNamespace, eventually, installChartRbac, serviceAccountKubeconfig, startOperator, userKubeconfig, type Operator } from './harness.js';

const RBAC = 'rbac.authorization.k8s.io';
const python = pythonAvailability();

let admin: KubeConfig;
let tmp: string;
let chartKubeconfig: string;
let ns: string;
let fullname: string;
let op: Operator;
let upstream: Upstream | undefined;
let agentToken: string;
const kubeconfigs: Record<'alice' | 'bob' | 'agent', string> = { alice: '', bob: '', agent: '' };
const clusterScoped: KubernetesObject[] = [];

const approvals = async (): Promise<any[]> =>
  ((await admin.makeApiClient(CustomObjectsApi).listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'guardapprovals' })) as { items: any[] }).items;
const approval = async (name: string): Promise<any> => (await approvals()).find((a) => a.metadata.name === name);
const validate = (parameters: Record<string, unknown>) =>
  callAs(op.pg.url, agentToken, 'validate_action', { agent_id: 'etl-bot', action_type: 'tool_call', target: 'drop_table', parameters });
const decide = (who: keyof typeof kubeconfigs, verdict: 'approve' | 'deny', name: string, ...extra: string[]) =>
  runCli(['approvals', verdict, name, '-n', ns, '--kubeconfig', kubeconfigs[who], ...extra]);
const events = async (reason: string, name: string) =>
  (await admin.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns })).items.filter((e) => e.reason === reason && e.regarding?.name === name);

beforeAll(async () => {
  admin = sharedKubeConfig();
  await ensureHelm();
  tmp = await mkdtemp(join(tmpdir(), 'pg-approvals-cluster-'));
  ns = await createNamespace(admin, 'pg-apr');
  const release = `apr-${ns.slice(-6)}`;
  fullname = `${release}-policyguard`;
  const chart = await installChartRbac(admin, ns, release, tmp);
  chartKubeconfig = chart.kubeconfigPath;
  const pick = (kind: string, name: string) => {
    const o = chart.rendered.find((x) => x.kind === kind && x.metadata?.name === name);
    if (!o) throw new Error(`the chart renders no ${kind} ${name}`);
    return o;
  };
  // The admission policy as rendered, its binding narrowed to this file's namespace.
  const binding = pick('ValidatingAdmissionPolicyBinding', `${fullname}-approvals`);
  binding.spec.matchResources = { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': ns } } };
  clusterScoped.push(pick('ValidatingAdmissionPolicy', `${fullname}-approvals`), binding);
  const core = admin.makeApiClient(CoreV1Api);
  await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'etl-bot' } } });
  const roleBinding = (name: string, role: { kind: string; name: string }, subject: Record<string, string>) =>
    ({ apiVersion: `${RBAC}/v1`, kind: 'RoleBinding', metadata: { name, namespace: ns }, roleRef: { apiGroup: RBAC, ...role }, subjects: [subject] }) as KubernetesObject;
  await applyObjects(admin, [
    ...clusterScoped,
    roleBinding('alice-approves', { kind: 'ClusterRole', name: `${fullname}-approver` }, { apiGroup: RBAC, kind: 'User', name: 'alice' }),
    roleBinding('etl-bot-approves', { kind: 'ClusterRole', name: `${fullname}-approver` }, { kind: 'ServiceAccount', name: 'etl-bot', namespace: ns }),
    { apiVersion: `${RBAC}/v1`, kind: 'Role', metadata: { name: 'status-writer', namespace: ns }, rules: [{ apiGroups: [GROUP], resources: ['guardapprovals', 'guardapprovals/status'], verbs: ['get', 'list', 'update', 'patch'] }] } as KubernetesObject,
    roleBinding('bob-writes-status', { kind: 'Role', name: 'status-writer' }, { apiGroup: RBAC, kind: 'User', name: 'bob' }),
  ]);
  kubeconfigs.alice = await userKubeconfig(admin, 'alice', tmp);
  kubeconfigs.bob = await userKubeconfig(admin, 'bob', tmp);
  kubeconfigs.agent = (await serviceAccountKubeconfig(admin, ns, 'etl-bot', tmp)).path;
  agentToken = (await core.createNamespacedServiceAccountToken({ name: 'etl-bot', namespace: ns, body: { spec: { audiences: ['policyguard'], expirationSeconds: 3600 } } })).status!.token!;

  if (python.ok) upstream = await startPythonUpstream(join(tmp, 'upstream.log'));
  await applyGuard(admin, 'GuardAgent', ns, 'etl-bot', { trustLevel: 'medium', identities: [{ serviceAccount: { namespace: ns, name: 'etl-bot' } }] });
  await applyGuard(admin, 'GuardPolicy', ns, 'people-decide', {
    rules: [
      { name: 'drops', match: { tools: ['drop_*'] }, action: 'require_approval', message: 'Dropping a table needs a DBA' },
      { name: 'big-refunds', match: { tools: ['refund'], arguments: [{ path: 'amount', operator: 'GreaterThan', values: ['500'] }] }, action: 'require_approval', message: 'Refunds above 500 need a person' },
    ],
  });
  if (upstream) await applyGuard(admin, 'GuardUpstream', ns, 'py', { url: upstream.url });
  op = await startOperator(chartKubeconfig, ns, ['--auth', 'kubernetes', '--approval-hold', '30s'], { dataDir: join(tmp, 'data') });
  // RBAC and the policy reach the API server through informers: wait until a person's create is refused by the policy.
  const probe = {
    apiVersion: `${GROUP}/${VERSION}`,
    kind: 'GuardApproval',
    metadata: { name: 'probe', namespace: ns },
    spec: {
      agentId: 'etl-bot', actionType: 'tool_call', target: 'x', argumentsDigest: `sha256:${'0'.repeat(64)}`, argumentsPreview: '{}', rules: [{ policy: 'p', rule: 'r' }],
      message: 'm', revision: 'r', requestedAt: '2030-01-01T00:00:00Z', expiresAt: '2030-01-01T01:00:00Z', requestedBy: 'probe', requesters: [],
    },
  };
  await eventually(
    () => admin.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'guardapprovals', body: probe, dryRun: 'All' }).then(() => 'ok', apiErrorMessage),
    (m) => m.includes('ValidatingAdmissionPolicy'),
    'the approvals admission policy to be in force',
  );
}, 20 * 60_000);

afterAll(async () => {
  await op?.close();
  await upstream?.stop();
  const client = KubernetesObjectApi.makeApiClient(admin);
  for (const o of clusterScoped.reverse()) await client.delete(o).catch(() => undefined);
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('approvals on the real API server, decided with the CLI', () => {
  let asked: string;

  it('require_approval creates a Pending GuardApproval in the agent namespace, naming the call and who may not decide it, with an Event', async () => {
    const first = await validate({ table: 'users' });
    expect(first.json).toMatchObject({ decision: 'require_approval', reason: 'Dropping a table needs a DBA', approval_id: expect.stringMatching(/^apr-[0-9a-f]{12}$/) });
    asked = first.json.approval_id;
    expect((await validate({ table: 'users' })).json.approval_id).toBe(asked);
    const a = await approval(asked);
    const agentSa = `system:serviceaccount:${ns}:etl-bot`;
    expect(a.spec).toMatchObject({
      agentId: 'etl-bot',
      target: 'drop_table',
      argumentsPreview: '{"table":"users"}',
      rules: [{ policy: `${ns}/people-decide`, rule: 'drops' }],
      requestedBy: agentSa,
      requesters: [agentSa],
    });
    expect(a.status).toEqual({ phase: 'Pending' });
    await eventually(() => events('ApprovalRequested', asked), (e) => e.length === 1, 'the ApprovalRequested Event');
    const list = await runCli(['approvals', 'list', '-n', ns, '--kubeconfig', kubeconfigs.alice]);
    expect(list.stdout).toMatch(new RegExp(`${asked} +etl-bot +drop_table +Pending +<none> +in 60m +\\{"table":"users"\\}`));
  });

  it('the agent cannot approve its own ask, and bob cannot without verb approve: the admission policy refuses, the CLI says why', async () => {
    const self = await decide('agent', 'approve', asked);
    expect(self.code).toBe(1);
    expect(self.stderr).toContain(`system:serviceaccount:${ns}:etl-bot may not decide GuardApproval ${ns}/${asked}: they are one of its spec.requesters`);
    const bob = await decide('bob', 'approve', asked);
    expect(bob.code).toBe(1);
    expect(bob.stderr).toContain(`bob may not decide GuardApproval ${ns}/${asked}: that needs verb 'approve' on guardapprovals`);
    expect((await approval(asked)).status).toEqual({ phase: 'Pending' });
    // Someone with no role here may not even list them: a refusal too (exit 1), not a usage
    // error or a missing cluster (exit 2).
    const list = await runCli(['approvals', 'list', '-n', ns, '--kubeconfig', await userKubeconfig(admin, 'carol', tmp)]);
    expect(list.code).toBe(1);
    expect(list.stderr).toMatch(new RegExp(`^policyguard: GuardApprovals not listed in namespace ${ns}: .*forbidden`));
  });

  it('alice approves: the same call is allowed once, the approval is Used, and the next call asks anew', async () => {
    const ok = await decide('alice', 'approve', asked, '--reason', 'ticket OPS-42');
    expect(ok.stderr).toBe('');
    expect(ok.stdout).toMatch(new RegExp(`^approval ${asked} in namespace ${ns} approved by alice: agent 'etl-bot' may now call 'drop_table' once`));
    const allowed = await eventually(() => validate({ table: 'users' }), (r) => r.json.allowed === true, 'the approval to reach the operator');
    expect(allowed.json).toMatchObject({ decision: 'allow', approval_id: asked, reason: `Approved by alice (approval ${asked}, now used): ticket OPS-42. Dropping a table needs a DBA` });
    expect((await approval(asked)).status).toMatchObject({ phase: 'Used', decidedBy: 'alice', reason: 'ticket OPS-42', actionId: allowed.json.action_id });
    const next = await validate({ table: 'users' });
    expect(next.json).toMatchObject({ decision: 'require_approval', approval_id: expect.not.stringMatching(asked) });
    await eventually(() => events('ApprovalApproved', asked), (e) => e.length === 1, 'the ApprovalApproved Event');
    const again = await decide('alice', 'deny', asked);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`approval ${asked} was approved by alice and already used`);
  });

  it('alice denies: the call is refused until the approval expires', async () => {
    const { json } = await validate({ table: 'payments' });
    expect((await decide('alice', 'deny', json.approval_id, '--reason', 'not in prod')).code).toBe(0);
    const refused = await eventually(() => validate({ table: 'payments' }), (r) => r.json.decision === 'deny', 'the denial to reach the operator');
    expect(refused.json.reason).toContain(`approval ${json.approval_id} was denied by alice: not in prod`);
  });

  it.skipIf(!python.ok)('the gateway holds a call until alice approves it, then forwards it', async () => {
    const client = await connect(`${op.pg.url}/upstreams/${ns}/py`, agentToken);
    try {
      const call = client.callTool({ name: 'refund', arguments: { amount: 900 } });
      let done = 0;
      void call.finally(() => (done = Date.now()));
      const held = await eventually(approvals, (all) => all.some((a) => a.spec.target === 'refund'), 'the held call to ask for approval');
      const name = held.find((a) => a.spec.target === 'refund').metadata.name;
      expect((await approval(name)).spec).toMatchObject({ upstream: `${ns}/py`, argumentsPreview: '{"amount":900}' });
      expect(done).toBe(0);
      expect((await decide('alice', 'approve', name)).code).toBe(0);
      const approvedAt = Date.now();
      const r = readResult(await call);
      expect(r.isError).toBeFalsy();
      expect(r.json).toBe('refunded 900');
      console.log(`held gateway call released ${done - approvedAt} ms after the CLI returned (through the watch)`);
      expect((await approval(name)).status.phase).toBe('Used');
    } finally {
      await client.close();
    }
  });

  it('an approval nobody decides expires: the Lease holder marks it Expired with an Event; naming it is refused, approving it too, and the call asks anew', async () => {
    // Restarted with approvals that last 3 s (the rules set no approval.ttl); it takes the Lease again.
    await op.close();
    op = await startOperator(chartKubeconfig, ns, ['--auth', 'kubernetes', '--approval-ttl', '3s'], { dataDir: join(tmp, 'data') });
    const { json } = await validate({ table: 'orders' });
    const id = json.approval_id;
    expect(json).toMatchObject({ decision: 'require_approval', approval_id: expect.stringMatching(/^apr-/) });
    const expired = await eventually(() => approval(id), (a) => a.status?.phase === 'Expired', 'the Lease holder to mark the approval Expired', 30_000);
    expect(Date.parse(expired.spec.expiresAt) - Date.parse(expired.spec.requestedAt)).toBe(3_000);
    await eventually(() => events('ApprovalExpired', id), (e) => e.length === 1, 'the ApprovalExpired Event');
    const named = await callAs(op.pg.url, agentToken, 'validate_action', { agent_id: 'etl-bot', action_type: 'tool_call', target: 'drop_table', parameters: { table: 'orders' }, approval_id: id });
    expect(named.json).toMatchObject({ decision: 'deny', reason: expect.stringContaining(`approval ${id} expired at `) });
    const late = await decide('alice', 'approve', id);
    expect(late.code).toBe(1);
    expect(late.stderr).toMatch(new RegExp(`^policyguard: approval ${id} expired at .*; the agent must ask again\\n$`));
    expect((await approval(id)).status.phase).toBe('Expired');
    const again = await validate({ table: 'orders' });
    expect(again.json).toMatchObject({ decision: 'require_approval', approval_id: expect.not.stringMatching(id) });
  });
});
