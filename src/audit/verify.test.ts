import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GENESIS_HASH, createAuditRecord, type AuditEntryInput, type AuditRecord } from './record.js';
import { verifyAuditChain } from './verify.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pg-verify-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const input: AuditEntryInput = {
  action_id: null,
  agent_id: 'agent-1',
  caller: null,
  action: { type: 'tool_call', target: 'fs.read', parameters: { path: '/etc/hosts' }, context: '' },
  evaluation: { allowed: false, decision: 'deny', require_approval: false, reason: 'no', matched: [], audit_findings: [] },
  revision: 'rev-1',
};

function chain(length: number, prevHash = GENESIS_HASH): AuditRecord[] {
  const records: AuditRecord[] = [];
  for (let i = 0; i < length; i++) records.push(createAuditRecord(input, records.at(-1)?.hash ?? prevHash));
  return records;
}

const jsonl = (records: unknown[]) => records.map((r) => `${JSON.stringify(r)}\n`).join('');

describe('verifyAuditChain', () => {
  it('accepts an intact file and an intact directory', async () => {
    const records = chain(5);
    await writeFile(join(dir, 'audit-000001.jsonl'), jsonl(records.slice(0, 3)));
    await writeFile(join(dir, 'audit-000002.jsonl'), jsonl(records.slice(3)));
    await writeFile(join(dir, 'incidents.jsonl'), 'not part of the audit log\n');
    expect(await verifyAuditChain(dir)).toEqual({ ok: true, records: 5, segments: 2 });
    expect(await verifyAuditChain(join(dir, 'audit-000002.jsonl'))).toEqual({ ok: true, records: 2, segments: 1 });
  });

  it('reports an edited field as a hash mismatch at that exact line', async () => {
    const records = chain(5);
    const path = join(dir, 'audit-000001.jsonl');
    await writeFile(path, jsonl(records));
    const lines = (await readFile(path, 'utf8')).split('\n');
    lines[2] = lines[2]?.replace('"allowed":false', '"allowed":true') ?? '';
    await writeFile(path, lines.join('\n'));

    const result = await verifyAuditChain(path);
    expect(result).toMatchObject({ ok: false, records: 2, file: path, line: 3, entryId: records[2]?.entry_id });
    expect(result.ok || result.reason).toMatch(/^hash mismatch/);
  });

  it('reports a deleted line as a prev_hash mismatch at the record after the gap', async () => {
    const records = chain(5);
    const path = join(dir, 'audit-000001.jsonl');
    await writeFile(path, jsonl([...records.slice(0, 2), ...records.slice(3)]));
    const result = await verifyAuditChain(path);
    expect(result).toMatchObject({ ok: false, records: 2, line: 3, entryId: records[3]?.entry_id });
    expect(result.ok || result.reason).toMatch(/^prev_hash mismatch/);
  });

  it('reports swapped lines as a prev_hash mismatch', async () => {
    const [a, b, c] = chain(3);
    const path = join(dir, 'audit-000001.jsonl');
    await writeFile(path, jsonl([a, c, b]));
    expect(await verifyAuditChain(path)).toMatchObject({ ok: false, line: 2, entryId: c?.entry_id });
  });

  it('reports a line that is not JSON, or not a record, with its line number', async () => {
    const records = chain(3);
    const path = join(dir, 'audit-000001.jsonl');
    await writeFile(path, `${jsonl(records.slice(0, 2))}{"entry_id":"aud_x",\n`);
    const bad = await verifyAuditChain(path);
    expect(bad).toMatchObject({ ok: false, records: 2, line: 3 });
    expect(bad.ok || bad.reason).toMatch(/^invalid JSON/);

    await writeFile(path, jsonl([records[0], { ...records[1], hash: 'short' }]));
    const foreign = await verifyAuditChain(path);
    expect(foreign).toMatchObject({ ok: false, line: 2, entryId: records[1]?.entry_id });
    expect(foreign.ok || foreign.reason).toMatch(/^not an audit record: hash/);
  });

  it('checks the chain across segments', async () => {
    const records = chain(6);
    await writeFile(join(dir, 'audit-000001.jsonl'), jsonl(records.slice(0, 2)));
    await writeFile(join(dir, 'audit-000002.jsonl'), jsonl(records.slice(2, 4)));
    await writeFile(join(dir, 'audit-000003.jsonl'), jsonl(records.slice(4)));
    // Losing a whole middle segment breaks the link into the next one.
    await rm(join(dir, 'audit-000002.jsonl'));
    expect(await verifyAuditChain(dir)).toMatchObject({
      ok: false,
      records: 2,
      file: join(dir, 'audit-000003.jsonl'),
      line: 1,
    });
  });

  it('accepts the first prev_hash after retention, but demands genesis when segment 1 is present', async () => {
    const records = chain(4);
    await writeFile(join(dir, 'audit-000001.jsonl'), jsonl(records.slice(1)));
    const truncatedStart = await verifyAuditChain(dir);
    expect(truncatedStart).toMatchObject({ ok: false, line: 1, entryId: records[1]?.entry_id });
    expect(truncatedStart.ok || truncatedStart.reason).toMatch(/genesis/);

    // The same records as the oldest retained segment of a longer log are fine.
    await rename(join(dir, 'audit-000001.jsonl'), join(dir, 'audit-000007.jsonl'));
    expect(await verifyAuditChain(dir)).toEqual({ ok: true, records: 3, segments: 1 });
  });
});
