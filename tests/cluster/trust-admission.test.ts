/**
 * The chart's ValidatingAdmissionPolicy (helm/policyguard/templates/trust-admission.yaml) on
 * the real API server: granting trustLevel high or admin needs verb `grant` on
 * policyguard.dev/trustlevels/<level>. Users are impersonated by the admin client; each has
 * create/update/patch on GuardAgents in the test namespace, and some a grant.
 *
 * The policy is applied exactly as rendered; its binding is narrowed to this file's namespace
 * so that test files running in parallel are not under it.
 */
import { CustomObjectsApi, KubeConfig, KubernetesObjectApi, PatchStrategy, setHeaderOptions, type KubernetesObject } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GROUP, VERSION } from '../../src/api/schemas.js';
import { applyObjects } from '../controlplane/index.js';
import { sharedKubeConfig } from '../controlplane/test-context.js';
import { ensureHelm } from '../helm/binary.js';
import { parseObjects, renderChart } from '../helm/chart.js';
import { createNamespace, eventually, getGuard, impersonating, outcome } from './harness.js';

const RBAC = 'rbac.authorization.k8s.io';
let admin: KubeConfig;
let ns: string;
let fullname: string;
/** A namespace whose GuardAgents only otto (of the users here) may create. */
let other: string;
const clusterScoped: KubernetesObject[] = [];

/** The admin client impersonating `user` (kubectl --as). */
const as = (user: string): CustomObjectsApi => impersonating(admin, user).makeApiClient(CustomObjectsApi);

const agentBody = (name: string, spec: Record<string, unknown>) => ({ apiVersion: `${GROUP}/${VERSION}`, kind: 'GuardAgent', metadata: { name, namespace: ns }, spec });
const plural = 'guardagents';

const create = (user: string, name: string, spec: Record<string, unknown>, dryRun?: 'All', labels?: Record<string, string>) =>
  outcome(
    as(user).createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: ns,
      plural,
      body: labels ? { ...agentBody(name, spec), metadata: { name, namespace: ns, labels } } : agentBody(name, spec),
      ...(dryRun ? { dryRun } : {}),
    }),
  );
/** `kubectl label guardagent NAME k=v` (a value of null removes the label). */
const label = (user: string, name: string, labels: Record<string, string | null>) =>
  outcome(as(user).patchNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, name, body: { metadata: { labels } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)));
const mergePatch = (user: string, name: string, spec: Record<string, unknown>) =>
  outcome(as(user).patchNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, name, body: { spec } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)));
/** `kubectl apply --server-side --force-conflicts`: field ownership is no obstacle, admission still is. */
const serverSideApply = (user: string, name: string, spec: Record<string, unknown>) =>
  outcome(as(user).patchNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, name, body: agentBody(name, spec), fieldManager: user, force: true }, setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply)));

/** The message the policy gives, after the API server's prefix. */
const refusal = (what: string, level: string, user: string) =>
  `${what} needs permission to 'grant' trustlevels '${level}' (group policyguard.dev)${level === 'admin' ? ' cluster-wide (a ClusterRoleBinding)' : ` in namespace ${ns} or cluster-wide`}, which ${user} does not have; see docs/deploy.md (Trust levels)`;

function roleBinding(name: string, role: { kind: 'Role' | 'ClusterRole'; name: string }, user: string): KubernetesObject {
  return { apiVersion: `${RBAC}/v1`, kind: 'RoleBinding', metadata: { name, namespace: ns }, roleRef: { apiGroup: RBAC, ...role }, subjects: [{ apiGroup: RBAC, kind: 'User', name: user }] } as KubernetesObject;
}

