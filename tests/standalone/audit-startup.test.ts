/**
 * The standalone server at start-up and shutdown, as an operator meets it: it refuses to start
 * on an audit log that lost its anchor, is broken where it would continue it, holds something
 * that is not a segment, or is signed while the server has no key; it starts with
 * `--audit-accept-missing-anchor` and says so; and on SIGTERM while the log cannot be written it
 * prints the records it could not store instead of losing them silently.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/audit/record.js';
import { ROOT, cliArgs, runCli, startProcess } from './cli.js';
import { eventually } from './eventually.js';
import { callAs, writeSignedLog, type TestServer } from './harness.js';

let root: string;
let key: string;
let s: TestServer;
let auditDir: string;
let segment: string;
/** The audit folder as the server left it; each test starts from it. */
let original: Record<string, string>;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'policyguard-audit-startup-'));
  ({ key, server: s, auditDir } = await writeSignedLog(root));
  segment = join(auditDir, 'audit-000001.jsonl');
  original = {};
  for (const name of await readdir(auditDir)) original[name] = await readFile(join(auditDir, name), 'utf8');
});
beforeEach(async () => {
  await rm(auditDir, { recursive: true, force: true });
  await mkdir(auditDir);
  for (const [name, text] of Object.entries(original)) await writeFile(join(auditDir, name), text);
});
afterAll(async () => {
  await s?.close().catch(() => undefined);
  await rm(root, { recursive: true, force: true });
});

const lines = () => original['audit-000001.jsonl']!.split('\n').filter(Boolean);
const serve = (...flags: string[]) => ['serve', '--standalone', '--config-dir', s.configDir, '--data-dir', s.dataDir, '--port', '0', ...flags];

/** `serve` expected to refuse: a server that starts after all is stopped after 20 s (exit code null), not left running. */
function refusedStart(...flags: string[]): Promise<{ code: number | null; stderr: string }> {
  const [cmd, args] = cliArgs(serve(...flags));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

describe('the server does not start on an audit log it cannot vouch for', () => {
  it('refuses a log cut at its end whose anchor was deleted; starts with --audit-accept-missing-anchor and says what it accepted', async () => {
    const kept = lines().slice(0, 4);
    await writeFile(segment, kept.map((l) => `${l}\n`).join(''));
    await rm(join(auditDir, 'anchor.json'));
    const lastKept = JSON.parse(kept.at(-1)!) as AuditRecord;

    const refused = await refusedStart('--audit-key-file', key);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(
      `policyguard: the audit log holds records up to ${lastKept.entry_id} (audit-000001.jsonl:4) but has no anchor (file ${join(auditDir, 'anchor.json')}): ` +
        'records cut off its end cannot be detected',
    );
    expect((await runCli(['audit', 'verify', auditDir, '--key-file', key])).code).toBe(1);

    const [cmd, args] = cliArgs(serve('--audit-key-file', key, '--audit-accept-missing-anchor'));
    const started = await startProcess(cmd, args, /PolicyGuard serving .*url=(\S+)\/mcp/);
    try {
      const answer = await callAs(started.match[1]!, undefined, 'validate_action', { action_type: 'tool_call', target: 'read_g', agent_id: 'test-low' });
      expect(answer.json).toMatchObject({ allowed: true });
      expect(started.output()).toMatch(
        new RegExp(`WARN  the audit log holds records up to ${lastKept.entry_id} \\(audit-000001\\.jsonl:4\\) but has no anchor .*; accepted with --audit-accept-missing-anchor`),
      );
    } finally {
      await started.stop();
    }
    // Taken as it is, and anchored from now on.
    expect((await runCli(['audit', 'verify', auditDir, '--key-file', key])).code).toBe(0);
  });

  it('refuses a record edited in the newest segment, naming segment and line', async () => {
    const edited = lines();
    edited[1] = edited[1]!.replace('"agent_id":"test-low"', '"agent_id":"test-lox"');
    await writeFile(segment, edited.map((l) => `${l}\n`).join(''));
    const r = await refusedStart('--audit-key-file', key);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^policyguard: the audit log is broken at audit-000001\.jsonl:2 \(aud_\w+\): hash mismatch: .* To start a new log, move .*audit aside/m);
  });

  it('refuses to append unsigned records to a signed log: started without the key, it names --audit-key-file', async () => {
    const r = await refusedStart();
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^policyguard: the audit log is signed \(its last record aud_\w+ at audit-000001\.jsonl:\d+ carries a MAC\) but no --audit-key-file was given/m);
  });

  it('refuses, instead of hanging, on a FIFO named like a segment; verify reports it (exit 1) and every other problem', async () => {
    execFileSync('mkfifo', [join(auditDir, 'audit-000002.jsonl')]);
    const r = await refusedStart('--audit-key-file', key);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/audit-000002\.jsonl is a FIFO, not a regular file/);
    const verify = await runCli(['audit', 'verify', auditDir, '--key-file', key]);
    expect(verify.code).toBe(1);
    expect(verify.stdout).toBe(`BROKEN at ${join(auditDir, 'audit-000002.jsonl')}: cannot be read: it is a FIFO, not a regular file\n1 problem(s) found; ${lines().length} records verified intact\nnote: anchor: ${verify.stdout.split('note: anchor: ')[1]}`);
  });
});

describe('shutdown while the audit log cannot be written', () => {
  it('prints each answered but unwritten record as a JSON line, says how many and which, and exits 1 without a stack trace', async () => {
    const dataDir = join(root, 'stop-data');
    const [cmd, args] = cliArgs(['serve', '--standalone', '--config-dir', s.configDir, '--data-dir', dataDir, '--port', '0']);
    const started = await startProcess(cmd, args, /PolicyGuard serving .*url=(\S+)\/mcp/);
    const url = started.match[1]!;
    const stored = join(dataDir, 'audit', 'audit-000001.jsonl');
    let code: number | null;
    try {
      await callAs(url, undefined, 'validate_action', { action_type: 'tool_call', target: 'read_a', agent_id: 'test-low' });
      await eventually(() => readFile(stored, 'utf8').catch(() => ''), (text) => text.endsWith('\n'), 'the first record on disk');
      // From now on every write fails (the segment is a folder), but the sink only learns it when it writes.
      await rm(stored);
      await mkdir(stored);
      const answer = await callAs(url, undefined, 'validate_action', { action_type: 'tool_call', target: 'read_b', agent_id: 'test-low' });
      expect(answer.json).toMatchObject({ allowed: true });
    } finally {
      const exited = new Promise<number | null>((resolve) => started.child.once('exit', (c) => resolve(c)));
      await started.stop();
      code = started.child.exitCode ?? (await exited);
    }
    const output = started.output();
    const unwritten = output.split('\n').filter((line) => line.startsWith('{"action":')).map((line) => JSON.parse(line) as AuditRecord);
    expect(unwritten.map((r) => r.action.target)).toEqual(['read_b']);
    expect(output).toContain(
      `ERROR shutdown failed: 1 audit record(s) were answered but never written to ${stored}, and are not in the audit log: ${unwritten[0]!.entry_id}. ` +
        'The last write failed: Error: EISDIR',
    );
    expect(output).toContain('the 1 record line(s) above are those records, as they would have been stored');
    expect(output).not.toMatch(/^\s+at /m);
    expect(code).toBe(1);
  });
});
