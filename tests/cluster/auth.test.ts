/**
 * `--auth kubernetes` against the real API server: ServiceAccount tokens from TokenRequest,
 * checked with TokenReview (audience-bound, cached), identities bound to ServiceAccounts,
 * RBAC (SubjectAccessReview) for the admin tools, and IdentityMismatch Events.
 */
import { CoreV1Api, EventsV1Api, RbacAuthorizationV1Api, type KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedKubeConfig, sharedKubeconfigPath } from '../controlplane/test-context.js';
import { connect } from '../standalone/harness.js';
import { applyGuard, createNamespace, eventually, getGuard, startOperator, type Operator } from './harness.js';

let kc: KubeConfig;
let ns: string;
let op: Operator;
const core = () => kc.makeApiClient(CoreV1Api);

async function tokenFor(sa: string, audience = 'policyguard'): Promise<string> {
  const r = await core().createNamespacedServiceAccountToken({ name: sa, namespace: ns, body: { spec: { audiences: [audience], expirationSeconds: 3600 } } });
  return r.status!.token!;
}

async function post(token: string | undefined, method: string, params: unknown = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(`${op.pg.url}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  return { status: res.status, body: await res.json().catch(() => undefined) };
}

const call = async (token: string, name: string, args: Record<string, unknown>) => {
  const client = await connect(op.pg.url, token);
  try {
    const r = await client.callTool({ name, arguments: args });
    return (r.structuredContent ?? (r.content as Array<{ text: string }>)[0]!.text) as any;
  } finally {
    await client.close();
  }
};

beforeAll(async () => {
  kc = sharedKubeConfig();
  ns = await createNamespace(kc, 'pg-auth');
  for (const sa of ['agent-a', 'agent-b', 'policy-admin', 'short-lived']) await core().createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: sa } } });
  await applyGuard(kc, 'GuardAgent', ns, 'agent-a', { trustLevel: 'medium', identities: [{ serviceAccount: { namespace: ns, name: 'agent-a' } }] });
  await applyGuard(kc, 'GuardAgent', ns, 'agent-b', { trustLevel: 'medium', identities: [{ serviceAccount: { namespace: ns, name: 'agent-b' } }] });
  // policy-admin is bound to no agent, but RBAC lets it create GuardPolicies in this namespace.
  const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
  await rbac.createNamespacedRole({ namespace: ns, body: { metadata: { name: 'policy-writer' }, rules: [{ apiGroups: ['policyguard.dev'], resources: ['guardpolicies'], verbs: ['create', 'patch'] }] } });
  await rbac.createNamespacedRoleBinding({
    namespace: ns,
    body: { metadata: { name: 'policy-writer' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'policy-writer' }, subjects: [{ kind: 'ServiceAccount', name: 'policy-admin', namespace: ns }] },
  });
  op = await startOperator(sharedKubeconfigPath(), ns, ['--auth', 'kubernetes', '--auth-cache-ttl', '1s']);
});
afterAll(async () => {
  await op?.close();
});

describe('TokenReview', () => {
  it('a ServiceAccount token for audience policyguard authenticates', async () => {
    const r = await post(await tokenFor('agent-a'), 'tools/list');
    expect(r.status).toBe(200);
    expect(r.body.result.tools).toHaveLength(6);
  });
  it('no token, a wrong token, or a token for another audience → 401', async () => {
    expect((await post(undefined, 'tools/list')).status).toBe(401);
    expect((await post('garbage', 'tools/list')).status).toBe(401);
    const other = await post(await tokenFor('agent-a', 'some-other-service'), 'tools/list');
    expect(other.status).toBe(401);
    expect(other.body.error.message).toMatch(/Unauthorized/);
  });
  it('a token stops working once its ServiceAccount is deleted (after the cache expires)', async () => {
    const token = await tokenFor('short-lived');
    expect((await post(token, 'tools/list')).status).toBe(200);
    await core().deleteNamespacedServiceAccount({ name: 'short-lived', namespace: ns });
    await eventually(() => post(token, 'tools/list').then((r) => r.status), (st) => st === 401, 'the deleted ServiceAccount to be refused');
  });
});

describe('identity and authorization in the cluster', () => {
  it('impersonation is denied, audited with both identities, and an IdentityMismatch Event regards the agent the caller is (naming the one it claimed)', async () => {
    const tokenA = await tokenFor('agent-a');
    const d = await call(tokenA, 'validate_action', { action_type: 'tool_call', target: 'read_x', agent_id: 'agent-b' });
    expect(d.allowed).toBe(false);
    expect(d.reason).toBe(`Caller 'system:serviceaccount:${ns}:agent-a' is not bound to agent 'agent-b' (identity mismatch)`);
    const own = await call(tokenA, 'validate_action', { action_type: 'tool_call', target: 'read_x' });
    expect(own).toMatchObject({ allowed: true, agent: { id: 'agent-a' } });
    const events = await eventually(
      async () => (await kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns })).items.filter((e) => e.reason === 'IdentityMismatch'),
      (l) => l.length > 0,
      'an IdentityMismatch Event',
    );
    expect(events[0]!.regarding).toMatchObject({ kind: 'GuardAgent', name: 'agent-a' });
    expect(events[0]!.note).toMatch(/agent-b/);
  });

  it('RBAC permission to create GuardPolicies lets a caller use create_policy; the object lands in its namespace', async () => {
    const r = await call(await tokenFor('policy-admin'), 'create_policy', { policy_id: 'from-rbac', name: 'x', rules: [{ match: { tools: ['nuke_*'] }, action: 'deny' }] });
    expect(r.success).toBe(true);
    expect((await getGuard(kc, 'GuardPolicy', ns, 'from-rbac')).spec.rules[0].match.tools).toEqual(['nuke_*']);
  });

  it('a caller without admin trust or RBAC cannot register agents; nothing is written', async () => {
    const r = await call(await tokenFor('agent-b'), 'register_agent', { agent_id: 'escalated', name: 'x', trust_level: 'admin' });
    expect(r.success).toBe(false);
    expect(r.message).toMatch(/may not create guardagents/);
    await expect(getGuard(kc, 'GuardAgent', ns, 'escalated')).rejects.toMatchObject({ code: 404 });
  });
});
