import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { isGenesisAnchor, type AuditAnchor, type AuditAnchorStore } from './anchor.js';
import { BatchingAuditSink, type StoredLines } from './batching-sink.js';
import { matchesAuditQuery } from './query.js';
import { GENESIS_HASH, parseAuditLine, type AuditEntryInput, type AuditRecord } from './record.js';
import { requestContext, type RequestContext } from '../telemetry/request-context.js';
import { AuditRecordsUnwrittenError, type AuditFailureMode, type AuditFilter } from './sink.js';

/** The base class over an array: what is left to test is the buffer, the failure mode and anchoring. */
class MemorySink extends BatchingAuditSink {
  readonly stored: string[] = [];
  /** While set, writes wait for it: a slow disk. */
  gate: Promise<void> | undefined;
  constructor(
    failureMode: AuditFailureMode,
    readonly logs: string[] = [],
    extra: { maxLineBytes?: number; anchor?: AuditAnchorStore; stallMs?: number } = {},
  ) {
    super(GENESIS_HASH, undefined, {
      flushIntervalMs: 3_600_000,
      maxBuffered: 4,
      log: (m) => logs.push(m),
      failureMode,
      ...(extra.maxLineBytes ? { maxLineBytes: extra.maxLineBytes } : {}),
      ...(extra.anchor ? { anchor: { store: extra.anchor, intervalMs: 3_600_000 } } : {}),
      ...(extra.stallMs ? { stallMs: extra.stallMs } : {}),
    });
  }
  protected async writeSome(lines: readonly string[]): Promise<StoredLines> {
    await this.gate;
    this.stored.push(...lines);
    return { count: lines.length, segment: 1, line: this.stored.length };
  }
  protected describeTarget(): string {
    return 'memory';
  }
  async scan(filter: AuditFilter, visit: (record: AuditRecord) => boolean | void) {
    const all = [...this.stored, ...this.bufferedLines()].reverse().map((line) => parseAuditLine(line)!);
    const matched = all.filter((record) => matchesAuditQuery(record, filter));
    for (const record of matched) if (visit(record) === false) break;
    return { scanned: all.length, matched: matched.length };
  }
}

const input = (i: number): AuditEntryInput => ({
  action_id: `act_${String(i).padStart(12, '0')}`,
  agent_id: 'agent-1',
  caller: null,
  action: { type: 'tool_call', target: 'db.query', parameters: { i }, context: '' },
  evaluation: { allowed: true, decision: 'allow', require_approval: false, reason: 'ok', matched: [], audit_findings: [] },
  revision: 'rev-1',
});

describe("batching sink: an append's answer", () => {
  it('reads its record through its class, with no accessor of its own, and parses it once', () => {
    // An accessor written into each answer (`{ ...outcome, get record() {…} }`) is kept by V8 in
    // old space from the start, and held every record past the young generation: ~1 KB
    // promoted per decision (docs/performance.md, "What the seventh pass changed").
    const sink = new MemorySink('closed');
    const results = [sink.append(input(1)), sink.append(input(2))];
    for (const result of results) expect(Object.getOwnPropertyDescriptor(result, 'record')).toBeUndefined();
    expect(Object.keys(results[0]!)).toEqual(['ok']);
    const [first, second] = results.map((r) => r.record);
    expect(first!.entry_id).toMatch(/^aud_/);
    expect(second!.prev_hash).toBe(first!.hash);
    expect(results[0]!.record).toBe(first); // parsed once, then kept
  });
});

