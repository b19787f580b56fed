import { mkdir, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { BatchingAuditSink } from './batching-sink.js';
import { appendDurably, readLinesBackward, repairTornTail } from './jsonl.js';
import {
  AuditRecordSchema,
  GENESIS_HASH,
  parseAuditLine,
  type AuditRecord,
} from './record.js';
import { listSegments, segmentFileName } from './segments.js';
import { matchesAuditQuery, type AuditQuery, type AuditQueryResult, type AuditSink } from './sink.js';

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

class FileAuditSink extends BatchingAuditSink {
  /** The segment the last batch went to, for messages. */
  private target: string;

  constructor(
    private readonly segments: Segment[],
    head: string,
    private readonly options: ResolvedOptions,
  ) {
    super(head, options);
    this.target = segments.at(-1)?.path ?? options.dir;
  }

  protected describeTarget(): string {
    return this.target;
  }

  /** Appends as many of `lines` as fit in one segment, with one write + fdatasync. */
  protected async writeSome(lines: readonly string[]): Promise<number> {
    const segment = await this.segmentWithRoomFor(lines[0] ?? '');
    this.target = segment.path;
    const count = this.linesThatFit(segment, lines);
    const data = `${lines.slice(0, count).join('\n')}\n`;
    // The base class drops the lines from its buffer in the same tick as the size moves on.
    segment.size = await appendDurably(segment.path, data);
    return count;
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

  /** How many of `lines` go into `segment`: at least one, then as many as fit. */
  private linesThatFit(segment: Segment, lines: readonly string[]): number {
    let bytes = segment.size;
    let count = 0;
    for (const line of lines) {
      bytes += Buffer.byteLength(line) + 1;
      if (count > 0 && bytes > this.options.segmentBytes) break;
      count++;
    }
    return count;
  }

  async query(q: AuditQuery): Promise<AuditQueryResult> {
    // Snapshot in one synchronous step: durable sizes plus everything still in memory.
    const segments = this.segments.map(({ path, size }) => ({ path, size }));
    const buffered = this.bufferedLines();
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
