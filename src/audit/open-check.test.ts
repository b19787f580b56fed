/**
 * What a file sink refuses to open (real files in a temporary folder): a log without its
 * anchor, a chain broken where it would be continued, segments removed or put there by hand, a
 * signed log without the key. Each refusal leaves the folder as it was and says where to look.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFile, copyFile, lstat, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditAnchorError, FileAnchorStore, createAnchor, isGenesisAnchor, type AuditAnchor, type AuditAnchorStore } from './anchor.js';
import { openFileAuditSink, type FileAuditSinkOptions } from './file-sink.js';
import { AuditChainError } from './open-check.js';
import { GENESIS_HASH, type AuditEntryInput, type AuditRecord } from './record.js';
import { segmentFileName } from './segments.js';
import { verifyAuditChain } from './verify.js';

let dir: string;
let logs: string[];
let key: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pg-open-check-'));
  logs = [];
  key = `${dir}.key`;
  await writeFile(key, `${randomBytes(48).toString('base64')}\n`);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
  await rm(key, { force: true });
});

const input = (i: number): AuditEntryInput => ({
  action_id: `act_${String(i).padStart(12, '0')}`,
  agent_id: 'agent-1',
  caller: null,
  action: { type: 'tool_call', target: 'db.query', parameters: { i }, context: '' },
  evaluation: { allowed: i % 2 === 0, decision: i % 2 === 0 ? 'allow' : 'deny', require_approval: false, reason: 'r', matched: [], audit_findings: [] },
  revision: 'rev-1',
});

const open = (opts: Partial<FileAuditSinkOptions> = {}) => openFileAuditSink({ dir, flushIntervalMs: 3_600_000, log: (m) => logs.push(m), ...opts });

/** A real sink writes `count` records (a segment every few with `segmentBytes`) and closes: its anchor names the last. */
async function writeLog(count: number, opts: Partial<FileAuditSinkOptions> = {}): Promise<AuditRecord[]> {
  const sink = await open(opts);
  const records: AuditRecord[] = [];
  for (let i = 0; i < count; i++) {
    records.push(sink.append(input(i)).record);
    await sink.flush();
  }
  await sink.close();
  return records;
}

const segment = (seq: number) => join(dir, segmentFileName(seq));
const linesOf = async (seq: number) => (await readFile(segment(seq), 'utf8')).split('\n').filter(Boolean);
const writeLines = (seq: number, lines: string[]) => writeFile(segment(seq), lines.map((l) => `${l}\n`).join(''));
const anchorText = () => readFile(join(dir, 'anchor.json'), 'utf8');
const segmentNames = async () => (await readdir(dir)).filter((n) => n.startsWith('audit-')).sort();

/** The open is refused with `type` and a message matching `message`, and nothing in the folder changed. */
async function expectRefused(opening: () => Promise<unknown>, type: typeof AuditAnchorError | typeof AuditChainError, message: RegExp): Promise<void> {
  const before = await snapshot();
  const error = await opening().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(type);
  expect((error as Error).message).toMatch(message);
  expect(await snapshot()).toEqual(before);
}

/** Every regular file's text (never opening a FIFO), and what the other entries are. */
async function snapshot(): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for (const name of await readdir(dir)) {
    const path = join(dir, name);
    files[name] = (await lstat(path)).isFile() ? await readFile(path, 'utf8') : 'not a regular file';
  }
  return files;
}

