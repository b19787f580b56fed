import fc from 'fast-check';
import { appendFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { openFileAuditSink, type FileAuditSinkOptions } from './file-sink.js';
import { GENESIS_HASH, createAuditRecord, canonicalJson, hashRecord, type AuditEntryInput, type AuditRecord } from './record.js';
import { AuditRecordsUnwrittenError, AuditWriteError, type AuditSink } from './sink.js';
import { verifyAuditChain } from './verify.js';

let dir: string;
let logs: string[];
const sinks: AuditSink[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pg-audit-'));
  logs = [];
});
afterEach(async () => {
  vi.useRealTimers();
  await Promise.allSettled(sinks.splice(0).map((sink) => sink.close()));
  await rm(dir, { recursive: true, force: true });
});

/** A sink that only writes on flush() unless a test says otherwise. */
async function open(opts: Partial<FileAuditSinkOptions> = {}): Promise<AuditSink> {
  const sink = await openFileAuditSink({ dir, flushIntervalMs: 3_600_000, log: (m) => logs.push(m), ...opts });
  sinks.push(sink);
  return sink;
}

function input(overrides: { agent?: string; type?: string; allowed?: boolean; parameters?: Record<string, unknown> } = {}): AuditEntryInput {
  const allowed = overrides.allowed ?? true;
  return {
    action_id: 'act_0123456789ab',
    agent_id: overrides.agent ?? 'agent-1',
    caller: null,
    action: { type: overrides.type ?? 'tool_call', target: 'db.query', parameters: overrides.parameters ?? { n: 1 }, context: '' },
    evaluation: {
      allowed,
      decision: allowed ? 'allow' : 'deny',
      require_approval: false,
      reason: allowed ? 'ok' : 'denied by policy',
      matched: [],
      audit_findings: [],
    },
    revision: 'rev-1',
  };
}

async function segmentNames(): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.startsWith('audit-')).sort();
}

async function allLines(): Promise<string[]> {
  const lines: string[] = [];
  for (const name of await segmentNames()) {
    lines.push(...(await readFile(join(dir, name), 'utf8')).split('\n').filter(Boolean));
  }
  return lines;
}

