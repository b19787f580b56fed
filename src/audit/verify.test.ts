import { execFileSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditAnchorError, FileAnchorStore, createAnchor, type AuditAnchor } from './anchor.js';
import { openFileAuditSink } from './file-sink.js';
import { readAuditKeyFile } from './key.js';
import { GENESIS_HASH, canonicalJson, createAuditRecord, hashRecord, type AuditEntryInput, type AuditRecord } from './record.js';
import type { AuditSink } from './sink.js';
import { AuditLogNotFoundError, MAX_LISTED_PROBLEMS, verifyAuditChain } from './verify.js';

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
      ok: true, records: 5, segments: 2, problems: [], problemCount: 0, notes: ['anchor not checked (--no-anchor): records cut off the end of the log would go unnoticed'],
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

    // Reported once: the records after it link to the hash it stores, and verify.
    const result = await verifyAuditChain(path);
    expect(result).toMatchObject({ ok: false, records: 4, problemCount: 1, problems: [{ file: path, line: 3, entryId: records[2]?.entry_id }] });
    expect(result.problems[0]?.reason).toMatch(/^hash mismatch/);
  });

  it('reports a deleted line as a prev_hash mismatch at the record after the gap', async () => {
    const records = chain(5);
    const path = segment(1);
    await writeFile(path, jsonl([...records.slice(0, 2), ...records.slice(3)]));
    const result = await verifyAuditChain(path);
    expect(result).toMatchObject({ ok: false, records: 3, problemCount: 1, problems: [{ line: 3, entryId: records[3]?.entry_id }] });
    expect(result.problems[0]?.reason).toMatch(/^prev_hash mismatch/);
  });

  it('reports swapped lines as a prev_hash mismatch', async () => {
    const [a, b, c] = chain(3);
    const path = segment(1);
    await writeFile(path, jsonl([a, c, b]));
    expect(await verifyAuditChain(path)).toMatchObject({ ok: false, problems: [{ line: 2, entryId: c?.entry_id }, { line: 3, entryId: b?.entry_id }] });
  });

  it('reports a line that is not JSON, or not a record, with its line number', async () => {
    const records = chain(3);
    const path = segment(1);
    await writeFile(path, `${jsonl(records.slice(0, 2))}{"entry_id":"aud_x",\n`);
    const bad = await verifyAuditChain(path);
    expect(bad).toMatchObject({ ok: false, records: 2, problems: [{ line: 3 }] });
    expect(bad.problems[0]?.reason).toMatch(/^invalid JSON/);

    await writeFile(path, jsonl([records[0], { ...records[1], hash: 'short' }]));
    const foreign = await verifyAuditChain(path);
    expect(foreign).toMatchObject({ ok: false, problems: [{ line: 2, entryId: records[1]?.entry_id }] });
    expect(foreign.problems[0]?.reason).toMatch(/^not an audit record: hash/);
  });

  it('checks the chain across segments', async () => {
    const records = chain(6);
    await writeFile(segment(1), jsonl(records.slice(0, 2)));
    await writeFile(segment(2), jsonl(records.slice(2, 4)));
    await writeFile(segment(3), jsonl(records.slice(4)));
    // Losing a whole middle segment shows in the numbering; the chain starts again after it.
    await rm(segment(2));
    const result = await verifyAuditChain(dir, { anchor: false });
    expect(result).toMatchObject({ ok: false, records: 4, problemCount: 1, problems: [{ file: segment(3) }] });
    expect(result.problems[0]?.reason).toMatch(/^audit-000002\.jsonl is missing between audit-000001\.jsonl and audit-000003\.jsonl: retention deletes only the oldest segments/);
  });

  it('accepts the first prev_hash after retention, but demands genesis when segment 1 is present', async () => {
    const records = chain(4);
    await writeFile(segment(1), jsonl(records.slice(1)));
    const truncatedStart = await verifyAuditChain(dir, { anchor: false });
    expect(truncatedStart).toMatchObject({ ok: false, problems: [{ line: 1, entryId: records[1]?.entry_id }] });
    expect(truncatedStart.problems[0]?.reason).toMatch(/genesis/);

    // The same records as the oldest retained segment of a log that has as many as retention keeps are fine.
    await rename(segment(1), segment(7));
    expect(await verifyAuditChain(dir, { anchor: false, retained: 1 })).toMatchObject({ ok: true, records: 3, segments: 1 });
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
      segments: 1,
      problems: [{
        file: segment(1),
        line: 10,
        entryId: records[9]!.entry_id,
        reason: `truncated: at least 3 records after ${records[6]!.entry_id} were removed (the anchor of ${anchor.time} names ${records[9]!.entry_id} at audit-000001.jsonl:10)`,
      }],
      problemCount: 1,
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
    expect(result).toMatchObject({ ok: false, problemCount: 1, problems: [{ entryId: records[39]!.entry_id }] });
    expect(result.problems[0]?.reason).toBe(
      `truncated: at least ${anchor.line} records after ${lastKept.entry_id} were removed (the anchor of ${anchor.time} names ${records[39]!.entry_id} at ${`audit-${String(anchor.segment).padStart(6, '0')}.jsonl`}:${anchor.line})`,
    );
  });

  it('reports another record standing where the anchored one stood as a rewrite', async () => {
    const records = await writeLog(5);
    await writeFile(segment(1), jsonl(rechain(records, (r) => ({ ...r, agent_id: 'someone-else' }), false)));
    const result = await verifyAuditChain(dir);
    expect(result).toMatchObject({ ok: false, problemCount: 1, problems: [{ line: 5 }] });
    expect(result.problems[0]?.reason).toMatch(/^rewritten: audit-000001\.jsonl:5 holds aud_\w+ \(hash \w+\), not the anchored record with hash/);
  });

  it('accepts an anchor older than the oldest kept segment (retention)', async () => {
    const records = chain(6);
    await writeFile(segment(7), jsonl(records.slice(0, 3)));
    await writeFile(segment(8), jsonl(records.slice(3)));
    await new FileAnchorStore(anchorPath()).write(createAnchor({ entry_id: 'aud_000000000000', hash: 'a'.repeat(64), segment: 5, line: 9 }));
    // As a writer of segments this size left them: segment 7 full.
    const result = await verifyAuditChain(dir, { retained: 2, segmentBytes: Buffer.byteLength(jsonl(records.slice(0, 3))) });
    expect(result).toMatchObject({
      ok: true,
      records: 6,
      notes: [
        // Said even though the log verifies: a flood of calls can push a denial's record out by size.
        `the log starts at audit-000007.jsonl: segments 1 to 6 were deleted by retention; the oldest record kept is ${records[0]!.entry_id} of ${records[0]!.timestamp}. ` +
          'Records from before then are only in copies shipped off this storage',
        expect.stringMatching(/segment retention has deleted since/),
      ],
    });
  });

  it('records cut from the head of the log and the segment renumbered, passing as retention: the anchored record found elsewhere fails verify and the sink', async () => {
    const key = await keyFile();
    await writeLog(8, { keyFile: key });
    const lines = (await readFile(segment(1), 'utf8')).split('\n').filter(Boolean);
    await writeFile(segment(2), `${lines.slice(3).join('\n')}\n`);
    await rm(segment(1));
    const anchor = await readAnchor();
    const result = await verifyAuditChain(dir, { keyFile: key, retained: 1 });
    expect(result).toMatchObject({ ok: false, problemCount: 1 });
    expect(result.problems[0]?.reason).toBe(
      `moved: the anchored record is at audit-000002.jsonl:5, not audit-000001.jsonl:8: records before it were removed and segments renumbered (the anchor of ${anchor.time} names ${anchor.entry_id} at audit-000001.jsonl:8)`,
    );
    await expect(openFileAuditSink({ dir, log: () => undefined, keyFile: key, maxSegments: 1 })).rejects.toThrow(/does not match its anchor .*: moved: the anchored record is at audit-000002\.jsonl:5/);
  });

  it('accepts a log anchored at genesis: empty, and with records written since', async () => {
    const key = await keyFile();
    await (await openFileAuditSink({ dir, keyFile: key, log: () => undefined })).close();
    const genesis = await readFile(anchorPath(), 'utf8');
    expect(JSON.parse(genesis)).toMatchObject({ entry_id: 'genesis', hash: GENESIS_HASH, segment: 0, line: 0, mac: expect.any(String) });
    const empty = await verifyAuditChain(dir, { keyFile: key });
    expect(empty).toMatchObject({ ok: true, records: 0, segments: 0 });
    expect(empty.notes).toEqual([expect.stringMatching(/^anchor: the genesis anchor of \S+ \(written when the log was empty\); the log starts there$/)]);
    // Records written, and the process killed before their anchor: the genesis anchor is still the anchor.
    await writeLog(3, { keyFile: key });
    await writeFile(anchorPath(), genesis);
    expect(await verifyAuditChain(dir, { keyFile: key })).toMatchObject({ ok: true, records: 3 });
    // It vouches for the start only: the first record cut off fails, and so does its MAC stripped.
    const lines = (await readFile(segment(1), 'utf8')).split('\n').filter(Boolean);
    await writeFile(segment(1), `${lines.slice(1).join('\n')}\n`);
    expect((await verifyAuditChain(dir, { keyFile: key })).problems).toEqual([
      expect.objectContaining({ line: 1, reason: expect.stringMatching(/^prev_hash mismatch: expected 0{64} \(genesis: segment 1 starts the log\)/) }),
    ]);
    await writeFile(segment(1), lines.map((line) => `${line.replace(/,"mac":"[0-9a-f]{64}"/, '')}\n`).join(''));
    expect((await verifyAuditChain(dir, { keyFile: key })).problems).toEqual(
      [1, 2, 3].map((line) => expect.objectContaining({ line, reason: expect.stringMatching(/^no mac/) })),
    );
  });

  it('fails without an anchor and says how to check the chain alone', async () => {
    await writeLog(3);
    await rm(anchorPath());
    const result = await verifyAuditChain(dir);
    expect(result).toMatchObject({ ok: false, records: 3, problems: [{ file: `file ${anchorPath()}` }] });
    expect(result.problems[0]?.reason).toMatch(/^no anchor at file .*anchor\.json: without it, records cut off the end of the log cannot be detected\. The chain alone is checked with --no-anchor$/);
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

  /**
   * A signed log of five records whose second is made an allow and the chain recomputed by
   * someone without the key (MACs kept as they were, or stripped), the anchor rewritten to match.
   */
  async function forgeWithoutTheKey(keepMacs: boolean) {
    const key = await keyFile();
    const records = await writeLog(5, { keyFile: key });
    const forged = rechain(records, (r) => (r === records[1] ? { ...r, evaluation: { ...r.evaluation, allowed: true, decision: 'allow' } } : r), keepMacs);
    await writeFile(segment(1), jsonl(forged));
    const last = forged.at(-1)!;
    await new FileAnchorStore(anchorPath()).write(createAnchor({ entry_id: last.entry_id, hash: last.hash, segment: 1, line: 5 }));
    return { key, forged };
  }

  it('a chain recomputed without the key, MACs kept and the anchor rewritten, passes without the key and fails with it', async () => {
    const { key, forged } = await forgeWithoutTheKey(true);

    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 5 });
    const result = await verifyAuditChain(dir, { keyFile: key });
    // Every record from the edit on, and the anchor, which names a signed record without a MAC of its own.
    expect(result.problems.map((p) => p.line)).toEqual([2, 3, 4, 5, 5]);
    expect(result.problems[0]).toMatchObject({ entryId: forged[1]!.entry_id, reason: expect.stringMatching(/^mac mismatch: the hash was not authenticated with this key/) });
    expect(result.problems[4]?.reason).toMatch(/^the anchor has no MAC, but the record it names has one/);
  });

  it("a log stripped of every MAC, the anchor's too, fails with the key: an anchor without a MAC proves nothing", async () => {
    const { key } = await forgeWithoutTheKey(false);

    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 5 });
    const result = await verifyAuditChain(dir, { keyFile: key });
    expect(result).toMatchObject({ ok: false, records: 5, problemCount: 1, problems: [{ file: segment(1), line: 5 }] });
    expect(result.problems[0]?.reason).toMatch(/^the anchor has no MAC though a key is given: it was written before the key was configured, or its MAC was stripped/);
    expect(result.notes).toContain('5 records carry no MAC: accepted as written before the key was configured (they come before every signed record and before the anchored one)');
  });

  it('a truncation hidden by a rewritten anchor is caught with the key', async () => {
    const key = await keyFile();
    const records = await writeLog(5, { keyFile: key });
    await writeFile(segment(1), jsonl(records.slice(0, 3)));
    const hidden = createAnchor({ entry_id: records[2]!.entry_id, hash: records[2]!.hash, segment: 1, line: 3 });
    await new FileAnchorStore(anchorPath()).write(hidden);
    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 3 });
    const withKey = await verifyAuditChain(dir, { keyFile: key });
    expect(withKey.problems.map((p) => p.reason)).toEqual([expect.stringMatching(/^the anchor has no MAC, but the record it names has one/)]);
    await new FileAnchorStore(anchorPath()).write({ ...hidden, mac: 'f'.repeat(64) });
    const forgedMac = await verifyAuditChain(dir, { keyFile: key });
    expect(forgedMac.problems.map((p) => p.reason)).toEqual([expect.stringMatching(/^the anchor's MAC does not match: it was not written with this key/)]);
  });

  it('fails with the wrong key, and on a record without a MAC, naming it', async () => {
    const records = await writeLog(3, { keyFile: await keyFile() });
    const wrong = await verifyAuditChain(dir, { keyFile: await keyFile('other.key') });
    expect(wrong.problems[0]).toMatchObject({ line: 1, entryId: records[0]!.entry_id, reason: expect.stringMatching(/^mac mismatch/) });

    const unsigned = chain(2, records[2]!.hash);
    await writeFile(segment(1), jsonl([...records, ...unsigned]));
    const result = await verifyAuditChain(dir, { keyFile: keyFiles[0]!, anchor: false });
    expect(result).toMatchObject({
      ok: false,
      records: 3,
      problems: [4, 5].map((line) => ({ line, entryId: unsigned[line - 4]!.entry_id, reason: expect.stringMatching(/^no mac: with a key, only records written before the key was configured may lack one/) })),
    });
  });

  it('keeps the chain hash key-independent: a record with a mac hashes like one without', () => {
    const record = createAuditRecord(input, GENESIS_HASH);
    const { hash, mac: _mac, ...fields } = record;
    expect(hashRecord(GENESIS_HASH, fields)).toBe(hash);
    expect(canonicalJson(fields)).not.toContain('"mac"');
  });
});

