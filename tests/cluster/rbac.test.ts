/**
 * The chart's RBAC is enough, and no more: the ServiceAccount, (Cluster)Roles and bindings that
 * `helm template` renders are created in the test API server, the operator runs authenticated
 * as that ServiceAccount (a TokenRequest token, not the admin certificate) and the controller
 * scenarios pass; then each rule is shown to matter by removing it and watching what breaks.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AuthorizationV1Api, CoordinationV1Api, CoreV1Api, CustomObjectsApi, EventsV1Api, KubeConfig, RbacAuthorizationV1Api, type KubernetesObject,
} from '@kubernetes/client-node';
import type { Client } from '@modelcontextprotocol/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROUP, VERSION } from '../../src/api/schemas.js';
import { startServer, type RunningPolicyGuard } from '../../src/cli/serve.js';
import { parseServeConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { applyObjects } from '../controlplane/index.js';
import { sharedKubeConfig } from '../controlplane/test-context.js';
import { ensureHelm } from '../helm/binary.js';
import { connect } from '../standalone/harness.js';
import { applyGuard, createNamespace, deleteGuard, eventually, getGuard, installChartRbac as installChartRbacIn, startOperator, validateOverHttp, type Operator } from './harness.js';

const readyOf = (obj: any) => obj?.status?.conditions?.find((c: any) => c.type === 'Ready');

let admin: KubeConfig;
let tmp: string;

/** The chart's RBAC for `release` in `ns`, and a kubeconfig authenticated as its ServiceAccount (./harness.ts). */
const installChartRbac = (ns: string, release: string, mutate?: (objs: any[]) => void) => installChartRbacIn(admin, ns, release, tmp, mutate);

async function can(kc: KubeConfig, verb: string, resource: string, namespace: string, group = GROUP): Promise<boolean> {
  const r = await kc.makeApiClient(AuthorizationV1Api).createSelfSubjectAccessReview({ body: { spec: { resourceAttributes: { verb, group, resource, namespace } } } });
  return r.status?.allowed === true;
}

async function metric(pg: RunningPolicyGuard, name: string): Promise<number> {
  const m = (await pg.metrics.exposition()).match(new RegExp(`^${name} (\\d+)$`, 'm'));
  if (!m) throw new Error(`${name} not in /metrics`);
  return Number(m[1]);
}

/** A new ServiceAccount `name` in `ns`, with a Role (named after it) of `verbs` on `resource` (group policyguard.dev). */
async function serviceAccountMay(ns: string, name: string, resource: string, verbs: string[]): Promise<void> {
  await admin.makeApiClient(CoreV1Api).createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name } } });
  await applyObjects(admin, [
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name, namespace: ns }, rules: [{ apiGroups: [GROUP], resources: [resource], verbs }] },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name, namespace: ns },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name }, subjects: [{ kind: 'ServiceAccount', name, namespace: ns }],
    },
  ] as unknown as KubernetesObject[]);
}

const policyEvents = async (ns: string, agent: string, target: string) =>
  (await admin.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns })).items.filter(
    (e) => e.reason === 'PolicyViolation' && e.regarding?.name === agent && e.note?.includes(`'${target}'`),
  );

