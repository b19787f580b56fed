/**
 * Loading a folder of manifests fails closed (docs/decisions.md, "Objects that cannot be
 * loaded"), through the real server over HTTP on real files: an agent or policy that cannot be
 * loaded and has no good version in force denies every decision, naming its file and line,
 * until it is fixed; each document stands on its own; no file stops the others from loading.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cliArgs, ROOT, runCli, startProcess } from './cli.js';
import { eventually } from './eventually.js';
import { callAs, folderServers, type TestServer } from './harness.js';

const servers = folderServers('policyguard-loading-');
afterEach(() => servers.closeAll());
const serve = (files: Record<string, string>) => servers.serve(files);

const decide = (srv: TestServer, target: string, agent_id = 'x') => srv.call('validate_action', { action_type: 'tool_call', target, agent_id }).then((r) => r.json);
const problems = (srv: TestServer) => srv.call('get_compliance_status').then((r) => r.json.policies.problems as string[]);
const recommendations = (srv: TestServer) => srv.call('get_compliance_status').then((r) => r.json.recommendations as string[]);
const readyz = (srv: TestServer) => fetch(`${srv.pg.url}/readyz`).then((r) => r.status);
/** The agent ids the server wrote GuardAgents for (register_agent, auto-registration). */
async function written(srv: TestServer): Promise<string[]> {
  const dir = join(srv.dataDir, 'manifests', 'guardagents');
  const files = await readdir(dir).catch(() => []);
  return Promise.all(files.map(async (f) => /agentId: (\S+)/.exec(await readFile(join(dir, f), 'utf8'))?.[1] ?? f));
}

const INCOMPLETE = /^The policy set is incomplete, so this call is denied until it is fixed: /;
const NOT_IN_FORCE = ' (not in force: every decision is denied until this is fixed)';

const policy = (name: string, rules: string, extra = '') => `apiVersion: policyguard.dev/v1alpha1
kind: GuardPolicy
metadata: {name: ${name}}
spec:${extra}
  rules:
${rules}`;
const DENY_DROPS = policy('deny-drops', '    - {name: no-drops, match: {tools: ["drop_*"]}, action: deny, message: no drops}\n');
const DENY_SENDS = policy('deny-sends', '    - {match: {tools: ["send_*"]}, action: deny, message: no sends}\n');
const READS = policy('reads', '    - {match: {tools: ["read_*"]}, action: allow}\n');

