/**
 * Callers that make up agent ids (docs/decisions.md, "Identity" and "Approvals"), standalone
 * mode over real HTTP with `--auth token --unknown-agents evaluate`: an id that differs only in
 * case from a registered agent's gets none of that agent's rules, an auto-registered id gives
 * way to the agent a person defines later, and a caller cannot ask for more approvals than
 * `--approval-pending-limit` by using many ids.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from './eventually.js';
import { callAs, startTestServer, writeTokenFile, type TestServer } from './harness.js';

const FIXTURE = new URL('../fixtures/identity-abuse', import.meta.url).pathname;
const TOKENS = {
  admin: 'admin-token-0001',
  stranger: 'stranger-token-0002',
  squatter: 'squatter-token-0003',
  squatter2: 'squatter2-token-0004',
  deployer: 'deployer-token-0005',
  flood: 'flood-token-0006',
  barrier: 'barrier-token-0007',
};

let tokens: Awaited<ReturnType<typeof writeTokenFile>>;
beforeAll(async () => {
  tokens = await writeTokenFile(TOKENS);
});
afterAll(async () => {
  await tokens?.remove();
});

const start = (flags: string[]) =>
  startTestServer(FIXTURE, ['--auth', 'token', '--token-file', tokens.file, '--unknown-agents', 'evaluate', '--default-decision', 'deny', ...flags], { token: TOKENS.admin });
const validate = (s: TestServer, token: string, target: string, agent_id?: string, parameters?: Record<string, unknown>) =>
  callAs(s.pg.url, token, 'validate_action', { action_type: 'tool_call', target, ...(agent_id ? { agent_id } : {}), ...(parameters ? { parameters } : {}) }).then((r) => r.json);
/** The agent ids of the GuardAgents written to the data dir (register_agent, auto-registration). */
const writtenAgentIds = async (s: TestServer) => {
  const dir = join(s.dataDir, 'manifests', 'guardagents');
  // Not the temporary files of a write in progress (`<name>.yaml.<pid>.tmp`, renamed away).
  const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.yaml'));
  return Promise.all(files.map(async (f) => /agentId: (.*)/.exec(await readFile(join(dir, f), 'utf8'))?.[1]));
};
const agentYaml = (name: string, namespace: string | undefined, user: string) => `apiVersion: policyguard.dev/v1alpha1
kind: GuardAgent
metadata: {name: ${name}${namespace ? `, namespace: ${namespace}` : ''}}
spec:
  trustLevel: high
  identities: [{user: "${user}"}]
`;