describe('opening a log without an anchor', () => {
  it('refuses a log that holds records but no anchor, naming its last record and the flag', async () => {
    const records = await writeLog(6, { keyFile: key });
    // Records cut off the end, and the anchor that would show it deleted.
    await writeLines(1, (await linesOf(1)).slice(0, 4));
    await rm(join(dir, 'anchor.json'));
    await expectRefused(
      () => open({ keyFile: key }),
      AuditAnchorError,
      new RegExp(
        `^the audit log holds records up to ${records[3]!.entry_id} \\(audit-000001\\.jsonl:4\\) but has no anchor \\(file .*anchor\\.json\\): ` +
          `records cut off its end cannot be detected.*start once with --audit-accept-missing-anchor`,
      ),
    );
  });

  it('opens it with acceptMissingAnchor, says what it accepted, and anchors it from then on', async () => {
    const records = await writeLog(3);
    await rm(join(dir, 'anchor.json'));
    const sink = await open({ acceptMissingAnchor: true });
    expect(logs).toEqual([
      `the audit log holds records up to ${records[2]!.entry_id} (audit-000001.jsonl:3) but has no anchor (file ${join(dir, 'anchor.json')}); ` +
        'accepted with --audit-accept-missing-anchor: the log is taken as it is, and records cut off its end before now cannot be detected. A new anchor is written now; remove the flag.',
    ]);
    expect(JSON.parse(await anchorText())).toMatchObject({ entry_id: records[2]!.entry_id, line: 3 });
    await sink.close();
    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 3 });
  });

  it('opens an empty log without an anchor, and says when the flag was not needed', async () => {
    await (await open()).close();
    await writeLog(1);
    logs = [];
    await (await open({ acceptMissingAnchor: true })).close();
    expect(logs).toEqual(['--audit-accept-missing-anchor is set, but the audit log matches its anchor: nothing to accept; remove the flag.']);
  });

  it('with a key, refuses an anchor without a MAC (stripped, or from before the key) unless accepted', async () => {
    const records = await writeLog(3);
    await expectRefused(
      () => open({ keyFile: key }),
      AuditAnchorError,
      /the anchor has no MAC though a key is given: it was written before the key was configured, or its MAC was stripped together with the records'.*if the key is new for this log, start once with --audit-accept-missing-anchor/,
    );
    // Turning the key on for an old log: accepted once; the unsigned records stay an unsigned prefix.
    const sink = await open({ keyFile: key, acceptMissingAnchor: true });
    expect(logs.at(-1)).toMatch(/^the anchor has no MAC though a key is given.*; accepted with --audit-accept-missing-anchor: the log up to the anchored record is taken as it is/);
    const signed = sink.append(input(9)).record;
    await sink.close();
    expect(signed.mac).toMatch(/^[0-9a-f]{64}$/);
    const verified = await verifyAuditChain(dir, { keyFile: key });
    expect(verified).toMatchObject({ ok: true, records: 4 });
    expect(verified.notes).toContain('3 records carry no MAC: accepted as written before the key was configured (they come before every signed record and before the anchored one)');
    expect(records.every((r) => r.mac === undefined)).toBe(true);
    // Now the anchor carries a MAC: the next start needs no flag.
    await (await open({ keyFile: key })).close();
  });
});