describe('an agent or policy that cannot be loaded, with no good version, denies every decision until it is fixed', () => {
  it.each([
    ['an unknown field', DENY_DROPS.replace('tools: ["drop_*"]}', 'tools: ["drop_*"], argumnets: []}'), /deny\.yaml:6: GuardPolicy deny-drops: spec\.rules\[0\]\.match: Unrecognized key: "argumnets"/],
    ['a glob the engine refuses in another rule', `${DENY_DROPS}    - {match: {tools: ["truncate_{a,b}"]}, action: deny}\n`, /deny\.yaml:7: GuardPolicy deny-drops: InvalidPattern: pattern "truncate_\{a,b\}" uses braces/],
    ['an empty list in a match', DENY_DROPS.replace('["drop_*"]', '[]'), /deny\.yaml:6: GuardPolicy deny-drops: spec\.rules\[0\]\.match\.tools: an empty list matches no call/],
    ['a glob with a trailing space', DENY_DROPS.replace('"drop_*"', '"drop_* "'), /deny\.yaml:6: GuardPolicy deny-drops: InvalidPattern: pattern "drop_\* " ends with whitespace/],
    ['a metadata key Kubernetes does not have', DENY_DROPS.replace('{name: deny-drops}', '{name: deny-drops, lables: {team: payments}}'), /deny\.yaml:3: GuardPolicy deny-drops: metadata: Unrecognized key: "lables" \(not a field of Kubernetes ObjectMeta\)/],
    ['the wrong apiVersion', DENY_DROPS.replace('policyguard.dev/', 'policyguard.io/'), /deny\.yaml:1: GuardPolicy deny-drops: apiVersion is "policyguard\.io\/v1alpha1"; write apiVersion: policyguard\.dev\/v1alpha1/],
    ['no apiVersion', DENY_DROPS.replace(/^apiVersion.*\n/, ''), /deny\.yaml:1: GuardPolicy deny-drops: apiVersion is missing/],
    ['a policy whose apiVersion and kind lines were lost', DENY_DROPS.replace(/^apiVersion.*\nkind.*\n/, ''), /deny\.yaml:1: not a Kubernetes object: apiVersion and kind are missing/],
    ['an alias to an anchor of another document', `apiVersion: v1\nkind: ConfigMap\ndata: &b {tools: ["drop_*"]}\n---\n${DENY_DROPS.replace('match: {tools: ["drop_*"]}', 'match: {<<: *b}')}`, /deny\.yaml:5: invalid YAML: Unresolved alias/],
  ])('at start-up: %s', async (_what, text, problem) => {
    const srv = await serve({ 'deny.yaml': text, 'reads.yaml': READS });
    expect(await readyz(srv)).toBe(200); // the server answers, with denies
    for (const target of ['drop_table', 'read_file']) {
      const d = await decide(srv, target);
      expect(d).toMatchObject({ allowed: false, decision: 'deny', matched: [{ policy: 'agent:x', rule: 'incompletePolicySet', action: 'deny' }] });
      expect(d.reason).toMatch(INCOMPLETE);
      expect(d.reason).toMatch(problem);
    }
    expect(await problems(srv)).toEqual([expect.stringMatching(problem)]);
    expect((await problems(srv))[0]!.endsWith(NOT_IN_FORCE)).toBe(true);
    // Fixed, decisions resume at once: the deny and the allow are both in force.
    await writeFile(join(srv.configDir, 'deny.yaml'), DENY_DROPS);
    await eventually(() => decide(srv, 'read_file'), (d) => d.allowed === true, 'decisions to resume');
    expect((await decide(srv, 'drop_table')).reason).toBe('no drops');
    expect(await problems(srv)).toEqual([]);
  });

  it('a suspended GuardAgent with a typo denies its calls, naming it, and its id is never auto-registered in its place', async () => {
    const agent = 'apiVersion: policyguard.dev/v1alpha1\nkind: GuardAgent\nmetadata: {name: bot}\nspec:\n  suspended: true\n  deniedTools: ["send_*"]\n  displayname: typo\n';
    const srv = await serve({ 'agent.yaml': agent, 'deny.yaml': DENY_DROPS });
    const d = await decide(srv, 'send_mail', 'bot');
    expect(d).toMatchObject({ allowed: false, reason: expect.stringMatching(/agent\.yaml:7: GuardAgent bot: spec: Unrecognized key: "displayname"$/) });
    await writeFile(join(srv.configDir, 'agent.yaml'), agent.replace('  displayname: typo\n', ''));
    await eventually(() => decide(srv, 'read_x', 'bot'), (v) => v.reason === "Agent 'bot' is suspended by its spec", 'the fixed agent');
    // A newcomer is registered now; bot's call before the fix was not (writes are serialised), and raised no incident.
    await eventually(() => decide(srv, 'read_x', 'newcomer'), (v) => v.agent.registered === true, 'the newcomer to be registered');
    expect(await written(srv)).toEqual(['newcomer']);
    const status = await eventually(() => srv.call('get_compliance_status').then((r) => r.json), (j) => j.incidents.total >= 1, 'the incident of the deny by spec');
    expect(status.incidents.recent.map((i: { agent_id: string; description: string }) => i.description)).toEqual([expect.stringMatching(/suspended by its spec/)]);
  });

  it('an agent whose labels are misspelt is refused, not loaded without the labels a deny selects it by; `policyguard check` exits 2', async () => {
    const agent = 'apiVersion: policyguard.dev/v1alpha1\nkind: GuardAgent\nmetadata:\n  name: payer\n  lables:\n    team: payments\nspec: {trustLevel: medium}\n';
    const selected = policy('payments-no-refunds', '    - {match: {tools: ["refund_*"]}, action: deny, message: no refunds}\n', '\n  agentSelector: {matchLabels: {team: payments}}');
    const srv = await serve({ 'agent.yaml': agent, 'policy.yaml': selected });
    const lables = /agent\.yaml:5: GuardAgent payer: metadata: Unrecognized key: "lables" \(not a field of Kubernetes ObjectMeta\)/;
    const d = await decide(srv, 'refund_order', 'payer');
    expect(d).toMatchObject({ allowed: false, decision: 'deny', reason: expect.stringMatching(INCOMPLETE) });
    expect(d.reason).toMatch(lables);
    expect(await problems(srv)).toEqual([expect.stringMatching(lables)]);
    const check = await runCli(['check', '--config-dir', srv.configDir, '--agent-id', 'payer', '--target', 'refund_order']);
    expect({ code: check.code, stdout: check.stdout }).toEqual({ code: 2, stdout: '' });
    expect(check.stderr).toMatch(lables);
    // Spelt right, the deny applies to the agent by its label.
    await writeFile(join(srv.configDir, 'agent.yaml'), agent.replace('lables', 'labels'));
    await eventually(() => decide(srv, 'refund_order', 'payer'), (v) => v.reason === 'no refunds', 'the selected deny');
    expect(await problems(srv)).toEqual([]);
  });

  it('a file that never loaded whole is not made whole by breaking its YAML', async () => {
    const srv = await serve({ 'deny.yaml': DENY_DROPS.replace('["drop_*"]', '[]') });
    expect((await decide(srv, 'read_x')).reason).toMatch(/deny\.yaml:6: GuardPolicy deny-drops: spec\.rules\[0\]\.match\.tools/);
    await writeFile(join(srv.configDir, 'deny.yaml'), `${DENY_DROPS}  oops: [\n`);
    const d = await eventually(() => decide(srv, 'read_x'), (v) => /invalid YAML/.test(v.reason), 'the YAML error');
    expect(d).toMatchObject({ allowed: false, reason: expect.stringMatching(INCOMPLETE) });
  });

  it('a name defined again in another file while in force is an error, listed; the version in force stays until one is removed', async () => {
    const srv = await serve({ 'deny.yaml': DENY_DROPS, 'reads.yaml': READS });
    expect((await decide(srv, 'drop_table')).reason).toBe('no drops');
    await writeFile(join(srv.configDir, 'a-override.yaml'), policy('deny-drops', '    - {match: {tools: ["read_*"]}, action: allow}\n'));
    await eventually(() => problems(srv), (p) => p.length > 0, 'the duplicate to be seen');
    expect(await problems(srv)).toEqual([expect.stringMatching(/a-override\.yaml:1: GuardPolicy deny-drops is also defined at \S*deny\.yaml:1; one name, one object: rename or remove the others \(the last good version stays in force\)$/)]);
    expect((await decide(srv, 'drop_table')).reason).toBe('no drops');
    await rm(join(srv.configDir, 'a-override.yaml'));
    await eventually(() => problems(srv), (p) => p.length === 0, 'the duplicate to go');
    expect((await decide(srv, 'drop_table')).reason).toBe('no drops');
  });

  it('the same name twice in one file is the same error', async () => {
    const srv = await serve({ 'p.yaml': `${READS}---\n${policy('reads', '    - {match: {tools: ["drop_*"]}, action: deny}\n')}` });
    expect((await decide(srv, 'drop_table')).reason).toMatch(/p\.yaml:1: GuardPolicy reads is also defined at \S*p\.yaml:8;/);
  });
});