beforeAll(async () => {
  admin = sharedKubeConfig();
  await ensureHelm();
  ns = await createNamespace(admin, 'pg-trust');
  const release = `ta-${ns.slice(-6)}`;
  fullname = `${release}-policyguard`;
  const rendered = parseObjects(await renderChart({ release, namespace: ns }));
  const pick = (kind: string, name: string) => {
    const o = rendered.find((x) => x.kind === kind && x.metadata?.name === name);
    if (!o) throw new Error(`the chart renders no ${kind} ${name}`);
    return o as any;
  };
  const binding = pick('ValidatingAdmissionPolicyBinding', `${fullname}-trust-grant`);
  binding.spec.matchResources = { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': ns } } };
  clusterScoped.push(
    pick('ValidatingAdmissionPolicy', `${fullname}-trust-grant`),
    binding,
    pick('ClusterRole', `${fullname}-trust-granter-high`),
    pick('ClusterRole', `${fullname}-trust-granter-admin`),
    pick('ClusterRole', `${fullname}-trust-labeler`),
    // The server's own RBAC: it writes GuardAgents for register_agent and auto-registration.
    pick('ClusterRole', fullname),
    pick('ClusterRoleBinding', fullname),
    pick('ClusterRoleBinding', `${fullname}-trust-granter`),
    // ada may grant admin: bound cluster-wide, as docs/deploy.md says.
    { apiVersion: `${RBAC}/v1`, kind: 'ClusterRoleBinding', metadata: { name: `${fullname}-ada` }, roleRef: { apiGroup: RBAC, kind: 'ClusterRole', name: `${fullname}-trust-granter-admin` }, subjects: [{ apiGroup: RBAC, kind: 'User', name: 'ada' }] } as KubernetesObject,
    // lena may set trust labels: bound cluster-wide, as docs/deploy.md says.
    { apiVersion: `${RBAC}/v1`, kind: 'ClusterRoleBinding', metadata: { name: `${fullname}-lena` }, roleRef: { apiGroup: RBAC, kind: 'ClusterRole', name: `${fullname}-trust-labeler` }, subjects: [{ apiGroup: RBAC, kind: 'User', name: 'lena' }] } as KubernetesObject,
  );
  const users = ['alice', 'hilda', 'nadia', 'ada', 'lena', 'otto'];
  other = await createNamespace(admin, 'pg-trust-other');
  await applyObjects(admin, [
    pick('ServiceAccount', fullname),
    ...clusterScoped,
    { apiVersion: `${RBAC}/v1`, kind: 'Role', metadata: { name: 'agent-writer', namespace: ns }, rules: [{ apiGroups: [GROUP], resources: [plural], verbs: ['get', 'list', 'create', 'update', 'patch'] }] } as KubernetesObject,
    ...users.map((u) => roleBinding(`agent-writer-${u}`, { kind: 'Role', name: 'agent-writer' }, u)),
    // hilda may grant high here; nadia has the admin granter role, but only through a RoleBinding.
    roleBinding('hilda-grants-high', { kind: 'ClusterRole', name: `${fullname}-trust-granter-high` }, 'hilda'),
    roleBinding('nadia-grants-admin-here', { kind: 'ClusterRole', name: `${fullname}-trust-granter-admin` }, 'nadia'),
    // otto also writes GuardAgents in the other namespace.
    { apiVersion: `${RBAC}/v1`, kind: 'Role', metadata: { name: 'agent-writer', namespace: other }, rules: [{ apiGroups: [GROUP], resources: [plural], verbs: ['create'] }] } as KubernetesObject,
    { ...roleBinding('agent-writer-otto', { kind: 'Role', name: 'agent-writer' }, 'otto'), metadata: { name: 'agent-writer-otto', namespace: other } } as KubernetesObject,
  ]);
  // An admin agent someone else is bound to, made by the cluster admin.
  await admin.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, body: agentBody('root', { trustLevel: 'admin', identities: [{ user: 'token:root' }] }) });
  // RBAC and the policy reach the API server's authorizer and admission through informers: wait
  // until a probe (a dry run, so nothing is left behind) is refused for the policy's reason,
  // and until ada's grant is in force.
  await eventually(() => create('alice', 'probe', { trustLevel: 'admin' }, 'All'), (m) => m.includes('needs permission'), 'the policy to refuse alice');
  await eventually(() => create('ada', 'probe', { trustLevel: 'admin' }, 'All'), (m) => m === 'ok', "ada's grant to be in force");
  await eventually(() => create('lena', 'probe', {}, 'All', { 'trust.policyguard.dev/team': 'payments' }), (m) => m === 'ok', "lena's grant to be in force");
  await eventually(() => create('otto', 'probe', { identities: [{ serviceAccount: { namespace: other, name: 'bot-b' } }] }, 'All'), (m) => m === 'ok', "otto's role in the other namespace to be in force");
}, 20 * 60_000);

