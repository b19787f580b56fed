/**
 * The CLI as a newcomer uses it: `npm start`, `policyguard check`, `policyguard audit verify`,
 * `policyguard approvals list|approve|deny --data-dir`, `policyguard crds`.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { generateCrds } from '../../src/api/crd.js';
import { argumentsDigest, newApproval } from '../../src/approvals/ask.js';
import { FileApprovalStore } from '../../src/approvals/file-store.js';
import { silentLogger } from '../../src/log.js';
import { SEED_FIXTURE, SAMPLES, startTestServer } from './harness.js';
import { cliArgs, ROOT, runCli, startProcess } from './cli.js';
import { eventually } from './eventually.js';

const tmpRoots: string[] = [];
afterAll(async () => {
  for (const r of tmpRoots) await rm(r, { recursive: true, force: true });
});
async function tmp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'policyguard-cli-'));
  tmpRoots.push(d);
  return d;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

describe('npm start', () => {
  it('serves config-samples on 127.0.0.1 and /readyz answers 200', async () => {
    // The README's command, on a free port instead of 8000 so a running copy does not collide.
    const port = await freePort();
    const dataDir = await tmp();
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    // Extra flags after `--` override the script's (the last value of a flag wins).
    const { match, stop } = await startProcess(npm, ['start', '--', '--port', String(port), '--data-dir', dataDir], /PolicyGuard serving .*url=(\S+)/);
    try {
      expect(match[1]).toBe(`http://127.0.0.1:${port}/mcp`);
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      expect(ready.status).toBe(200);
      const d = await fetch(`http://127.0.0.1:${port}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'validate_action', arguments: { action_type: 'tool_call', target: 'drop_table', agent_id: 'data-processor' } } }),
      }).then((r) => r.json() as Promise<any>);
      expect(d.result.structuredContent.allowed).toBe(false);
    } finally {
      await stop();
    }
    // Stopped means stopped: no orphaned tsx/node child keeps serving on the port.
    const refused = () => fetch(`http://127.0.0.1:${port}/readyz`).then(() => false, () => true);
    await eventually(refused, (gone) => gone, 'the server of `npm start` to exit');
  });
});

describe('policyguard check', () => {
  it('exits 0 and prints the decision when allowed', async () => {
    const r = await runCli(['check', '--config-dir', SAMPLES, '--agent-id', 'platform-admin', '--target', 'delete_rows']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ allowed: true, agent: { id: 'platform-admin', trust_level: 'admin' } });
  });
  it('exits 1 when denied or approval is required', async () => {
    const denied = await runCli(['check', '--config-dir', SAMPLES, '--agent-id', 'data-processor', '--target', 'drop_table']);
    expect(denied.code).toBe(1);
    expect(JSON.parse(denied.stdout).reason).toMatch(/explicitly denied/);
    const approval = await runCli(['check', '--config-dir', SAMPLES, '--agent-id', 'support-bot', '--target', 'issue_refund', '--parameters', '{"amount": 900}']);
    expect(approval.code).toBe(1);
    expect(JSON.parse(approval.stdout).decision).toBe('require_approval');
  });
  it('takes serve\'s --default-decision and --unknown-agent-trust, checked as serve checks them', async () => {
    const open = await runCli(['check', '--config-dir', SAMPLES, '--agent-id', 'nobody', '--target', 'frobnicate']);
    expect(JSON.parse(open.stdout)).toMatchObject({ decision: 'allow', reason: 'Action permitted by default policy' });
    const strict = await runCli(['check', '--config-dir', SAMPLES, '--agent-id', 'nobody', '--target', 'frobnicate', '--default-decision', 'deny']);
    expect(strict.code).toBe(1);
    expect(JSON.parse(strict.stdout)).toMatchObject({ decision: 'deny', reason: 'No rule allows this action; the default decision is deny' });
    const trusted = await runCli(['check', '--config-dir', SAMPLES, '--agent-id', 'nobody', '--target', 'frobnicate', '--unknown-agent-trust', 'high']);
    expect(JSON.parse(trusted.stdout).agent).toEqual({ id: 'nobody', trust_level: 'high', registered: false });
    const bad = await runCli(['check', '--config-dir', SAMPLES, '--agent-id', 'nobody', '--target', 'x', '--default-decision', 'maybe']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--default-decision: Invalid option: expected one of "allow"\|"deny"/);
    const inexact = await runCli(['check', '--config-dir', SAMPLES, '--agent-id', 'nobody', '--target', 'x', '--parameters', '{"n": 9007199254740993}']);
    expect(inexact.code).toBe(2);
    expect(inexact.stderr).toMatch(/--parameters: the number 9007199254740993 cannot be kept exactly/);
  });
  it('exits 2 when the folder holds no GuardPolicy or GuardAgent: a CI job pointed at the wrong folder does not pass', async () => {
    const dir = await tmp();
    await writeFile(join(dir, '.hidden.yaml'), 'apiVersion: policyguard.dev/v1alpha1\nkind: GuardPolicy\nmetadata: {name: h}\nspec:\n  rules: [{action: deny}]\n');
    await writeFile(join(dir, 'cm.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n');
    const r = await runCli(['check', '--config-dir', dir, '--agent-id', 'a', '--target', 't']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`${dir}: no GuardPolicy or GuardAgent in this folder (hidden names and other projects' kinds are skipped), so only --default-decision would decide; point --config-dir at the manifests\n`);
  });
  it('exits 2 with file:line when a manifest is broken', async () => {
    const dir = await tmp();
    await writeFile(join(dir, 'p.yaml'), 'apiVersion: policyguard.dev/v1alpha1\nkind: GuardPolicy\nmetadata: {name: p}\nspec:\n  rules: []\n');
    const r = await runCli(['check', '--config-dir', dir, '--agent-id', 'a', '--target', 't']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/p\.yaml:5: GuardPolicy p: spec\.rules: Too small/);
  });
  it('exits 2 with file:line when an object does not compile (a rejected glob)', async () => {
    const dir = await tmp();
    await writeFile(join(dir, 'g.yaml'), 'apiVersion: policyguard.dev/v1alpha1\nkind: GuardPolicy\nmetadata: {name: g}\nspec:\n  rules:\n    - match: {tools: ["drop_{a,b}"]}\n      action: deny\n');
    const r = await runCli(['check', '--config-dir', dir, '--agent-id', 'a', '--target', 't']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/g\.yaml:\d+: GuardPolicy g: InvalidPattern: pattern "drop_\{a,b\}" uses braces/);
  });
  it('exits 2 naming every file:line that cannot be loaded, never with a stack, and reads a List', async () => {
    const dir = await tmp();
    const head = (name: string, apiVersion = 'policyguard.dev/v1alpha1') => `apiVersion: ${apiVersion}\nkind: GuardPolicy\nmetadata: {name: ${name}}\nspec:\n`;
    await writeFile(join(dir, 'alias.yaml'), `base: &b {tools: ["drop_*"]}\n---\n${head('a')}  rules: [{match: {<<: *b}, action: deny}]\n`);
    await writeFile(join(dir, 'p.yaml'), `${head('p', 'policyguard.io/v1alpha1')}  rules: [{action: deny}]\n---\n${head('e')}  rules: [{match: {tools: []}, action: deny}]\n`);
    await writeFile(join(dir, 'twice.yaml'), `${head('t')}  rules: [{action: deny}]\n---\n${head('t')}  rules: [{action: allow}]\n`);
    await writeFile(join(dir, 'list.yaml'), `apiVersion: v1\nkind: List\nitems:\n- ${head('q').trimEnd().replaceAll('\n', '\n  ')}\n    rules: [{match: {tools: ["drop_*"]}, action: deny, message: listed}]\n`);
    const broken = await runCli(['check', '--config-dir', dir, '--agent-id', 'x', '--target', 'drop_t']);
    expect(broken.code).toBe(2);
    expect(broken.stderr).not.toMatch(/^\s+at /m);
    for (const line of [
      /alias\.yaml:3: invalid YAML: Unresolved alias/,
      /p\.yaml:1: GuardPolicy p: apiVersion is "policyguard\.io\/v1alpha1"; write apiVersion: policyguard\.dev\/v1alpha1/,
      /p\.yaml:11: GuardPolicy e: spec\.rules\[0\]\.match\.tools: an empty list matches no call/,
      /twice\.yaml:1: GuardPolicy t is also defined at \S*twice\.yaml:7/,
    ]) expect(broken.stderr).toMatch(line);
    for (const file of ['alias.yaml', 'p.yaml', 'twice.yaml']) await rm(join(dir, file));
    const listed = await runCli(['check', '--config-dir', dir, '--agent-id', 'x', '--target', 'drop_t']);
    expect(listed.code).toBe(1);
    expect(JSON.parse(listed.stdout).reason).toBe('listed');
  });
  it('refuses parameters nested deeper than validate_action takes, with its message, and takes what it takes', async () => {
    const nested = (depth: number) => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
    const call = { action_type: 'tool_call', agent_id: 'platform-admin', target: 'delete_rows' };
    const check = (parameters: string) => runCli(['check', '--config-dir', SAMPLES, '--agent-id', call.agent_id, '--target', call.target, '--parameters', parameters]);
    const s = await startTestServer(SAMPLES);
    try {
      const deepest = await s.call('validate_action', { ...call, parameters: nested(64) });
      expect(deepest.json).toMatchObject({ allowed: true });
      const taken = await check(nested(64));
      expect(taken.code).toBe(0);
      expect(JSON.parse(taken.stdout)).toMatchObject({ allowed: true });

      const tooDeep = await s.call('validate_action', { ...call, parameters: nested(100) });
      expect(tooDeep).toMatchObject({ isError: true, json: 'parameters: the JSON nests deeper than 64 levels' });
      const refused = await check(nested(100));
      expect(refused.code).toBe(2);
      expect(refused.stderr).toBe(`policyguard: --${tooDeep.json}\nRun \`policyguard help\` for the flags.\n`);
    } finally {
      await s.close();
    }
  });
  it('exits 2 on bad flags, naming the problem', async () => {
    const r = await runCli(['check', '--config-dir', SAMPLES, '--agent-id', 'a', '--target', 't', '--parameters', '{oops']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--parameters is not valid JSON/);
  });
});

describe('policyguard serve', () => {
  it('fails fast with a message that says what to fix', async () => {
    const r = await runCli(['serve', '--standalone', '--data-dir', '/tmp/x']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--config-dir \(POLICYGUARD_CONFIG_DIR\): --standalone needs --config-dir/);
    const missing = await runCli(['serve', '--standalone', '--config-dir', '/nonexistent', '--data-dir', await tmp(), '--port', '0']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--config-dir \/nonexistent is not a folder/);
  });
});

describe('policyguard audit verify', () => {
  it('accepts an intact chain and reports the first broken link of an edited one', async () => {
    const s = await startTestServer(SEED_FIXTURE);
    for (const t of ['read_a', 'delete_b', 'read_c']) await s.call('validate_action', { action_type: 'tool_call', target: t, agent_id: 'test-low' });
    await s.pg.close(); // flushes the audit log
    const dir = join(s.dataDir, 'audit');
    const ok = await runCli(['audit', 'verify', dir]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/ok: 3 records/);

    const file = join(dir, 'audit-000001.jsonl');
    const lines = (await readFile(file, 'utf8')).split('\n');
    lines[1] = lines[1]!.replace('"allowed":false', '"allowed":true');
    await writeFile(file, lines.join('\n'));
    const broken = await runCli(['audit', 'verify', dir]);
    expect(broken.code).toBe(1);
    expect(broken.stdout).toMatch(/BROKEN at .*audit-000001\.jsonl:2/);
    await s.close().catch(() => undefined);
  });
});

describe('policyguard crds', () => {
  it('prints the generated CRDs', async () => {
    const r = await runCli(['crds']);
    expect(r.code).toBe(0);
    for (const c of generateCrds()) expect(r.stdout).toContain(c.yaml);
  });
  it('unknown commands exit 2 with the hint, not the whole help', async () => {
    const r = await runCli(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('policyguard: unknown command "frobnicate"\nRun `policyguard help` for the flags.\n');
  });
});

describe('policyguard approvals --data-dir', () => {
  /** A data dir holding one Pending approval; its name and the approvals folder. */
  async function oneApproval(): Promise<{ dataDir: string; dir: string; name: string; text: string }> {
    const dataDir = await tmp();
    const store = await FileApprovalStore.open(dataDir, silentLogger);
    const ask = { agentId: 'bot', actionType: 'tool_call', target: 'drop_table', parameters: {} };
    const approval = await store.create(newApproval({ ask, digest: argumentsDigest(ask.parameters, undefined), namespace: undefined, matched: [{ policy: 'p', rule: 'r', action: 'require_approval', enforcement: 'Enforce' }], message: 'm', revision: 'r', requestedBy: 'token:bot', requesters: [], now: new Date(), ttlMs: 3_600_000 }));
    await store.close();
    const dir = join(dataDir, 'approvals');
    return { dataDir, dir, name: approval.metadata.name, text: await readFile(join(dir, `${approval.metadata.name}.json`), 'utf8') };
  }

  it('list shows what it can read, names every approval file it leaves out and why, and then exits 1', async () => {
    const { dataDir, dir, name, text } = await oneApproval();
    const odd = (c: string) => `apr-00000000000${c}`;
    await mkdir(join(dir, `${odd('a')}.json`));
    await writeFile(join(dir, `${odd('b')}.json`), '{"half": ');
    await writeFile(join(dir, `${odd('c')}.json`), '{"kind": "ConfigMap"}\n');
    execFileSync('mkfifo', [join(dir, `${odd('d')}.json`)]);
    // A link to a good approval of that name: listing it would follow the link.
    const elsewhere = join(await tmp(), `${odd('e')}.json`);
    await writeFile(elsewhere, text.replaceAll(name, odd('e')));
    await symlink(elsewhere, join(dir, `${odd('e')}.json`));
    // Not named like an approval file: not the CLI's business.
    await writeFile(join(dir, 'notes.txt'), 'x');
    // A decision file that counts as none: said, but the approval is listed (Pending, as the server has it).
    await mkdir(join(dir, `${name}.decision.json`));

    const r = await runCli(['approvals', 'list', '-o', 'json', '--data-dir', dataDir]);
    expect(r.code).toBe(1);
    expect((JSON.parse(r.stdout) as Array<{ metadata: { name: string } }>).map((a) => a.metadata.name)).toEqual([name]);
    const skipped = (problem: string) => `policyguard: approval file skipped: ${problem} (in ${dir})`;
    expect(r.stderr.split('\n').filter(Boolean).sort()).toEqual(
      [
        skipped(`${odd('a')}.json is a folder, not a regular file`),
        skipped(`${odd('b')}.json is not JSON`),
        skipped(`${odd('c')}.json is not a GuardApproval named ${odd('c')}`),
        skipped(`${odd('d')}.json is a FIFO, not a regular file`),
        skipped(`${odd('e')}.json is a symbolic link, not a regular file`),
        `policyguard: approval decision file ${join(dir, `${name}.decision.json`)} ignored: is a folder, not a regular file`,
      ].sort(),
    );

    for (const c of 'abcde') await rm(join(dir, `${odd(c)}.json`), { recursive: true });
    const rest = await runCli(['approvals', 'list', '--pending', '--data-dir', dataDir]);
    expect(rest.code).toBe(0);
    expect(rest.stdout).toMatch(new RegExp(`^${name} +bot +drop_table +Pending `, 'm'));
  });

  it('a malformed approval name is a usage error that says what a name looks like, before any desk is asked', async () => {
    const { dataDir } = await oneApproval();
    const expected = "policyguard: 'apr-zzz' is not an approval name: a name is apr- and 12 hex digits (0-9, a-f), e.g. apr-3f9c2a1b7d4e\nRun `policyguard help` for the flags.\n";
    for (const args of [['approve', 'apr-zzz', '--data-dir', dataDir], ['deny', 'apr-zzz', '-n', 'team-a', '--kubeconfig', join(dataDir, 'no-such-kubeconfig')]]) {
      const r = await runCli(['approvals', ...args]);
      expect(r.code).toBe(2);
      expect(r.stderr).toBe(expected);
    }
  });
});

