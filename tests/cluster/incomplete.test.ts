/**
 * Kubernetes mode against the real API server: a GuardPolicy or GuardAgent that cannot be
 * loaded and has no good generation in force denies the decisions it could change, naming it,
 * and only those (docs/decisions.md, "Objects that cannot be loaded").
 */
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { GROUP, VERSION } from '../../src/api/schemas.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedKubeConfig, sharedKubeconfigPath } from '../controlplane/test-context.js';
import { applyGuard, createNamespace, deleteGuard, eventually, getGuard, startOperator, type Operator } from './harness.js';

let kc: KubeConfig;
let cluster: string;
let teamA: string;
let teamB: string;
let op: Operator;

beforeAll(async () => {
  kc = sharedKubeConfig();
  [cluster, teamA, teamB] = await Promise.all([createNamespace(kc, 'pg-inc'), createNamespace(kc, 'pg-inc-a'), createNamespace(kc, 'pg-inc-b')]);
  await applyGuard(kc, 'GuardAgent', teamA, 'a1', {});
  await applyGuard(kc, 'GuardAgent', teamB, 'b1', {});
  op = await startOperator(sharedKubeconfigPath(), cluster, ['--watch-namespaces', `${cluster},${teamA},${teamB}`]);
  await eventually(() => op.validate('read_x', 'b1'), (d) => d.agent.registered === true, 'the agents');
});
afterAll(async () => {
  await op?.close();
});

const INCOMPLETE = /^The policy set is incomplete, so this call is denied until it is fixed: /;
const allowed = async (agentId: string) => (await op.validate('read_x', agentId)).allowed as boolean;
/** Wait until the operator lists a problem of `object` (`Kind namespace/name`): before that a call as its id is one of an unknown agent. */
const seen = (object: string) => eventually(async () => op.pg.store.problems(), (p) => p.some((l) => l.startsWith(`${object}: `)), object);
const readyOf = (obj: any) => obj.status?.conditions?.find((c: any) => c.type === 'Ready');
/** Wait until a GuardAgent's Ready condition has `status`: written after a compile that saw it as it is now. */
const readyAs = (namespace: string, name: string, status: 'True' | 'False') =>
  eventually(() => getGuard(kc, 'GuardAgent', namespace, name), (o) => readyOf(o)?.status === status, `GuardAgent ${namespace}/${name} Ready=${status}`).then(readyOf);
/** Wait until the clock is past an object's creationTimestamp (whole seconds), so that the next object created is the newer. */
async function after(namespace: string, name: string): Promise<void> {
  const created = (await getGuard(kc, 'GuardAgent', namespace, name)).metadata.creationTimestamp as string;
  await eventually(async () => `${new Date().toISOString().slice(0, 19)}Z`, (now) => now > created, `a second later than ${namespace}/${name}`);
}
/** The agent ids of the GuardAgents in `namespace`. */
async function agentIds(namespace: string): Promise<string[]> {
  const list = (await kc.makeApiClient(CustomObjectsApi).listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: 'guardagents' })) as { items: { metadata: { name: string }; spec: { agentId?: string } }[] };
  return list.items.map((a) => a.spec.agentId ?? a.metadata.name).sort();
}

