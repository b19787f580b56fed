/**
 * The chart's approvals ValidatingAdmissionPolicy (helm/policyguard/templates/approval-admission.yaml)
 * on the real API server: who may make which GuardApproval transition. The CRD refuses
 * impossible transitions; the policy decides who. Users are impersonated by the admin client:
 * - the operator, PolicyGuard's ServiceAccount, with the chart's ClusterRole;
 * - alice, bound to the chart's ClusterRole <fullname>-approver by the `kubectl create
 *   rolebinding` command the install notes print, and allowed to create/patch GuardApprovals by a Role
 *   (so that admission, not RBAC, is what refuses her);
 * - bob, who may patch guardapprovals/status through a plain Role but lacks verb `approve`;
 * - etl-bot, the agent's ServiceAccount, bound to the approver role too, but in
 *   spec.requesters of every approval here (no self-approval).
 *
 * The policy is applied exactly as rendered; its binding is narrowed to this file's namespace.
 * Where the CRD refuses a request first (it validates before admission runs), the test
 * asserts the CRD's message and, where one exists, a sibling request only the policy refuses.
 * The kubectl commands of docs/deploy.md ("Approvals") and of NOTES.txt run as written.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AuthorizationV1Api, CustomObjectsApi, KubeConfig, KubernetesObjectApi, PatchStrategy, setHeaderOptions, type KubernetesObject,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { GROUP, VERSION } from '../../src/api/schemas.js';
import { REPO_ROOT, applyObjects, runProgram, type ExecResult } from '../controlplane/index.js';
import { sharedKubeConfig, sharedKubeconfigPath } from '../controlplane/test-context.js';
import { ensureHelm } from '../helm/binary.js';
import { CHART_DIR, helm, parseObjects, renderChart } from '../helm/chart.js';
import { createNamespace, eventually, impersonating, outcome } from './harness.js';

const RBAC = 'rbac.authorization.k8s.io';
const plural = 'guardapprovals';
let admin: KubeConfig;
let ns: string;
let fullname: string;
/** PolicyGuard's ServiceAccount, as the API server names it. */
let operator: string;
/** The agent's ServiceAccount: bound to the agent, so in spec.requesters. */
let agentSa: string;
const clusterScoped: KubernetesObject[] = [];
/** The NOTES `helm install` prints for this release. */
let notes: string;
/** The approval the docs' walk-through decides. */
const DOC_APPROVAL = 'apr-3f9c2a1b7d4e';