beforeAll(async () => {
  admin = sharedKubeConfig();
  tmp = await mkdtemp(join(tmpdir(), 'policyguard-rbac-'));
  await ensureHelm();
}, 20 * 60_000);
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe("the operator runs as the chart's ServiceAccount, with the chart's --auth kubernetes", () => {
  let ns: string;
  let sa: KubeConfig;
  let op: Operator;
  let etl: Client; // an agent: ServiceAccount etl, bound to GuardAgent etl
  let policyAdmin: Client; // no agent, but RBAC lets it write GuardPolicies/GuardAgents in ns
  const tokenFor = async (name: string) =>
    (await admin.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({ name, namespace: ns, body: { spec: { audiences: ['policyguard'], expirationSeconds: 3600 } } })).status!.token!;
  const call = async (client: Client, name: string, args: Record<string, unknown>): Promise<any> => {
    const r = await client.callTool({ name, arguments: args });
    return r.structuredContent ?? (r.content as Array<{ text: string }>)[0]!.text;
  };
  const validate = (target: string) => call(etl, 'validate_action', { action_type: 'tool_call', target, agent_id: 'etl' });

  beforeAll(async () => {
    ns = await createNamespace(admin, 'pg-rbac');
    const installed = await installChartRbac(ns, `rbac-${ns.slice(-6)}`);
    sa = installed.kc;
    const core = admin.makeApiClient(CoreV1Api);
    for (const name of ['etl', 'policy-admin']) await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name } } });
    await applyObjects(admin, [
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'policy-writer', namespace: ns }, rules: [{ apiGroups: [GROUP], resources: ['guardpolicies', 'guardagents'], verbs: ['create', 'patch'] }] },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'policy-writer', namespace: ns },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'policy-writer' }, subjects: [{ kind: 'ServiceAccount', name: 'policy-admin', namespace: ns }],
      },
    ] as unknown as KubernetesObject[]);
    await applyGuard(admin, 'GuardAgent', ns, 'etl', { trustLevel: 'medium', deniedTools: ['drop_*'], identities: [{ serviceAccount: { namespace: ns, name: 'etl' } }] });
    // The chart's default audit sink, so the ConfigMap rules are exercised too.
    op = await startOperator(installed.kubeconfigPath, ns, ['--auth', 'kubernetes', '--audit-sink', 'configmap']);
    etl = await connect(op.pg.url, await tokenFor('etl'));
    policyAdmin = await connect(op.pg.url, await tokenFor('policy-admin'));
  }, 60_000);
  afterAll(async () => {
    await etl?.close();
    await policyAdmin?.close();
    await op?.close();
  });

  it('is not admin: it cannot read Secrets, nor GuardPolicies outside its namespaces', async () => {
    expect(await can(sa, 'list', 'guardpolicies', ns)).toBe(true);
    expect(await can(sa, 'list', 'guardpolicies', 'default')).toBe(false);
    expect(await can(sa, 'delete', 'guardpolicies', ns)).toBe(false);
    expect(await can(sa, 'list', 'secrets', ns, '')).toBe(false);
    expect(await can(sa, 'create', 'tokenreviews', '', 'authentication.k8s.io')).toBe(true); // --auth kubernetes
  });

  it('tokenreviews: a ServiceAccount token authenticates; no token is refused', async () => {
    expect((await validate('read_x')).agent).toEqual({ id: 'etl', trust_level: 'medium', registered: true });
    const anonymous = await fetch(`${op.pg.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    expect(anonymous.status).toBe(401);
  });

  it('list + watch: an applied GuardPolicy changes the next decision', async () => {
    expect((await validate('send_email')).allowed).toBe(true);
    await applyGuard(admin, 'GuardPolicy', ns, 'no-email', { rules: [{ match: { tools: ['send_*'] }, action: 'deny', message: 'no email' }] });
    const d = await eventually(() => validate('send_email'), (v) => v.allowed === false, 'the policy to be in force');
    expect(d.reason).toBe('no email');
  });

  it('leases: it takes the leader Lease', async () => {
    const lease = await eventually(
      () => admin.makeApiClient(CoordinationV1Api).readNamespacedLease({ name: 'policyguard-leader', namespace: ns }),
      (l) => !!l.spec?.holderIdentity,
      'the Lease',
    );
    expect(lease.spec?.holderIdentity).toBe(hostname()); // --replica-id defaults to the host name
    expect(await metric(op.pg, 'policyguard_leader')).toBe(1);
  });

  it('status patch: Ready=True with observedGeneration', async () => {
    const obj = await eventually(() => getGuard(admin, 'GuardPolicy', ns, 'no-email'), (o) => readyOf(o)?.status === 'True', 'Ready=True');
    expect(obj.status.observedGeneration).toBe(obj.metadata.generation);
  });

  it('events create + patch: a deny is an Event; repeats become its series', async () => {
    for (let i = 0; i < 5; i++) expect((await validate('drop_table')).allowed).toBe(false);
    const list = await eventually(() => policyEvents(ns, 'etl', 'drop_table'), (l) => l.length === 1 && l[0]!.series?.count === 5, 'one Event with series.count 5');
    expect(list[0]!.type).toBe('Warning');
  });

  it('subjectaccessreviews + create + patch: an RBAC-allowed caller\'s register_agent and create_policy are server-side applies of new objects', async () => {
    expect((await call(policyAdmin, 'register_agent', { agent_id: 'new-bot', name: 'n', trust_level: 'low' })).success).toBe(true);
    expect((await call(policyAdmin, 'create_policy', { policy_id: 'from-mcp', name: 'p', rules: [{ condition: { tool_pattern: 'zap_*' }, action: 'deny' }] })).success).toBe(true);
    expect((await getGuard(admin, 'GuardPolicy', ns, 'from-mcp')).metadata.managedFields.map((f: any) => f.manager)).toContain('policyguard');
    expect((await getGuard(admin, 'GuardAgent', ns, 'new-bot')).spec.trustLevel).toBe('low');
    await eventually(() => validate('zap_it'), (v) => v.allowed === false, 'the new policy in force');
    // The agent itself has no such RBAC and no admin trust: refused, nothing written.
    expect(JSON.stringify(await call(etl, 'create_policy', { policy_id: 'sneaky', name: 's', rules: [{ condition: { tool_pattern: '*' }, action: 'allow' }] }))).toMatch(/not allowed|forbidden|permission/i);
    await expect(getGuard(admin, 'GuardPolicy', ns, 'sneaky')).rejects.toMatchObject({ code: 404 });
  });

  it('create alone does not let a caller rewrite a policy that exists: create_policy on its id needs patch', async () => {
    await serviceAccountMay(ns, 'creator', 'guardpolicies', ['create']);
    const creator = await connect(op.pg.url, await tokenFor('creator'));
    try {
      const created = await eventually(() => call(creator, 'create_policy', { policy_id: 'creator-own', name: 'c', rules: [{ condition: { tool_pattern: 'x_*' }, action: 'deny' }] }), (r) => r.success === true, 'the Role to take effect');
      expect(created.message).toMatch(/created successfully/);
      // 'no-email' (applied with kubectl) denies send_*: rewriting it to deny nothing is an update.
      const before = (await getGuard(admin, 'GuardPolicy', ns, 'no-email')).spec;
      const rewrite = await call(creator, 'create_policy', { policy_id: 'no-email', name: 'n', rules: [{ condition: { tool_pattern: 'nothing_real' }, action: 'deny' }] });
      expect(rewrite).toMatchObject({ success: false, message: expect.stringMatching(/may not patch guardpolicies/) });
      expect((await getGuard(admin, 'GuardPolicy', ns, 'no-email')).spec).toEqual(before);
      expect((await validate('send_email')).allowed).toBe(false);
    } finally {
      await creator.close();
    }
  });

  it('an agent bound to someone else: a caller with admin trust may not change it, one that RBAC also allows to patch it may', async () => {
    const core = admin.makeApiClient(CoreV1Api);
    for (const name of ['ops', 'ops-rbac']) {
      await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name } } });
      await applyGuard(admin, 'GuardAgent', ns, `${name}-agent`, { trustLevel: 'admin', identities: [{ serviceAccount: { namespace: ns, name } }] });
    }
    await applyObjects(admin, [
      {
        apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'policy-writer-ops', namespace: ns },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'policy-writer' }, subjects: [{ kind: 'ServiceAccount', name: 'ops-rbac', namespace: ns }],
      },
    ] as unknown as KubernetesObject[]);
    // kubectl sets only its identities: the fields register_agent writes are nobody's.
    await applyGuard(admin, 'GuardAgent', ns, 'owned-bot', { identities: [{ user: 'someone-else' }] });
    const [ops, opsRbac] = [await connect(op.pg.url, await tokenFor('ops')), await connect(op.pg.url, await tokenFor('ops-rbac'))];
    try {
      const change = { agent_id: 'owned-bot', name: 'o', trust_level: 'low' };
      const refused = await eventually(() => call(ops, 'register_agent', change), (r) => /bound to other identities/.test(r.message ?? ''), 'the admin-trust agents in force');
      expect(refused.success).toBe(false);
      expect((await eventually(() => call(opsRbac, 'register_agent', change), (r) => r.success === true, 'the RoleBinding to take effect')).message).toMatch(/updated successfully/);
      expect((await getGuard(admin, 'GuardAgent', ns, 'owned-bot')).spec).toMatchObject({ trustLevel: 'low', identities: [{ user: 'someone-else' }] });
    } finally {
      await ops.close();
      await opsRbac.close();
    }
  });

  it('an agent held but not in force under another name: RBAC create alone does not let a caller take its id', async () => {
    await serviceAccountMay(ns, 'agent-creator', 'guardagents', ['create']);
    // Braces are no glob here: it never compiles, so whom it is bound to is not known.
    await applyGuard(admin, 'GuardAgent', ns, 'held-y', { agentId: 'held-id', allowedTools: ['{read,write}_*'], identities: [{ user: 'someone-else' }] });
    const creator = await connect(op.pg.url, await tokenFor('agent-creator'));
    try {
      // Its Ready=False condition is written once the operator has compiled it.
      await eventually(() => getGuard(admin, 'GuardAgent', ns, 'held-y'), (a) => readyOf(a)?.reason === 'InvalidPattern', 'the broken agent to be seen');
      const refused = await call(creator, 'register_agent', { agent_id: 'held-id', name: 'h', trust_level: 'low' });
      expect(refused).toMatchObject({ success: false, message: expect.stringMatching(/^agent 'held-id' is stored as a GuardAgent that is not in force/) });
      await expect(getGuard(admin, 'GuardAgent', ns, 'held-id')).rejects.toMatchObject({ code: 404 });
    } finally {
      await creator.close();
      await deleteGuard(admin, 'GuardAgent', ns, 'held-y');
    }
  });

  it('agent status patch: a critical incident suspends the agent', async () => {
    const r = await call(etl, 'report_incident', { incident_type: 'data_exfiltration', severity: 'critical', description: 'exfil', agent_id: 'etl' });
    expect(r.agent_suspended).toBe(true);
    expect((await getGuard(admin, 'GuardAgent', ns, 'etl')).status.suspension).toMatchObject({ incidentId: r.incident_id });
  });

  it('configmaps: the audit log is written to its ConfigMap ring', async () => {
    const cms = await eventually(
      async () => (await admin.makeApiClient(CoreV1Api).listNamespacedConfigMap({ namespace: ns, labelSelector: 'policyguard.dev/audit' })).items,
      (l) => l.length > 0,
      'an audit ConfigMap',
    );
    expect(cms[0]!.metadata?.name).toMatch(/^policyguard-audit-/);
    expect(await metric(op.pg, 'policyguard_audit_dropped_records')).toBe(0);
    const log = await call(etl, 'get_audit_log', { agent_id: 'etl', time_range: '1h' });
    expect(log.total).toBeGreaterThan(0);
  });
});

describe('each rule matters: remove it and a scenario breaks', () => {
  /** The chart's RBAC without the ClusterRole rule on `resource` (or only without `verb` of it). */
  const withoutRule = (resource: string, verb?: string) => (objs: any[]) => {
    // One of the server's own ClusterRoles (not the granter roles it ships for people to bind).
    const role = objs.find((o) => o.kind === 'ClusterRole' && !o.metadata.name.includes('-trust-granter-') && o.rules.some((r: any) => r.resources.includes(resource)));
    const rule = role.rules.find((r: any) => r.resources.includes(resource));
    if (verb) rule.verbs = rule.verbs.filter((v: string) => v !== verb);
    else role.rules = role.rules.filter((r: any) => r !== rule);
  };

  /** Runs the server as the chart's ServiceAccount with its RBAC changed by `mutate`, logging to `lines`. */
  async function startWithout(mutate: (objs: any[]) => void, flags: string[] = [], waitReady = true): Promise<{ ns: string; pg: RunningPolicyGuard; lines: string[]; sa: KubeConfig; decide: (target: string) => Promise<any> }> {
    const ns = await createNamespace(admin, 'pg-rbac-less');
    const { kubeconfigPath, kc } = await installChartRbac(ns, `less-${ns.slice(-6)}`, mutate);
    await applyGuard(admin, 'GuardAgent', ns, 'etl', { trustLevel: 'medium', deniedTools: ['drop_*'] });
    const lines: string[] = [];
    const config = parseServeConfig(
      ['--kubeconfig', kubeconfigPath, '--namespace', ns, '--watch-namespaces', ns, '--audit-sink', 'configmap', '--port', '0',
        '--lease-duration', '4s', '--renew-deadline', '3s', '--retry-period', '500ms', ...flags],
      {},
    );
    const pg = await startServer(config, createLogger('warn', (l) => lines.push(l)));
    running.push(pg);
    if (waitReady) await eventually(async () => pg.store.notReady(), (r) => r === undefined, 'the operator to sync');
    const decide = (target: string) => validateOverHttp(pg.url, target, 'etl');
    return { ns, pg, lines, sa: kc, decide };
  }
  const running: RunningPolicyGuard[] = [];
  afterAll(async () => {
    for (const pg of running) await pg.close();
  });

  it('without the status rule: decisions still change, but Ready is never written and the 403 is logged', async () => {
    const { ns, pg, lines, sa, decide } = await startWithout(withoutRule('guardpolicies/status')); // the rule for both kinds' status
    await applyGuard(admin, 'GuardPolicy', ns, 'no-email', { rules: [{ match: { tools: ['send_*'] }, action: 'deny' }] });
    await eventually(() => decide('send_email'), (d) => d.allowed === false, 'the policy to be in force');
    expect(await metric(pg, 'policyguard_leader')).toBe(1); // it is the leader, so it tries to write
    await eventually(async () => lines.filter((l) => /status update failed/.test(l)), (l) => l.length > 0, 'the failed status write to be logged');
    expect(lines.find((l) => /status update failed/.test(l))).toMatch(/HTTP 403.*cannot patch resource \W*(guardagents|guardpolicies)\/status/);
    expect(readyOf(await getGuard(admin, 'GuardPolicy', ns, 'no-email'))).toBeUndefined();
    expect(readyOf(await getGuard(admin, 'GuardAgent', ns, 'etl'))).toBeUndefined();
    expect(await metric(pg, 'policyguard_status_writes')).toBe(0);
    // The API server says why, for anyone checking by hand.
    const denied = await sa.makeApiClient(CustomObjectsApi)
      .patchNamespacedCustomObjectStatus({ group: GROUP, version: VERSION, namespace: ns, plural: 'guardpolicies', name: 'no-email', body: { status: {} } })
      .catch((e: { code?: number }) => e);
    expect((denied as { code?: number }).code).toBe(403);
  });

  it('without list/watch on guardupstreams: the server never reports ready, and the 403 is logged', async () => {
    const { pg, lines } = await startWithout(withoutRule('guardupstreams'), [], false);
    await eventually(async () => lines.filter((l) => /list\/watch failed.*guardupstreams/.test(l)), (l) => l.length > 0, 'the failed GuardUpstream list to be logged');
    expect(lines.find((l) => /list\/watch failed.*guardupstreams/.test(l))).toMatch(/HTTP 403/);
    expect(pg.store.notReady()).toBeDefined();
    expect((await fetch(`${pg.url}/readyz`)).status).toBe(503);
  });

  it('without get on its CRDs: it cannot check them, so it denies every call saying why, until the read is granted', async () => {
    let crdRole: any;
    const { pg, lines, decide } = await startWithout((objs) => {
      crdRole = structuredClone(objs.find((o) => o.kind === 'ClusterRole' && o.rules.some((r: any) => r.resources.includes('customresourcedefinitions'))));
      withoutRule('customresourcedefinitions')(objs);
    }, [], false);
    const why = /^CustomResourceDefinition \S+\.policyguard\.dev could not be read \(HTTP 403: .*cannot get resource "customresourcedefinitions".*\), so PolicyGuard cannot tell whether it prunes fields and nulls its checks rely on; grant get on it \(the chart's ClusterRole <release>-policyguard-crds does/;
    await eventually(async () => pg.store.notReady(), (r) => r !== undefined && why.test(r), 'the unreadable CRDs to hold the server');
    expect(lines.find((l) => /could not be read/.test(l))).toMatch(/HTTP 403/);
    expect((await fetch(`${pg.url}/readyz`)).status).toBe(503);
    const held = await decide('read_table');
    expect(held.allowed).toBe(false);
    expect(held.reason).toMatch(/could not be read \(HTTP 403/);
    // Granting the read (the chart's rule back) resumes decisions at the next check, without a restart.
    await admin.makeApiClient(RbacAuthorizationV1Api).replaceClusterRole({ name: crdRole.metadata.name, body: crdRole });
    await eventually(() => decide('read_table'), (d) => d.allowed === true, 'decisions to resume once the CRDs can be read');
    expect((await decide('drop_table')).allowed).toBe(false);
    expect(pg.store.notReady()).toBeUndefined();
  });

  it('without events create/patch: denies still deny, but no Event is recorded and the 403 is logged', async () => {
    const { ns, lines, decide } = await startWithout(withoutRule('events'));
    for (let i = 0; i < 3; i++) expect((await decide('drop_table')).allowed).toBe(false);
    await eventually(async () => lines.filter((l) => /could not create Event/.test(l)), (l) => l.length > 0, 'the failed Event to be logged');
    expect(lines.find((l) => /could not create Event/.test(l))).toMatch(/HTTP 403/);
    expect(await policyEvents(ns, 'etl', 'drop_table')).toEqual([]);
  });

  it('without create on guardagents/guardpolicies: patching existing objects works, but creating a new one is refused', async () => {
    const { ns, pg, sa } = await startWithout(withoutRule('guardagents', 'create'));
    expect(await can(sa, 'patch', 'guardagents', ns)).toBe(true);
    // register_agent of an existing agent is a patch and goes through; of a new agent, a create.
    // (etl's trust level and denied tools are kubectl's fields: the patch keeps them as they are, so it takes none of them.)
    const register = (agent_id: string, args: Record<string, unknown> = { trust_level: 'low' }) =>
      fetch(`${pg.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'register_agent', arguments: { agent_id, name: agent_id, ...args } } }),
      }).then(async (r) => ((await r.json()) as any).result);
    expect((await register('etl', { trust_level: 'medium', denied_tools: ['drop_*'] })).structuredContent?.success).toBe(true);
    expect(JSON.stringify(await register('brand-new'))).toMatch(/forbidden|403/i);
    await expect(getGuard(admin, 'GuardAgent', ns, 'brand-new')).rejects.toMatchObject({ code: 404 });
  });

  it('without the guardapprovals rule: a require_approval decision asks for no approval and says why; nothing is allowed', async () => {
    const { ns, lines, decide } = await startWithout(withoutRule('guardapprovals'));
    await applyGuard(admin, 'GuardPolicy', ns, 'ask-first', { rules: [{ match: { tools: ['send_*'] }, action: 'require_approval', message: 'a person reads it first' }] });
    const d = await eventually(() => decide('send_email'), (x) => x.decision === 'require_approval', 'the policy to be in force');
    expect(d.allowed).toBe(false);
    expect(d.approval_id).toBeUndefined();
    expect(d.reason).toMatch(/^a person reads it first; no approval could be requested: GuardApproval \S+\/apr-[0-9a-f]{12} not created: HTTP 403: .*cannot create resource "guardapprovals"/);
    expect(lines.some((l) => /list\/watch failed.*guardapprovals.*HTTP 403/.test(l))).toBe(true);
  });

  it('without the auth-delegator binding (--auth kubernetes): TokenReview is forbidden, so every caller gets 401 and the 403 is logged', async () => {
    const { ns, pg, lines } = await startWithout((objs) => objs.splice(objs.findIndex((o) => o.metadata.name.endsWith('-auth-delegator')), 1), ['--auth', 'kubernetes']);
    await admin.makeApiClient(CoreV1Api).createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'caller' } } });
    const token = (await admin.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({ name: 'caller', namespace: ns, body: { spec: { audiences: ['policyguard'] } } })).status!.token!;
    const res = await fetch(`${pg.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    expect(res.status).toBe(401);
    expect(lines.find((l) => /TokenReview failed/.test(l))).toMatch(/HTTP 403.*tokenreviews/);
  });
});