describe('batching sink: a full buffer', () => {
  it('closed mode refuses with a reason while the buffer is full, and takes records again once it drains', async () => {
    const sink = new MemorySink('closed');
    sink.gate = new Promise(() => undefined); // the first batch never finishes: the buffer stays full
    const taken = [1, 2, 3, 4].map((i) => sink.append(input(i)));
    expect(taken.map((r) => r.ok)).toEqual([true, true, true, true]);
    const refused = sink.append({ ...input(5), action: { ...input(5).action, target: 'postgres://app:S3CRET@db/x' } });
    const why = 'the audit buffer is full: 4 records are waiting for memory (maxBuffered)';
    expect(refused).toEqual({ ok: false, reason: why });
    expect(refused.record.entry_id).toMatch(/^aud_/);
    expect(sink.available()).toBe(why);
    expect(sink.stats).toEqual({ written: 0, dropped: 0, refused: 1, buffered: 4, failedWrites: 0, writesFailing: 0 });
    expect(sink.logs).toEqual([expect.stringMatching(/^REFUSING audit records \(their decisions are denied\): the audit buffer is full/)]);
    // The record's target as the record would store it: redacted.
    expect(sink.logs[0]).toContain('tool_call postgres://app:[REDACTED]@db/x)');

    const drained = new MemorySink('closed', sink.logs);
    [1, 2, 3, 4].forEach((i) => drained.append(input(i)));
    expect(drained.append(input(5)).ok).toBe(false);
    await drained.flush();
    expect(drained.available()).toBeUndefined();
    const next = drained.append(input(6));
    expect(next.ok).toBe(true);
    // The refused record never became the chain head.
    expect(next.record.prev_hash).toBe(parseAuditLine(drained.stored.at(-1)!)!.hash);
    expect(drained.logs.at(-1)).toBe('audit log takes records again; 1 records were refused meanwhile');
  });

  it('open mode takes records until the buffer is full, then drops and counts them while decisions go on', () => {
    const sink = new MemorySink('open');
    sink.gate = new Promise(() => undefined);
    const results = [1, 2, 3, 4, 5, 6].map((i) => sink.append(input(i)));
    expect(results.map((r) => r.ok)).toEqual([true, true, true, true, true, true]);
    expect(results.map((r) => (r.ok ? r.dropped : r.reason))).toEqual([
      undefined, undefined, undefined, undefined,
      'the audit buffer is full: 4 records are waiting for memory (maxBuffered)',
      'the audit buffer is full: 4 records are waiting for memory (maxBuffered)',
    ]);
    expect(sink.available()).toBeUndefined();
    expect(sink.stats).toEqual({ written: 0, dropped: 2, refused: 0, buffered: 4, failedWrites: 0, writesFailing: 0 });
  });

  it('open mode counts failed writes, the one sign that records wait in memory while decisions go on', async () => {
    const sink = new MemorySink('open');
    sink.gate = Promise.reject(new Error('disk full'));
    expect(sink.append(input(1)).ok).toBe(true);
    await expect(sink.flush()).rejects.toThrow('could not write audit records to memory');
    expect(sink.available()).toBeUndefined();
    expect(sink.stats).toEqual({ written: 0, dropped: 0, refused: 0, buffered: 1, failedWrites: 1, writesFailing: 1 });
    sink.gate = undefined;
    await sink.flush();
    expect(sink.stats).toEqual({ written: 1, dropped: 0, refused: 0, buffered: 0, failedWrites: 1, writesFailing: 0 });
  });

  it('a record its parameters make too large is kept without the largest: their size and sha256 in their place, the small ones as they were', async () => {
    const sink = new MemorySink('closed', [], { maxLineBytes: 1_500 });
    // Too large by a little more than the largest: the next largest goes too.
    const tighter = new MemorySink('closed', [], { maxLineBytes: 1_100 });
    const parameters = { sql: 'DELETE FROM customers', pad: ['x'.repeat(1_500), 'y'.repeat(300)], blob: 'z'.repeat(600), token: 'secret' };
    expect(sink.append({ ...input(1), action: { ...input(1).action, parameters } }).ok).toBe(true);
    await sink.flush();
    expect(Buffer.byteLength(sink.stored.at(-1)!)).toBeLessThanOrEqual(1_500);
    const omitted = (value: unknown) => {
      const text = JSON.stringify(value);
      return `[OMITTED: ${Buffer.byteLength(text)} bytes of canonical JSON (secrets redacted), sha256 ${createHash('sha256').update(text).digest('hex')}]`;
    };
    // pad (the largest) goes, which is enough; sql and blob stay, the token stays redacted.
    expect(parseAuditLine(sink.stored.at(-1)!)!.action.parameters).toEqual({ sql: 'DELETE FROM customers', pad: omitted(parameters.pad), blob: parameters.blob, token: '[REDACTED]' });
    expect(sink.stats).toMatchObject({ written: 1, dropped: 0, refused: 0 });
    expect(tighter.append({ ...input(1), action: { ...input(1).action, parameters } }).ok).toBe(true);
    await tighter.flush();
    expect(parseAuditLine(tighter.stored.at(-1)!)!.action.parameters).toEqual({ sql: 'DELETE FROM customers', pad: omitted(parameters.pad), blob: omitted(parameters.blob), token: '[REDACTED]' });
  });

  it.each([
    ['closed', { ok: false, reason: expect.stringMatching(/^the record is too large even with its largest parameters omitted: \d+ bytes, more than the 600 one record may take$/) }, 'refused'],
    ['open', { ok: true, dropped: expect.stringMatching(/^the record is too large/) }, 'dropped'],
  ] as const)('%s mode: a record too large to store even with its largest parameters omitted is %j, counted and logged', (mode, expected, what) => {
    const sink = new MemorySink(mode, [], { maxLineBytes: 600 });
    expect(sink.append({ ...input(1), action: { ...input(1).action, context: 'x'.repeat(1_000) } })).toMatchObject(expected);
    expect(sink.stats[what]).toBe(1);
    expect(sink.logs).toEqual([expect.stringMatching(new RegExp(`^${what.toUpperCase()} audit record aud_\\w+ .*: the record is too large`))]);
    // The sink itself is fine: the next record is taken.
    expect(sink.append(input(2)).ok).toBe(true);
  });

  it('a closed sink refuses (closed mode) or drops (open mode)', async () => {
    const closed = new MemorySink('closed');
    await closed.close();
    expect(closed.available()).toBe('the audit sink is closed');
    expect(closed.append(input(1))).toMatchObject({ ok: false, reason: 'the audit sink is closed' });
    const open = new MemorySink('open');
    await open.close();
    expect(open.append(input(1))).toMatchObject({ ok: true, dropped: 'the audit sink is closed' });
  });
});

