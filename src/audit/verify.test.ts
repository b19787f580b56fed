import { createHmac, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditAnchorError, FileAnchorStore, createAnchor, type AuditAnchor } from './anchor.js';
import { openFileAuditSink } from './file-sink.js';
import { readAuditKeyFile } from './key.js';
import { GENESIS_HASH, canonicalJson, createAuditRecord, hashRecord, type AuditEntryInput, type AuditRecord } from './record.js';
import type { AuditSink } from './sink.js';
import { AuditLogNotFoundError, verifyAuditChain } from './verify.js';

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
const segment = (seq: number) => join(dir, `audit-${String(seq).padStart(6, '0')}.jsonl`);
const anchorPath = () => join(dir, 'anchor.json');
const readAnchor = async (): Promise<AuditAnchor> => JSON.parse(await readFile(anchorPath(), 'utf8')) as AuditAnchor;

/** A key file as an operator makes one: base64 of random bytes and a newline. */
async function keyFile(name = 'audit.key'): Promise<string> {
  const path = join(dir, '..', `${dir.split('/').at(-1)}-${name}`);
  await writeFile(path, `${randomBytes(48).toString('base64')}\n`);
  keyFiles.push(path);
  return path;
}
const keyFiles: string[] = [];
afterEach(async () => {
  await Promise.all(keyFiles.splice(0).map((path) => rm(path, { force: true })));
});

/** A real file sink writing `count` records; closed, so its anchor names the last one. */
async function writeLog(count: number, opts: { keyFile?: string; segmentBytes?: number } = {}): Promise<AuditRecord[]> {
  const sink: AuditSink = await openFileAuditSink({ dir, flushIntervalMs: 3_600_000, log: () => undefined, ...opts });
  const records = Array.from({ length: count }, (_, i) => sink.append({ ...input, action: { ...input.action, parameters: { i } } }).record);
  await sink.close();
  return records;
}

/** What someone without the key does to hide an edit: recompute every hash after it, and the anchor. */
function rechain(records: AuditRecord[], edit: (r: AuditRecord) => AuditRecord, keepMacs: boolean): AuditRecord[] {
  const out: AuditRecord[] = [];
  for (const original of records) {
    const { hash: _hash, mac, ...fields } = edit(original);
    const linked = { ...fields, prev_hash: out.at(-1)?.hash ?? GENESIS_HASH };
    out.push({ ...linked, hash: hashRecord(linked.prev_hash, linked), ...(keepMacs && mac ? { mac } : {}) });
  }
  return out;
}