describe('a new log is anchored at genesis', () => {
  const genesis = { version: 1, entry_id: 'genesis', hash: GENESIS_HASH, segment: 0, line: 0 };

  /**
   * A sink on an empty folder whose process is killed after its first batch is on disk but
   * before that batch's anchor is: the anchor store takes the genesis anchor and fails every
   * later write, as if the process had died during it.
   */
  async function crashAfterFirstBatch(opts: Partial<FileAuditSinkOptions> = {}): Promise<AuditRecord[]> {
    const file = FileAnchorStore.inDir(dir);
    const dying: AuditAnchorStore = {
      location: file.location,
      discardHint: file.discardHint,
      read: () => file.read(),
      write: (anchor) => (isGenesisAnchor(anchor) ? file.write(anchor) : Promise.reject(new Error('killed while writing the anchor'))),
    };
    const sink = await open({ ...opts, anchor: dying });
    const records = [sink.append(input(1)).record, sink.append(input(2)).record];
    await sink.close();
    return records;
  }

  it('writes the genesis anchor on open, before it takes a record; with a key it carries a MAC', async () => {
    const sink = await open({ keyFile: key });
    expect(JSON.parse(await anchorText())).toEqual({ ...genesis, time: expect.any(String), mac: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(await segmentNames()).toEqual([]);
    sink.append(input(1));
    await sink.close();
    expect(JSON.parse(await anchorText())).toMatchObject({ segment: 1, line: 1 });
  });

  it('an empty log anchored at genesis without a MAC opens with a key: there is no record it could vouch for', async () => {
    await (await open()).close();
    expect(JSON.parse(await anchorText())).toEqual({ ...genesis, time: expect.any(String) });
    await (await open({ keyFile: key })).close();
    expect(JSON.parse(await anchorText())).toMatchObject({ ...genesis, mac: expect.stringMatching(/^[0-9a-f]{64}$/) });
  });

  it('a crash after the first batch, before its anchor: the next start opens without the flag; with the genesis anchor deleted it is refused', async () => {
    const records = await crashAfterFirstBatch({ keyFile: key });
    expect(await linesOf(1)).toHaveLength(2);
    const evidence = await anchorText();
    expect(JSON.parse(evidence)).toMatchObject({ ...genesis, mac: expect.stringMatching(/^[0-9a-f]{64}$/) });

    await rm(join(dir, 'anchor.json'));
    await expectRefused(() => open({ keyFile: key }), AuditAnchorError, /^the audit log holds records up to \S+ \(audit-000001\.jsonl:2\) but has no anchor/);

    await writeFile(join(dir, 'anchor.json'), evidence);
    logs = [];
    const sink = await open({ keyFile: key });
    expect(logs).toEqual([]);
    expect(JSON.parse(await anchorText())).toMatchObject({ entry_id: records[1]!.entry_id, segment: 1, line: 2 });
    await sink.close();
  });

  it('a log anchored at genesis whose segment 1 does not start at genesis is refused', async () => {
    await crashAfterFirstBatch();
    // The first record cut from the head of the log.
    await writeLines(1, (await linesOf(1)).slice(1));
    await expectRefused(() => open(), AuditChainError, /^the audit log is broken at audit-000001\.jsonl:1 \(aud_\w+\): prev_hash mismatch: expected 0{64} \(genesis: segment 1 starts the log\)/);
  });

  it('with a key, an authenticated genesis anchor requires every record to carry a MAC', async () => {
    await crashAfterFirstBatch({ keyFile: key });
    // Every record's MAC stripped (hashes and chain stay intact): without the anchor's word they
    // would pass as records written before the key was configured.
    await writeLines(1, (await linesOf(1)).map((line) => line.replace(/,"mac":"[0-9a-f]{64}"/, '')));
    await expectRefused(() => open({ keyFile: key }), AuditChainError, /^the audit log is broken at audit-000001\.jsonl:1 \(aud_\w+\): no mac/);
  });
});

describe('opening a log whose chain is broken where it would be continued', () => {
  it('refuses an edited record in the newest segment, naming segment, line and record', async () => {
    const records = await writeLog(6);
    const lines = await linesOf(1);
    lines[2] = lines[2]!.replace('"agent_id":"agent-1"', '"agent_id":"agent-2"');
    await writeLines(1, lines);
    await expectRefused(
      () => open(),
      AuditChainError,
      new RegExp(`^the audit log is broken at audit-000001\\.jsonl:3 \\(${records[2]!.entry_id}\\): hash mismatch: .*\`policyguard audit verify\` lists every problem\\. To start a new log, move ${dir} aside`),
    );
  });

  it('refuses a duplicated last line, a copied segment and a segment whose first record is gone (the links between segments)', async () => {
    await writeLog(12, { segmentBytes: 1_500 });
    const names = await segmentNames();
    expect(names.length).toBeGreaterThanOrEqual(4);
    const pristine = await snapshot();
    const restore = async () => {
      for (const name of await segmentNames()) await rm(join(dir, name));
      for (const [name, text] of Object.entries(pristine)) await writeFile(join(dir, name), text);
    };
    const newest = names.length;

    const lines = await linesOf(newest);
    await writeLines(newest, [...lines, lines.at(-1)!]);
    await expectRefused(() => open(), AuditChainError, new RegExp(`broken at ${segmentFileName(newest)}:${lines.length + 1} \\(aud_\\w+\\): prev_hash mismatch`));
    await restore();

    // An older segment copied in as the next one: its chain is intact, its link is not.
    await copyFile(segment(2), segment(newest + 1));
    await expectRefused(
      () => open(),
      AuditChainError,
      new RegExp(`broken at ${segmentFileName(newest + 1)}:1 \\(aud_\\w+\\): prev_hash mismatch: expected \\w+ \\(the previous record's hash\\)`),
    );
    await rm(segment(newest + 1));

    // The first record of the log deleted: segment 1 must start at genesis, though it is not the newest.
    await writeLines(1, (await linesOf(1)).slice(1));
    await expectRefused(() => open(), AuditChainError, /broken at audit-000001\.jsonl:1 \(aud_\w+\): prev_hash mismatch: expected 0{64} \(genesis: segment 1 starts the log\)/);
    await restore();
    await (await open()).close();
  });

  it('refuses segments missing between kept ones, or missing from the head of a log shorter than retention', async () => {
    await writeLog(12, { segmentBytes: 1_500 });
    const names = await segmentNames();
    await rm(segment(2));
    await expectRefused(() => open(), AuditChainError, /broken at audit-000003\.jsonl: audit-000002\.jsonl is missing between audit-000001\.jsonl and audit-000003\.jsonl/);
    await rm(segment(1));
    await expectRefused(
      () => open(),
      AuditChainError,
      new RegExp(`broken at audit-000003\\.jsonl: segments audit-000001\\.jsonl to audit-000002\\.jsonl are missing, but only ${names.length - 2} segment\\(s\\) remain: retention deletes`),
    );
    // With as many segments as retention keeps, a log that lacks segment 1 is what retention leaves.
    await (await open({ maxSegments: names.length - 2, segmentBytes: 1_500 })).close();
  });

  it('refuses records cut from both ends and the rest spread over as many files as retention keeps, even with a key and the anchor untouched', async () => {
    await writeLog(12, { keyFile: key });
    const lines = await linesOf(1);
    await rm(segment(1));
    // Records 3 to 10, one per file as segments 2 to 9: the anchor (segment 1, line 12) looks deleted by retention.
    for (const [i, line] of lines.slice(2, 10).entries()) await writeLines(i + 2, [line]);
    const refusal = /audit-000002\.jsonl: audit-000002\.jsonl holds \d+ bytes, but a segment behind the newest holds at least 12582912: the writer starts a segment only when a record \(at most 4194304 bytes\) does not fit in 16777216/;
    await expectRefused(() => open({ keyFile: key, maxSegments: 8 }), AuditChainError, refusal);
    const verified = await verifyAuditChain(dir, { keyFile: key, retained: 8 });
    expect(verified.ok).toBe(false);
    expect(verified.problems.map((p) => p.reason)).toEqual(Array.from({ length: 7 }, () => expect.stringMatching(/but a segment behind the newest holds at least/)));
  });

  it('a crash right after rotation (the new segment empty, its first batch lost) leaves a log that opens, and opens again after the next record', async () => {
    // Records here are ~513 bytes: a segment takes three, or two and then no record of 973 bytes or more.
    const opts = { segmentBytes: 2_000, maxLineBytes: 1_000, maxSegments: 3 };
    const sink = await open(opts);
    const newest = async () => Number(/\d+/.exec((await segmentNames()).at(-1) ?? '0')![0]);
    let i = 0;
    // Up to a segment that holds two records, once retention has deleted segment 1.
    do {
      sink.append(input(i++));
      await sink.flush();
    } while ((await segmentNames()).includes('audit-000001.jsonl') || (await linesOf(await newest())).length !== 2);
    const full = await newest();
    const kept = JSON.parse((await linesOf(full)).at(-1)!) as AuditRecord;
    // A record that does not fit opens the next segment; the crash loses it (and its anchor).
    sink.append({ ...input(i), action: { ...input(i).action, parameters: { blob: 'x'.repeat(480) } } });
    await sink.flush();
    expect(await newest()).toBe(full + 1);
    await sink.close();
    await writeFile(segment(full + 1), '');
    await new FileAnchorStore(join(dir, 'anchor.json')).write(createAnchor({ entry_id: kept.entry_id, hash: kept.hash, segment: full, line: 2 }));
    // The next record would have fitted in the segment before: the log must open all the same.
    const size = (await lstat(segment(full))).size;
    expect(size + 514).toBeLessThanOrEqual(2_000);
    const resumed = await open(opts);
    resumed.append(input(99));
    await resumed.close();
    expect((await linesOf(full + 1)).length).toBe(1);
    await (await open(opts)).close();
    expect((await verifyAuditChain(dir, { retained: 3, ...opts })).ok).toBe(true);
  });

  it('a log written before the line limit opens: a segment short because the next record was longer than the limit passes', async () => {
    const before = { segmentBytes: 4_000, maxLineBytes: 1_000_000, maxSegments: 3 };
    const sink = await open(before);
    for (let i = 0; i < 30; i++) {
      sink.append(i === 26 ? { ...input(i), action: { ...input(i).action, parameters: { blob: 'x'.repeat(1_200) } } } : input(i));
      await sink.flush();
    }
    await sink.close();
    const now = { segmentBytes: 4_000, maxLineBytes: 1_000, maxSegments: 3 };
    const names = await segmentNames();
    expect(names).not.toContain('audit-000001.jsonl');
    const sizes = await Promise.all(names.map(async (n) => (await lstat(join(dir, n))).size));
    expect(sizes.slice(0, -1).some((size) => size < 3_000)).toBe(true); // the short one
    await (await open(now)).close();
    expect((await verifyAuditChain(dir, { retained: 3, ...now })).ok).toBe(true);
  });

  it('stores no line longer than maxLineBytes, what keeps every segment behind the newest full: a larger record goes without its parameters', async () => {
    const sink = await open({ segmentBytes: 2_000, maxLineBytes: 900 });
    expect(sink.append({ ...input(1), action: { ...input(1).action, parameters: { blob: 'x'.repeat(1_000) } } }).ok).toBe(true);
    expect(sink.append(input(2)).ok).toBe(true);
    await sink.close();
    const lines = await linesOf(1);
    expect(lines.map((l) => Buffer.byteLength(l) <= 900)).toEqual([true, true]);
    expect((JSON.parse(lines[0]!) as AuditRecord).action.parameters).toEqual({ blob: expect.stringMatching(/^\[OMITTED: 1002 bytes of canonical JSON \(secrets redacted\), sha256 [0-9a-f]{64}\]$/) });
  });

  it('refuses empty segments behind the newest (padding that hides a cut head), and deletes nothing for retention before its checks', async () => {
    await writeLog(12, { segmentBytes: 1_500 });
    const names = await segmentNames();
    await rm(segment(1));
    await rm(segment(2));
    // Enough empty files after the newest for a cut head to look like retention's work.
    const newest = names.length;
    for (let seq = newest + 1; seq <= newest + 20; seq++) await writeFile(segment(seq), '');
    await expectRefused(() => open({ maxSegments: 20 }), AuditChainError, new RegExp(`audit-${String(newest + 1).padStart(6, '0')}\\.jsonl: .*is empty but is not the newest segment`));
    // Nothing was deleted by retention on the way.
    expect((await segmentNames()).length).toBe(names.length - 2 + 20);
  });

  it('deletes beyond retention only once the log has passed its checks', async () => {
    await writeLog(12, { segmentBytes: 1_500 });
    const names = await segmentNames();
    await appendFile(segment(names.length), 'garbage\n');
    await expectRefused(() => open({ maxSegments: 2 }), AuditChainError, /broken at/);
    expect(await segmentNames()).toEqual(names);
  });

  it('refuses a complete line of junk at the end instead of deleting it; a torn one is still repaired', async () => {
    const records = await writeLog(3);
    await appendFile(segment(1), 'garbage\n');
    await expectRefused(() => open(), AuditChainError, /^the audit log is broken at audit-000001\.jsonl:4: invalid JSON/);
    await writeLines(1, await linesOf(1).then((lines) => lines.slice(0, 3)));
    await appendFile(segment(1), '{"action":{"con');
    const sink = await open();
    expect(logs.some((m) => /removed an incomplete last line \(15 bytes/.test(m))).toBe(true);
    expect(sink.append(input(3)).record.prev_hash).toBe(records[2]!.hash);
    await sink.close();
  });

  it('leaves a torn line at or before the anchored record in place and refuses, since no crash tears an anchored record', async () => {
    await writeLog(3);
    const lines = await linesOf(1);
    // The anchored (last) record damaged: cut short, its line end gone.
    await writeFile(segment(1), `${lines[0]}\n${lines[1]}\n${lines[2]!.slice(0, 40)}`);
    await expectRefused(() => open(), AuditAnchorError, /does not match its anchor/);
    expect(logs.some((m) => /left an incomplete last line in place \(40 bytes/.test(m))).toBe(true);
    // Records after the anchored one torn, with the anchor gone: not repaired unless the log is taken as it is.
    await writeFile(segment(1), `${lines.join('\n')}\n${lines[2]!.slice(0, 30)}`);
    await rm(join(dir, 'anchor.json'));
    await expectRefused(() => open(), AuditAnchorError, /has no anchor/);
    const sink = await open({ acceptMissingAnchor: true });
    expect(logs.some((m) => /removed an incomplete last line \(30 bytes/.test(m))).toBe(true);
    await sink.close();
  });

  it('refuses an entry named like a segment that is not a regular file, without opening it', async () => {
    await writeLog(2);
    execFileSync('mkfifo', [segment(2)]);
    await expectRefused(() => open(), AuditChainError, /audit-000002\.jsonl is a FIFO, not a regular file: the audit log writes only regular files/);
    await rm(segment(2));
    await mkdir(segment(2));
    await expectRefused(() => open(), AuditChainError, /audit-000002\.jsonl is a folder, not a regular file/);
  });
});

describe('opening a log with or without the key', () => {
  it('refuses to append unsigned records to a signed log, naming --audit-key-file', async () => {
    const records = await writeLog(3, { keyFile: key });
    await expectRefused(
      () => open(),
      AuditChainError,
      new RegExp(`^the audit log is signed \\(its last record ${records[2]!.entry_id} at audit-000001\\.jsonl:3 carries a MAC\\) but no --audit-key-file was given`),
    );
    await (await open({ keyFile: key })).close();
  });

  it('with the key, refuses a record without a MAC after signed ones, and after the record an authenticated anchor names', async () => {
    const records = await writeLog(3, { keyFile: key });
    const lines = await linesOf(1);
    // The MAC of the last record stripped: everything else, anchor included, is intact.
    const { mac: _mac, ...stripped } = JSON.parse(lines[2]!) as AuditRecord;
    await writeLines(1, [...lines.slice(0, 2), JSON.stringify(stripped)]);
    await expectRefused(() => open({ keyFile: key }), AuditChainError, new RegExp(`broken at audit-000001\\.jsonl:3 \\(${records[2]!.entry_id}\\): no mac: with a key`));

    // Every record unsigned, but the anchor (MAC intact) names the first: those after it must be signed.
    const unsigned = lines.map((line) => {
      const { mac: _m, ...rest } = JSON.parse(line) as AuditRecord;
      return JSON.stringify(rest);
    });
    await writeLines(1, unsigned);
    const anchor = JSON.parse(await anchorText()) as AuditAnchor;
    const { readAuditKeyFile } = await import('./key.js');
    await new FileAnchorStore(join(dir, 'anchor.json')).write(createAnchor({ ...anchor, entry_id: records[0]!.entry_id, hash: records[0]!.hash, line: 1 }, await readAuditKeyFile(key)));
    await expectRefused(() => open({ keyFile: key }), AuditChainError, new RegExp(`broken at audit-000001\\.jsonl:2 \\(${records[1]!.entry_id}\\): no mac`));
  });
});

describe('the anchor check says what it found', () => {
  it('a record deleted before the anchored one: the anchored record moved up a line, nothing was cut off the end', async () => {
    const records = await writeLog(5);
    const lines = await linesOf(1);
    await writeLines(1, [...lines.slice(0, 2), ...lines.slice(3)]);
    await expectRefused(
      () => open(),
      AuditAnchorError,
      new RegExp(`: moved: the anchored record is at audit-000001\\.jsonl:4, not audit-000001\\.jsonl:5: 1 line\\(s\\) before it were removed, or moved after it \\(the anchor of \\S+ names ${records[4]!.entry_id}`),
    );
  });
});

describe('rotation', () => {
  it('creates the next segment before retention deletes the oldest: a failed rotation leaves the segments as they were', async () => {
    const sink = await open({ segmentBytes: 1_500, maxSegments: 3 });
    let i = 0;
    while ((await segmentNames()).length < 3) {
      sink.append(input(i++));
      await sink.flush();
    }
    const before = await segmentNames();
    // The next segment cannot be created (a folder stands in its place).
    await mkdir(segment(4));
    for (let n = 0; n < 10; n++) sink.append(input(i++));
    await expect(sink.flush()).rejects.toThrow(/could not write audit records/);
    expect((await segmentNames()).filter((n) => n !== segmentFileName(4))).toEqual(before);
    await rm(segment(4), { recursive: true });
    await sink.close();
  });
});
