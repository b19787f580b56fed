/**
 * `policyguard audit verify` against logs a real server wrote: anchors catch records cut off
 * the end, the audit key catches a rewritten chain, and a wrong folder gets a clear error.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GENESIS_HASH, hashRecord, type AuditRecord } from '../../src/audit/record.js';
import { runCli } from './cli.js';
import { writeSignedLog, type TestServer } from './harness.js';

let root: string;
let key: string;
let s: TestServer;
let auditDir: string;
let segment: string;
/** The segment as the server left it; each test starts from this. */
let original: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'policyguard-audit-cli-'));
  ({ key, server: s, auditDir } = await writeSignedLog(root));
  await writeFile(join(root, 'other.key'), `${randomBytes(48).toString('base64')}\n`);
  segment = join(auditDir, 'audit-000001.jsonl');
  original = await readFile(segment, 'utf8');
});
afterAll(async () => {
  await s?.close().catch(() => undefined);
  await rm(root, { recursive: true, force: true });
});

const restore = () => writeFile(segment, original);
const records = () => original.split('\n').filter(Boolean).map((line) => JSON.parse(line) as AuditRecord);

describe('policyguard audit verify: anchors and the audit key', () => {
  it('passes with the key; without it says the MACs were not checked; fails with another key', async () => {
    await restore();
    const n = records().length;
    expect(n).toBeGreaterThanOrEqual(6);
    expect(records().every((r) => /^[0-9a-f]{64}$/.test(r.mac ?? ''))).toBe(true);

    const ok = await runCli(['audit', 'verify', auditDir, '--key-file', key]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(new RegExp(`^ok: ${n} records in 1 segment\\(s\\), chain intact\\nnote: anchor: the anchor of \\S+ names aud_\\w+ at audit-000001\\.jsonl:${n}; the log holds it\\n$`));

    const unchecked = await runCli(['audit', 'verify', auditDir]);
    expect(unchecked.code).toBe(0);
    expect(unchecked.stdout).toContain(`note: ${n} records carry a MAC that was not checked (no key file given)`);

    const wrong = await runCli(['audit', 'verify', auditDir, '--key-file', join(root, 'other.key')]);
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toMatch(/^BROKEN at .*audit-000001\.jsonl:1 \(aud_\w+\): mac mismatch/);
  });

  it('exits 1 naming how many records were cut off the end', async () => {
    await restore();
    const all = records();
    await writeFile(segment, all.slice(0, -2).map((r) => `${JSON.stringify(r)}\n`).join(''));
    const r = await runCli(['audit', 'verify', auditDir, '--key-file', key]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      new RegExp(
        `^BROKEN at .*audit-000001\\.jsonl:${all.length} \\(${all.at(-1)!.entry_id}\\): truncated: at least 2 records after ${all.at(-3)!.entry_id} ` +
          `were removed \\(the anchor of \\S+ names ${all.at(-1)!.entry_id} at audit-000001\\.jsonl:${all.length}\\)\\n`,
      ),
    );
    const chainOnly = await runCli(['audit', 'verify', auditDir, '--no-anchor']);
    expect(chainOnly.code).toBe(0);
    expect(chainOnly.stdout).toContain('note: anchor not checked (--no-anchor)');

    // The server itself refuses to start on a log cut while it was stopped.
    const serve = await runCli(['serve', '--standalone', '--config-dir', s.configDir, '--data-dir', s.dataDir, '--port', '0', '--audit-key-file', key]);
    expect(serve.code).toBe(2);
    expect(serve.stderr).toMatch(/the audit log does not match its anchor \(file .*anchor\.json\): truncated: at least 2 records/);
  });

  it('what the log holds is printed escaped: an edited entry_id cannot move the cursor and print a false "ok"', async () => {
    await restore();
    const lines = original.split('\n').filter(Boolean);
    const forged = '\u001b[1A\u001b[2K\rok: 9 records in 1 segment(s), chain intact\u001b[8m';
    lines[1] = lines[1]!.replace(/"entry_id":"[^"]*"/, `"entry_id":${JSON.stringify(forged)}`);
    await writeFile(segment, `${lines.join('\n')}\n`);
    const r = await runCli(['audit', 'verify', auditDir, '--key-file', key]);
    expect(r.code).toBe(1);
    expect([...r.stdout].filter((c) => c !== '\n' && c < ' ')).toEqual([]);
    expect(r.stdout).toContain('(\\u001b[1A\\u001b[2K\\u000dok: 9 records in 1 segment(s), chain intact\\u001b[8m): hash mismatch');
  });

  it('a chain recomputed without the key passes without the key and fails with it', async () => {
    await restore();
    const forged: AuditRecord[] = [];
    for (const record of records()) {
      const { hash: _hash, mac: _mac, ...fields } = record;
      const edited = { ...fields, evaluation: { ...fields.evaluation, allowed: true }, prev_hash: forged.at(-1)?.hash ?? GENESIS_HASH };
      forged.push({ ...edited, hash: hashRecord(edited.prev_hash, edited) });
    }
    await writeFile(segment, forged.map((r) => `${JSON.stringify(r)}\n`).join(''));
    const last = forged.at(-1)!;
    const anchor = JSON.parse(await readFile(join(auditDir, 'anchor.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(join(auditDir, 'anchor.json'), JSON.stringify({ ...anchor, entry_id: last.entry_id, hash: last.hash, mac: undefined }));
    try {
      expect((await runCli(['audit', 'verify', auditDir])).code).toBe(0);
      // Records without MACs could predate the key; an anchor without one proves nothing then.
      const withKey = await runCli(['audit', 'verify', auditDir, '--key-file', key]);
      expect(withKey.code).toBe(1);
      expect(withKey.stdout).toMatch(/^BROKEN at .*audit-000001\.jsonl:\d+ \(aud_\w+\): the anchor has no MAC though a key is given/);
    } finally {
      await writeFile(join(auditDir, 'anchor.json'), JSON.stringify(anchor));
    }
  });

  it('exits 2 with a hint when given the data folder instead of the audit folder, or a bad key file', async () => {
    const r = await runCli(['audit', 'verify', s.dataDir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`policyguard: ${s.dataDir} holds no audit segments (audit-NNNNNN.jsonl) and no anchor; did you mean ${auditDir}?\n`);
    const badKey = await runCli(['audit', 'verify', auditDir, '--key-file', join(root, 'missing.key')]);
    expect(badKey.code).toBe(2);
    expect(badKey.stderr).toMatch(/^policyguard: audit key file .*missing\.key cannot be read: ENOENT/);
    const usage = await runCli(['audit', 'verify', auditDir, '--namespace', 'x']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--namespace and --replica go together/);
  });
});