describe('verifyAuditChain: the hash chain', () => {
  it('accepts an intact file and an intact directory', async () => {
    const records = chain(5);
    await writeFile(segment(1), jsonl(records.slice(0, 3)));
    await writeFile(segment(2), jsonl(records.slice(3)));
    await writeFile(join(dir, 'incidents.jsonl'), 'not part of the audit log\n');
    expect(await verifyAuditChain(dir, { anchor: false })).toEqual({
      ok: true, records: 5, segments: 2, notes: ['anchor not checked (--no-anchor): records cut off the end of the log would go unnoticed'],
    });
    expect(await verifyAuditChain(segment(2))).toMatchObject({ ok: true, records: 2, segments: 1, notes: [expect.stringMatching(/single segment/)] });
  });

  it('reports an edited field as a hash mismatch at that exact line', async () => {
    const records = chain(5);
    const path = segment(1);
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
    const path = segment(1);
    await writeFile(path, jsonl([...records.slice(0, 2), ...records.slice(3)]));
    const result = await verifyAuditChain(path);
    expect(result).toMatchObject({ ok: false, records: 2, line: 3, entryId: records[3]?.entry_id });
    expect(result.ok || result.reason).toMatch(/^prev_hash mismatch/);
  });

  it('reports swapped lines as a prev_hash mismatch', async () => {
    const [a, b, c] = chain(3);
    const path = segment(1);
    await writeFile(path, jsonl([a, c, b]));
    expect(await verifyAuditChain(path)).toMatchObject({ ok: false, line: 2, entryId: c?.entry_id });
  });

  it('reports a line that is not JSON, or not a record, with its line number', async () => {
    const records = chain(3);
    const path = segment(1);
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
    await writeFile(segment(1), jsonl(records.slice(0, 2)));
    await writeFile(segment(2), jsonl(records.slice(2, 4)));
    await writeFile(segment(3), jsonl(records.slice(4)));
    // Losing a whole middle segment breaks the link into the next one.
    await rm(segment(2));
    expect(await verifyAuditChain(dir, { anchor: false })).toMatchObject({ ok: false, records: 2, file: segment(3), line: 1 });
  });

  it('accepts the first prev_hash after retention, but demands genesis when segment 1 is present', async () => {
    const records = chain(4);
    await writeFile(segment(1), jsonl(records.slice(1)));
    const truncatedStart = await verifyAuditChain(dir, { anchor: false });
    expect(truncatedStart).toMatchObject({ ok: false, line: 1, entryId: records[1]?.entry_id });
    expect(truncatedStart.ok || truncatedStart.reason).toMatch(/genesis/);

    // The same records as the oldest retained segment of a longer log are fine.
    await rename(segment(1), segment(7));
    expect(await verifyAuditChain(dir, { anchor: false })).toMatchObject({ ok: true, records: 3, segments: 1 });
  });

  it('refuses a folder with no segments, and names DIR/audit when the data folder was passed', async () => {
    await expect(verifyAuditChain(dir)).rejects.toThrow(new AuditLogNotFoundError(`${dir} holds no audit segments (audit-NNNNNN.jsonl) and no anchor`));
    await mkdir(join(dir, 'audit'));
    await expect(verifyAuditChain(dir)).rejects.toThrow(`; did you mean ${join(dir, 'audit')}?`);
  });
});