describe('verifyAuditChain: every problem, not just the first', () => {
  it('goes on after a break: an edit at the head of the log does not hide a truncation at its end', async () => {
    const records = await writeLog(8);
    const lines = (await readFile(segment(1), 'utf8')).split('\n').filter(Boolean);
    lines[0] = lines[0]!.replace('"agent_id":"agent-1"', '"agent_id":"agent-x"');
    await writeFile(segment(1), `${lines.slice(0, 6).join('\n')}\n`);
    const result = await verifyAuditChain(dir);
    expect(result).toMatchObject({ ok: false, records: 5, problemCount: 2 });
    expect(result.problems.map((p) => [p.line, p.entryId, p.reason.split(':')[0]])).toEqual([
      [1, records[0]!.entry_id, 'hash mismatch'],
      [8, records[7]!.entry_id, 'truncated'],
    ]);
  });

  it('lists the first 100 problems and counts them all', async () => {
    const records = chain(150);
    // Every other record gone: each one left is a broken link.
    const kept = records.filter((_, i) => i % 2 === 0);
    await writeFile(segment(1), jsonl(records.slice(0, 1).concat(kept.slice(1), chain(75, 'f'.repeat(64)))));
    const result = await verifyAuditChain(dir, { anchor: false });
    expect(result.problemCount).toBe(75);
    expect(result.problems).toHaveLength(75);
    await writeFile(segment(1), jsonl(Array.from({ length: 130 }, (_, i) => ({ ...records[i]!, hash: 'e'.repeat(64) }))));
    const many = await verifyAuditChain(dir, { anchor: false });
    expect(many).toMatchObject({ ok: false, records: 0, problemCount: 130 });
    expect(many.problems).toHaveLength(MAX_LISTED_PROBLEMS);
    expect(many.problems.at(-1)).toMatchObject({ line: 100 });
  });
});