afterAll(async () => {
  const client = KubernetesObjectApi.makeApiClient(admin);
  for (const o of clusterScoped.reverse()) await client.delete(o).catch(() => undefined);
});

describe('granting trustLevel high or admin needs verb grant on trustlevels/<level>', () => {
  it('a user who may write GuardAgents, without grant, creates low and medium agents', async () => {
    expect(await create('alice', 'alice-low', { trustLevel: 'low', identities: [{ user: 'alice' }] })).toBe('ok');
    expect(await create('alice', 'alice-medium', { trustLevel: 'medium', identities: [{ user: 'alice' }] })).toBe('ok');
    expect(await create('alice', 'alice-default', { identities: [{ user: 'alice' }] })).toBe('ok'); // trustLevel defaults to low
  });

  it('…but creating an admin or high agent is refused, saying exactly what is missing; nothing is created', async () => {
    const admin1 = await create('alice', 'alice-admin', { trustLevel: 'admin', identities: [{ user: 'alice' }] });
    expect(admin1).toContain(`ValidatingAdmissionPolicy '${fullname}-trust-grant'`);
    expect(admin1).toContain(refusal(`creating GuardAgent ${ns}/alice-admin at trustLevel 'admin'`, 'admin', 'alice'));
    expect(admin1).toMatch(/^403 Forbidden/);
    expect(await create('alice', 'alice-high', { trustLevel: 'high' })).toContain(refusal(`creating GuardAgent ${ns}/alice-high at trustLevel 'high'`, 'high', 'alice'));
    // `kubectl apply --server-side` of a new object is a create too.
    expect(await serverSideApply('alice', 'alice-ssa', { trustLevel: 'admin' })).toContain(refusal(`creating GuardAgent ${ns}/alice-ssa at trustLevel 'admin'`, 'admin', 'alice'));
    for (const name of ['alice-admin', 'alice-high', 'alice-ssa']) await expect(getGuard(admin, 'GuardAgent', ns, name)).rejects.toMatchObject({ code: 404 });
  });

  it('raising the trust of an agent to high or admin is refused (merge patch and server-side apply)', async () => {
    expect(await mergePatch('alice', 'alice-low', { trustLevel: 'admin' })).toContain(refusal(`raising the trustLevel of GuardAgent ${ns}/alice-low from 'low' to 'admin'`, 'admin', 'alice'));
    expect(await mergePatch('alice', 'alice-medium', { trustLevel: 'high' })).toContain(refusal(`raising the trustLevel of GuardAgent ${ns}/alice-medium from 'medium' to 'high'`, 'high', 'alice'));
    expect(await serverSideApply('alice', 'alice-low', { trustLevel: 'admin', identities: [{ user: 'alice' }] })).toContain(refusal(`raising the trustLevel of GuardAgent ${ns}/alice-low from 'low' to 'admin'`, 'admin', 'alice'));
    expect((await getGuard(admin, 'GuardAgent', ns, 'alice-low')).spec.trustLevel).toBe('low');
    expect((await getGuard(admin, 'GuardAgent', ns, 'alice-medium')).spec.trustLevel).toBe('medium');
  });

  it('binding yourself to an existing admin agent is refused; other edits of it, and lowering trust, are not', async () => {
    expect(await mergePatch('alice', 'root', { identities: [{ user: 'token:root' }, { user: 'alice' }] })).toContain(
      refusal(`changing spec.identities of GuardAgent ${ns}/root at trustLevel 'admin'`, 'admin', 'alice'),
    );
    expect(await mergePatch('alice', 'root', { identities: [] })).toContain('changing spec.identities'); // any change
    expect((await getGuard(admin, 'GuardAgent', ns, 'root')).spec.identities).toEqual([{ user: 'token:root' }]);
    expect(await mergePatch('alice', 'root', { description: 'edited by alice', deniedTools: ['drop_*'] })).toBe('ok');
    expect(await create('ada', 'to-lower', { trustLevel: 'admin' })).toBe('ok');
    expect(await mergePatch('alice', 'to-lower', { trustLevel: 'medium' })).toBe('ok');
    expect((await getGuard(admin, 'GuardAgent', ns, 'to-lower')).spec.trustLevel).toBe('medium');
  });

  it('grant on high (RoleBinding in the namespace) allows high, not admin', async () => {
    expect(await create('hilda', 'hilda-high', { trustLevel: 'high', identities: [{ user: 'hilda' }] })).toBe('ok');
    expect(await mergePatch('hilda', 'alice-medium', { trustLevel: 'high' })).toBe('ok');
    expect(await create('hilda', 'hilda-admin', { trustLevel: 'admin' })).toContain(refusal(`creating GuardAgent ${ns}/hilda-admin at trustLevel 'admin'`, 'admin', 'hilda'));
    expect(await mergePatch('hilda', 'hilda-high', { trustLevel: 'admin' })).toContain(refusal(`raising the trustLevel of GuardAgent ${ns}/hilda-high from 'high' to 'admin'`, 'admin', 'hilda'));
    expect(await mergePatch('hilda', 'root', { identities: [{ user: 'hilda' }] })).toContain('needs permission');
  });

  it('grant on admin counts only cluster-wide: through a RoleBinding it allows high, not admin', async () => {
    expect(await create('nadia', 'nadia-high', { trustLevel: 'high' })).toBe('ok');
    expect(await create('nadia', 'nadia-admin', { trustLevel: 'admin' })).toContain(refusal(`creating GuardAgent ${ns}/nadia-admin at trustLevel 'admin'`, 'admin', 'nadia'));
  });

  it('grant on admin through a ClusterRoleBinding allows admin agents and rebinding them', async () => {
    expect(await create('ada', 'ada-admin', { trustLevel: 'admin', identities: [{ user: 'ada' }] })).toBe('ok');
    expect(await mergePatch('ada', 'alice-low', { trustLevel: 'admin' })).toBe('ok');
    expect(await mergePatch('ada', 'root', { identities: [{ user: 'token:root' }, { user: 'ada' }] })).toBe('ok');
    expect((await getGuard(admin, 'GuardAgent', ns, 'root')).spec.identities).toEqual([{ user: 'token:root' }, { user: 'ada' }]);
  });

  it("the chart's own ServiceAccount may grant every level (register_agent checks callers itself); without its trust-granter binding it may not", async () => {
    const server = `system:serviceaccount:${ns}:${fullname}`;
    expect(await create(server, 'registered-admin', { trustLevel: 'admin', identities: [{ user: 'token:ops' }] })).toBe('ok');
    expect(await mergePatch(server, 'alice-default', { trustLevel: 'high' })).toBe('ok');
    const granter = clusterScoped.find((o) => o.metadata?.name === `${fullname}-trust-granter`)!;
    await KubernetesObjectApi.makeApiClient(admin).delete(granter);
    await eventually(() => create(server, 'probe', { trustLevel: 'admin' }, 'All'), (m) => m.includes(refusal(`creating GuardAgent ${ns}/probe at trustLevel 'admin'`, 'admin', server)), 'the server to lose its grant');
  });
});