describe('verifyAuditChain: the anchor', () => {
  it('passes when the log holds the anchored record, and records written since are fine', async () => {
    const first = await writeLog(5);
    expect(await readAnchor()).toMatchObject({ version: 1, entry_id: first[4]!.entry_id, hash: first[4]!.hash, segment: 1, line: 5 });
    // A reopened sink anchors what it found; what it writes afterwards is after the anchor.
    const sink = await openFileAuditSink({ dir, log: () => undefined });
    sink.append(input);
    await sink.flush();
    const result = await verifyAuditChain(dir);
    expect(result).toMatchObject({ ok: true, records: 6 });
    expect(result.notes).toEqual([expect.stringMatching(new RegExp(`^anchor: the anchor of \\S+ names ${first[4]!.entry_id} at audit-000001\\.jsonl:5; the log holds it$`))]);
    await sink.close();
  });

  it('reports the last N lines cut off a segment as truncated, naming N', async () => {
    const records = await writeLog(10);
    const lines = (await readFile(segment(1), 'utf8')).split('\n');
    await writeFile(segment(1), `${lines.slice(0, 7).join('\n')}\n`);
    const anchor = await readAnchor();
    expect(await verifyAuditChain(dir)).toEqual({
      ok: false,
      records: 7,
      file: segment(1),
      line: 10,
      entryId: records[9]!.entry_id,
      reason: `truncated: at least 3 records after ${records[6]!.entry_id} were removed (the anchor of ${anchor.time} names ${records[9]!.entry_id} at audit-000001.jsonl:10)`,
      notes: [],
    });
  });

  it('detects a deleted newest segment', async () => {
    const records = await writeLog(40, { segmentBytes: 2_048 });
    const anchor = await readAnchor();
    expect(anchor.segment).toBeGreaterThan(2);
    const survivors = (await readFile(segment(anchor.segment - 1), 'utf8')).split('\n').filter(Boolean);
    const lastKept = JSON.parse(survivors.at(-1)!) as AuditRecord;
    await rm(segment(anchor.segment));
    const result = await verifyAuditChain(dir);
    expect(result).toMatchObject({ ok: false, entryId: records[39]!.entry_id });
    expect(result.ok || result.reason).toBe(
      `truncated: at least ${anchor.line} records after ${lastKept.entry_id} were removed (the anchor of ${anchor.time} names ${records[39]!.entry_id} at ${`audit-${String(anchor.segment).padStart(6, '0')}.jsonl`}:${anchor.line})`,
    );
  });

  it('reports another record standing where the anchored one stood as a rewrite', async () => {
    const records = await writeLog(5);
    await writeFile(segment(1), jsonl(rechain(records, (r) => ({ ...r, agent_id: 'someone-else' }), false)));
    const result = await verifyAuditChain(dir);
    expect(result).toMatchObject({ ok: false, line: 5 });
    expect(result.ok || result.reason).toMatch(/^rewritten: audit-000001\.jsonl:5 holds aud_\w+ \(hash \w+\), not the anchored record with hash/);
  });

  it('accepts an anchor older than the oldest kept segment (retention)', async () => {
    const records = chain(6);
    await writeFile(segment(7), jsonl(records.slice(0, 3)));
    await writeFile(segment(8), jsonl(records.slice(3)));
    await new FileAnchorStore(anchorPath()).write(createAnchor({ entry_id: 'aud_000000000000', hash: 'a'.repeat(64), segment: 5, line: 9 }));
    const result = await verifyAuditChain(dir);
    expect(result).toMatchObject({ ok: true, records: 6, notes: [expect.stringMatching(/segment retention has deleted since/)] });
  });

  it('records cut from the head of the log and the segment renumbered, passing as retention: the anchored record found elsewhere fails verify and the sink', async () => {
    const key = await keyFile();
    await writeLog(8, { keyFile: key });
    const lines = (await readFile(segment(1), 'utf8')).split('\n').filter(Boolean);
    await writeFile(segment(2), `${lines.slice(3).join('\n')}\n`);
    await rm(segment(1));
    const anchor = await readAnchor();
    const result = await verifyAuditChain(dir, { keyFile: key });
    expect(result).toMatchObject({ ok: false });
    expect(result.ok || result.reason).toBe(
      `moved: the anchored record is at audit-000002.jsonl:5, not audit-000001.jsonl:8: records before it were removed and segments renumbered (the anchor of ${anchor.time} names ${anchor.entry_id} at audit-000001.jsonl:8)`,
    );
    await expect(openFileAuditSink({ dir, log: () => undefined, keyFile: key })).rejects.toThrow(/does not match its anchor .*: moved: the anchored record is at audit-000002\.jsonl:5/);
  });

  it('fails without an anchor and says how to check the chain alone', async () => {
    await writeLog(3);
    await rm(anchorPath());
    const result = await verifyAuditChain(dir);
    expect(result).toMatchObject({ ok: false, records: 3, file: `file ${anchorPath()}` });
    expect(result.ok || result.reason).toMatch(/^no anchor at file .*anchor\.json: without it, records cut off the end of the log cannot be detected\. The chain alone is checked with --no-anchor$/);
    expect(await verifyAuditChain(dir, { anchor: false })).toMatchObject({ ok: true, records: 3 });
  });

  it('a sink does not open a log cut while it was stopped, and leaves the anchor as evidence', async () => {
    await writeLog(6);
    const lines = (await readFile(segment(1), 'utf8')).split('\n');
    await writeFile(segment(1), `${lines.slice(0, 4).join('\n')}\n`);
    const evidence = await readFile(anchorPath(), 'utf8');
    const opening = openFileAuditSink({ dir, log: () => undefined });
    await expect(opening).rejects.toBeInstanceOf(AuditAnchorError);
    await expect(opening).rejects.toThrow(/does not match its anchor \(file .*\): truncated: at least 2 records after aud_\w+ were removed .*move .*anchor\.json aside/);
    expect(await readFile(anchorPath(), 'utf8')).toBe(evidence);
  });
});