describe('verifyAuditChain: each line exactly as written', () => {
  /** One line of a real log rewritten by `edit`: it still parses to a record with the same content. */
  async function editLine(edit: (line: string) => string, n = 2): Promise<AuditRecord[]> {
    const records = await writeLog(3);
    const lines = (await readFile(segment(1), 'utf8')).split('\n').filter(Boolean);
    lines[n - 1] = edit(lines[n - 1]!);
    await writeFile(segment(1), `${lines.join('\n')}\n`);
    return records;
  }

  it.each([
    ['a shadowing duplicate key', (line: string) => `{"evaluation":{"allowed":true,"decision":"allow","reason":"fine"},${line.slice(1)}`],
    ['whitespace', (line: string) => line.replaceAll('":', '": ')],
    ['a CR before the newline', (line: string) => `${line}\r`],
    ['another spelling of a number', (line: string) => line.replace(/"parameters":\{"i":(\d+)\}/, '"parameters":{"i":$1.0}')],
    ['an escaped character', (line: string) => line.replace('"agent_id":"agent-1"', '"agent_id":"agent\\u002d1"')],
    ['keys in another order', (line: string) => line.replace('"agent_id":"agent-1","caller":null', '"caller":null,"agent_id":"agent-1"')],
  ])('reports %s as not stored as written, though the record hashes the same', async (_, edit) => {
    const records = await editLine(edit);
    const result = await verifyAuditChain(dir);
    expect(result).toMatchObject({ ok: false, records: 2, problemCount: 1, problems: [{ line: 2, entryId: records[1]!.entry_id }] });
    expect(result.problems[0]?.reason).toMatch(/^not stored as written: the line parses to a record whose hash matches, but its text differs/);
  });

  it('reports a byte order mark and bytes that are not UTF-8', async () => {
    await editLine((line) => `\uFEFF${line}`, 1);
    expect((await verifyAuditChain(dir)).problems).toEqual([expect.objectContaining({ line: 1, reason: expect.stringMatching(/^invalid JSON/) })]);

    await rm(dir, { recursive: true });
    await mkdir(dir);
    const records = await writeLog(2);
    // U+00E9 is two bytes; one of them alone decodes to U+FFFD, which a record could also hold.
    const bytes = await readFile(segment(1));
    const at = bytes.indexOf('"context":""') + '"context":"'.length;
    await writeFile(segment(1), Buffer.concat([bytes.subarray(0, at), Buffer.from([0xc3]), bytes.subarray(at)]));
    const result = await verifyAuditChain(dir);
    expect(result.problems[0]).toMatchObject({ line: 1, entryId: records[0]!.entry_id });
    expect(result.problems[0]?.reason).toMatch(/^hash mismatch/);
  });

  it('accepts every line a real sink writes, whatever the record holds', async () => {
    const sink = await openFileAuditSink({ dir, log: () => undefined });
    const odd = ['{"n":1e21,"m":-0,"f":0.30000000000000004}', '{"s":"é😀\\u2028\\u0000\\"\\\\","nested":{"z":[1,{"y":null}],"a":true}}', '{"__proto__":1,"constructor":"x"}'];
    for (const text of odd) sink.append({ ...input, action: { ...input.action, parameters: JSON.parse(text) as Record<string, unknown> } });
    await sink.close();
    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 3 });
  });
});

