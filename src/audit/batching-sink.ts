import { createAuditRecord, type AuditEntryInput, type AuditRecord } from './record.js';
import { AuditWriteError, type AuditQuery, type AuditQueryResult, type AuditSink } from './sink.js';

/** What every batching sink needs; each sink resolves its own defaults. */
export interface BatchingOptions {
  /** Longest a record waits in memory before its batch is written. */
  flushIntervalMs: number;
  /** Records waiting for storage beyond which new ones are dropped and counted. */
  maxBuffered: number;
  /** Where write failures, recoveries and drops are reported. */
  log: (msg: string) => void;
  /** A record whose JSON line is longer than this many UTF-8 bytes can never be stored: dropped. */
  maxLineBytes?: number;
  /** Wait before the retry after the n-th consecutive failed batch (default: flushIntervalMs). */
  retryDelayMs?: (failures: number) => number;
}

/**
 * The part of a sink that both the file and the ConfigMap sink share: the hash chain head,
 * the in-memory buffer with its bound, batching on a timer or `flush()`, serialised writes,
 * retry after a failure, and drop accounting. A subclass says how a batch reaches storage
 * (`writeSome`) and how stored records are queried (`query`, with {@link bufferedLines} for
 * what is still in memory).
 *
 * Invariant for queries: a line leaves the buffer in the same tick as the subclass records it
 * as stored, so a synchronous snapshot of "stored extent + buffered lines" sees every record
 * exactly once.
 *
 * @example
 * class MemorySink extends BatchingAuditSink {
 *   readonly stored: string[] = [];
 *   constructor() { super(GENESIS_HASH, { flushIntervalMs: 100, maxBuffered: 1000, log: console.warn }); }
 *   protected async writeSome(lines: readonly string[]) { this.stored.push(...lines); return lines.length; }
 *   protected describeTarget() { return 'memory'; }
 *   async query(q: AuditQuery) { … this.stored and this.bufferedLines() … }
 * }
 */
export abstract class BatchingAuditSink implements AuditSink {
  /** JSON lines of records appended but not yet handed to storage, oldest first. */
  private pending: string[] = [];
  /** Lines of the batch being written; moved out only once stored. */
  private inflight: string[] = [];
  private written = 0;
  private dropped = 0;
  /** `dropped` when the current overflow began, or undefined when there is room. */
  private droppedBeforeOverflow: number | undefined;
  /** Consecutive failed batches; 0 while writes succeed. */
  private failures = 0;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  /** Serialises batches so records reach storage in chain order. */
  private writes: Promise<void> = Promise.resolve();
  /** A batch this large is written at once rather than waiting for the timer. */
  private readonly highWater: number;

  protected constructor(
    private head: string,
    private readonly batching: BatchingOptions,
  ) {
    this.highWater = Math.max(1, Math.floor(batching.maxBuffered / 2));
  }

  /**
   * Stores a non-empty prefix of `lines` (oldest first, each one JSON record without `\n`)
   * and returns its length, at least 1. Called again with the rest until all are stored. A
   * rejection must mean "not stored" — or, where a store cannot tell (a lost response), the
   * next call must find out and not store the lines twice.
   */
  protected abstract writeSome(lines: readonly string[]): Promise<number>;

  /** Where batches go right now, for messages (a file path, a ConfigMap name). */
  protected abstract describeTarget(): string;

  abstract query(q: AuditQuery): Promise<AuditQueryResult>;

  /** One-line description of a write error (default `String(error)`). */
  protected describeError(error: unknown): string {
    return String(error);
  }

  /** Records appended but not yet stored, oldest first; a snapshot taken synchronously. */
  protected bufferedLines(): string[] {
    return [...this.inflight, ...this.pending];
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
      this.dropOnOverflow(record, 'the audit sink is closed');
      return record;
    }
    if (this.buffered >= this.batching.maxBuffered) {
      this.dropOnOverflow(record, `${this.buffered} records are already waiting for storage (maxBuffered)`);
      return record;
    }
    // The record is plain JSON already (createAuditRecord round-trips it), so JSON.stringify
    // cannot throw and is several times cheaper than canonicalJson; verify canonicalises anyway.
    const line = JSON.stringify(record);
    const max = this.batching.maxLineBytes;
    // A UTF-16 unit is at most 3 UTF-8 bytes: only long lines pay for byteLength.
    if (max !== undefined && line.length * 3 > max && Buffer.byteLength(line) > max) {
      this.dropped++;
      this.batching.log(
        `DROPPED audit record ${record.entry_id} (agent ${record.agent_id}, ${record.action.type} ` +
          `${record.action.target}): ${Buffer.byteLength(line)} bytes, more than the ${max} one record may ` +
          `take in ${this.describeTarget()}. Counted in stats.dropped; the chain continues without it.`,
      );
      return record;
    }
    // Only a record that will be written moves the head, so drops never break the chain.
    this.pending.push(line);
    this.head = record.hash;
    if (this.pending.length === this.highWater) this.flushNow();
    else this.scheduleFlush(this.batching.flushIntervalMs);
    return record;
  }

  private dropOnOverflow(record: AuditRecord, why: string): void {
    this.dropped++;
    if (this.droppedBeforeOverflow !== undefined) return;
    this.droppedBeforeOverflow = this.dropped - 1;
    this.batching.log(
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

  private scheduleFlush(delayMs: number): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushNow();
    }, delayMs);
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
    try {
      while (this.inflight.length > 0) {
        const count = await this.writeSome(this.inflight);
        if (!Number.isSafeInteger(count) || count < 1 || count > this.inflight.length) {
          throw new Error(`writeSome stored ${count} of ${this.inflight.length} lines`);
        }
        // Same tick as the subclass recorded them as stored: a query sees them once.
        this.inflight = this.inflight.slice(count);
        this.written += count;
      }
    } catch (error) {
      const kept = this.inflight.length + this.pending.length;
      this.pending = this.inflight.concat(this.pending);
      this.inflight = [];
      this.failures++;
      const retryMs = this.batching.retryDelayMs?.(this.failures) ?? this.batching.flushIntervalMs;
      if (this.failures === 1) {
        this.batching.log(
          `audit write to ${this.describeTarget()} failed; ${kept} records kept in memory, ` +
            `retrying in ${retryMs} ms: ${this.describeError(error)}`,
        );
      }
      this.scheduleFlush(retryMs);
      throw new AuditWriteError(`could not write audit records to ${this.describeTarget()}`, { cause: error });
    }
    this.noteSuccess();
  }

  private noteSuccess(): void {
    if (this.failures > 0) {
      this.batching.log(`audit writes recovered after ${this.failures} failed attempt(s)`);
      this.failures = 0;
    }
    if (this.droppedBeforeOverflow !== undefined && this.buffered < this.batching.maxBuffered) {
      const lost = this.dropped - this.droppedBeforeOverflow;
      this.droppedBeforeOverflow = undefined;
      this.batching.log(`audit buffer has room again; ${lost} records were dropped while it was full`);
    }
  }
}
