/**
 * Standalone store behaviour through the real server: watching, broken files, persistence.
 */
import { execFileSync } from 'node:child_process';
import { appendFile, cp, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { objectNameFor } from '../../src/api/builders.js';
import { autoRegisteredName } from '../../src/decide/identity.js';
import { eventually } from './eventually.js';
import { SAMPLES, SEED_FIXTURE, startTestServer, type TestServer } from './harness.js';

let s: TestServer | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

const validate = (srv: TestServer, target: string, agent_id: string) =>
  srv.call('validate_action', { action_type: 'tool_call', target, agent_id }).then((r) => r.json);

const NEW_POLICY = `apiVersion: policyguard.dev/v1alpha1
kind: GuardPolicy
metadata: {name: no-emails}
spec:
  rules:
    - match: {tools: ["send_email"]}
      action: deny
      message: No emails today
`;

/** A GuardAgent that claims support-bot's id (config-samples) with admin trust. */
const TAKEOVER = `apiVersion: policyguard.dev/v1alpha1
kind: GuardAgent
metadata: {name: other}
spec: {agentId: support-bot, trustLevel: admin}
`;
const CONFLICT = /other\.yaml:\d+: GuardAgent other: Conflict: agentId "support-bot" is already claimed by GuardAgent policyguard\/support-bot/;
const problems = (srv: TestServer) => srv.call('get_compliance_status').then((r) => r.json.policies.problems as string[]);

describe('standalone store', () => {
  it('recompiles when a manifest is added, and forgets it when removed', async () => {
    s = await startTestServer(SEED_FIXTURE);
    expect((await validate(s, 'send_email', 'test-admin')).allowed).toBe(true);
    const file = join(s.configDir, 'no-emails.yaml');
    await writeFile(file, NEW_POLICY);
    const denied = await eventually(() => validate(s!, 'send_email', 'test-admin'), (d) => d.allowed === false, 'the new policy');
    expect(denied.reason).toBe('No emails today');
    await writeFile(file, '');
    await eventually(() => validate(s!, 'send_email', 'test-admin'), (d) => d.allowed === true, 'the policy to go');
  });

  it('reports a broken file with its path and line and keeps the last good version in force', async () => {
    s = await startTestServer(SEED_FIXTURE);
    const file = join(s.configDir, 'no-emails.yaml');
    await writeFile(file, NEW_POLICY);
    await eventually(() => validate(s!, 'send_email', 'test-admin'), (d) => d.allowed === false, 'the new policy');
    // Break the file: an invalid action on line 7.
    await writeFile(file, NEW_POLICY.replace('action: deny', 'action: explode'));
    const status = await eventually(
      () => s!.call('get_compliance_status').then((r) => r.json),
      (j) => (j.policies.problems as string[]).length > 0,
      'the broken file to be reported',
    );
    expect(status.policies.problems[0]).toMatch(/no-emails\.yaml:7: GuardPolicy no-emails: spec\.rules\[0\]\.action: Invalid option.* \(the last good version stays in force\)$/);
    // The last good version is still in force.
    expect((await validate(s, 'send_email', 'test-admin')).allowed).toBe(false);
    // Fixing the file clears the problem.
    await writeFile(file, NEW_POLICY.replace('No emails today', 'Still no emails'));
    await eventually(() => validate(s!, 'send_email', 'test-admin'), (d) => d.reason === 'Still no emails', 'the fixed file');
    expect((await s.call('get_compliance_status')).json.policies.problems).toEqual([]);
  });

  it('revoking admin trust with sed -i reaches decisions, again and again, with the periodic rescan off', async () => {
    s = await startTestServer(SEED_FIXTURE, ['--rescan-interval', '0s']);
    const agents = join(s.configDir, 'agents.yaml');
    expect((await validate(s, 'delete_x', 'test-admin')).allowed).toBe(true);
    execFileSync('sed', ['-i', '/name: test-admin/{n;s/trustLevel: admin/trustLevel: low/}', agents]);
    await eventually(() => validate(s!, 'delete_x', 'test-admin'), (d) => d.allowed === false, 'the revocation');
    execFileSync('sed', ['-i', '/name: test-admin/{n;s/trustLevel: low/trustLevel: admin/}', agents]);
    await eventually(() => validate(s!, 'delete_x', 'test-admin'), (d) => d.allowed === true, 'admin again');
    execFileSync('sed', ['-i', '/name: test-admin/{n;s/trustLevel: admin/trustLevel: low/}', agents]);
    await eventually(() => validate(s!, 'delete_x', 'test-admin'), (d) => d.allowed === false, 'the second revocation');
  });

  it('an unsupported glob is a problem with file:line of the pattern in get_compliance_status', async () => {
    s = await startTestServer(SEED_FIXTURE);
    await writeFile(join(s.configDir, 'braces.yaml'), NEW_POLICY.replace('["send_email"]', '["send_email", "delete_{a,b}"]'));
    const status = await eventually(
      () => s!.call('get_compliance_status').then((r) => r.json),
      (j) => (j.policies.problems as string[]).length > 0,
      'the problem to be reported',
    );
    expect(status.policies.problems).toEqual([expect.stringMatching(/braces\.yaml:6: GuardPolicy no-emails: InvalidPattern: pattern "delete_\{a,b\}" uses braces/)]);
  });

  it('a file that never parsed leaves the policy set incomplete: every decision is denied, naming it, until it is fixed', async () => {
    s = await startTestServer(SEED_FIXTURE);
    const file = join(s.configDir, 'broken.yaml');
    await appendFile(file, 'kind: GuardPolicy\napiVersion: policyguard.dev/v1alpha1\nmetadata: {name: x\n');
    const status = await eventually(() => s!.call('get_compliance_status').then((r) => r.json), (j) => j.policies.problems.length > 0, 'the error');
    expect(status.policies.problems).toEqual([expect.stringMatching(/broken\.yaml:\d+: invalid YAML: .* \(not in force: every decision is denied until this is fixed\)$/)]);
    expect(await validate(s, 'read_data', 'test-admin')).toMatchObject({ allowed: false, reason: expect.stringMatching(/^The policy set is incomplete, so this call is denied until it is fixed: \S*broken\.yaml:\d+: invalid YAML/) });
    await writeFile(file, NEW_POLICY);
    await eventually(() => validate(s!, 'read_data', 'test-admin'), (d) => d.allowed === true, 'decisions to resume');
  });

  it('keeps registered agents, created policies and suspensions across a restart', async () => {
    s = await startTestServer(SEED_FIXTURE);
    await s.call('register_agent', { agent_id: 'Reporter_01', name: 'Reporter', trust_level: 'high', denied_tools: ['send_*'] });
    await s.call('create_policy', { policy_id: 'no-exports', name: 'No exports', rules: [{ match: { tools: ['export_*'] }, action: 'deny', message: 'no exports' }] });
    await s.call('report_incident', { incident_type: 'data_exfiltration', severity: 'critical', description: 'leaked password=SEKRET1 to x', agent_id: 'test-high' });
    await s.restart();
    const reporter = await validate(s, 'send_email', 'Reporter_01');
    expect(reporter.agent).toEqual({ id: 'Reporter_01', trust_level: 'high', registered: true });
    expect(reporter.reason).toMatch(/explicitly denied/);
    expect((await validate(s, 'export_csv', 'test-admin')).reason).toBe('no exports');
    // The reason quotes the incident as it was stored: redacted (every later decision shows it).
    expect((await validate(s, 'read_data', 'test-high')).reason).toMatch(/suspended since .*critical incident inc_\w+: leaked password=\[REDACTED\] to x$/);
    expect(await readFile(join(s.dataDir, 'status.json'), 'utf8')).not.toContain('SEKRET1');
    // What was written is plain YAML a human can read and commit.
    const manifest = await readFile(join(s.dataDir, 'manifests', 'guardagents', `${objectNameFor('Reporter_01')}.yaml`), 'utf8');
    expect(manifest).toContain('agentId: Reporter_01');
  });

  it('create_policy with the id of a policy in force updates it where it is, and enabled: false takes it out of force', async () => {
    s = await startTestServer(SAMPLES);
    const before = await validate(s, 'read_orders', 'support-bot');
    expect(before.matched).toContainEqual(expect.objectContaining({ policy: 'reads-are-fine', namespace: 'policyguard' }));
    const rules = [{ match: { tools: ['read_*'] }, action: 'allow', message: 'reads, still' }];
    const disabled = await s.call('create_policy', { policy_id: 'reads-are-fine', name: 'Reads', rules, enabled: false });
    expect(disabled.json).toEqual({ success: true, policy_id: 'reads-are-fine', message: "Policy 'Reads' (reads-are-fine) updated successfully with 1 rules" });
    expect((await validate(s, 'read_orders', 'support-bot')).matched).not.toContainEqual(expect.objectContaining({ policy: 'reads-are-fine' }));
    const listed = (await s.call('get_compliance_status')).json.policies.list.filter((p: { id: string }) => p.id === 'reads-are-fine');
    expect(listed).toEqual([expect.objectContaining({ enabled: false, enforcement: 'Disabled' })]);
    // Enabled again, the new rules are in force under the same namespace, and what the call does not set stays.
    await s.call('create_policy', { policy_id: 'reads-are-fine', name: 'Reads', rules });
    const after = await validate(s, 'read_orders', 'support-bot');
    expect(after.matched).toContainEqual(expect.objectContaining({ policy: 'reads-are-fine', namespace: 'policyguard', message: 'reads, still', priority: 10 }));
    const written = await readFile(join(s.dataDir, 'manifests', 'guardpolicies', 'reads-are-fine.yaml'), 'utf8');
    expect(written).toMatch(/namespace: policyguard/);
    expect(written).toMatch(/description: Reading and querying is allowed for every trust level\./);
  });

  it('two create_policy calls racing for one new id: one creates it, the other is refused rather than overwrite it', async () => {
    s = await startTestServer(SEED_FIXTURE);
    const create = (message: string) => s!.call('create_policy', { policy_id: 'raced', name: 'Raced', rules: [{ match: { tools: ['send_*'] }, action: 'deny', message }] });
    // Both are checked as creates before either is written; the writes then run in turn.
    const results = await Promise.all([create('first'), create('second')]);
    expect(results.map((r) => r.json.success)).toEqual([true, false]);
    expect(results[1]!.json.message).toBe(
      'GuardPolicy raced exists, though it did not when this call was checked (someone created it meanwhile); a create does not overwrite it, so nothing was written. Retry to change it',
    );
    expect((await validate(s, 'send_email', 'test-admin')).reason).toMatch(/first/);
  });

  it('objects of one name in several namespaces, written through MCP, each keep a data-dir file of their own', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'policyguard-same-name-'));
    await cp(SEED_FIXTURE, dir, { recursive: true });
    const bot = (ns: string) => `apiVersion: policyguard.dev/v1alpha1\nkind: GuardAgent\nmetadata: {name: bot, namespace: ${ns}}\nspec: {agentId: bot-${ns}, trustLevel: low}\n`;
    await writeFile(join(dir, 'teams.yaml'), `${bot('team-a')}---\n${bot('team-b')}`);
    s = await startTestServer(dir).finally(() => rm(dir, { recursive: true }));
    // Each restricted through MCP, then a new agent whose object is named bot too.
    for (const id of ['bot-team-a', 'bot-team-b']) expect((await s.call('register_agent', { agent_id: id, name: id, trust_level: 'low', denied_tools: ['delete_*'] })).json.success).toBe(true);
    expect((await s.call('register_agent', { agent_id: 'bot', name: 'Bot', trust_level: 'low' })).json.success).toBe(true);
    const agents = join(s.dataDir, 'manifests', 'guardagents');
    expect((await readdir(agents)).sort()).toEqual(['_bot.yaml', 'bot.yaml', 'team-b_bot.yaml']);
    // A file renamed or moved by hand is where its object is written next, not a second definition of it.
    await mkdir(join(agents, 'team-b'));
    await rename(join(agents, 'team-b_bot.yaml'), join(agents, 'team-b', 'b.yaml'));
    await s.restart();
    expect((await s.call('register_agent', { agent_id: 'bot-team-b', name: 'B', trust_level: 'low', denied_tools: ['delete_*', 'drop_*'] })).json.success).toBe(true);
    expect((await readdir(agents, { recursive: true })).sort()).toEqual(['_bot.yaml', 'bot.yaml', 'team-b', 'team-b/b.yaml']);
    for (const srv of [s, await s.restart().then(() => s!)]) {
      for (const id of ['bot-team-a', 'bot-team-b']) expect((await validate(srv, 'delete_repo', id)).allowed).toBe(false);
      expect((await validate(srv, 'read_data', 'bot')).agent.registered).toBe(true);
    }
  });

  it('a data-dir file that could not be read is never written over: the object goes to a file of its own', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'policyguard-broken-'));
    await cp(SEED_FIXTURE, dir, { recursive: true });
    await writeFile(join(dir, 'team-a.yaml'), 'apiVersion: policyguard.dev/v1alpha1\nkind: GuardAgent\nmetadata: {name: bot, namespace: team-a}\nspec: {agentId: bot-team-a, trustLevel: low}\n');
    s = await startTestServer(dir).finally(() => rm(dir, { recursive: true }));
    const agents = join(s.dataDir, 'manifests', 'guardagents');
    const broken = '<<<<<<< HEAD\nkind: GuardAgent\n=======\n>>>>>>> theirs\n';
    await mkdir(agents, { recursive: true });
    await writeFile(join(agents, 'bot.yaml'), broken);
    await s.restart();
    expect((await s.call('register_agent', { agent_id: 'bot-team-a', name: 'A', trust_level: 'low', denied_tools: ['delete_*'] })).json.success).toBe(true);
    expect(await readFile(join(agents, 'bot.yaml'), 'utf8')).toBe(broken);
    expect((await readdir(agents)).sort()).toEqual(['bot.yaml', 'team-a_bot.yaml']);
  });

  it('create_policy with an id two policies in force hold is refused, naming them', async () => {
    s = await startTestServer(SEED_FIXTURE);
    await writeFile(join(s.configDir, 'dup.yaml'), ['a', 'b'].map((ns) => NEW_POLICY.replace('{name: no-emails}', `{name: no-emails, namespace: ${ns}}`)).join('---\n'));
    await eventually(() => validate(s!, 'send_email', 'test-admin'), (d) => d.allowed === false, 'both policies');
    const r = await s.call('create_policy', { policy_id: 'no-emails', name: 'No emails', rules: [{ match: { tools: ['send_*'] }, action: 'deny' }] });
    expect(r).toMatchObject({ isError: true, json: { success: false, message: "policy id 'no-emails' names 2 policies in force (GuardPolicy a/no-emails, GuardPolicy b/no-emails); keep it on one of them, or use another id" } });
  });

  // Its name sorts first, and a creationTimestamp it carries is older than anything: neither counts.
  it.each([
    ['', TAKEOVER],
    [', with an old creationTimestamp', TAKEOVER.replace('{name: other}', '{name: other, creationTimestamp: "2000-01-01T00:00:00Z"}')],
  ])('a GuardAgent added later%s cannot take an agent id in force, nor its trust, even across a restart; the conflict names the newcomer', async (_what, takeover) => {
    s = await startTestServer(SAMPLES);
    expect((await validate(s, 'delete_x', 'support-bot')).agent).toEqual({ id: 'support-bot', trust_level: 'low', registered: true });
    await writeFile(join(s.configDir, 'other.yaml'), takeover);
    await eventually(() => problems(s!), (p) => p.some((l) => CONFLICT.test(l)), 'the conflict');
    const kept = await validate(s, 'delete_x', 'support-bot');
    expect(kept).toMatchObject({ allowed: false, agent: { trust_level: 'low' } });
    await s.restart();
    expect((await validate(s, 'delete_x', 'support-bot')).agent.trust_level).toBe('low');
    expect(await problems(s)).toContainEqual(expect.stringMatching(CONFLICT));
  });

  it('a GuardAgent that could not be loaded at a restart keeps its age: fixed, it keeps its id from one added after it', async () => {
    s = await startTestServer(SAMPLES);
    await writeFile(join(s.configDir, 'other.yaml'), TAKEOVER);
    await eventually(() => problems(s!), (p) => p.some((l) => CONFLICT.test(l)), 'the conflict');
    const agents = join(s.configDir, 'policyguard.dev_v1alpha1_guardagent.yaml');
    const text = await readFile(agents, 'utf8');
    await writeFile(agents, text.replace('trustLevel: low', 'trustLevel: low\n  displayname: typo'));
    await s.restart();
    expect((await validate(s, 'delete_x', 'support-bot')).reason).toMatch(/^The policy set is incomplete/);
    await writeFile(agents, text);
    const fixed = await eventually(() => validate(s!, 'delete_x', 'support-bot'), (d) => !/incomplete/.test(d.reason), 'the fixed agent');
    expect(fixed.agent.trust_level).toBe('low');
  });

  it('GuardAgents claiming one id at a start with no history: namespace/name decides', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'policyguard-takeover-'));
    await cp(SAMPLES, dir, { recursive: true });
    await writeFile(join(dir, 'other.yaml'), TAKEOVER);
    s = await startTestServer(dir).finally(() => rm(dir, { recursive: true }));
    expect((await validate(s, 'delete_x', 'support-bot')).agent.trust_level).toBe('admin');
    expect(await problems(s)).toContainEqual(expect.stringMatching(/guardagent\.yaml:\d+: GuardAgent policyguard\/support-bot: Conflict: agentId "support-bot" is already claimed by GuardAgent other$/));
  });

  it('auto-registers unknown agents in the background, at low trust, labelled', async () => {
    s = await startTestServer(SEED_FIXTURE);
    const first = await validate(s, 'read_data', 'newcomer');
    expect(first.agent.registered).toBe(false);
    const later = await eventually(() => validate(s!, 'read_data', 'newcomer'), (d) => d.agent.registered === true, 'auto-registration');
    expect(later.agent.trust_level).toBe('low');
    const yaml = await readFile(join(s.dataDir, 'manifests', 'guardagents', `${autoRegisteredName('newcomer')}.yaml`), 'utf8');
    expect(yaml).toContain('policyguard.dev/auto-registered: "true"');
  });

  it('stops auto-registering at --auto-register-limit', async () => {
    s = await startTestServer(SEED_FIXTURE, ['--auto-register-limit', '1']);
    await validate(s, 'read_data', 'first');
    await eventually(() => validate(s!, 'read_data', 'first'), (d) => d.agent.registered, 'the first registration');
    await validate(s, 'read_data', 'second');
    await validate(s, 'read_data', 'second');
    expect((await validate(s, 'read_data', 'second')).agent.registered).toBe(false);
    expect(s.pg.metrics.autoRegistrations.value({ outcome: 'limit' })).toBeGreaterThan(0);
  });
});
