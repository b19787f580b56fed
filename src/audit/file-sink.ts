import { mkdir, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { appendDurably, readLinesBackward, repairTornTail } from './jsonl.js';
import {
  AuditRecordSchema,
  GENESIS_HASH,
  createAuditRecord,
  parseAuditLine,
  type AuditEntryInput,
  type AuditRecord,
} from './record.js';
import { listSegments, segmentFileName } from './segments.js';
import {
  AuditWriteError,
  matchesAuditQuery,
  type AuditQuery,
  type AuditQueryResult,
  type AuditSink,
} from './sink.js';

export interface FileAuditSinkOptions {
  /** Directory of the segments; created if missing. */
  dir: string;
  /** A segment is closed before it would grow past this (default 16 MiB). */
  segmentBytes?: number;
  /** Segments kept; older ones are deleted (default 20). */
  maxSegments?: number;
  /** Longest a record waits in memory before its batch is written (default 100). */
  flushIntervalMs?: number;
  /** Records waiting for the disk beyond which new ones are dropped and counted (default 50 000). */
  maxBuffered?: number;
  /** Where repairs, retention, write failures and drops are reported (default stderr). */
  log?: (msg: string) => void;
}

type ResolvedOptions = Required<FileAuditSinkOptions>;

const DEFAULTS = {
  segmentBytes: 16 * 1024 * 1024,
  maxSegments: 20,
  flushIntervalMs: 100,
  maxBuffered: 50_000,
  log: (msg: string) => console.error(`[audit] ${msg}`),
} satisfies Omit<ResolvedOptions, 'dir'>;

interface Segment {
  seq: number;
  path: string;
  /** Bytes known to be durable; queries read no further, so a write in progress is not seen twice. */
  size: number;
}

const isAuditRecord = (value: unknown): boolean => AuditRecordSchema.safeParse(value).success;

/**
 * Opens (or creates) a JSONL audit log in `opts.dir`: `audit-000001.jsonl`, `audit-000002.jsonl`, …
 * Appends are buffered and written in batches, one write + fdatasync each, every
 * `flushIntervalMs` or on `flush()`. On open, a last line torn by a crash is repaired and the
 * hash chain continues from the last valid record.
 *
 * @example
 * const sink = await openFileAuditSink({ dir: '/data/audit', log: (m) => logger.warn(m) });
 * const record = sink.append({ action_id, agent_id, caller, action, evaluation, revision });
 * const { entries, total } = await sink.query({ status: 'denied', limit: 100 });
 * await sink.close();
 */
export async function openFileAuditSink(opts: FileAuditSinkOptions): Promise<AuditSink> {
  const options = resolveOptions(opts);
  await mkdir(options.dir, { recursive: true });
  const segments: Segment[] = (await listSegments(options.dir)).map((file) => ({ ...file, size: 0 }));
  await deleteBeyondRetention(segments, options);
  const newest = segments.at(-1);
  if (newest) await repairTornTail(newest.path, isAuditRecord, options.log);
  for (const segment of segments) segment.size = (await stat(segment.path)).size;
  const head = await findChainHead(segments, options.log);
  return new FileAuditSink(segments, head, options);
}

function resolveOptions(opts: FileAuditSinkOptions): ResolvedOptions {
  const options: ResolvedOptions = {
    dir: opts.dir,
    segmentBytes: opts.segmentBytes ?? DEFAULTS.segmentBytes,
    maxSegments: opts.maxSegments ?? DEFAULTS.maxSegments,
    flushIntervalMs: opts.flushIntervalMs ?? DEFAULTS.flushIntervalMs,
    maxBuffered: opts.maxBuffered ?? DEFAULTS.maxBuffered,
    log: opts.log ?? DEFAULTS.log,
  };
  for (const name of ['segmentBytes', 'maxSegments', 'flushIntervalMs', 'maxBuffered'] as const) {
    const value = options[name];
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(`openFileAuditSink: ${name} must be a positive integer, got ${value}`);
    }
  }
  return options;
}