describe('batching sink: a storage that stops answering', () => {
  afterEach(() => vi.useRealTimers());

  /** A sink whose first write hangs until `answer()`; the write has begun. */
  async function stalledSink(failureMode: AuditFailureMode) {
    vi.useFakeTimers();
    const sink = new MemorySink(failureMode, [], { stallMs: 10_000 });
    let answer = () => {};
    sink.gate = new Promise<void>((resolve) => (answer = resolve));
    expect(sink.append(input(1)).ok).toBe(true);
    const flushed = sink.flush();
    await Promise.resolve();
    return { sink, flushed, answer: () => answer() };
  }

  it('closed mode refuses new records once a write has gone unanswered for stallMs, and takes them again when it is answered', async () => {
    const { sink, flushed, answer } = await stalledSink('closed');
    vi.advanceTimersByTime(9_999);
    expect(sink.available()).toBeUndefined();
    vi.advanceTimersByTime(1);
    const why = 'a write to memory has not been answered for 10 s (the storage stopped answering)';
    expect(sink.available()).toBe(why);
    expect(sink.append(input(2))).toEqual({ ok: false, reason: why });
    expect(sink.logs[0]).toBe(`${why}; 1 records wait in memory, new records refused (their decisions denied) until it answers`);
    answer();
    await flushed;
    expect(sink.available()).toBeUndefined();
    expect(sink.append(input(3)).ok).toBe(true);
    expect(sink.logs.slice(2)).toEqual([expect.stringMatching(/^the stalled write to memory was answered after /), 'audit log takes records again; 1 records were refused meanwhile']);
  });

  it('open mode goes on taking records while the write hangs', async () => {
    const { sink } = await stalledSink('open');
    vi.advanceTimersByTime(10_000);
    expect(sink.available()).toBeUndefined();
    expect(sink.append(input(2))).toEqual({ ok: true });
  });

  it('close() does not wait for a stalled write: it hands back every record not stored, saying which were being written', async () => {
    const { sink } = await stalledSink('closed');
    vi.advanceTimersByTime(10_000);
    const error = await sink.close().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuditRecordsUnwrittenError);
    expect((error as AuditRecordsUnwrittenError).lines).toHaveLength(1);
    expect((error as Error).message).toMatch(/The last write failed: a write to memory has not been answered for 10 s .*The first 1 of these lines were being written and may still reach it/);
  });

  it('after close() gave up on a stall, only the write in progress may still land: the records queued behind it are never written', async () => {
    const { sink, answer } = await stalledSink('closed');
    expect(sink.append(input(2)).ok).toBe(true); // queued behind the hung write
    vi.advanceTimersByTime(10_000);
    const error = (await sink.close().catch((e: unknown) => e)) as AuditRecordsUnwrittenError;
    expect(error.lines).toHaveLength(2);
    expect(error.message).toMatch(/The first 1 of these lines were being written and may still reach it \(no other will\)/);
    answer();
    vi.useRealTimers();
    await new Promise((r) => setTimeout(r, 20));
    // The hung write landed; the second record is only in the caller's hands, so appending it is no duplicate.
    expect(sink.stored).toEqual([error.lines[0]]);
  });

  it('close() that began before the stall stops waiting when it begins', async () => {
    const { sink } = await stalledSink('closed');
    const closing = sink.close().catch((e: unknown) => e);
    vi.advanceTimersByTime(10_000);
    expect(await closing).toBeInstanceOf(AuditRecordsUnwrittenError);
  });
});