describe('verifyAuditChain: a key turned on for an existing log', () => {
  it('accepts records without a MAC before the first signed one and before the anchored one, never after', async () => {
    const key = await keyFile();
    await writeLog(3);
    // Turning the key on: the unsigned anchor is accepted once, as an operator would; the sink anchors record 3, with a MAC.
    const sink = await openFileAuditSink({ dir, log: () => undefined, keyFile: key, acceptMissingAnchor: true });
    const anchoredOnOpen = await readFile(anchorPath(), 'utf8');
    sink.append(input);
    await sink.close();
    const result = await verifyAuditChain(dir, { keyFile: key });
    expect(result).toMatchObject({ ok: true, records: 4 });
    expect(result.notes[0]).toBe('3 records carry no MAC: accepted as written before the key was configured (they come before every signed record and before the anchored one)');

    // The first signed record's MAC stripped, and the anchor back to the one written on open (a
    // crash before the next one): a record after the one an authenticated anchor names lacks a MAC.
    const lines = (await readFile(segment(1), 'utf8')).split('\n').filter(Boolean);
    const { mac: _mac, ...stripped } = JSON.parse(lines[3]!) as AuditRecord;
    await writeFile(segment(1), `${[...lines.slice(0, 3), JSON.stringify(stripped)].join('\n')}\n`);
    await writeFile(anchorPath(), anchoredOnOpen);
    const broken = await verifyAuditChain(dir, { keyFile: key });
    expect(broken.problems).toEqual([expect.objectContaining({ line: 4, reason: expect.stringMatching(/^no mac: with a key, only records written before the key was configured/) })]);
  });
});