describe('file audit sink: chain and durability', () => {
  it('writes redacted records, and a reopened sink continues the chain', async () => {
    const first = await open();
    const a = first.append(input({ parameters: { user: 'bob', password: 'hunter2' } })).record;
    const b = first.append(input()).record;
    expect(a.prev_hash).toBe(GENESIS_HASH);
    expect(b.prev_hash).toBe(a.hash);
    await first.close();

    const text = await readFile(join(dir, 'audit-000001.jsonl'), 'utf8');
    expect(text).not.toContain('hunter2');
    expect(text.split('\n').map((line) => (line ? JSON.parse(line) : line))).toEqual([a, b, '']);

    const second = await open();
    const c = second.append(input()).record;
    expect(c.prev_hash).toBe(b.hash);
    await second.flush();
    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 3, segments: 1 });
  });

  it('writes on its timer without flush()', async () => {
    const sink = await open({ flushIntervalMs: 10 });
    sink.append(input());
    await vi.waitFor(async () => expect(await allLines()).toHaveLength(1));
    expect(sink.stats).toEqual({ written: 1, dropped: 0, refused: 0, buffered: 0, failedWrites: 0, writesFailing: 0 });
  });

  it('writes 10,000 appends as exactly 10,000 lines', async () => {
    const sink = await open();
    for (let i = 0; i < 10_000; i++) sink.append(input({ parameters: { i } }));
    expect(sink.stats).toEqual({ written: 0, dropped: 0, refused: 0, buffered: 10_000, failedWrites: 0, writesFailing: 0 });
    await sink.flush();
    expect(await allLines()).toHaveLength(10_000);
    expect(sink.stats).toEqual({ written: 10_000, dropped: 0, refused: 0, buffered: 0, failedWrites: 0, writesFailing: 0 });
    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 10_000 });
  });

  it('keeps order when flushes overlap', async () => {
    const sink = await open();
    const flushes: Promise<void>[] = [];
    const appended: AuditRecord[] = [];
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 25; i++) appended.push(sink.append(input()).record);
      flushes.push(sink.flush());
    }
    await Promise.all(flushes);
    expect((await allLines()).map((line) => (JSON.parse(line) as AuditRecord).entry_id)).toEqual(
      appended.map((r) => r.entry_id),
    );
    expect((await verifyAuditChain(dir)).ok).toBe(true);
  });

  it('rotates into several segments, chained across them', async () => {
    const sink = await open({ segmentBytes: 4_096 });
    for (let i = 0; i < 60; i++) {
      sink.append(input());
      if (i % 7 === 0) await sink.flush();
    }
    await sink.flush();
    const names = await segmentNames();
    expect(names.length).toBeGreaterThan(3);
    expect(names[0]).toBe('audit-000001.jsonl');
    for (const name of names) {
      // Each segment stays under the limit (a record is far smaller than 4 KiB).
      expect((await readFile(join(dir, name))).length).toBeLessThanOrEqual(4_096);
    }
    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 60, segments: names.length });
  });

  it('counts a segment in UTF-8 bytes, not characters, when records are not ASCII', async () => {
    // 3 UTF-8 bytes per character: counted in characters, the segments would overflow.
    const sink = await open({ segmentBytes: 4_096 });
    for (let i = 0; i < 40; i++) sink.append(input({ parameters: { note: '€'.repeat(150 + i) } }));
    await sink.flush();
    const names = await segmentNames();
    expect(names.length).toBeGreaterThan(3);
    for (const name of names) expect((await readFile(join(dir, name))).length).toBeLessThanOrEqual(4_096);
    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 40, segments: names.length });
  });

  it('deletes the oldest segments beyond maxSegments and logs it', async () => {
    const sink = await open({ segmentBytes: 2_048, maxSegments: 3 });
    for (let i = 0; i < 80; i++) sink.append(input());
    await sink.flush();
    const names = await segmentNames();
    expect(names).toHaveLength(3);
    expect(names).not.toContain('audit-000001.jsonl');
    expect(logs.some((m) => /retention: deleted audit-000001\.jsonl/.test(m))).toBe(true);
    // The first remaining segment links to a deleted one; verify accepts that link as given.
    expect((await verifyAuditChain(dir, { retained: 3, segmentBytes: 2_048 })).ok).toBe(true);
  });

  it('repairs a torn last line on open and chains from the last good record', async () => {
    const first = await open();
    first.append(input());
    const lastGood = first.append(input()).record;
    await first.close();
    const segment = join(dir, 'audit-000001.jsonl');
    const torn = canonicalJson(createAuditRecord(input(), lastGood.hash)).slice(0, 80);
    await appendFile(segment, torn);

    const second = await open();
    expect(logs.join('\n')).toMatch(new RegExp(`removed an incomplete last line \\(${torn.length} bytes`));
    const next = second.append(input()).record;
    expect(next.prev_hash).toBe(lastGood.hash);
    await second.flush();
    expect(await allLines()).toHaveLength(3);
    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 3, segments: 1 });
  });

  it('recovers from a crash that cut the newest segment at any byte', async () => {
    const setup = await open();
    for (let i = 0; i < 4; i++) setup.append(input());
    await setup.close();
    const segment = join(dir, 'audit-000001.jsonl');
    const original = await readFile(segment);
    const newlines = [...original.entries()].filter(([, byte]) => byte === 0x0a).map(([offset]) => offset);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: original.length }), async (cut) => {
        await writeFile(segment, original.subarray(0, cut));
        // A crash loses only records not yet durable, which no anchor names; here the cut may
        // reach anchored records too, so the anchor goes (the anchor tests cover that case)
        // and the operator accepts the log without one.
        await rm(join(dir, 'anchor.json'), { force: true });
        const sink = await open({ acceptMissingAnchor: true });
        sink.append(input());
        await sink.close();
        // A record survives when all of its JSON made it (a missing newline is put back).
        const survivors = newlines.filter((offset) => cut >= offset).length;
        expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: survivors + 1, segments: 1 });
      }),
      // Always include the edges: empty file, whole file, and each record complete but without its newline.
      { numRuns: 40, examples: [0, original.length, ...newlines].map((cut) => [cut] as [number]) },
    );
  });

  it('open mode: counts and logs overflow instead of growing without bound, and the chain stays intact', async () => {
    const sink = await open({ maxBuffered: 5, failureMode: 'open' });
    const results = Array.from({ length: 8 }, () => sink.append(input()));
    expect(results.map((r) => r.ok)).toEqual(Array(8).fill(true));
    expect(results[5]).toMatchObject({ dropped: 'the audit buffer is full: 5 records are waiting for ' + dir + ' (maxBuffered)' });
    expect(sink.stats).toEqual({ written: 0, dropped: 3, refused: 0, buffered: 5, failedWrites: 0, writesFailing: 0 });
    expect(logs.filter((m) => m.startsWith('DROPPING'))).toHaveLength(1);
    expect(logs[0]).toContain(results[5]?.record.entry_id);
    await sink.flush();
    expect(logs).toContain('audit log takes records again; 3 records were dropped meanwhile');
    expect(await allLines()).toHaveLength(5);
    // Dropped records never became the chain head, so the written ones still link up.
    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 5, segments: 1 });
  });

  it('keeps records buffered when a write fails and writes them on retry', async () => {
    const sink = await open();
    sink.append(input());
    await sink.flush();
    await rm(dir, { recursive: true });
    sink.append(input());
    sink.append(input());
    await expect(sink.flush()).rejects.toBeInstanceOf(AuditWriteError);
    expect(sink.stats).toMatchObject({ written: 1, buffered: 2 });
    expect(logs.some((m) => /failed; 2 records kept in memory/.test(m))).toBe(true);
    await mkdir(dir);
    await sink.flush();
    expect(sink.stats).toMatchObject({ written: 3, buffered: 0 });
    expect(await allLines()).toHaveLength(2);
    expect(logs.at(-1)).toMatch(/^audit writes recovered/);
  });

  it('rejects nonsense options with a message that names the option', async () => {
    await expect(openFileAuditSink({ dir, segmentBytes: 0 })).rejects.toThrow(/segmentBytes must be a positive integer/);
  });
});