/** The ```sh blocks of the docs section that starts with `heading`. */
function sectionBlocks(markdown: string, heading: string): string[] {
  const from = markdown.indexOf(`\n${heading}\n`);
  if (from < 0) throw new Error(`no section ${heading}`);
  const to = markdown.indexOf('\n### ', from + 1);
  return [...markdown.slice(from, to < 0 ? undefined : to).matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

/**
 * Runs a shell snippet from the docs or the notes with bash, its `kubectl` talking to the test
 * API server as `user` (the admin when undefined), and its sample namespace team-a replaced by
 * this file's.
 */
function shell(snippet: string, user?: string): Promise<ExecResult> {
  const { command, args } = inject('kubectlCommand');
  const q = (a: string) => `'${a.replaceAll("'", `'\\''`)}'`;
  const kubectl = [command, ...args, '--kubeconfig', sharedKubeconfigPath(), ...(user ? [`--as=${user}`] : [])].map(q).join(' ');
  // --norc: bash started with a socket as stdin (some CI runners) reads bashrc, whose unset PS1 fails under -u.
  return runProgram({ command: 'bash', args: ['--norc', '--noprofile', '-euo', 'pipefail', '-c', `kubectl() { ${kubectl} "$@"; }\n${snippet.replaceAll('-n team-a', `-n ${ns}`)}`] }, []);
}

/** The admin client impersonating `user` (kubectl --as). */
const as = (user: string): CustomObjectsApi => impersonating(admin, user).makeApiClient(CustomObjectsApi);


const approvalBody = (name: string, status?: Record<string, unknown>) => ({
  apiVersion: `${GROUP}/${VERSION}`,
  kind: 'GuardApproval',
  metadata: { name, namespace: ns },
  spec: {
    agentId: 'etl-bot',
    actionType: 'tool_call',
    target: 'drop_table',
    argumentsDigest: `sha256:${'ab'.repeat(32)}`,
    argumentsPreview: '{"table":"users"}',
    rules: [{ policy: `${ns}/dba-review`, rule: 'drops-need-a-dba' }],
    message: 'dropping a table needs a DBA',
    revision: 'r1',
    requestedAt: '2030-01-01T00:00:00Z',
    expiresAt: '2030-01-01T01:00:00Z',
    requestedBy: agentSa,
    requesters: [agentSa],
  },
  ...(status ? { status } : {}),
});
const create = (user: string, name: string, status?: Record<string, unknown>, dryRun?: 'All') =>
  outcome(as(user).createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, body: approvalBody(name, status), ...(dryRun ? { dryRun } : {}) }));
const mergePatch = (user: string, name: string, body: Record<string, unknown>) =>
  outcome(as(user).patchNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, name, body }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)));
/** A merge patch of guardapprovals/status; `null` removes the status. */
const patchStatus = (user: string, name: string, status: Record<string, unknown> | null, dryRun?: 'All') =>
  outcome(as(user).patchNamespacedCustomObjectStatus(
    { group: GROUP, version: VERSION, namespace: ns, plural, name, body: { status }, ...(dryRun ? { dryRun } : {}) },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  ));
/** A person's decision: phase, decidedBy (`user` unless `extra` says otherwise), decidedAt, reason. */
const decide = (user: string, name: string, phase: 'Approved' | 'Denied', extra: Record<string, unknown> = {}, dryRun?: 'All') =>
  patchStatus(user, name, { phase, decidedBy: user, decidedAt: new Date().toISOString(), reason: `${user} looked at it`, ...extra }, dryRun);
const statusOf = async (name: string) =>
  ((await admin.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, name })) as { status?: Record<string, unknown> }).status;

/** A new approval as PolicyGuard makes it: created, then marked Pending. */
async function pending(name: string): Promise<void> {
  expect(await create(operator, name)).toBe('ok');
  expect(await patchStatus(operator, name, { phase: 'Pending' })).toBe('ok');
}
/** PolicyGuard's use of an approved approval. */
const use = (name: string) => patchStatus(operator, name, { phase: 'Used', usedAt: new Date().toISOString(), actionId: 'act-0123456789ab' });

/** The policy's refusal, as the API server words it (after its `<code> <reason>: <kind> "<name>" is forbidden: ` prefix). */
const refused = (msg: string) => `ValidatingAdmissionPolicy '${fullname}-approvals' with binding '${fullname}-approvals' denied request: ${msg}`;
const needsVerb = (user: string, name: string) =>
  refused(`${user} may not decide GuardApproval ${ns}/${name}: that needs verb 'approve' on guardapprovals (group policyguard.dev) in namespace ${ns}, e.g. a RoleBinding to ClusterRole ${fullname}-approver; see docs/deploy.md (Approvals)`);
const alreadyDecided = (name: string, phase: string, by: string, user: string) =>
  refused(`GuardApproval ${ns}/${name} is already ${phase} (decided by ${by}); ${user} may not change it: a decided approval is final`);
const operatorTransition = (name: string, from: string, to: string) =>
  refused(`PolicyGuard (${operator}) marks GuardApprovals Pending, Expired or Used but never decides one: GuardApproval ${ns}/${name} from ${from} to ${to} is not one of its transitions (Pending to Pending or Expired, Approved to Used or Expired)`);
/** The CRD's transition rule (src/api/schemas.ts), which runs before admission. */
const CRD_NO_REMOVAL = 'status cannot be removed once written';
const CRD_FINAL = 'a decided approval cannot be changed: only Approved may still become Used or Expired; Denied, Expired and Used are final';

function roleBinding(name: string, role: { kind: 'Role' | 'ClusterRole'; name: string }, subject: { kind: 'User'; name: string } | { kind: 'ServiceAccount'; name: string }): KubernetesObject {
  const s = subject.kind === 'User' ? { apiGroup: RBAC, ...subject } : { ...subject, namespace: ns };
  return { apiVersion: `${RBAC}/v1`, kind: 'RoleBinding', metadata: { name, namespace: ns }, roleRef: { apiGroup: RBAC, ...role }, subjects: [s] } as KubernetesObject;
}

/** Whether RBAC lets `user` do `verb` on guardapprovals (or its `subresource`) in the test namespace. */
async function allowed(user: string, verb: string, subresource = ''): Promise<boolean> {
  const r = await admin.makeApiClient(AuthorizationV1Api).createSubjectAccessReview({
    body: { spec: { user, resourceAttributes: { group: GROUP, resource: plural, subresource, verb, namespace: ns } } },
  });
  return r.status?.allowed === true;
}

beforeAll(async () => {
  admin = sharedKubeConfig();
  await ensureHelm();
  ns = await createNamespace(admin, 'pg-approvals');
  const release = `ap-${ns.slice(-6)}`;
  fullname = `${release}-policyguard`;
  operator = `system:serviceaccount:${ns}:${fullname}`;
  agentSa = `system:serviceaccount:${ns}:etl-bot`;
  const rendered = parseObjects(await renderChart({ release, namespace: ns }));
  // The install notes, as `helm install` prints them (a client-side dry run creates nothing).
  const installed = await helm(['install', release, CHART_DIR, '--dry-run=client', '--namespace', ns, '--kubeconfig', sharedKubeconfigPath()]);
  expect(installed.stderr).toBe('');
  notes = installed.stdout.slice(installed.stdout.indexOf('\nNOTES:'));
  const pick = (kind: string, name: string) => {
    const o = rendered.find((x) => x.kind === kind && x.metadata?.name === name);
    if (!o) throw new Error(`the chart renders no ${kind} ${name}`);
    return o as any;
  };
  const binding = pick('ValidatingAdmissionPolicyBinding', `${fullname}-approvals`);
  binding.spec.matchResources = { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': ns } } };
  clusterScoped.push(
    pick('ValidatingAdmissionPolicy', `${fullname}-approvals`),
    binding,
    // The server's own RBAC, and the role people decide with.
    pick('ClusterRole', fullname),
    pick('ClusterRoleBinding', fullname),
    pick('ClusterRole', `${fullname}-approver`),
  );
  await applyObjects(admin, [
    pick('ServiceAccount', fullname),
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'etl-bot', namespace: ns } } as KubernetesObject,
    ...clusterScoped,
    // alice may create and edit GuardApprovals as far as RBAC goes: admission must refuse her.
    { apiVersion: `${RBAC}/v1`, kind: 'Role', metadata: { name: 'approval-writer', namespace: ns }, rules: [{ apiGroups: [GROUP], resources: [plural], verbs: ['create', 'update', 'patch'] }] } as KubernetesObject,
    roleBinding('approval-writer-alice', { kind: 'Role', name: 'approval-writer' }, { kind: 'User', name: 'alice' }),
    // bob may write the status, but has no `approve`.
    { apiVersion: `${RBAC}/v1`, kind: 'Role', metadata: { name: 'status-writer', namespace: ns }, rules: [
      { apiGroups: [GROUP], resources: [plural], verbs: ['get', 'list', 'watch'] },
      { apiGroups: [GROUP], resources: [`${plural}/status`], verbs: ['get', 'update', 'patch'] },
    ] } as KubernetesObject,
    roleBinding('status-writer-bob', { kind: 'Role', name: 'status-writer' }, { kind: 'User', name: 'bob' }),
    // The agent's ServiceAccount is an approver too: only spec.requesters stops it.
    roleBinding('approver-etl-bot', { kind: 'ClusterRole', name: `${fullname}-approver` }, { kind: 'ServiceAccount', name: 'etl-bot' }),
  ]);
  // alice gets the role as the install notes tell an admin to grant it.
  const grant = notes.match(/^ {2}(kubectl create rolebinding [^\n]*)$/m)?.[1];
  expect(grant).toBe(`kubectl create rolebinding policyguard-approvers --clusterrole=${fullname}-approver --user=alice -n team-a`);
  const granted = await shell(grant!);
  expect(granted.stderr).toBe('');
  // RBAC and the policy reach the API server's authorizer and admission through informers.
  for (const [user, verb, sub] of [
    [operator, 'create', ''], [operator, 'patch', 'status'], ['alice', 'approve', ''], ['alice', 'patch', 'status'], ['alice', 'create', ''],
    ['bob', 'patch', 'status'], [agentSa, 'approve', ''],
  ] as const) {
    await eventually(() => allowed(user, verb, sub), (a) => a, `${user} to be allowed to ${verb} ${plural}${sub ? `/${sub}` : ''}`);
  }
  // Two probes (dry runs, which change nothing), refused by different rules, so that removing
  // one rule for a mutation check fails its test rather than this wait.
  await pending('probe');
  await eventually(
    () => Promise.all([create('alice', 'probe-create', undefined, 'All'), decide('bob', 'probe', 'Approved', {}, 'All')]),
    (ms) => ms.some((m) => m.includes(`ValidatingAdmissionPolicy '${fullname}-approvals'`)),
    'the policy to be in force',
  );
}, 20 * 60_000);

afterAll(async () => {
  const client = KubernetesObjectApi.makeApiClient(admin);
  for (const o of clusterScoped.reverse()) await client.delete(o).catch(() => undefined);
});

describe('GuardApproval admission: PolicyGuard asks, people with verb approve decide', () => {
  it('only PolicyGuard creates GuardApprovals, and the API server drops the status a create sends', async () => {
    const byAlice = await create('alice', 'forged', { phase: 'Approved', decidedBy: 'alice', decidedAt: '2030-01-01T00:00:00Z' });
    expect(byAlice).toMatch(/^403 Forbidden/);
    expect(byAlice).toContain(refused(`GuardApprovals are created by PolicyGuard only (${operator}); alice may not create GuardApproval ${ns}/forged; ask through validate_action or the gateway`));
    await expect(statusOf('forged')).rejects.toMatchObject({ code: 404 });
    // PolicyGuard's create carries status (src/approvals/ask.ts), which the status subresource drops.
    expect(await create(operator, 'created', { phase: 'Approved', decidedBy: 'alice', decidedAt: '2030-01-01T00:00:00Z' })).toBe('ok');
    expect(await statusOf('created')).toBeUndefined();
  });

  it('PolicyGuard marks a new approval Pending, but may not write a person\'s fields', async () => {
    expect(await create(operator, 'to-mark')).toBe('ok');
    expect(await patchStatus(operator, 'to-mark', { phase: 'Pending', decidedBy: 'alice', decidedAt: '2030-01-01T00:00:00Z' })).toContain(
      refused(`PolicyGuard (${operator}) marks GuardApprovals Pending, Expired or Used but never decides one: it may not write status.decidedBy, status.decidedAt or status.reason of GuardApproval ${ns}/to-mark`),
    );
    expect(await patchStatus(operator, 'to-mark', { phase: 'Pending' })).toBe('ok');
    expect(await statusOf('to-mark')).toEqual({ phase: 'Pending' });
  });

  it('PolicyGuard cannot approve or deny a pending approval', async () => {
    await pending('op-decides');
    expect(await decide(operator, 'op-decides', 'Approved', { decidedBy: 'alice' })).toContain(operatorTransition('op-decides', 'Pending', 'Approved'));
    expect(await decide(operator, 'op-decides', 'Denied')).toContain(operatorTransition('op-decides', 'Pending', 'Denied'));
    expect(await statusOf('op-decides')).toEqual({ phase: 'Pending' });
  });

  it('bob may write the status through RBAC, but without verb approve he cannot decide', async () => {
    await pending('for-bob');
    expect(await decide('bob', 'for-bob', 'Approved')).toContain(needsVerb('bob', 'for-bob'));
    expect(await decide('bob', 'for-bob', 'Denied')).toContain(needsVerb('bob', 'for-bob'));
    // Removing the status would make any approval Pending again: the CRD refuses that first.
    expect(await patchStatus('bob', 'for-bob', null)).toContain(CRD_NO_REMOVAL);
    expect(await statusOf('for-bob')).toEqual({ phase: 'Pending' });
  });

  it("the agent's own ServiceAccount cannot decide its ask, though it has the approver role (no self-approval)", async () => {
    await pending('for-etl');
    const msg = refused(`${agentSa} may not decide GuardApproval ${ns}/for-etl: they are one of its spec.requesters (the caller that asked, or an identity bound to agent 'etl-bot'); someone else must decide (no self-approval)`);
    expect(await decide(agentSa, 'for-etl', 'Approved')).toContain(msg);
    expect(await decide(agentSa, 'for-etl', 'Denied')).toContain(msg);
    expect(await statusOf('for-etl')).toEqual({ phase: 'Pending' });
  });

  it('who decided cannot be forged: alice cannot approve in mallory\'s name', async () => {
    await pending('forgery');
    expect(await decide('alice', 'forgery', 'Approved', { decidedBy: 'mallory' })).toContain(
      refused(`status.decidedBy must name who decides: alice is deciding GuardApproval ${ns}/forgery but status.decidedBy is 'mallory' (with kubectl, use the username \`kubectl auth whoami\` prints)`),
    );
    expect(await statusOf('forgery')).toEqual({ phase: 'Pending' });
  });

  it('alice approves; then she can change it no more', async () => {
    await pending('approve-me');
    expect(await decide('alice', 'approve-me', 'Approved')).toBe('ok');
    expect(await statusOf('approve-me')).toMatchObject({ phase: 'Approved', decidedBy: 'alice', reason: 'alice looked at it' });
    expect(await decide('alice', 'approve-me', 'Denied')).toContain(CRD_FINAL); // the CRD refuses first
    expect(await patchStatus('alice', 'approve-me', null)).toContain(CRD_NO_REMOVAL);
    // The same decision again changes nothing the CRD could refuse; the policy still does.
    expect(await patchStatus('alice', 'approve-me', (await statusOf('approve-me'))!)).toContain(alreadyDecided('approve-me', 'Approved', 'alice', 'alice'));
    expect(await statusOf('approve-me')).toMatchObject({ phase: 'Approved', decidedBy: 'alice' });
  });

  it('an approval PolicyGuard has not marked yet counts as Pending: alice may deny it', async () => {
    expect(await create(operator, 'unmarked')).toBe('ok');
    expect(await decide('alice', 'unmarked', 'Denied')).toBe('ok');
    expect(await statusOf('unmarked')).toMatchObject({ phase: 'Denied', decidedBy: 'alice' });
  });

  it('people neither expire nor use approvals', async () => {
    await pending('people-only-decide');
    expect(await patchStatus('alice', 'people-only-decide', { phase: 'Expired' })).toContain(
      refused(`alice may only set GuardApproval ${ns}/people-only-decide to Approved or Denied, not Expired (PolicyGuard marks approvals Expired and Used)`),
    );
    expect(await decide('alice', 'people-only-decide', 'Approved', { usedAt: '2030-01-01T00:00:00Z', actionId: 'act-0123456789ab' })).toContain(
      refused(`alice may not set status.usedAt or status.actionId of GuardApproval ${ns}/people-only-decide: only PolicyGuard marks an approval Used`),
    );
    expect(await statusOf('people-only-decide')).toEqual({ phase: 'Pending' });
  });

  it('PolicyGuard uses an approved approval once; Used is final for everyone', async () => {
    await pending('use-me');
    expect(await use('use-me')).toContain('a Used approval was approved (decidedBy)'); // not approved yet: the CRD refuses
    expect(await decide('alice', 'use-me', 'Approved')).toBe('ok');
    expect(await use('use-me')).toBe('ok');
    expect(await statusOf('use-me')).toMatchObject({ phase: 'Used', decidedBy: 'alice', actionId: 'act-0123456789ab' });
    expect(await patchStatus(operator, 'use-me', null)).toContain(CRD_NO_REMOVAL);
    expect(await patchStatus(operator, 'use-me', { phase: 'Expired' })).toContain(CRD_FINAL);
    expect(await patchStatus('alice', 'use-me', null)).toContain(CRD_NO_REMOVAL);
    expect(await decide('alice', 'use-me', 'Approved')).toContain(CRD_FINAL);
    expect((await statusOf('use-me'))?.phase).toBe('Used');
  });

  it('PolicyGuard expires pending and approved approvals; an expired one cannot be approved', async () => {
    await pending('expire-pending');
    expect(await patchStatus(operator, 'expire-pending', { phase: 'Expired' })).toBe('ok');
    expect(await decide('alice', 'expire-pending', 'Approved')).toContain(CRD_FINAL);
    expect(await patchStatus('alice', 'expire-pending', null)).toContain(CRD_NO_REMOVAL);
    expect(await patchStatus(operator, 'expire-pending', null)).toContain(CRD_NO_REMOVAL);
    expect(await statusOf('expire-pending')).toEqual({ phase: 'Expired' });

    await pending('expire-approved');
    expect(await decide('alice', 'expire-approved', 'Approved')).toBe('ok');
    expect(await patchStatus(operator, 'expire-approved', { phase: 'Expired' })).toBe('ok');
    expect(await statusOf('expire-approved')).toMatchObject({ phase: 'Expired', decidedBy: 'alice' });
  });

  it('the spec is immutable (the CRD); metadata edits need nothing extra', async () => {
    await pending('edit-me');
    expect(await mergePatch('alice', 'edit-me', { spec: { target: 'read_table' } })).toContain('spec is immutable: an approval covers exactly one ask');
    expect(await mergePatch('alice', 'edit-me', { metadata: { labels: { ticket: 'ops-42' } } })).toBe('ok');
  });

  it("docs/deploy.md's kubectl walk-through works as written: alice approves", async () => {
    await pending(DOC_APPROVAL);
    const decideBlock = sectionBlocks(readFileSync(join(REPO_ROOT, 'docs', 'deploy.md'), 'utf8'), '### Approvals').find((b) => b.includes('kubectl patch guardapproval'));
    expect(decideBlock).toBeDefined();
    const r = await shell(decideBlock!, 'alice');
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^NAME\s+AGENT\s+TARGET\s+PHASE\s+DECIDED BY\s+EXPIRES\s+AGE$/m);
    expect(r.stdout).toMatch(new RegExp(`^${DOC_APPROVAL}\\s+etl-bot\\s+drop_table\\s+Pending\\s`, 'm'));
    expect(r.stdout).toContain(`guardapproval.policyguard.dev/${DOC_APPROVAL} patched`);
    const status = await statusOf(DOC_APPROVAL);
    expect(status).toMatchObject({ phase: 'Approved', decidedBy: 'alice', reason: 'one-off cleanup, ticket OPS-42' });
    expect(status?.decidedAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  });

  it("NOTES.txt's kubectl decision works as printed; bob running it gets the policy's message", async () => {
    const patch = notes.match(/^ {2}kubectl patch guardapproval NAME[^\n]*\\\n[^\n]*$/m)?.[0];
    expect(patch).toBeDefined();
    await pending('apr-notes');
    expect((await shell(patch!.replace('NAME', 'apr-notes'), 'alice')).stdout).toBe('guardapproval.policyguard.dev/apr-notes patched\n');
    expect(await statusOf('apr-notes')).toMatchObject({ phase: 'Approved', decidedBy: 'alice', reason: 'ticket OPS-42' });
    await pending('apr-bob');
    const bob = await shell(patch!.replace('NAME', 'apr-bob').replace('"decidedBy":"alice"', '"decidedBy":"bob"'), 'bob');
    expect(bob.code).not.toBe(0);
    expect(bob.stderr.replace(/\s+/g, ' ')).toContain(needsVerb('bob', 'apr-bob'));
    console.log(`kubectl as bob:\n${bob.stderr}`);
  });
});
