/**
 * Fail closed (docs/decisions.md) in kubernetes mode against the real API server: compliance
 * counts only decisions, unregistered agents are judged in their caller's namespace, RBAC
 * decides who may read everyone's records or grant high trust through MCP, a write never
 * takes fields from another manager, and TokenReviews are not repeated for one token.
 */
import { CoreV1Api, EventsV1Api, RbacAuthorizationV1Api, type KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROUP } from '../../src/api/schemas.js';
import { autoRegisteredName } from '../../src/decide/identity.js';
import { sharedKubeConfig, sharedKubeconfigPath } from '../controlplane/test-context.js';
import { callAs } from '../standalone/harness.js';
import { applyGuard, createNamespace, eventually, getGuard, startOperator, type Operator } from './harness.js';

let kc: KubeConfig;
const core = () => kc.makeApiClient(CoreV1Api);
const rbac = () => kc.makeApiClient(RbacAuthorizationV1Api);

beforeAll(() => {
  kc = sharedKubeConfig();
});

async function serviceAccount(namespace: string, name: string): Promise<void> {
  await core().createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
}

async function tokenFor(namespace: string, sa: string): Promise<string> {
  const r = await core().createNamespacedServiceAccountToken({ name: sa, namespace, body: { spec: { audiences: ['policyguard'], expirationSeconds: 3600 } } });
  return r.status!.token!;
}

/** A ClusterRole with `rules`, bound to ServiceAccount ns/sa. */
async function grantCluster(name: string, rules: object[], namespace: string, sa: string): Promise<void> {
  await rbac().createClusterRole({ body: { metadata: { name }, rules } as never });
  await rbac().createClusterRoleBinding({
    body: { metadata: { name }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name }, subjects: [{ kind: 'ServiceAccount', name: sa, namespace }] },
  });
}

const metric = async (op: Operator, name: string): Promise<number> => {
  const text = await fetch(`${op.pg.url}/metrics`).then((r) => r.text());
  return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
};

describe('compliance counts decisions only (incidents are audit entries in a cluster)', () => {
  let ns: string;
  let op: Operator;
  beforeAll(async () => {
    ns = await createNamespace(kc, 'pg-counts');
    await applyGuard(kc, 'GuardPolicy', ns, 'no-deletes', { rules: [{ match: { tools: ['delete_*'] }, action: 'deny', message: 'no deletes' }] });
    op = await startOperator(sharedKubeconfigPath(), ns, ['--audit-sink', 'configmap']);
  });
  afterAll(async () => {
    await op?.close();
  });

  it('6 decisions (3 denied, each raising an incident) count as 6, and status=allowed returns decisions only', async () => {
    for (const t of ['read_a', 'read_b', 'read_c', 'delete_a', 'delete_b', 'delete_c']) await op.validate(t, 'counter');
    // The incidents are recorded in the background; wait until the log holds all three.
    await eventually(() => op.call('get_compliance_status', {}), (r: any) => r.incidents.total === 3, 'three incidents');
    const status = await op.call('get_compliance_status', {});
    expect(status.metrics).toMatchObject({ total_actions: 6, allowed_actions: 3, denied_actions: 3, denial_rate: 50 });
    const allowed = await op.call('get_audit_log', { status: 'allowed' });
    expect(allowed.total).toBe(3);
    expect(allowed.entries.every((e: any) => e.action.type === 'tool_call' && e.evaluation.allowed)).toBe(true);
    const everything = await op.call('get_audit_log', {});
    expect(everything.entries.some((e: any) => e.action.type === 'incident')).toBe(false);
  });
});