describe('verifyAuditChain: the segments', () => {
  it('reports oldest segments missing from a log shorter than retention, and a segment number twice', async () => {
    await writeLog(30, { segmentBytes: 2_048 });
    const names = (await readdir(dir)).filter((n) => n.startsWith('audit-')).sort();
    await rm(segment(1));
    await rm(segment(2));
    const result = await verifyAuditChain(dir, { segmentBytes: 2_048 });
    expect(result.problems).toEqual([
      {
        file: segment(3),
        reason: `segments audit-000001.jsonl to audit-000002.jsonl are missing, but only ${names.length - 2} segment(s) remain: retention deletes the oldest segments only once more than 20 exist, so these were removed by hand (records cut from the head of the log)`,
      },
    ]);
    expect((await verifyAuditChain(dir, { retained: names.length - 2, segmentBytes: 2_048 })).ok).toBe(true);

    await copyFile(segment(4), join(dir, 'audit-0000004.jsonl'));
    const twice = await verifyAuditChain(dir, { retained: names.length - 2, segmentBytes: 2_048 });
    expect(twice.problems[0]).toEqual({ file: segment(4), reason: 'two files hold segment 4: one of them was copied in by hand' });
  });

  it('reports empty segments behind the newest: padding that makes a cut head pass for retention', async () => {
    await writeLog(3);
    await rm(segment(1));
    for (let seq = 2; seq <= 21; seq++) await writeFile(segment(seq), '');
    const result = await verifyAuditChain(dir, { anchor: false });
    expect(result.ok).toBe(false);
    expect(result.problems).toContainEqual({ file: segment(2), reason: expect.stringMatching(/^audit-000002\.jsonl is empty but is not the newest segment/) });
    expect(result.problems.filter((p) => /is empty but/.test(p.reason))).toHaveLength(19);
  });

  it('reports a FIFO or a folder named like a segment as unreadable, without opening it, and checks the rest', async () => {
    await writeLog(3);
    execFileSync('mkfifo', [segment(2)]);
    const result = await verifyAuditChain(dir);
    expect(result).toMatchObject({ ok: false, records: 3, problems: [{ file: segment(2), reason: 'cannot be read: it is a FIFO, not a regular file' }] });
    await rm(segment(2));
    await mkdir(segment(2));
    expect((await verifyAuditChain(dir)).problems).toEqual([{ file: segment(2), reason: 'cannot be read: it is a folder, not a regular file' }]);
    await rm(segment(2), { recursive: true });
    await rm(anchorPath());
    await mkdir(anchorPath());
    expect((await verifyAuditChain(dir)).problems).toEqual([
      { file: `file ${anchorPath()}`, reason: `the anchor cannot be read: the audit anchor at file ${anchorPath()} is a folder, not a regular file` },
    ]);
  });
});
