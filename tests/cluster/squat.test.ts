/**
 * Squatting under `--auth kubernetes --unknown-agents evaluate` (docs/decisions.md, "Identity"):
 * a ServiceAccount that claims an agent id before a person defines that agent is auto-registered
 * under an object name of its own, and the GuardAgent the person applies later wins over it,
 * whether the caller's namespace is the agent's or another.
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { autoRegisteredName } from '../../src/decide/identity.js';
import { sharedKubeConfig, sharedKubeconfigPath } from '../controlplane/test-context.js';
import { callAs } from '../standalone/harness.js';
import { applyGuard, createNamespace, eventually, getGuard, startOperator, type Operator } from './harness.js';

let kc: KubeConfig;
let ns: string;
let team: string;
let op: Operator;

const core = () => kc.makeApiClient(CoreV1Api);
async function tokenFor(namespace: string, sa: string): Promise<string> {
  await core().createNamespacedServiceAccount({ namespace, body: { metadata: { name: sa } } }).catch(() => undefined);
  const r = await core().createNamespacedServiceAccountToken({ name: sa, namespace, body: { spec: { audiences: ['policyguard'], expirationSeconds: 3600 } } });
  return r.status!.token!;
}
const validate = (token: string, agent_id: string) => callAs(op.pg.url, token, 'validate_action', { action_type: 'tool_call', target: 'read_x', agent_id }).then((r) => r.json);
const readyOf = (obj: any) => obj.status?.conditions?.find((c: any) => c.type === 'Ready');

beforeAll(async () => {
  kc = sharedKubeConfig();
  ns = await createNamespace(kc, 'pg-squat');
  team = await createNamespace(kc, 'pg-squat-team');
  op = await startOperator(sharedKubeconfigPath(), ns, ['--auth', 'kubernetes', '--unknown-agents', 'evaluate', '--watch-namespaces', `${ns},${team}`]);
});
afterAll(async () => {
  await op?.close();
});

describe('an agent id claimed before a person defines it', () => {
  it.each([
    ['from another namespace', 'deploy-bot', () => team],
    ['from the agent’s own namespace', 'build-bot', () => ns],
  ])('the GuardAgent a person applies later wins (%s), and the auto-registered one is a Conflict naming it', async (_case, id, squatterNs) => {
    const squatter = await tokenFor(squatterNs(), `squatter-${id}`);
    const deployer = await tokenFor(ns, `deployer-${id}`);
    expect(await validate(squatter, id)).toMatchObject({ allowed: true, agent: { id, registered: false } });
    const auto = await eventually(() => getGuard(kc, 'GuardAgent', squatterNs(), autoRegisteredName(id)).catch(() => undefined), (a) => a !== undefined, 'the auto-registered agent');
    expect(auto.metadata.labels).toMatchObject({ 'policyguard.dev/auto-registered': 'true' });
    await eventually(() => validate(squatter, id), (d) => d.agent.registered === true, 'the squatter bound to it');
    // creationTimestamp counts seconds: let the squatter's object be the older one, as it would be.
    await eventually(async () => new Date().toISOString().slice(0, 19) + 'Z', (now) => now > auto.metadata.creationTimestamp, 'a second later than the squatter object');

    await applyGuard(kc, 'GuardAgent', ns, id, { trustLevel: 'high', identities: [{ serviceAccount: { namespace: ns, name: `deployer-${id}` } }] });
    const real = await eventually(() => validate(deployer, id), (d) => d.allowed === true, "the person's agent in force");
    expect(real.agent).toEqual({ id, trust_level: 'high', registered: true });
    expect(await validate(squatter, id)).toMatchObject({ allowed: false, reason: `Caller 'system:serviceaccount:${squatterNs()}:squatter-${id}' is not bound to agent '${id}' (identity mismatch)` });
    const loser = await eventually(() => getGuard(kc, 'GuardAgent', squatterNs(), autoRegisteredName(id)), (o) => readyOf(o)?.reason === 'Conflict', 'the Conflict condition');
    expect(readyOf(loser)).toMatchObject({
      status: 'False',
      message: `agentId "${id}" is already claimed by GuardAgent ${ns}/${id}, which a person wrote: it wins over this auto-registered agent whatever their ages`,
    });
    expect((await getGuard(kc, 'GuardAgent', ns, id)).metadata.labels?.['policyguard.dev/auto-registered']).toBeUndefined();
  });
});

describe('an older GuardAgent given the id of a live agent', () => {
  it('is refused by the API server: an agent id never changes, so no object takes a live id by its age', async () => {
    await applyGuard(kc, 'GuardAgent', team, 'decoy', { trustLevel: 'low' });
    await applyGuard(kc, 'GuardAgent', ns, 'payments-bot', { trustLevel: 'low' });
    const refusal = await applyGuard(kc, 'GuardAgent', team, 'decoy', { trustLevel: 'low', agentId: 'payments-bot' }).then(
      () => 'accepted',
      (err: { code?: number; body?: string }) => `${err.code}: ${err.body}`,
    );
    expect(refusal).toMatch(/^422: .*the agent id \(spec\.agentId, else metadata\.name\) cannot change/);
    expect((await getGuard(kc, 'GuardAgent', team, 'decoy')).spec.agentId).toBeUndefined();
    // Writing the id it has, or changing anything else, is an update like any other.
    await applyGuard(kc, 'GuardAgent', team, 'decoy', { trustLevel: 'medium', agentId: 'decoy' });
    expect((await getGuard(kc, 'GuardAgent', team, 'decoy')).spec).toMatchObject({ trustLevel: 'medium', agentId: 'decoy' });
  });
});