describe('identity under --auth kubernetes', () => {
  let ns: string;
  let team: string;
  let op: Operator;
  const call = (token: string, name: string, args: Record<string, unknown>) => callAs(op.pg.url, token, name, args);

  beforeAll(async () => {
    ns = await createNamespace(kc, 'pg-ident');
    team = await createNamespace(kc, 'pg-team');
    for (const sa of ['agent-a', 'auditor', 'agent-writer', 'high-granter']) await serviceAccount(ns, sa);
    await serviceAccount(team, 'newbie');
    await applyGuard(kc, 'GuardAgent', ns, 'agent-a', { trustLevel: 'medium', identities: [{ serviceAccount: { namespace: ns, name: 'agent-a' } }] });
    await applyGuard(kc, 'GuardAgent', ns, 'gitops-agent', { trustLevel: 'low', description: 'owned by Git' });
    // A policy of the team namespace: it governs agents in that namespace only.
    await applyGuard(kc, 'GuardPolicy', team, 'team-secrets', { rules: [{ match: { tools: ['secret_*'] }, action: 'deny', message: 'team secrets are off limits' }] });
    await grantCluster(`${ns}-auditor`, [{ apiGroups: [GROUP], resources: ['auditlogs'], verbs: ['get'] }], ns, 'auditor');
    await grantCluster(`${ns}-writer`, [{ apiGroups: [GROUP], resources: ['guardagents'], verbs: ['create', 'patch'] }], ns, 'agent-writer');
    await grantCluster(
      `${ns}-high`,
      [
        { apiGroups: [GROUP], resources: ['guardagents'], verbs: ['create', 'patch'] },
        { apiGroups: [GROUP], resources: ['trustlevels'], resourceNames: ['high'], verbs: ['grant'] },
      ],
      ns,
      'high-granter',
    );
    op = await startOperator(sharedKubeconfigPath(), ns, ['--auth', 'kubernetes', '--unknown-agents', 'evaluate', '--watch-namespaces', `${ns},${team}`]);
  });
  afterAll(async () => {
    await op?.close();
  });

  it('an unregistered agent is judged in its caller’s namespace, so that namespace’s policies apply', async () => {
    const token = await tokenFor(team, 'newbie');
    const d = (await call(token, 'validate_action', { action_type: 'tool_call', target: 'secret_read', agent_id: 'newbie-agent' })).json;
    expect(d).toMatchObject({ allowed: false, reason: 'team secrets are off limits', agent: { registered: false } });
    expect(d.matched[0]).toMatchObject({ policy: 'team-secrets', namespace: team });
    // …and it is registered there, bound to its ServiceAccount.
    const agent = await eventually(() => getGuard(kc, 'GuardAgent', team, autoRegisteredName('newbie-agent')).catch(() => undefined), (a) => a !== undefined, 'the auto-registered agent');
    expect(agent.spec.identities).toEqual([{ serviceAccount: { namespace: team, name: 'newbie' } }]);
  });

  it('a bound caller claiming an unregistered id is denied, and the IdentityMismatch Event regards its own agent', async () => {
    const d = (await call(await tokenFor(ns, 'agent-a'), 'validate_action', { action_type: 'tool_call', target: 'read_x', agent_id: 'ghost-x' })).json;
    expect(d.allowed).toBe(false);
    expect(d.reason).toMatch(/bound to 'agent-a' and may act only as it; 'ghost-x' is not registered/);
    const events = await eventually(
      async () => (await kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns })).items.filter((e) => e.reason === 'IdentityMismatch'),
      (l) => l.some((e) => e.note?.includes('ghost-x')),
      'an IdentityMismatch Event about ghost-x',
    );
    expect(events.find((e) => e.note?.includes('ghost-x'))!.regarding).toMatchObject({ kind: 'GuardAgent', name: 'agent-a', namespace: ns });
    await expect(getGuard(kc, 'GuardAgent', ns, 'ghost-x')).rejects.toMatchObject({ code: 404 });
  });

  it('RBAC `get auditlogs` reads everyone’s records; an agent reads its own', async () => {
    await call(await tokenFor(ns, 'agent-a'), 'validate_action', { action_type: 'tool_call', target: 'read_mine', agent_id: 'agent-a' });
    const own = (await call(await tokenFor(ns, 'agent-a'), 'get_audit_log', {})).json;
    expect(own.entries.length).toBeGreaterThan(0);
    expect(own.entries.every((e: any) => e.agent_id === 'agent-a' || e.caller === `system:serviceaccount:${ns}:agent-a`)).toBe(true);
    const all = (await call(await tokenFor(ns, 'auditor'), 'get_audit_log', {})).json;
    expect(all.entries.map((e: any) => e.agent_id)).toEqual(expect.arrayContaining(['agent-a', 'newbie-agent']));
    expect(all.filters_applied).toEqual(['none']);
  });

  it('granting high or admin through MCP needs RBAC `grant` on that trust level', async () => {
    const writer = await tokenFor(ns, 'agent-writer');
    const refused = await call(writer, 'register_agent', { agent_id: 'escalated', name: 'x', trust_level: 'admin' });
    expect(refused.json.success).toBe(false);
    expect(refused.json.message).toMatch(/may not grant trust level 'admin'.*'grant' trustlevels 'admin'/);
    await expect(getGuard(kc, 'GuardAgent', ns, 'escalated')).rejects.toMatchObject({ code: 404 });
    expect((await call(writer, 'register_agent', { agent_id: 'modest', name: 'x', trust_level: 'medium' })).json.success).toBe(true);

    const granter = await tokenFor(ns, 'high-granter');
    expect((await call(granter, 'register_agent', { agent_id: 'senior', name: 'x', trust_level: 'high' })).json.success).toBe(true);
    expect((await call(granter, 'register_agent', { agent_id: 'senior', name: 'x', trust_level: 'admin' })).json.message).toMatch(/may not grant trust level 'admin'/);
    expect((await getGuard(kc, 'GuardAgent', ns, 'senior')).spec.trustLevel).toBe('high');
  });

  it('register_agent never takes a field another manager owns: the error names the owner', async () => {
    // gitops-agent's spec was applied by "kubectl" (the harness's field manager), as Argo CD or Flux would.
    const r = await call(await tokenFor(ns, 'high-granter'), 'register_agent', { agent_id: 'gitops-agent', name: 'x', trust_level: 'medium' });
    expect(r.isError).toBe(true);
    expect(r.json.message).toMatch(/"kubectl"/);
    expect((await getGuard(kc, 'GuardAgent', ns, 'gitops-agent')).spec.trustLevel).toBe('low');
  });
});

describe('TokenReviews', () => {
  let ns: string;
  let op: Operator;
  beforeAll(async () => {
    ns = await createNamespace(kc, 'pg-tr');
    await serviceAccount(ns, 'caller');
    op = await startOperator(sharedKubeconfigPath(), ns, ['--auth', 'kubernetes', '--auth-failure-limit', '0']);
  });
  afterAll(async () => {
    await op?.close();
  });
  const post = (token: string) =>
    fetch(`${op.pg.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    }).then((r) => r.status);

  it('concurrent requests with one token share one TokenReview; a rejected token is not reviewed again', async () => {
    const token = await tokenFor(ns, 'caller');
    const before = await metric(op, 'policyguard_token_reviews');
    expect((await Promise.all(Array.from({ length: 20 }, () => post(token)))).every((st) => st === 200)).toBe(true);
    expect((await metric(op, 'policyguard_token_reviews')) - before).toBe(1);

    const bad = 'not-a-token-at-all';
    const mid = await metric(op, 'policyguard_token_reviews');
    for (let i = 0; i < 10; i++) expect(await post(bad)).toBe(401);
    expect((await metric(op, 'policyguard_token_reviews')) - mid).toBe(1);
  });
});
