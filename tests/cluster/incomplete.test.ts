/**
 * Kubernetes mode against the real API server: a GuardPolicy or GuardAgent that cannot be
 * loaded and has no good generation in force denies the decisions it could change, naming it,
 * and only those (docs/decisions.md, "Objects that cannot be loaded").
 */
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { GROUP, VERSION } from '../../src/api/schemas.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedKubeConfig, sharedKubeconfigPath } from '../controlplane/test-context.js';
import { applyGuard, createNamespace, deleteGuard, eventually, startOperator, type Operator } from './harness.js';

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
/** The agent ids of the GuardAgents in `namespace`. */
async function agentIds(namespace: string): Promise<string[]> {
  const list = (await kc.makeApiClient(CustomObjectsApi).listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: 'guardagents' })) as { items: { metadata: { name: string }; spec: { agentId?: string } }[] };
  return list.items.map((a) => a.spec.agentId ?? a.metadata.name).sort();
}

describe('an object that cannot be loaded, with no good generation', () => {
  it("a new GuardPolicy that fails to compile denies its namespace's agents, naming it; deleting it resumes them", async () => {
    await applyGuard(kc, 'GuardPolicy', teamA, 'bad', { rules: [{ match: { tools: ['drop_{a,b}'] }, action: 'deny' }] });
    const d = await eventually(() => op.validate('read_x', 'a1'), (v) => v.allowed === false, 'the deny');
    expect(d.reason).toMatch(INCOMPLETE);
    expect(d.reason).toMatch(new RegExp(`GuardPolicy ${teamA}/bad: InvalidPattern: pattern "drop_\\{a,b\\}" uses braces`));
    expect(d.matched).toEqual([expect.objectContaining({ policy: 'agent:a1', rule: 'incompletePolicySet' })]);
    expect(await allowed('b1')).toBe(true);
    await deleteGuard(kc, 'GuardPolicy', teamA, 'bad');
    await eventually(() => allowed('a1'), (v) => v, 'a1 to be allowed again');
  });

  it('a new GuardPolicy with a field the CRD does not declare denies its namespace\'s agents, naming the field', async () => {
    // The API server keeps the field (the CRD preserves unknown spec fields) rather than pruning
    // it, which would have left an allow rule on every tool.
    await applyGuard(kc, 'GuardPolicy', teamA, 'typo', { rules: [{ match: { tool: ['read_secret'] }, action: 'allow' }] });
    const d = await eventually(() => op.validate('read_x', 'a1'), (v) => v.allowed === false, 'the deny');
    expect(d.reason).toMatch(INCOMPLETE);
    expect(d.reason).toMatch(new RegExp(`GuardPolicy ${teamA}/typo: InvalidSpec: spec\\.rules\\[0\\]\\.match: Unrecognized key: "tool"`));
    expect(await allowed('b1')).toBe(true);
    await deleteGuard(kc, 'GuardPolicy', teamA, 'typo');
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