describe('an object that cannot be loaded, with no good generation', () => {
  it.each([
    ['fails to compile', { rules: [{ match: { tools: ['drop_{a,b}'] }, action: 'deny' }] }, 'InvalidPattern: pattern "drop_\\{a,b\\}" uses braces'],
    // The API server keeps the field (the CRD preserves unknown spec fields) rather than pruning
    // it, which would have left an allow rule on every tool.
    ['has a field the CRD does not declare', { rules: [{ match: { tool: ['read_secret'] }, action: 'allow' }] }, 'InvalidSpec: spec\\.rules\\[0\\]\\.match: Unrecognized key: "tool"'],
  ])("a new GuardPolicy that %s denies its namespace's agents, naming it; deleting it resumes them", async (_what, spec, problem) => {
    await applyGuard(kc, 'GuardPolicy', teamA, 'bad', spec);
    const d = await eventually(() => op.validate('read_x', 'a1'), (v) => v.allowed === false, 'the deny');
    expect(d.reason).toMatch(INCOMPLETE);
    expect(d.reason).toMatch(new RegExp(`GuardPolicy ${teamA}/bad: ${problem}`));
    expect(d.matched).toEqual([expect.objectContaining({ policy: 'agent:a1', rule: 'incompletePolicySet' })]);
    expect(await allowed('b1')).toBe(true);
    await deleteGuard(kc, 'GuardPolicy', teamA, 'bad');
    await eventually(() => allowed('a1'), (v) => v, 'a1 to be allowed again');
  });

  it('one in the cluster policy namespace denies every agent', async () => {
    await applyGuard(kc, 'GuardPolicy', cluster, 'bad-global', { rules: [{ match: { tools: ['drop_* '] }, action: 'deny' }] });
    const d = await eventually(() => op.validate('read_x', 'b1'), (v) => v.allowed === false, 'the deny');
    expect(d.reason).toMatch(new RegExp(`GuardPolicy ${cluster}/bad-global: InvalidPattern: pattern "drop_\\* " ends with whitespace`));
    expect(await allowed('a1')).toBe(false);
    expect(await allowed('someone-new')).toBe(false);
    await deleteGuard(kc, 'GuardPolicy', cluster, 'bad-global');
    await eventually(() => allowed('b1'), (v) => v, 'b1 to be allowed again');
  });

  it('a new GuardAgent that fails to compile denies its own id, and no other', async () => {
    await applyGuard(kc, 'GuardAgent', teamB, 'b2', { deniedTools: ['send_{a,b}'] });
    await seen(`GuardAgent ${teamB}/b2`);
    const d = await op.validate('read_x', 'b2');
    expect(d.reason).toMatch(new RegExp(`GuardAgent ${teamB}/b2: InvalidPattern: pattern "send_\\{a,b\\}" uses braces`));
    expect(await allowed('b1')).toBe(true);
    await deleteGuard(kc, 'GuardAgent', teamB, 'b2');
  });

  it('the id a broken GuardAgent names (its agentId, not its object name) is denied, and not auto-registered in its place', async () => {
    await applyGuard(kc, 'GuardAgent', teamB, 'b3', { agentId: 'Mail-Bot', deniedTools: ['send_* '] });
    await seen(`GuardAgent ${teamB}/b3`);
    const d = await op.validate('read_x', 'Mail-Bot');
    expect(d.reason).toMatch(new RegExp(`GuardAgent ${teamB}/b3: InvalidPattern: pattern "send_\\* " ends with whitespace`));
    expect(await allowed('b1')).toBe(true);
    // A newcomer is registered; Mail-Bot, which called first, was not.
    await eventually(() => op.validate('read_x', 'newcomer'), (v) => v.agent.registered === true, 'the newcomer to be registered');
    expect(await agentIds(cluster)).not.toContain('Mail-Bot');
    expect(await agentIds(cluster)).toContain('newcomer');
    await deleteGuard(kc, 'GuardAgent', teamB, 'b3');
    await eventually(() => allowed('Mail-Bot'), (v) => v, 'Mail-Bot to be judged as an unregistered agent again');
  });
});

describe('a broken GuardAgent claiming the id of a valid GuardAgent in another namespace', () => {
  // A tenant who may write GuardAgents in one namespace must not deny another namespace's agent
  // by claiming its id with an object that cannot be loaded (docs/decisions.md §9).
  it.each([
    ['a field the schema refuses', 'mail-bot', { displayname: 'Mail' }, 'InvalidSpec', /spec: Unrecognized key: "displayname"/],
    ['a glob the compile step refuses', 'ship-bot', { deniedTools: ['send_{a,b}'] }, 'InvalidPattern', /pattern "send_\{a,b\}" uses braces/],
  ])('newer than the valid one (%s), it denies none of its calls and is still reported Ready=False', async (_case, id, broken, reason, message) => {
    await applyGuard(kc, 'GuardAgent', teamA, id, { trustLevel: 'medium' });
    await readyAs(teamA, id, 'True');
    await after(teamA, id);
    await applyGuard(kc, 'GuardAgent', teamB, `squat-${id}`, { agentId: id, ...broken });
    expect(await readyAs(teamB, `squat-${id}`, 'False')).toMatchObject({ reason, message: expect.stringMatching(message) });
    expect(await op.validate('read_x', id)).toMatchObject({ allowed: true, agent: { id, trust_level: 'medium', registered: true } });
    expect(op.pg.store.problems()).toContainEqual(expect.stringMatching(new RegExp(`^GuardAgent ${teamB}/squat-${id}: ${reason}: `)));
    await deleteGuard(kc, 'GuardAgent', teamB, `squat-${id}`);
    await deleteGuard(kc, 'GuardAgent', teamA, id);
  });

  it('older than the valid one, it still denies the id (its deniedTools might have restricted the agent), and keeps the id: the younger one is Conflict', async () => {
    await applyGuard(kc, 'GuardAgent', teamB, 'first-bot', { agentId: 'post-bot', displayname: 'Post' });
    await readyAs(teamB, 'first-bot', 'False');
    await after(teamB, 'first-bot');
    await applyGuard(kc, 'GuardAgent', teamA, 'post-bot', {});
    await readyAs(teamA, 'post-bot', 'False');
    expect((await getGuard(kc, 'GuardAgent', teamA, 'post-bot')).status.conditions.find((c: { type: string }) => c.type === 'Ready')).toMatchObject({
      reason: 'Conflict',
      message: `agentId "post-bot" is already claimed by GuardAgent ${teamB}/first-bot, which cannot be loaded: it holds the id until it is fixed`,
    });
    const d = await op.validate('read_x', 'post-bot');
    expect(d).toMatchObject({ allowed: false, matched: [expect.objectContaining({ rule: 'incompletePolicySet' })] });
    expect(d.reason).toMatch(new RegExp(`GuardAgent ${teamB}/first-bot: InvalidSpec: spec: Unrecognized key: "displayname"`));
    await deleteGuard(kc, 'GuardAgent', teamB, 'first-bot');
    await eventually(() => allowed('post-bot'), (v) => v, 'post-bot to be allowed once the broken one is gone');
    await deleteGuard(kc, 'GuardAgent', teamA, 'post-bot');
  });
});