describe('file audit sink: query', () => {
  it('filters by agent, action type and status, newest first, with limit and total', async () => {
    const sink = await open();
    const records = [
      sink.append(input({ agent: 'a', type: 'read', allowed: true })).record,
      sink.append(input({ agent: 'a', type: 'write', allowed: false })).record,
      sink.append(input({ agent: 'b', type: 'write', allowed: false })).record,
      sink.append(input({ agent: 'a', type: 'write', allowed: false })).record,
    ];
    await sink.flush();
    // The last two stay in the buffer: queries must see them too.
    records.push(sink.append(input({ agent: 'a', type: 'read', allowed: false })).record);
    records.push(sink.append(input({ agent: 'b', type: 'read', allowed: true })).record);
    expect(sink.stats.buffered).toBe(2);

    const ids = (entries: AuditRecord[]) => entries.map((r) => r.entry_id);
    const pick = (...indexes: number[]) => indexes.map((i) => records[i]?.entry_id);

    expect(await sink.query({ limit: 100 }).then((r) => [ids(r.entries), r.total])).toEqual([pick(5, 4, 3, 2, 1, 0), 6]);
    expect(ids((await sink.query({ agentId: 'a', limit: 100 })).entries)).toEqual(pick(4, 3, 1, 0));
    expect(ids((await sink.query({ actionType: 'write', limit: 100 })).entries)).toEqual(pick(3, 2, 1));
    expect(ids((await sink.query({ status: 'allowed', limit: 100 })).entries)).toEqual(pick(5, 0));
    expect(ids((await sink.query({ status: 'denied', agentId: 'a', limit: 100 })).entries)).toEqual(pick(4, 3, 1));
    const limited = await sink.query({ status: 'denied', limit: 2 });
    expect([ids(limited.entries), limited.total]).toEqual([pick(4, 3), 4]);
    expect(await sink.query({ limit: 0 })).toEqual({ entries: [], total: 6, leftOut: 0 });
  });

  it('applies since, and stops at a segment that is entirely older', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const sink = await open({ segmentBytes: 2_048 });
    vi.setSystemTime(new Date('2026-01-01T00:00:00.000Z'));
    for (let i = 0; i < 10; i++) sink.append(input({ agent: 'old' }));
    await sink.flush();
    vi.setSystemTime(new Date('2026-01-02T00:00:00.000Z'));
    for (let i = 0; i < 10; i++) sink.append(input({ agent: 'new' }));
    await sink.flush();
    sink.append(input({ agent: 'new' }));
    expect((await segmentNames()).length).toBeGreaterThan(2);

    const since = new Date('2026-01-01T12:00:00.000Z');
    const result = await sink.query({ since, limit: 5 });
    expect(result.total).toBe(11);
    expect(result.entries.map((r) => r.agent_id)).toEqual(Array(5).fill('new'));
    expect((await sink.query({ limit: 100 })).total).toBe(21);

    // A (hand-planted) recent record in the oldest segment is behind an all-old segment: not read.
    const planted = createAuditRecord(input({ agent: 'planted' }), GENESIS_HASH);
    await writeFile(join(dir, 'audit-000001.jsonl'), `${canonicalJson(planted)}\n`);
    expect((await sink.query({ since, agentId: 'planted', limit: 5 })).total).toBe(0);
  });

  it('agrees with a simple model over random appends, flushes, reopens and queries', async () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('append' as const), agent: fc.constantFrom('a', 'b'), allowed: fc.boolean() }),
      fc.constantFrom({ kind: 'flush' as const }, { kind: 'reopen' as const }, { kind: 'query' as const }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 40 }), async (ops) => {
        await rm(dir, { recursive: true, force: true });
        let sink = await open({ segmentBytes: 1_500, maxSegments: 1_000 });
        const model: AuditRecord[] = [];
        for (const step of ops) {
          if (step.kind === 'append') model.push(sink.append(input({ agent: step.agent, allowed: step.allowed })).record);
          if (step.kind === 'flush') await sink.flush();
          if (step.kind === 'reopen') {
            await sink.close();
            sink = await open({ segmentBytes: 1_500, maxSegments: 1_000 });
          }
          if (step.kind === 'query') {
            const expected = model.filter((r) => r.agent_id === 'a' && !r.evaluation.allowed).reverse();
            const result = await sink.query({ agentId: 'a', status: 'denied', limit: 3 });
            expect(result.total).toBe(expected.length);
            expect(result.entries).toEqual(expected.slice(0, 3));
          }
        }
        await sink.close();
        // An empty log is no log at all for verify (no segments, no anchor): nothing to check.
        if (model.length > 0) expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: model.length });
      }),
      { numRuns: 25 },
    );
  });

  it('sees every record exactly once while writes and rotations happen', async () => {
    const sink = await open({ segmentBytes: 8_192, maxSegments: 1_000 });
    const seen = new Set<string>();
    for (let round = 1; round <= 30; round++) {
      for (let i = 0; i < 20; i++) sink.append(input());
      const flushing = sink.flush();
      // Land the snapshot at different points of the write: queued, in flight, just written.
      for (let tick = 0; tick < round % 6; tick++) await new Promise(setImmediate);
      const { entries, total } = await sink.query({ limit: 1_000 });
      expect(total).toBe(round * 20);
      expect(new Set(entries.map((r) => r.entry_id)).size).toBe(round * 20);
      for (const r of entries) seen.add(r.entry_id);
      await flushing;
    }
    expect(seen.size).toBe(600);
  });
});

