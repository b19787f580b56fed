/**
 * Kubernetes mode against a real kube-apiserver + etcd (tests/controlplane): objects applied
 * with the API change decisions made through an MCP client; status, Events and suspensions
 * are written back to the cluster.
 */
import { CustomObjectsApi, EventsV1Api, type KubeConfig } from '@kubernetes/client-node';
import { GROUP, VERSION } from '../../src/api/schemas.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sharedKubeConfig, sharedKubeconfigPath } from '../controlplane/test-context.js';
import { applyGuard, createNamespace, deleteGuard, eventually, getGuard, startOperator, type Operator } from './harness.js';

let kc: KubeConfig;
let ns: string;
let op: Operator;

beforeAll(async () => {
  kc = sharedKubeConfig();
  ns = await createNamespace(kc, 'pg-ctrl');
  await applyGuard(kc, 'GuardAgent', ns, 'etl', { trustLevel: 'medium' });
  await applyGuard(kc, 'GuardAgent', ns, 'boss', { trustLevel: 'admin' });
  op = await startOperator(sharedKubeconfigPath(), ns);
});
afterAll(async () => {
  await op?.close();
});

const readyOf = (obj: any) => obj.status?.conditions?.find((c: any) => c.type === 'Ready');

describe('policies and agents from the cluster', () => {
  it('an applied GuardPolicy changes the next decision; deleting it reverts', async () => {
    expect((await op.validate('send_email', 'etl')).allowed).toBe(true);
    const applied = Date.now();
    await applyGuard(kc, 'GuardPolicy', ns, 'no-email', { rules: [{ match: { tools: ['send_*'] }, action: 'deny', message: 'no email' }] });
    const d = await eventually(() => op.validate('send_email', 'etl'), (v) => v.allowed === false, 'the policy to be in force');
    process.stderr.write(`[controller] apply → changed decision in ${Date.now() - applied} ms\n`);
    expect(d.reason).toBe('no email');
    expect(d.matched[0]).toMatchObject({ policy: 'no-email', namespace: ns });
    await deleteGuard(kc, 'GuardPolicy', ns, 'no-email');
    await eventually(() => op.validate('send_email', 'etl'), (v) => v.allowed === true, 'the policy to go');
  });

  it("editing an agent's trust level takes effect", async () => {
    await applyGuard(kc, 'GuardPolicy', ns, 'admins-only', { rules: [{ match: { tools: ['deploy_*'], trustLevelBelow: 'high' }, action: 'deny' }] });
    await eventually(() => op.validate('deploy_app', 'etl'), (v) => v.allowed === false, 'the deny for medium');
    await applyGuard(kc, 'GuardAgent', ns, 'etl', { trustLevel: 'high' });
    const d = await eventually(() => op.validate('deploy_app', 'etl'), (v) => v.allowed === true, 'the new trust level');
    expect(d.agent).toEqual({ id: 'etl', trust_level: 'high', registered: true });
    await applyGuard(kc, 'GuardAgent', ns, 'etl', { trustLevel: 'medium' });
    await deleteGuard(kc, 'GuardPolicy', ns, 'admins-only');
  });

  it('writes observedGeneration and Ready=True/Accepted', async () => {
    await applyGuard(kc, 'GuardPolicy', ns, 'fine', { rules: [{ action: 'allow', match: { tools: ['x'] } }] });
    const obj = await eventually(() => getGuard(kc, 'GuardPolicy', ns, 'fine'), (o) => readyOf(o)?.status === 'True', 'Ready=True');
    expect(readyOf(obj)).toMatchObject({ reason: 'Accepted', observedGeneration: obj.metadata.generation });
    expect(obj.status.observedGeneration).toBe(obj.metadata.generation);
  });
});

