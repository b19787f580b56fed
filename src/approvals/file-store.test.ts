/**
 * The standalone approvals folder as the server reads it: entries a person or program put
 * there that are not approval files are ignored with a warning that says what they are, never
 * followed, waited on or quoted.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../log.js';
import { newApproval } from './ask.js';
import { approvalsDir, fileApprovalDesk, FileApprovalStore } from './file-store.js';

let dataDir: string;
let warnings: string[];
beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'pg-approvals-store-'));
  await mkdir(approvalsDir(dataDir));
  warnings = [];
});
afterEach(() => rm(dataDir, { recursive: true, force: true }));

const open = () => FileApprovalStore.open(dataDir, createLogger('warn', (line) => warnings.push((JSON.parse(line) as { msg: string }).msg), 'json'), { rescanIntervalMs: 3_600_000 });
const at = (file: string) => join(approvalsDir(dataDir), file);

describe('FileApprovalStore reading the folder', () => {
  it('ignores a FIFO named like an approval or a decision without waiting on it, and says so', async () => {
    execFileSync('mkfifo', [at('apr-00000000000f.json')]);
    execFileSync('mkfifo', [at('apr-00000000000e.decision.json')]);
    await writeFile(at('apr-00000000000e.json'), '{}');
    const store = await open();
    expect(store.list()).toEqual([]);
    expect(warnings).toContain('approval file ignored: apr-00000000000f.json is a FIFO, not a regular file');
    // The CLI's reading lists the rest, also without waiting.
    expect(await fileApprovalDesk(dataDir).list()).toEqual([]);
    await store.close();
  });

  it('does not follow a symbolic link, nor quote a file that is not JSON', async () => {
    const secret = join(dataDir, 'shadow');
    await writeFile(secret, 'root:*:20000:0:99999:7:::\n');
    await symlink(secret, at('apr-000000000002.json'));
    await writeFile(at('apr-000000000003.json'), 'x\n2026-11-30T00:00:00Z ERROR forged line\n');
    const store = await open();
    expect(warnings).toEqual(expect.arrayContaining(['approval file ignored: apr-000000000002.json is a symbolic link, not a regular file', 'approval file ignored: apr-000000000003.json is not JSON']));
    expect(warnings.join('\n')).not.toMatch(/root|forged/);
    await store.close();
  });
});

describe('FileApprovalStore keeping a use', () => {
  it('a read older than its own write (the file as it was before the use) never undoes the use: the approval is not used twice', async () => {
    const store = await open();
    const asked = newApproval({
      ask: { agentId: 'etl', actionType: 'tool_call', target: 'drop_table', parameters: { table: 'users' } },
      namespace: undefined, digest: `sha256:${'0'.repeat(64)}`, matched: [{ policy: 'dba', rule: 'drops', action: 'require_approval', enforcement: 'Enforce' }], message: 'needs a DBA', revision: 'r1', requestedBy: 'token:etl', requesters: [], now: new Date(), ttlMs: 3_600_000,
    });
    const approved = await store.create({ ...asked, status: { phase: 'Approved', decidedBy: 'local:alice', decidedAt: new Date().toISOString() } });
    const file = at(`${approved.metadata.name}.json`);
    const before = await readFile(file, 'utf8');
    expect(await store.updateStatus(approved, { ...approved.status, phase: 'Used', usedAt: new Date().toISOString(), actionId: 'act_000000000001' })).toBe(true);
    // What a reload that read the file just before the write would bring back (put there whole, as the server writes).
    await writeFile(`${file}.old`, before);
    await rename(`${file}.old`, file);
    await (store as unknown as { reloadAll(): Promise<void> }).reloadAll();
    expect(store.get(undefined, approved.metadata.name)?.status?.phase).toBe('Used');
    expect(await store.updateStatus(approved, { ...approved.status, phase: 'Used', usedAt: new Date().toISOString(), actionId: 'act_000000000002' })).toBe(false);
    await store.close();
  });
});