describe('file audit sink: when writes fail', () => {
  /** A directory where the next segment file should be: every write to it fails with EISDIR. */
  const blockSegment = (seq: number) => mkdir(join(dir, `audit-${String(seq).padStart(6, '0')}.jsonl`));
  const unblockSegment = (seq: number) => rm(join(dir, `audit-${String(seq).padStart(6, '0')}.jsonl`), { recursive: true });

  it('closed (the default) refuses new records while writes fail, with the reason, and takes them again once a write succeeds', async () => {
    const sink = await open();
    await blockSegment(1);
    const before = sink.append(input());
    expect(before.ok).toBe(true); // nothing has failed yet: buffered
    expect(sink.available()).toBeUndefined();
    await expect(sink.flush()).rejects.toBeInstanceOf(AuditWriteError);

    const segment = join(dir, 'audit-000001.jsonl');
    const refused = sink.append(input({ allowed: false }));
    expect(refused).toEqual({
      ok: false,
      reason: expect.stringMatching(new RegExp(`^the last write to ${segment} failed 1 time\\(s\\): Error: EISDIR`)),
    });
    expect(refused.record.entry_id).toMatch(/^aud_/);
    expect(sink.available()).toBe(refused.ok ? undefined : refused.reason);
    // Not buffered: the log never holds a decision that was denied for want of it.
    expect(sink.stats).toEqual({ written: 0, dropped: 0, refused: 1, buffered: 1, failedWrites: 1, writesFailing: 1 });
    expect(logs.some((m) => /^REFUSING audit records \(their decisions are denied\): the last write/.test(m))).toBe(true);
    await expect(sink.flush()).rejects.toBeInstanceOf(AuditWriteError);
    expect(sink.append(input()).ok ? '' : 'refused').toBe('refused');
    expect(sink.available()).toMatch(/failed 2 time\(s\)/);

    await unblockSegment(1);
    await sink.flush();
    expect(sink.available()).toBeUndefined();
    const after = sink.append(input());
    expect(after.ok).toBe(true);
    expect(after.record.prev_hash).toBe(before.record.hash);
    await sink.close();
    expect(logs).toContain('audit log takes records again; 2 records were refused meanwhile');
    expect((await allLines()).map((line) => (JSON.parse(line) as AuditRecord).entry_id)).toEqual([before.record.entry_id, after.record.entry_id]);
    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 2 });
  });

  it('open keeps buffering while writes fail, and drops (counted) only when the buffer is full', async () => {
    const sink = await open({ failureMode: 'open', maxBuffered: 3 });
    await blockSegment(1);
    sink.append(input());
    await expect(sink.flush()).rejects.toBeInstanceOf(AuditWriteError);
    const whileFailing = [sink.append(input()), sink.append(input())];
    expect(whileFailing).toEqual([{ ok: true }, { ok: true }]);
    expect(whileFailing.map((r) => r.record.entry_id)).toEqual([expect.stringMatching(/^aud_/), expect.stringMatching(/^aud_/)]);
    expect(sink.available()).toBeUndefined();
    const full = sink.append(input());
    expect(full).toMatchObject({ ok: true, dropped: `the audit buffer is full: 3 records are waiting for ${join(dir, 'audit-000001.jsonl')} (maxBuffered)` });
    // Failed writes: the flush's, and any retry its timer made meanwhile.
    expect(sink.stats).toEqual({ written: 0, dropped: 1, refused: 0, buffered: 3, failedWrites: expect.any(Number), writesFailing: expect.any(Number) });
    const failed = sink.stats.failedWrites;
    expect(failed).toBeGreaterThanOrEqual(1);
    expect(sink.stats.writesFailing).toBe(failed);

    await unblockSegment(1);
    await sink.flush();
    expect(sink.stats).toEqual({ written: 3, dropped: 1, refused: 0, buffered: 0, failedWrites: expect.any(Number), writesFailing: 0 });
    expect(sink.stats.failedWrites).toBeGreaterThanOrEqual(failed);
    expect(logs).toContain('audit log takes records again; 1 records were dropped meanwhile');
  });

  it('close() with records it could not write rejects with each of their lines and ids, which chain onto the log', async () => {
    const sink = await open();
    const written = sink.append(input()).record;
    await sink.flush();
    await rm(join(dir, 'audit-000001.jsonl'));
    await blockSegment(1);
    const taken = [sink.append(input()), sink.append(input({ allowed: false }))];
    expect(taken.map((r) => r.ok)).toEqual([true, true]);
    const error = await sink.close().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AuditRecordsUnwrittenError);
    const unwritten = error as AuditRecordsUnwrittenError;
    expect(unwritten.entryIds).toEqual(taken.map((r) => r.record.entry_id));
    expect(unwritten.lines.map((line) => JSON.parse(line) as AuditRecord)).toEqual(taken.map((r) => r.record));
    expect(unwritten.lines[0] && (JSON.parse(unwritten.lines[0]) as AuditRecord).prev_hash).toBe(written.hash);
    expect(unwritten.message).toBe(
      `2 audit record(s) were answered but never written to ${join(dir, 'audit-000001.jsonl')}, and are not in the audit log: ` +
        `${taken[0]!.record.entry_id}, ${taken[1]!.record.entry_id}. The last write failed: Error: EISDIR: illegal operation on a directory, open '${join(dir, 'audit-000001.jsonl')}'`,
    );
  });

  it('does not open with a bad key file, and says what is wrong', async () => {
    const short = join(dir, '..', `${dir.split('/').at(-1)}-short.key`);
    await writeFile(short, `  ${'k'.repeat(31)}\n\n`);
    try {
      await expect(openFileAuditSink({ dir, keyFile: short })).rejects.toThrow(
        `audit key file ${short} holds 31 bytes of key material (whitespace at either end ignored); at least 32 are needed`,
      );
      await expect(openFileAuditSink({ dir, keyFile: join(dir, 'missing.key') })).rejects.toThrow(/^audit key file .*missing\.key cannot be read: ENOENT/);
    } finally {
      await rm(short, { force: true });
    }
  });
});