/** Deletes the oldest segments until at most `maxSegments` remain; mutates `segments`. */
async function deleteBeyondRetention(segments: Segment[], options: ResolvedOptions): Promise<void> {
  while (segments.length > options.maxSegments) {
    const oldest = segments.shift();
    if (!oldest) return;
    try {
      await rm(oldest.path, { force: true });
      options.log(`retention: deleted ${basename(oldest.path)} (keeping the newest ${options.maxSegments} segments)`);
    } catch (error) {
      // Writing matters more than deleting; the next open retries the deletion.
      options.log(`retention: could not delete ${oldest.path}: ${String(error)}`);
    }
  }
}

/**
 * The hash of the last valid record, newest segment first. Normally that is the last line of
 * the newest segment; an older segment is read only when the newest is empty (a crash right
 * after rotation), and lines that do not parse are skipped but reported — they stay in the file
 * for `verifyAuditChain` to point at.
 */
async function findChainHead(segments: Segment[], log: (msg: string) => void): Promise<string> {
  for (const segment of [...segments].reverse()) {
    let skipped = 0;
    for await (const line of readLinesBackward(segment.path)) {
      const record = parseAuditLine(line.text);
      if (record) {
        if (skipped > 0) {
          log(`${segment.path}: ${skipped} unreadable line(s) after the last valid record; the chain continues from ${record.entry_id}`);
        }
        return record.hash;
      }
      skipped++;
    }
  }
  return GENESIS_HASH;
}

class FileAuditSink implements AuditSink {
  /** JSON lines of records appended but not yet handed to the disk, oldest first. */
  private pending: string[] = [];
  /** Lines of the batch being written; moved out only once durable. */
  private inflight: string[] = [];
  private written = 0;
  private dropped = 0;
  /** `dropped` when the current overflow began, or undefined when there is room. */
  private droppedBeforeOverflow: number | undefined;
  private failing = false;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  /** Serialises batches so records reach the disk in chain order. */
  private writes: Promise<void> = Promise.resolve();
  /** A batch this large is written at once rather than waiting for the timer. */
  private readonly highWater: number;

  constructor(
    private readonly segments: Segment[],
    private head: string,
    private readonly options: ResolvedOptions,
  ) {
    this.highWater = Math.max(1, Math.floor(options.maxBuffered / 2));
  }

  get stats(): { written: number; dropped: number; buffered: number } {
    return { written: this.written, dropped: this.dropped, buffered: this.buffered };
  }

  private get buffered(): number {
    return this.pending.length + this.inflight.length;
  }

  append(input: AuditEntryInput): AuditRecord {
    const record = createAuditRecord(input, this.head);
    if (this.closed) {
      this.drop(record, 'the audit sink is closed');
    } else if (this.buffered >= this.options.maxBuffered) {
      this.drop(record, `${this.buffered} records are already waiting for the disk (maxBuffered)`);
    } else {
      // Only a record that will be written moves the head, so drops never break the chain.
      // The record is plain JSON already (createAuditRecord round-trips it), so JSON.stringify
      // cannot throw and is several times cheaper than canonicalJson; verify canonicalises anyway.
      this.pending.push(JSON.stringify(record));
      this.head = record.hash;
      if (this.pending.length === this.highWater) this.flushNow();
      else this.scheduleFlush();
    }
    return record;
  }

  private drop(record: AuditRecord, why: string): void {
    this.dropped++;
    if (this.droppedBeforeOverflow !== undefined) return;
    this.droppedBeforeOverflow = this.dropped - 1;
    this.options.log(
      `DROPPING audit records: ${why}. First dropped: ${record.entry_id} (agent ${record.agent_id}, ` +
        `${record.action.type} ${record.action.target}). Further drops are counted in stats.dropped ` +
        `and summarised once writes catch up.`,
    );
  }