describe('validation is layered', () => {
  it('the API server rejects what the CRD schema and CEL rules forbid, with a readable message', async () => {
    const rejection = async (spec: Record<string, unknown>) => {
      const err = await applyGuard(kc, 'GuardPolicy', ns, 'rejected', spec).then(() => undefined, (e) => e);
      expect(err?.code).toBe(422);
      return JSON.parse(err.body).message as string;
    };
    expect(await rejection({ rules: [{ action: 'deny', match: { trustLevelBelow: 'low', trustLevelAtLeast: 'high' } }] })).toMatch(
      /spec\.rules\[0\]\.match: Invalid value: trustLevelBelow must be above trustLevelAtLeast/,
    );
    expect(await rejection({ rules: [{ action: 'deny', match: { trustLevelBelow: 'low' } }] })).toMatch(/spec\.rules\[0\]\.match: Invalid value: .*trustLevelBelow: low matches no agent/);
    expect(await rejection({ rules: [{ action: 'explode' }] })).toMatch(/spec\.rules\[0\]\.action: Unsupported value: "explode"/);
    expect(await rejection({ rules: [{ action: 'deny', match: { arguments: [{ path: 'n', operator: 'GreaterThan', values: ['lots'] }] } }] })).toMatch(
      /GreaterThan and LessThan need a number/,
    );
  });

  // The newest generation counts, as for a replica started since: the one before does not stay
  // in force, so every replica decides alike, and a deny added beside the mistake is not lost.
  it('an object that passes the schema but fails to compile gets Ready=False with a reason, and the decisions it could change are denied', async () => {
    await applyGuard(kc, 'GuardPolicy', ns, 'evolving', { rules: [{ match: { tools: ['delete_*'] }, action: 'allow', message: 'gen 1' }] });
    await eventually(() => op.validate('delete_x', 'etl'), (v) => v.reason === 'gen 1', 'generation 1');
    await applyGuard(kc, 'GuardPolicy', ns, 'evolving', { rules: [{ match: { tools: ['delete_{a,b}'] }, action: 'allow' }, { match: { tools: ['delete_*'] }, action: 'deny' }] });
    const obj = await eventually(() => getGuard(kc, 'GuardPolicy', ns, 'evolving'), (o) => readyOf(o)?.status === 'False', 'Ready=False');
    expect(readyOf(obj)).toMatchObject({ reason: 'InvalidPattern', observedGeneration: 2 });
    expect(readyOf(obj).message).toMatch(/"delete_\{a,b\}" uses braces/);
    expect(readyOf(obj).message).not.toMatch(/stays in force/);
    expect(await op.validate('delete_x', 'etl')).toMatchObject({ allowed: false, reason: expect.stringMatching(/^The policy set is incomplete, so this call is denied until it is fixed: .*evolving.*uses braces/) });
    await deleteGuard(kc, 'GuardPolicy', ns, 'evolving');
  });

  it('a GuardAgent suspended in the same edit that broke it is not left running on the generation before', async () => {
    await applyGuard(kc, 'GuardAgent', ns, 'runaway', { trustLevel: 'medium' });
    await eventually(() => op.validate('read_x', 'runaway'), (v) => v.allowed === true && v.agent.registered, 'the agent in force');
    await applyGuard(kc, 'GuardAgent', ns, 'runaway', { trustLevel: 'medium', suspended: true, deniedTools: ['wipe_{a,b}'] });
    await eventually(() => getGuard(kc, 'GuardAgent', ns, 'runaway'), (o) => readyOf(o)?.status === 'False', 'Ready=False');
    expect(await op.validate('read_x', 'runaway')).toMatchObject({ allowed: false, reason: expect.stringMatching(/^The policy set is incomplete/) });
    await deleteGuard(kc, 'GuardAgent', ns, 'runaway');
  });

  it('a field the CRD does not declare is kept by the API server and refused, naming it; the decisions it could change are denied', async () => {
    await applyGuard(kc, 'GuardPolicy', ns, 'misspelt', { rules: [{ match: { tools: ['refund'] }, action: 'deny', message: 'gen 1' }] });
    await eventually(() => op.validate('refund', 'etl'), (v) => v.reason === 'gen 1', 'generation 1');
    // Pruned, `argumnets` would leave an allow of every refund; kept, PolicyGuard sees it.
    const limit = [{ path: 'amount', operator: 'LessThan', values: ['100'] }];
    await applyGuard(kc, 'GuardPolicy', ns, 'misspelt', { rules: [{ match: { tools: ['refund'], argumnets: limit }, action: 'allow' }] });
    const obj = await eventually(() => getGuard(kc, 'GuardPolicy', ns, 'misspelt'), (o) => readyOf(o)?.status === 'False', 'Ready=False');
    expect(obj.spec.rules[0].match.argumnets).toEqual(limit);
    expect(readyOf(obj)).toMatchObject({ reason: 'InvalidSpec', observedGeneration: 2 });
    expect(readyOf(obj).message).toMatch(/rules\[0\]\.match: Unrecognized key: "argumnets"/);
    expect(await op.validate('refund', 'etl')).toMatchObject({ allowed: false, reason: expect.stringMatching(/^The policy set is incomplete.*argumnets/) });
    // Applying the corrected manifest (server-side, as GitOps tools do) removes the field.
    await applyGuard(kc, 'GuardPolicy', ns, 'misspelt', { rules: [{ match: { tools: ['refund'], arguments: limit }, action: 'allow' }] });
    const fixed = await eventually(() => getGuard(kc, 'GuardPolicy', ns, 'misspelt'), (o) => readyOf(o)?.status === 'True', 'Ready=True');
    expect(fixed.spec.rules[0].match).toEqual({ tools: ['refund'], arguments: limit });
    await deleteGuard(kc, 'GuardPolicy', ns, 'misspelt');
  });

  it.each([
    ['a null the API server would drop (every item of arguments commented out)', { spec: { rules: [{ match: { tools: ['db_query'], arguments: null }, action: 'allow' }] } }, /rules\[0\]\.match\.arguments: Invalid input: expected array, received null/],
    ['a field beside spec', { spec: { rules: [{ match: { tools: ['db_query'] }, action: 'allow' }] }, priority: 5 }, /Unrecognized key: "priority"/],
  ])('%s is kept by the API server and refused', async (_what, fields, problem) => {
    const name = `kept-${Math.random().toString(36).slice(2, 8)}`;
    const body = { apiVersion: `${GROUP}/${VERSION}`, kind: 'GuardPolicy', metadata: { name, namespace: ns }, ...fields };
    await kc.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: 'guardpolicies', body });
    const obj = await eventually(() => getGuard(kc, 'GuardPolicy', ns, name), (o) => readyOf(o)?.status === 'False', 'Ready=False');
    expect(readyOf(obj)).toMatchObject({ reason: 'InvalidSpec', message: expect.stringMatching(problem) });
    await deleteGuard(kc, 'GuardPolicy', ns, name);
  });

  it('a duplicate agentId is a Conflict on the newer object', async () => {
    await applyGuard(kc, 'GuardAgent', ns, 'etl-copy', { agentId: 'etl', trustLevel: 'admin' });
    const obj = await eventually(() => getGuard(kc, 'GuardAgent', ns, 'etl-copy'), (o) => readyOf(o)?.status === 'False', 'Conflict');
    expect(readyOf(obj).reason).toBe('Conflict');
    expect((await op.validate('x', 'etl')).agent.trust_level).toBe('medium');
    await deleteGuard(kc, 'GuardAgent', ns, 'etl-copy');
  });
});