describe('output into a pipe', () => {
  it('is written in full before the CLI exits, however slowly the reader reads', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'pg-cli-pipe-'));
    try {
      const store = await FileApprovalStore.open(dataDir, silentLogger);
      const now = new Date();
      for (let i = 0; i < 200; i++) {
        const ask = { agentId: 'bot', actionType: 'tool_call', target: 'drop_table', parameters: { n: i, note: 'x'.repeat(3000) } };
        await store.create(newApproval({ ask, digest: argumentsDigest(ask.parameters, undefined), namespace: undefined, matched: [{ policy: 'p', rule: 'r', action: 'require_approval', enforcement: 'Enforce' }], message: 'm', revision: 'r', requestedBy: 'token:bot', requesters: [], now, ttlMs: 3_600_000 }));
      }
      await store.close();
      // The reader starts late: the CLI fills the pipe (64 KiB) long before, and must wait for it.
      const [cmd, argv] = cliArgs(['approvals', 'list', '-o', 'json', '--data-dir', dataDir]);
      const child = spawn(cmd, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
      child.stdout.pause();
      await new Promise((r) => setTimeout(r, 1000));
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stdout.resume();
      const code = await new Promise((r) => child.on('close', r));
      expect(code).toBe(0);
      expect(out.length).toBeGreaterThan(600_000);
      expect(JSON.parse(out)).toHaveLength(200);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