describe("binding another namespace's ServiceAccount needs permission to create GuardAgents there", () => {
  const refused = (name: string, user: string) =>
    `binding a ServiceAccount of namespace ${other} to GuardAgent ${ns}/${name} needs permission to create GuardAgents (group policyguard.dev) there, which ${user} does not have; see docs/deploy.md (Identities of other namespaces)`;

  it('without it, neither as serviceAccount nor as its username, on create or update; its own namespace, and users, stay free', async () => {
    expect(await create('alice', 'alice-borrow', { identities: [{ serviceAccount: { namespace: other, name: 'bot-b' } }] })).toContain(refused('alice-borrow', 'alice'));
    await expect(getGuard(admin, 'GuardAgent', ns, 'alice-borrow')).rejects.toMatchObject({ code: 404 });
    expect(await create('alice', 'alice-own', { identities: [{ serviceAccount: { namespace: ns, name: 'bot-a' } }, { user: 'token:ci-bot' }] })).toBe('ok');
    expect(await mergePatch('alice', 'alice-own', { identities: [{ serviceAccount: { namespace: ns, name: 'bot-a' } }, { user: `system:serviceaccount:${other}:bot-b` }] })).toContain(refused('alice-own', 'alice'));
    expect((await getGuard(admin, 'GuardAgent', ns, 'alice-own')).spec.identities).toEqual([{ serviceAccount: { namespace: ns, name: 'bot-a' } }, { user: 'token:ci-bot' }]);
  });

  it('with it the binding is made, and stays through edits of those without it', async () => {
    expect(await create('otto', 'otto-borrow', { identities: [{ serviceAccount: { namespace: other, name: 'bot-b' } }] })).toBe('ok');
    expect(await mergePatch('alice', 'otto-borrow', { description: 'edited by alice' })).toBe('ok');
    expect(await mergePatch('alice', 'otto-borrow', { identities: [{ serviceAccount: { namespace: other, name: 'bot-b' } }, { serviceAccount: { namespace: ns, name: 'bot-a' } }] })).toBe('ok');
    expect(await mergePatch('alice', 'otto-borrow', { identities: [{ serviceAccount: { namespace: other, name: 'bot-c' } }] })).toContain(refused('otto-borrow', 'alice'));
  });
});

