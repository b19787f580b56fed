/**
 * Standalone store behaviour through the real server: watching, broken files, persistence.
 */
import { execFileSync } from 'node:child_process';
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { objectNameFor } from '../../src/api/builders.js';
import { autoRegisteredName } from '../../src/decide/identity.js';
import { eventually } from './eventually.js';
import { SEED_FIXTURE, startTestServer, type TestServer } from './harness.js';

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