describe('verifyAuditChain: MACs', () => {
  const macOf = async (path: string, hash: string) => createHmac('sha256', await readAuditKeyFile(path)).update(hash).digest('hex');

  it('with a key every record and the anchor carry a MAC; verify checks them with the key and says so without', async () => {
    const key = await keyFile();
    const records = await writeLog(5, { keyFile: key });
    for (const record of records) expect(record.mac).toBe(await macOf(key, record.hash));
    expect((await readAnchor()).mac).toMatch(/^[0-9a-f]{64}$/);
    expect(await verifyAuditChain(dir, { keyFile: key })).toMatchObject({ ok: true, records: 5 });
    const unchecked = await verifyAuditChain(dir);
    expect(unchecked).toMatchObject({ ok: true, records: 5 });
    expect(unchecked.notes).toContain('5 records carry a MAC that was not checked (no key file given)');
  });

  it.each([
    ['kept', true, /^mac mismatch: the hash was not authenticated with this key/, 2],
    ['removed', false, /^no mac: every record must carry one when a key is given/, 1],
  ] as const)('a chain recomputed without the key (MACs %s, anchor rewritten) passes without the key, fails with it', async (_, keep, reason, line) => {
    const key = await keyFile();
    const records = await writeLog(5, { keyFile: key });
    const forged = rechain(records, (r) => (r === records[1] ? { ...r, evaluation: { ...r.evaluation, allowed: true, decision: 'allow' } } : r), keep);
    await writeFile(segment(1), jsonl(forged));
    const last = forged.at(-1)!;
    await new FileAnchorStore(anchorPath()).write(createAnchor({ entry_id: last.entry_id, hash: last.hash, segment: 1, line: 5 }));

    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 5 });
    const result = await verifyAuditChain(dir, { keyFile: key });
    expect(result).toMatchObject({ ok: false, line, entryId: forged[line - 1]!.entry_id });
    expect(result.ok || result.reason).toMatch(reason);
  });

  it('a truncation hidden by a rewritten anchor is caught with the key', async () => {
    const key = await keyFile();
    const records = await writeLog(5, { keyFile: key });
    await writeFile(segment(1), jsonl(records.slice(0, 3)));
    const hidden = createAnchor({ entry_id: records[2]!.entry_id, hash: records[2]!.hash, segment: 1, line: 3 });
    await new FileAnchorStore(anchorPath()).write(hidden);
    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 3 });
    const withKey = await verifyAuditChain(dir, { keyFile: key });
    expect(withKey.ok || withKey.reason).toMatch(/^the anchor has no MAC, but the record it names has one/);
    await new FileAnchorStore(anchorPath()).write({ ...hidden, mac: 'f'.repeat(64) });
    const forgedMac = await verifyAuditChain(dir, { keyFile: key });
    expect(forgedMac.ok || forgedMac.reason).toMatch(/^the anchor's MAC does not match: it was not written with this key/);
  });

  it('fails with the wrong key, and on a record without a MAC, naming it', async () => {
    const records = await writeLog(3, { keyFile: await keyFile() });
    const wrong = await verifyAuditChain(dir, { keyFile: await keyFile('other.key') });
    expect(wrong).toMatchObject({ ok: false, line: 1, entryId: records[0]!.entry_id, reason: expect.stringMatching(/^mac mismatch/) });

    const unsigned = chain(2, records[2]!.hash);
    await writeFile(segment(1), jsonl([...records, ...unsigned]));
    const result = await verifyAuditChain(dir, { keyFile: keyFiles[0]!, anchor: false });
    expect(result).toMatchObject({ ok: false, records: 3, line: 4, entryId: unsigned[0]!.entry_id, reason: expect.stringMatching(/^no mac/) });
  });

  it('keeps the chain hash key-independent: a record with a mac hashes like one without', () => {
    const record = createAuditRecord(input, GENESIS_HASH);
    const { hash, mac: _mac, ...fields } = record;
    expect(hashRecord(GENESIS_HASH, fields)).toBe(hash);
    expect(canonicalJson(fields)).not.toContain('"mac"');
  });
});