  flush(): Promise<void> {
    const batch = this.writes.then(() => this.writePending());
    this.writes = batch.catch(() => undefined);
    return batch;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  private scheduleFlush(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushNow();
    }, this.options.flushIntervalMs);
    // A pending batch must not keep the process alive; shutdown calls close() to flush.
    this.timer.unref();
  }

  private flushNow(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    // writePending has already logged and rescheduled a failure.
    this.flush().catch(() => undefined);
  }

  private async writePending(): Promise<void> {
    if (this.pending.length === 0) return;
    this.inflight = this.pending;
    this.pending = [];
    let segment: Segment | undefined;
    try {
      while (this.inflight.length > 0) {
        segment = await this.segmentWithRoomFor(this.inflight[0] ?? '');
        const count = this.linesThatFit(segment);
        const data = `${this.inflight.slice(0, count).join('\n')}\n`;
        segment.size = await appendDurably(segment.path, data);
        // Same tick as the size update: a query sees these lines either on disk or in memory, never both.
        this.inflight = this.inflight.slice(count);
        this.written += count;
      }
    } catch (error) {
      const kept = this.inflight.length + this.pending.length;
      this.pending = this.inflight.concat(this.pending);
      this.inflight = [];
      if (!this.failing) {
        this.failing = true;
        this.options.log(
          `audit write to ${segment?.path ?? this.options.dir} failed; ${kept} records kept in memory, ` +
            `retrying every ${this.options.flushIntervalMs} ms: ${String(error)}`,
        );
      }
      this.scheduleFlush();
      throw new AuditWriteError(`could not write audit records to ${segment?.path ?? this.options.dir}`, {
        cause: error,
      });
    }
    this.noteSuccess();
  }

  private noteSuccess(): void {
    if (this.failing) {
      this.failing = false;
      this.options.log('audit writes recovered');
    }
    if (this.droppedBeforeOverflow !== undefined && this.buffered < this.options.maxBuffered) {
      const lost = this.dropped - this.droppedBeforeOverflow;
      this.droppedBeforeOverflow = undefined;
      this.options.log(`audit buffer has room again; ${lost} records were dropped while it was full`);
    }
  }

  /** The current segment, or a new one when `line` would push the current past segmentBytes. */
  private async segmentWithRoomFor(line: string): Promise<Segment> {
    const current = this.segments.at(-1);
    if (current && (current.size === 0 || current.size + Buffer.byteLength(line) + 1 <= this.options.segmentBytes)) {
      return current;
    }
    const seq = (current?.seq ?? 0) + 1;
    const next: Segment = { seq, path: join(this.options.dir, segmentFileName(seq)), size: 0 };
    this.segments.push(next);
    await deleteBeyondRetention(this.segments, this.options);
    return next;
  }

  /** How many of the in-flight lines go into `segment`: at least one, then as many as fit. */
  private linesThatFit(segment: Segment): number {
    let bytes = segment.size;
    let count = 0;
    for (const line of this.inflight) {
      bytes += Buffer.byteLength(line) + 1;
      if (count > 0 && bytes > this.options.segmentBytes) break;
      count++;
    }
    return count;
  }

  async query(q: AuditQuery): Promise<AuditQueryResult> {
    // Snapshot in one synchronous step: durable sizes plus everything still in memory.
    const segments = this.segments.map(({ path, size }) => ({ path, size }));
    const buffered = [...this.inflight, ...this.pending];
    const limit = Math.max(0, Math.floor(q.limit));
    const since = q.since?.getTime();
    const entries: AuditRecord[] = [];
    let total = 0;
    const consider = (record: AuditRecord): void => {
      if (!matchesAuditQuery(record, q)) return;
      total++;
      if (entries.length < limit) entries.push(record);
    };
    for (let i = buffered.length - 1; i >= 0; i--) {
      consider(JSON.parse(buffered[i] ?? '') as AuditRecord);
    }
    for (const segment of segments.reverse()) {
      let newestInSegment = true;
      // A segment deleted by retention since the snapshot reads as empty: its records aged out.
      for await (const line of readLinesBackward(segment.path, { end: segment.size })) {
        // An unreadable line is verifyAuditChain's business; a query shows what can be read.
        const record = parseAuditLine(line.text);
        if (!record) continue;
        if (newestInSegment) {
          newestInSegment = false;
          // Records are appended in time order, so this segment and all older ones are out of range.
          if (since !== undefined && Date.parse(record.timestamp) < since) return { entries, total };
        }
        consider(record);
      }
    }
    return { entries, total };
  }
}