describe('callers that choose their agent id (--unknown-agents evaluate)', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await start([]);
  });
  afterAll(async () => {
    await s?.close();
  });

  it('an id that differs only in case from a registered agent is refused, with none of its rules, and never auto-registered', async () => {
    expect(await validate(s, TOKENS.admin, 'deploy_prod', 'platform-admin')).toMatchObject({ decision: 'allow', reason: 'the platform admin agent deploys' });
    const claimed = await validate(s, TOKENS.stranger, 'deploy_prod', 'PLATFORM-ADMIN');
    expect(claimed).toMatchObject({
      allowed: false,
      decision: 'deny',
      reason: "Agent 'PLATFORM-ADMIN' is not registered and differs only in case from registered agent 'platform-admin'; caller 'token:stranger' is not bound to it (identity mismatch)",
      agent: { id: 'PLATFORM-ADMIN', registered: false },
    });
    expect(claimed.matched).toEqual([expect.objectContaining({ policy: 'agent:PLATFORM-ADMIN', rule: 'identities' })]);
    // Auto-registration runs in the background: once an unknown id sent after the refused one has
    // been registered, the refused one would have been too.
    await validate(s, TOKENS.barrier, 'read_x', 'barrier-bot');
    await eventually(() => writtenAgentIds(s), (ids) => ids.includes('barrier-bot'), 'the later unknown id to be auto-registered');
    expect(await writtenAgentIds(s)).not.toContain('PLATFORM-ADMIN');
    const unbound = await callAs(s.pg.url, TOKENS.stranger, 'validate_action', { action_type: 'tool_call', target: 'deploy_prod' });
    expect(unbound.json).toMatch(/agent_id is required: caller 'token:stranger' is bound to 0 agents/);
  });

  it('register_agent refuses a new id that differs only in case from a registered agent, even for an admin', async () => {
    const r = await callAs(s.pg.url, TOKENS.admin, 'register_agent', { agent_id: 'Platform-Admin', name: 'twin', trust_level: 'low' });
    expect(r.isError).toBe(true);
    expect(r.json).toMatchObject({ success: false, message: expect.stringMatching(/agent id 'Platform-Admin' differs only in case from registered agent 'platform-admin', and agents: rules match both alike/) });
    expect(await writtenAgentIds(s)).not.toContain('Platform-Admin');
  });

  it.each([
    ['in its own namespace', 'deploy-bot', 'policyguard', TOKENS.squatter, 'token:squatter', 'policyguard/deploy-bot'],
    ['with the name an auto-registered object of that id once had (no namespace)', 'build-bot', undefined, TOKENS.squatter2, 'token:squatter2', 'build-bot'],
  ])('an agent a person defines later (%s) wins over the same id auto-registered for a squatter', async (_case, id, namespace, squatter, squatterSubject, winner) => {
    expect(await validate(s, squatter, 'read_x', id)).toMatchObject({ allowed: true, agent: { id, registered: false } });
    await eventually(() => validate(s, squatter, 'read_x', id), (d) => d.agent.registered === true, 'the auto-registration');
    // The operator now defines the agent, bound to its real caller.
    await writeFile(join(s.configDir, `${id}.yaml`), agentYaml(id, namespace, 'token:deployer'));
    const real = await eventually(() => validate(s, TOKENS.deployer, 'read_x', id), (d) => d.allowed === true, "the person's agent in force");
    expect(real.agent).toEqual({ id, trust_level: 'high', registered: true });
    expect(await validate(s, squatter, 'read_x', id)).toMatchObject({ allowed: false, reason: `Caller '${squatterSubject}' is not bound to agent '${id}' (identity mismatch)` });
    const problems: string[] = (await callAs(s.pg.url, TOKENS.admin, 'get_compliance_status', {})).json.policies.problems;
    expect(problems).toContainEqual(
      expect.stringContaining(`Conflict: agentId "${id}" is already claimed by GuardAgent ${winner}, which a person wrote: it wins over this auto-registered agent whatever their ages`),
    );
  });
});

describe('approvals asked for under many agent ids by one caller', () => {
  let s: TestServer;
  beforeAll(async () => {
    // No auto-registration, so every id of the burst stays an unregistered agent of the same caller.
    s = await start(['--auto-register', 'false', '--approval-pending-limit', '3']);
  });
  afterAll(async () => {
    await s?.close();
  });

  it('at most --approval-pending-limit are stored for the caller; the others stay require_approval without one, naming the limit', async () => {
    const ids = Array.from({ length: 12 }, (_, i) => `flood-${i}`);
    const answers = await Promise.all(ids.map((id, i) => validate(s, TOKENS.flood, 'issue_refund', id, { amount: 900 + i })));
    expect(answers.map((d) => d.decision)).toEqual(ids.map(() => 'require_approval'));
    expect(answers.filter((d) => d.approval_id)).toHaveLength(3);
    expect(answers.find((d) => !d.approval_id)?.reason).toBe(
      "Refunds need a person; no approval was requested: caller 'token:flood' already has 3 approvals waiting for a person, for any agent (--approval-pending-limit 3, per agent and per caller); decide or deny them, or wait until they expire",
    );
    const files = await readdir(join(s.dataDir, 'approvals'));
    expect(files.filter((f) => /^apr-[0-9a-f]{12}\.json$/.test(f))).toHaveLength(3);
  });
});