describe('each document stands on its own', () => {
  it('an invalid document that decides nothing (a GuardUpstream) leaves the deny beside it in force', async () => {
    const upstream = 'apiVersion: policyguard.dev/v1alpha1\nkind: GuardUpstream\nmetadata: {name: gh, namespace: default}\nspec: {url: "ftp://x"}\n';
    const srv = await serve({ 'both.yaml': `${upstream}---\n${DENY_DROPS}` });
    expect((await decide(srv, 'drop_table')).reason).toBe('no drops');
    expect((await decide(srv, 'read_x')).allowed).toBe(true);
    expect(await problems(srv)).toEqual([expect.stringMatching(/both\.yaml:4: GuardUpstream default\/gh: spec\.url: .* \(not in force\)$/)]);
    expect(await recommendations(srv)).toContain('1 problem: a definition (policy, agent or upstream) is not fully in force — see policies.problems');
  });

  it('after an edit that breaks one document, the new version of the others is in force and the broken one keeps its last good version', async () => {
    const srv = await serve({ 'p.yaml': `${DENY_DROPS}---\n${READS}` });
    expect((await decide(srv, 'drop_table')).reason).toBe('no drops');
    await writeFile(join(srv.configDir, 'p.yaml'), `${DENY_DROPS.replace('no drops', 'no more drops')}---\n${READS.replace('action: allow', 'action: alow')}`);
    await eventually(() => decide(srv, 'drop_table'), (d) => d.reason === 'no more drops', 'the new version of deny-drops');
    expect((await decide(srv, 'read_x')).allowed).toBe(true);
    expect(await problems(srv)).toEqual([expect.stringMatching(/p\.yaml:13: GuardPolicy reads: spec\.rules\[0\]\.action: Invalid option.* \(the last good version stays in force\)$/)]);
  });

  it('an edit with two mistakes in one object keeps its last good version in force, and both errors say so', async () => {
    const srv = await serve({ 'p.yaml': `${DENY_DROPS}---\n${READS}` });
    expect((await decide(srv, 'drop_table')).reason).toBe('no drops');
    await writeFile(join(srv.configDir, 'p.yaml'), `${DENY_DROPS.replace('spec:', 'spec:\n  enforcement: enforce').replace('action: deny', 'action: block')}---\n${READS}`);
    const listed = await eventually(() => problems(srv), (p) => p.length === 2, 'both errors');
    expect(listed).toEqual([
      expect.stringMatching(/p\.yaml:5: GuardPolicy deny-drops: spec\.enforcement: Invalid option.* \(the last good version stays in force\)$/),
      expect.stringMatching(/p\.yaml:7: GuardPolicy deny-drops: spec\.rules\[0\]\.action: Invalid option.* \(the last good version stays in force\)$/),
    ]);
    expect(await recommendations(srv)).toContain('2 problems: definitions (policies, agents or upstreams) are not fully in force — see policies.problems');
    expect((await decide(srv, 'drop_table')).reason).toBe('no drops');
    expect((await decide(srv, 'read_x')).allowed).toBe(true);
  });

  it('a file whose YAML cannot be converted never stops another file from loading', async () => {
    const srv = await serve({ 'reads.yaml': READS, 'z.yaml': 'apiVersion: v1\nkind: ConfigMap\n' });
    expect((await decide(srv, 'drop_table')).allowed).toBe(true);
    // In one save: a new deny, and z.yaml broken (it keeps its last good version, so nothing is missing).
    await writeFile(join(srv.configDir, 'a-deny.yaml'), DENY_DROPS);
    await writeFile(join(srv.configDir, 'z.yaml'), 'apiVersion: v1\nkind: ConfigMap\ndata: &b {}\n---\ny: *b\n');
    await eventually(() => decide(srv, 'drop_table'), (d) => d.reason === 'no drops', 'the new deny');
    expect(await problems(srv)).toEqual([expect.stringMatching(/z\.yaml:5: invalid YAML: Unresolved alias .* \(the last good version of this file stays in force\)$/)]);
  });

  it('a List of objects (kubectl get -o yaml) is loaded item by item', async () => {
    const items = `${DENY_DROPS}`.replace(/^/gm, '    ').replace(/^ {4}/, '  - ');
    const srv = await serve({ 'list.yaml': `apiVersion: v1\nkind: List\nitems:\n${items}` });
    expect((await decide(srv, 'drop_table')).reason).toBe('no drops');
    expect((await decide(srv, 'read_x')).allowed).toBe(true);
  });
});