describe('incidents and suspension', () => {
  const events = async (reason: string, name: string) => {
    const list = await kc.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns });
    return list.items.filter((e) => e.reason === reason && e.regarding?.name === name && e.regarding.kind === 'GuardAgent');
  };

  it('a deny produces an Event regarding the GuardAgent; 100 identical denies make one Event with a series count', async () => {
    await applyGuard(kc, 'GuardAgent', ns, 'hammer', { trustLevel: 'low', deniedTools: ['drop_*'] });
    await eventually(() => op.validate('drop_table', 'hammer'), (v) => v.agent.registered === true, 'the agent');
    for (let i = 1; i < 100; i++) await op.validate('drop_table', 'hammer');
    const list = await eventually(() => events('PolicyViolation', 'hammer'), (l) => l.length === 1 && l[0]!.series?.count === 100, 'one Event with series.count 100');
    expect(list[0]!.type).toBe('Warning');
    expect(list[0]!.note).toMatch(/drop_table/);
    expect(list[0]!.regarding?.uid).toBeTruthy();
  });

  it('a critical report_incident suspends the agent via status; the resume annotation ends it', async () => {
    await applyGuard(kc, 'GuardAgent', ns, 'rogue', { trustLevel: 'high' });
    await eventually(() => op.validate('read_x', 'rogue'), (v) => v.allowed && v.agent.registered, 'the agent');
    const r = await op.call('report_incident', { incident_type: 'data_exfiltration', severity: 'critical', description: 'exfil', agent_id: 'rogue' });
    expect(r.agent_suspended).toBe(true);
    const obj = await getGuard(kc, 'GuardAgent', ns, 'rogue');
    expect(obj.status.suspension).toMatchObject({ incidentId: r.incident_id });
    expect(obj.spec.suspended).toBe(false); // spec untouched: GitOps does not fight it
    await eventually(() => op.validate('read_x', 'rogue'), (v) => v.allowed === false && /suspended/.test(v.reason), 'the suspension');
    await eventually(() => events('AgentSuspended', 'rogue'), (l) => l.length === 1, 'an AgentSuspended Event');
    // A human resumes it.
    await applyGuard(kc, 'GuardAgent', ns, 'rogue', { trustLevel: 'high' }, { annotations: { 'policyguard.dev/resume': new Date().toISOString() } });
    await eventually(() => op.validate('read_x', 'rogue'), (v) => v.allowed === true, 'the resume');
    // Incidents are also in the audit log, for compliance queries after Events expire.
    const status = await op.call('get_compliance_status', { time_range: '1h' });
    expect(status.incidents.by_severity.critical).toBeGreaterThanOrEqual(1);
  });

  it('register_agent and create_policy become server-side applies by field manager policyguard', async () => {
    const reg = await op.call('register_agent', { agent_id: 'Made_By_MCP', name: 'm', trust_level: 'low' });
    expect(reg.success).toBe(true);
    const pol = await op.call('create_policy', { policy_id: 'mcp-policy', name: 'p', rules: JSON.stringify([{ condition: { tool_pattern: 'zap_*' }, action: 'deny' }]) });
    expect(pol.success).toBe(true);
    const policy = await getGuard(kc, 'GuardPolicy', ns, 'mcp-policy');
    expect(policy.metadata.managedFields.map((f: any) => f.manager)).toContain('policyguard');
    expect(policy.spec.rules[0]).toMatchObject({ action: 'deny', match: { tools: ['zap_*'] } });
    await eventually(() => op.validate('zap_it', 'Made_By_MCP'), (v) => v.allowed === false && v.agent.registered, 'the new objects in force');
  });
});