describe('file audit sink: scan', () => {
  /** heapUsed after a full collection; the flag is set at run time, so no test-runner option is needed. */
  const heapAfterGc = (): number => {
    setFlagsFromString('--expose-gc');
    (runInNewContext('gc') as () => void)();
    return process.memoryUsage().heapUsed;
  };

  describe('a log changed on disk while the sink runs is not served', () => {
    const segment = () => join(dir, 'audit-000001.jsonl');
    /** Three stored records and one still buffered; `change` rewrites the stored lines. */
    const changed = async (change: (lines: string[]) => string[]) => {
      const sink = await open();
      const records = [1, 2, 3].map((n) => sink.append(input({ parameters: { n } })).record);
      await sink.flush();
      sink.append(input({ parameters: { n: 4 } }));
      const lines = (await readFile(segment(), 'utf8')).split('\n').filter(Boolean);
      await writeFile(segment(), `${change(lines).join('\n')}\n`);
      return { sink, records };
    };

    it('a record edited: its hash is not its line\'s', async () => {
      const { sink, records } = await changed((lines) => lines.map((l, i) => (i === 1 ? l.replace('"allowed":true', '"allowed":false') : l)));
      await expect(sink.query({ limit: 10 })).rejects.toThrow(
        `the audit log holds a record that was changed after it was written: ${records[1]!.entry_id} in audit-000001.jsonl (hash mismatch: the record was changed after it was written)`,
      );
    });

    it('a record edited and its hash recomputed (no key needed): the record after it does not link to it', async () => {
      const recomputed = await changed((lines) =>
        lines.map((l, i) => {
          if (i !== 1) return l;
          const { hash: _hash, mac: _mac, ...fields } = { ...(JSON.parse(l) as AuditRecord), agent_id: 'someone-else' };
          return `${canonicalJson(fields).slice(0, -1)},"hash":"${hashRecord(fields.prev_hash, fields)}"}`;
        }),
      );
      await expect(recomputed.sink.query({ limit: 10 })).rejects.toThrow(`${recomputed.records[1]!.entry_id} in audit-000001.jsonl (the record after it does not link to it`);
    });

    it('a record removed: the record after the gap does not link to the one before it', async () => {
      const removed = await changed((lines) => [lines[0]!, lines[2]!]);
      await expect(removed.sink.query({ limit: 10 })).rejects.toThrow(`${removed.records[0]!.entry_id} in audit-000001.jsonl (the record after it does not link to it`);
    });

    it('the log as written is served whole, the buffered record first', async () => {
      const { sink } = await changed((lines) => lines);
      expect((await sink.query({ limit: 10 })).entries.map((r) => r.action.parameters.n)).toEqual([4, 3, 2, 1]);
    });
  });

  it('visits every record of a sink filled to its retention in bounded memory, where query with no limit holds them all', async () => {
    const MiB = 1024 * 1024;
    const sink = await open({ segmentBytes: MiB, maxSegments: 20 });
    // ~2 KiB records: 20 segments of 1 MiB, a little over, so retention has deleted the oldest.
    const filler = 'x'.repeat(2_000);
    for (let i = 0; i < 11_000; i++) {
      sink.append(input({ agent: `agent-${i % 10}`, allowed: i % 4 !== 0, parameters: { i, filler } }));
      if (i % 1_000 === 999) await sink.flush();
    }
    await sink.flush();
    const names = await segmentNames();
    expect(names).toHaveLength(20);
    let bytes = 0;
    let lines = 0;
    for (const name of names) {
      const data = await readFile(join(dir, name));
      bytes += data.length;
      lines += data.filter((byte) => byte === 0x0a).length;
    }

    const before = heapAfterGc();
    const denied = new Map<string, number>();
    const { scanned, matched } = await sink.scan({ status: 'denied' }, (record) => {
      denied.set(record.agent_id, (denied.get(record.agent_id) ?? 0) + 1);
    });
    const scanGrowth = heapAfterGc() - before;
    expect(scanned).toBe(lines);
    expect([...denied.values()].reduce((a, b) => a + b, 0)).toBe(matched);

    const query = await sink.query({ limit: Number.MAX_SAFE_INTEGER });
    const queryGrowth = heapAfterGc() - before;
    expect(query.entries).toHaveLength(scanned);
    process.stderr.write(
      `[audit scan] ${names.length} segments, ${(bytes / MiB).toFixed(1)} MiB on disk: heap grew ${(scanGrowth / MiB).toFixed(1)} MiB ` +
        `for a full scan, ${(queryGrowth / MiB).toFixed(1)} MiB holding an unbounded query\n`,
    );
    expect(scanGrowth).toBeLessThan(bytes / 4);
    expect(queryGrowth).toBeGreaterThan(bytes / 2);
  });

  it('stops when the visitor says so, newest first', async () => {
    const sink = await open();
    const records = Array.from({ length: 6 }, () => sink.append(input()).record);
    await sink.flush();
    const seen: string[] = [];
    const counts = await sink.scan({}, (record) => {
      seen.push(record.entry_id);
      return seen.length < 2;
    });
    expect(seen).toEqual([records[5]!.entry_id, records[4]!.entry_id]);
    expect(counts).toEqual({ scanned: 2, matched: 2 });
  });
});