describe('a file named like a manifest that cannot be read is a file that cannot be loaded, never passed over', () => {
  const check = (srv: TestServer) => runCli(['check', '--config-dir', srv.configDir, '--agent-id', 'x', '--target', 'read_x']);
  const latin1 = Buffer.from(policy('deny-deletes', '    - {match: {tools: ["suppréssion_*"]}, action: deny}\n'), 'latin1');

  it.each<[string, (file: string) => Promise<unknown> | void, RegExp]>([
    ['a dangling symlink', (file) => symlink('missing.yaml', file), /deny\.yaml:1: the file cannot be read: it is a symbolic link to missing\.yaml, which does not exist/],
    ['a FIFO', (file) => void execFileSync('mkfifo', [file]), /deny\.yaml:1: the file cannot be read: it is a FIFO, not a regular file/],
    ['a symlink loop', (file) => symlink('deny.yaml', file), /deny\.yaml:1: the file cannot be read: too many symbolic links encountered \(ELOOP\)/],
    ['Latin-1 text', (file) => writeFile(file, latin1), /deny\.yaml:6: the file is not UTF-8 text: byte 130 \(0xE9, column 30\) is not UTF-8 \(Latin-1\?\); save it as UTF-8/],
    ['UTF-16 text', (file) => writeFile(file, Buffer.from(`\uFEFF${DENY_DROPS}`, 'utf16le')), /deny\.yaml:1: the file is not UTF-8 text: it is UTF-16 \(it starts with a UTF-16 byte order mark\); save it as UTF-8/],
  ])('%s denies every decision, naming it, until it is fixed; `policyguard check` exits 2', async (_what, make, problem) => {
    const srv = await serve({ 'reads.yaml': READS });
    expect((await decide(srv, 'read_x')).allowed).toBe(true);
    const file = join(srv.configDir, 'deny.yaml');
    await make(file);
    const d = await eventually(() => decide(srv, 'read_x'), (v) => v.allowed === false, 'the file to be refused');
    expect(d).toMatchObject({ decision: 'deny', matched: [{ rule: 'incompletePolicySet' }], reason: expect.stringMatching(INCOMPLETE) });
    expect(d.reason).toMatch(problem);
    expect(await problems(srv)).toEqual([expect.stringMatching(problem)]);
    expect((await problems(srv))[0]!.endsWith(NOT_IN_FORCE)).toBe(true);
    const checked = await check(srv);
    expect({ code: checked.code, stdout: checked.stdout }).toEqual({ code: 2, stdout: '' });
    expect(checked.stderr).toMatch(problem);
    await rm(file);
    await writeFile(file, DENY_DROPS);
    await eventually(() => decide(srv, 'read_x'), (v) => v.allowed === true, 'decisions to resume');
    expect((await decide(srv, 'drop_table')).reason).toBe('no drops');
  });

  it('a UTF-8 byte order mark is taken', async () => {
    const srv = await serve({ 'deny.yaml': `\uFEFF${DENY_DROPS}` });
    expect((await decide(srv, 'drop_table')).reason).toBe('no drops');
    expect(await problems(srv)).toEqual([]);
  });

  it('a file that stops being readable keeps its last good version in force, and never stops another file from loading', async () => {
    const srv = await serve({ 'deny.yaml': DENY_DROPS, 'reads.yaml': READS });
    // Renamed over it in one step: a symlink to itself, which no one can read.
    await symlink('deny.yaml', join(srv.configDir, 'loop.tmp'));
    await rename(join(srv.configDir, 'loop.tmp'), join(srv.configDir, 'deny.yaml'));
    await writeFile(join(srv.configDir, 'sends.yaml'), DENY_SENDS);
    await eventually(() => decide(srv, 'send_mail'), (d) => d.reason === 'no sends', 'the new deny beside the unreadable file');
    expect((await decide(srv, 'drop_table')).reason).toBe('no drops');
    expect((await decide(srv, 'read_x')).allowed).toBe(true);
    expect(await problems(srv)).toEqual([expect.stringMatching(/deny\.yaml:1: the file cannot be read: too many symbolic links encountered \(ELOOP\) \(the last good version of this file stays in force\)$/)]);
  });
});