describe('batching sink: background work', () => {
  it("runs a batch, and logs its failure, outside the context of the request whose record started it", async () => {
    const seen: Array<unknown> = [];
    const sink = new MemorySink('closed');
    // The log callback reads the request context, as the logger does for trace and action ids.
    sink.logs.push = (...messages: string[]) => (seen.push(...messages.map(() => requestContext.getStore())), messages.length);
    sink.gate = Promise.reject(new Error('EIO'));
    sink.gate.catch(() => undefined);
    await requestContext.run({ trace_id: 'a'.repeat(32) } as RequestContext, async () => {
      for (let i = 0; i < 2; i++) sink.append(input(i)); // the high-water mark: a batch starts here
    });
    await new Promise((r) => setTimeout(r, 10));
    expect(seen.length).toBeGreaterThan(0);
    expect(seen).toEqual(seen.map(() => undefined));
  });
});

describe('batching sink: anchoring', () => {
  it('an anchor only ever names a record that is durable, never a buffered one', async () => {
    const written: AuditAnchor[] = [];
    const sinks: MemorySink[] = [];
    const store: AuditAnchorStore = {
      location: 'memory',
      discardHint: '',
      read: async () => written.at(-1),
      async write(anchor) {
        // At the moment of writing, the named record must already be stored, at that line (the
        // genesis anchor names none: nothing may be stored yet).
        if (isGenesisAnchor(anchor)) expect(sinks[0]!.stored).toEqual([]);
        else expect(parseAuditLine(sinks[0]!.stored[anchor.line - 1] ?? '')?.hash).toBe(anchor.hash);
        written.push(anchor);
      },
    };
    const sink = new MemorySink('closed', [], { anchor: store });
    sinks.push(sink);
    await sink.start();
    expect(written.map((a) => a.entry_id)).toEqual(['genesis']); // an empty log is anchored at its start
    await sink.anchor();
    expect(written).toHaveLength(1); // and only once

    const first = [1, 2].map((i) => sink.append(input(i)).record);
    await sink.flush(); // the first batch of a new log is anchored at once
    expect(written.map((a) => a.entry_id)).toEqual(['genesis', first[1]!.entry_id]);

    const buffered = sink.append(input(3)).record;
    await sink.anchor();
    expect(written.map((a) => a.entry_id)).toEqual(['genesis', first[1]!.entry_id]); // nothing new is durable
    expect(written.some((a) => a.entry_id === buffered.entry_id)).toBe(false);

    await sink.close();
    expect(written.at(-1)).toMatchObject({ entry_id: buffered.entry_id, hash: buffered.hash, segment: 1, line: 3 });
  });
});