describe('file audit sink: anchors', () => {
  const anchor = async () => JSON.parse(await readFile(join(dir, 'anchor.json'), 'utf8')) as { entry_id: string; segment: number; line: number };

  it('anchors what it finds on open, the last durable record every interval, and on close', async () => {
    const first = await open();
    const old = Array.from({ length: 3 }, () => first.append(input()).record);
    await first.close();
    await rm(join(dir, 'anchor.json')); // an old log from before anchors existed, accepted as such

    const sink = await open({ anchorIntervalMs: 20, acceptMissingAnchor: true });
    expect(await anchor()).toMatchObject({ entry_id: old[2]!.entry_id, segment: 1, line: 3 });
    const more = [sink.append(input()).record, sink.append(input()).record];
    await sink.flush();
    await vi.waitFor(async () => expect(await anchor()).toMatchObject({ entry_id: more[1]!.entry_id, line: 5 }), { timeout: 10_000 });
    const last = sink.append(input()).record;
    await sink.close();
    expect(await anchor()).toMatchObject({ entry_id: last.entry_id, line: 6 });
  });

  it.each([
    ['a log with records', 1],
    ['an empty log (its genesis anchor)', 0],
  ])('does not open %s when the anchor cannot be written', async (_what, count) => {
    const first = await open();
    for (let i = 0; i < count; i++) first.append(input());
    await first.close();
    await rm(join(dir, 'anchor.json'), { force: true });
    // A directory where the anchor's temporary file goes: the first anchor write fails.
    await mkdir(join(dir, 'anchor.json.tmp'));
    await expect(open({ acceptMissingAnchor: count > 0 })).rejects.toThrow(/^cannot write the audit anchor \(file .*anchor\.json\): Error: EISDIR/);
  });
});