/**
 * Node flags that drop root's privileges before the CLI starts (uid and gid 65534, `nobody`),
 * so that file permissions hold for it as for a server that does not run as root; none when
 * the tests do not run as root, as permissions hold for them already.
 */
const AS_NOBODY = process.getuid?.() === 0 ? ['--import=data:text/javascript,process.setgroups([]);process.setgid(65534);process.setuid(65534)'] : [];
const cliAsNobody = (args: string[]): [string, string[]] => {
  const [cmd, argv] = cliArgs(args);
  return [cmd, [...AS_NOBODY, ...argv]];
};

describe('a file or folder the server has no permission to read (EACCES), with a server that does not run as root', () => {
  it('keeps what was loaded from it in force, lets the other files load, and makes `policyguard check` exit 2 naming it', async () => {
    const root = await mkdtemp(join(tmpdir(), 'policyguard-eacces-'));
    const configDir = join(root, 'config');
    const dataDir = join(root, 'data');
    await chmod(root, 0o755);
    await mkdir(join(configDir, 'team'), { recursive: true });
    await mkdir(dataDir);
    await chmod(dataDir, 0o777);
    await writeFile(join(configDir, 'reads.yaml'), READS);
    await writeFile(join(configDir, 'secret.yaml'), DENY_SENDS);
    await writeFile(join(configDir, 'team', 'drops.yaml'), DENY_DROPS);
    const [cmd, argv] = cliAsNobody(['serve', '--standalone', '--config-dir', configDir, '--data-dir', dataDir, '--port', '0', '--rescan-interval', '0s']);
    const server = await startProcess(cmd, argv, /PolicyGuard serving .*url=(\S+)\/mcp/);
    try {
      const call = (name: string, args: Record<string, unknown> = {}) => callAs(server.match[1]!, undefined, name, args).then((r) => r.json);
      const ask = (target: string) => call('validate_action', { action_type: 'tool_call', target, agent_id: 'x' });
      expect((await ask('send_mail')).reason).toBe('no sends');
      await chmod(join(configDir, 'secret.yaml'), 0o000);
      await chmod(join(configDir, 'team'), 0o000);
      await writeFile(join(configDir, 'a-deny.yaml'), policy('deny-wires', '    - {match: {tools: ["wire_*"]}, action: deny, message: no wires}\n'));
      await eventually(() => ask('wire_money'), (d) => d.reason === 'no wires', 'the new deny beside the unreadable file');
      expect((await ask('send_mail')).reason).toBe('no sends');
      expect((await ask('drop_table')).reason).toBe('no drops');
      expect((await ask('read_x')).allowed).toBe(true);
      expect((await call('get_compliance_status')).policies.problems).toEqual([
        `${join(configDir, 'team')}: the folder cannot be listed: permission denied (EACCES) (what was loaded from this folder stays in force)`,
        `${join(configDir, 'secret.yaml')}:1: the file cannot be read: permission denied (EACCES) (the last good version of this file stays in force)`,
      ]);
      const checked = await new Promise<{ code: number | string | undefined; stdout: string; stderr: string }>((resolve) => {
        const [checkCmd, checkArgv] = cliAsNobody(['check', '--config-dir', configDir, '--agent-id', 'x', '--target', 'read_x']);
        execFile(checkCmd, checkArgv, { cwd: ROOT }, (err, stdout, stderr) => resolve({ code: err?.code ?? 0, stdout, stderr }));
      });
      expect({ code: checked.code, stdout: checked.stdout }).toEqual({ code: 2, stdout: '' });
      expect(checked.stderr).toContain(`${join(configDir, 'team')}: the folder cannot be listed: permission denied (EACCES)`);
      expect(checked.stderr).toContain(`${join(configDir, 'secret.yaml')}:1: the file cannot be read: permission denied (EACCES)`);
    } finally {
      await server.stop();
      await chmod(join(configDir, 'team'), 0o755); // else only root could remove it
      await rm(root, { recursive: true, force: true });
    }
  });
});