describe('labels under trust.policyguard.dev/ (what cluster policies may select on) need verb grant on trustlabels, cluster-wide', () => {
  const refused = (name: string, user: string) =>
    `setting, changing or removing a label under trust.policyguard.dev/ on GuardAgent ${ns}/${name} needs permission to 'grant' trustlabels (group policyguard.dev) cluster-wide (a ClusterRoleBinding), which ${user} does not have; see docs/deploy.md (Trust labels)`;

  it('without it a user may not create an agent with one, nor add, change or remove one; other labels stay free', async () => {
    expect(await create('alice', 'alice-payments', {}, undefined, { 'trust.policyguard.dev/team': 'payments' })).toContain(refused('alice-payments', 'alice'));
    await expect(getGuard(admin, 'GuardAgent', ns, 'alice-payments')).rejects.toMatchObject({ code: 404 });
    expect(await create('alice', 'alice-labelled', {}, undefined, { team: 'payments' })).toBe('ok');
    expect(await label('alice', 'alice-labelled', { 'trust.policyguard.dev/team': 'payments' })).toContain(refused('alice-labelled', 'alice'));
    expect(await label('alice', 'alice-labelled', { team: 'anything', tier: 'web' })).toBe('ok');
    // One the platform team set: alice may neither change nor remove it.
    expect(await label('lena', 'alice-labelled', { 'trust.policyguard.dev/tier': 'restricted' })).toBe('ok');
    expect(await label('alice', 'alice-labelled', { 'trust.policyguard.dev/tier': 'open' })).toContain(refused('alice-labelled', 'alice'));
    expect(await label('alice', 'alice-labelled', { 'trust.policyguard.dev/tier': null })).toContain(refused('alice-labelled', 'alice'));
    expect((await getGuard(admin, 'GuardAgent', ns, 'alice-labelled')).metadata.labels).toEqual({ team: 'anything', tier: 'web', 'trust.policyguard.dev/tier': 'restricted' });
    // Edits that leave the trust labels as they are need nothing.
    expect(await mergePatch('alice', 'alice-labelled', { description: 'edited' })).toBe('ok');
  });

  it('with it (a ClusterRoleBinding to the trust-labeler role) every change is allowed', async () => {
    expect(await create('lena', 'lena-payments', {}, undefined, { 'trust.policyguard.dev/team': 'payments' })).toBe('ok');
    expect(await label('lena', 'lena-payments', { 'trust.policyguard.dev/team': 'risk' })).toBe('ok');
    expect(await label('lena', 'lena-payments', { 'trust.policyguard.dev/team': null })).toBe('ok');
    expect((await getGuard(admin, 'GuardAgent', ns, 'lena-payments')).metadata.labels ?? {}).toEqual({});
  });
});
