import { AsyncResource } from 'node:async_hooks';
import type { KeyObject } from 'node:crypto';
import { GENESIS_POINT, createAnchor, type AnchorPoint, type AuditAnchorStore } from './anchor.js';
import { readAuditKeyFile } from './key.js';
import { queryByScan } from './query.js';
import { redactSecretText, sealAuditRecord, storedLineHashMatches, withParametersOmitted, type AuditEntryInput, type AuditRecord, type SealedAuditRecord } from './record.js';
import {
  AuditRecordTamperedError,
  AuditRecordsUnwrittenError,
  AuditWriteError,
  type AuditAppendResult,
  type AuditFailureMode,
  type AuditFilter,
  type AuditQuery,
  type AuditQueryResult,
  type AuditSink,
  type AuditStats,
} from './sink.js';

/** Options both sinks take for failing closed, MACs and anchors (docs/decisions.md). */
export interface AuditIntegrityOptions {
  /** `closed` (default): refuse records the log cannot take, so their decisions are denied; `open`: drop and count them. */
  failureMode?: AuditFailureMode;
  /** A file of at least 32 bytes of key material (`--audit-key-file`): records and anchors then carry an HMAC. */
  keyFile?: string;
  /** Where the chain head is anchored (default: the sink's own; see each sink). */
  anchor?: AuditAnchorStore;
  /** How often the chain head is anchored while records arrive (default 30 000 ms); also on open and close. */
  anchorIntervalMs?: number;
  /**
   * Open a log that holds records but has no anchor, or (with a key) an anchor without a MAC,
   * and say so in the log (`--audit-accept-missing-anchor`; see ensureLogReachesAnchor). For one
   * start after the anchor store was reset on purpose, or the key was configured for an old log.
   */
  acceptMissingAnchor?: boolean;
  /** Told how long appends and batch writes take (the server's latency histograms); not an integrity setting, but every sink takes it the same way. */
  timings?: AuditTimings;
}

/** What a sink reports about its own speed, in seconds. */
export interface AuditTimings {
  /** One append: building the record (redaction, hash chain, MAC) and buffering it. */
  appended(seconds: number): void;
  /** One batch handed to storage and stored (a file write and fdatasync, or a ConfigMap update). */
  written(seconds: number): void;
}

/** {@link AuditIntegrityOptions} resolved: the key read, defaults applied. */
export interface ResolvedIntegrity {
  failureMode: AuditFailureMode;
  key: KeyObject | undefined;
  anchor: { store: AuditAnchorStore; intervalMs: number };
  acceptMissingAnchor: boolean;
  timings: AuditTimings | undefined;
}

/**
 * Resolves {@link AuditIntegrityOptions}; rejects with an AuditKeyError when the key file is
 * missing, unreadable or too short, so a sink that was told to sign does not start unsigned.
 *
 * @example
 * const integrity = await resolveIntegrity(opts, () => FileAnchorStore.inDir(opts.dir));
 */
export async function resolveIntegrity(opts: AuditIntegrityOptions, defaultAnchor: () => AuditAnchorStore): Promise<ResolvedIntegrity> {
  const intervalMs = opts.anchorIntervalMs ?? 30_000;
  if (!Number.isSafeInteger(intervalMs) || intervalMs < 1) {
    throw new RangeError(`audit sink: anchorIntervalMs must be a positive integer, got ${intervalMs}`);
  }
  const failureMode = opts.failureMode ?? 'closed';
  if (failureMode !== 'closed' && failureMode !== 'open') throw new RangeError(`audit sink: failureMode must be closed or open, got ${String(failureMode)}`);
  return {
    failureMode,
    key: opts.keyFile === undefined ? undefined : await readAuditKeyFile(opts.keyFile),
    anchor: { store: opts.anchor ?? defaultAnchor(), intervalMs },
    acceptMissingAnchor: opts.acceptMissingAnchor ?? false,
    timings: opts.timings,
  };
}

/**
 * How long a write may go unanswered before the storage counts as stalled. A write that never
 * returns (a hung NFS or PVC, a FIFO put in the folder) is not a failure, so without this the
 * closed mode would keep answering decisions whose records only memory holds, and shutdown
 * would wait for ever. Generous: an fsync on a busy disk can take seconds.
 */
export const STALL_MS = 10_000;

/** What every batching sink needs; each sink resolves its own defaults. */
export interface BatchingOptions {
  /** Longest a record waits in memory before its batch is written. */
  flushIntervalMs: number;
  /** Records waiting for storage beyond which new ones are refused (closed) or dropped (open). */
  maxBuffered: number;
  /** Where write failures, recoveries, refusals and drops are reported. */
  log: (msg: string) => void;
  /** A record whose JSON line is longer than this many UTF-8 bytes can never be stored. */
  maxLineBytes?: number;
  /** Wait before the retry after the n-th consecutive failed batch (default: flushIntervalMs). */
  retryDelayMs?: (failures: number) => number;
  /**
   * A write still not answered after this long counts as a stall (default {@link STALL_MS}):
   * in closed mode new records are refused until it ends, and close() stops waiting for it.
   */
  stallMs?: number;
  /** Default `closed`. */
  failureMode?: AuditFailureMode;
  /** Records carry a `mac` under this key, and so do anchors. */
  key?: KeyObject | undefined;
  /** Where and how often the chain head is anchored; without it, never (in-memory test sinks). */
  anchor?: { store: AuditAnchorStore; intervalMs: number } | undefined;
  timings?: AuditTimings | undefined;
}

/** A stored line and where it is: what an anchor names. */
export interface DurableLine {
  /** The record's JSON line. */
  text: string;
  /** Its segment's sequence number. */
  segment: number;
  /** Its 1-based line within the segment. */
  line: number;
}

/** What {@link BatchingAuditSink.writeSome} stored: `count` lines, the last of them at `segment`:`line`. */
export interface StoredLines {
  count: number;
  segment: number;
  line: number;
}

/**
 * The part of a sink that both the file and the ConfigMap sink share: the hash chain head,
 * the in-memory buffer with its bound, batching on a timer or `flush()`, serialised writes,
 * retry after a failure, the failure mode (refuse or drop what cannot be taken), and anchoring
 * the last durable record. A subclass says how a batch reaches storage (`writeSome`) and how
 * stored records are read (`scan`, with {@link bufferedLines} for what is still in memory);
 * `query` is a scan.
 *
 * Invariant for scans: a line leaves the buffer in the same tick as the subclass records it
 * as stored, so a synchronous snapshot of "stored extent + buffered lines" sees every record
 * exactly once.
 *
 * @example
 * class MemorySink extends BatchingAuditSink {
 *   readonly stored: string[] = [];
 *   constructor() { super(GENESIS_HASH, undefined, { flushIntervalMs: 100, maxBuffered: 1000, log: console.warn }); }
 *   protected async writeSome(lines: readonly string[]) { this.stored.push(...lines); return { count: lines.length, segment: 1, line: this.stored.length }; }
 *   protected describeTarget() { return 'memory'; }
 *   async scan(filter, visit) { … this.bufferedLines() then this.stored, newest first … }
 * }
 */
export abstract class BatchingAuditSink implements AuditSink {
  readonly failureMode: AuditFailureMode;
  /** JSON lines of records appended but not yet handed to storage, oldest first. */
  private pending: string[] = [];
  /** Lines of the batch being written; moved out only once stored. */
  private inflight: string[] = [];
  private written = 0;
  private dropped = 0;
  private refused = 0;
  /** The run of lost records being reported (logged once, summarised when it ends). */
  private lossRun: { what: 'refused' | 'dropped'; before: number } | undefined;
  /** Consecutive failed batches; 0 while writes succeed. */
  private failures = 0;
  /** Failed batches since start (AuditStats.failedWrites). */
  private failedWrites = 0;
  /** The last write error, for refusal reasons. */
  private lastError = '';
  /** Set while the write in progress has gone unanswered for stallMs: why, for refusals. */
  private stalled: string | undefined;
  private stallTimer: NodeJS.Timeout | undefined;
  /** What close() does when a stall begins while it waits. */
  private onStall: (() => void) | undefined;
  /**
   * close() gave up on a stalled storage and handed every unstored record to its caller: no
   * batch may be written after that, or a record would be both in the log and in the caller's
   * hands (appended again, a duplicate that breaks the chain).
   */
  private abandoned = false;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  /** Serialises batches so records reach storage in chain order. */
  private writes: Promise<void> = Promise.resolve();
  /** A batch this large is written at once rather than waiting for the timer. */
  private readonly highWater: number;
  /** Text of the line the last anchor names (a new anchor is written only when this moves). */
  private anchoredText: string | undefined;
  private anchorTimer: NodeJS.Timeout | undefined;
  /** Serialises anchor writes; never rejects. */
  private anchoring: Promise<void> = Promise.resolve();
  private anchorFailures = 0;
  /** The log was empty on open (anchored at genesis): anchor right after the first write instead of an interval later. */
  private anchorSoon: boolean;
  /**
   * Runs batches, retries and their log lines in the context the sink was opened in, not in
   * that of the request whose record happened to start them: their log lines must not carry
   * that request's trace and action ids (docs/observability.md).
   */
  private readonly background = new AsyncResource('policyguard.audit-batches');

  /**
   * `head`: the chain head to continue from. `durable`: the last stored record (what a new
   * anchor names until more records are stored), undefined for an empty log.
   */
  protected constructor(
    private head: string,
    private durable: DurableLine | undefined,
    private readonly batching: BatchingOptions,
  ) {
    this.highWater = Math.max(1, Math.floor(batching.maxBuffered / 2));
    this.failureMode = batching.failureMode ?? 'closed';
    this.anchorSoon = durable === undefined;
  }

  /**
   * Stores a non-empty prefix of `lines` (oldest first, each one JSON record without `\n`)
   * and says how many and where the last of them went. Called again with the rest until all
   * are stored. A rejection must mean "not stored" — or, where a store cannot tell (a lost
   * response), the next call must find out and not store the lines twice.
   */
  protected abstract writeSome(lines: readonly string[]): Promise<StoredLines>;

  /** Where batches go right now, for messages (a file path, a ConfigMap name). */
  protected abstract describeTarget(): string;

  abstract scan(filter: AuditFilter, visit: (record: AuditRecord) => boolean | void): Promise<{ scanned: number; matched: number }>;

  /**
   * A stored record a scan is about to serve, read from `line` in `where`, checked: its hash
   * must be its line's ({@link storedLineHashMatches}), and, when `linksTo` is given (the
   * prev_hash of the record after it, read newest first), it must be the record that one links
   * to. Throws an {@link AuditRecordTamperedError} for a record changed on disk, or one removed,
   * inserted or rewritten beside it. MACs are left to `policyguard audit verify`: the replicas
   * whose rings a scan also reads may have had another key.
   */
  protected checkedRecord(record: AuditRecord, line: string, where: string, linksTo?: string): AuditRecord {
    if (!storedLineHashMatches(line, record)) throw new AuditRecordTamperedError(record.entry_id, where, 'hash mismatch: the record was changed after it was written');
    if (linksTo !== undefined && record.hash !== linksTo) {
      throw new AuditRecordTamperedError(record.entry_id, where, 'the record after it does not link to it: records were removed, inserted or rewritten there');
    }
    return record;
  }

  /** The hash the next record links to: the newest taken, stored or still buffered. */
  protected get chainHead(): string {
    return this.head;
  }

  query(q: AuditQuery): Promise<AuditQueryResult> {
    return queryByScan(this, q);
  }

  /** One-line description of a write error (default `String(error)`). */
  protected describeError(error: unknown): string {
    return String(error);
  }

  /** Records appended but not yet stored, oldest first; a snapshot taken synchronously. */
  protected bufferedLines(): string[] {
    return [...this.inflight, ...this.pending];
  }

  get stats(): AuditStats {
    return { written: this.written, dropped: this.dropped, refused: this.refused, buffered: this.buffered, failedWrites: this.failedWrites, writesFailing: this.failures };
  }

  private get buffered(): number {
    return this.pending.length + this.inflight.length;
  }

  available(): string | undefined {
    return this.failureMode === 'closed' ? this.cannotTake() : undefined;
  }

  /** Why a record would be lost now: closed; writes failing (closed mode only); buffer full. */
  private cannotTake(): string | undefined {
    if (this.closed) return 'the audit sink is closed';
    if (this.failureMode === 'closed' && this.failures > 0) {
      return `the last write to ${this.describeTarget()} failed ${this.failures} time(s): ${this.lastError}`;
    }
    if (this.failureMode === 'closed' && this.stalled !== undefined) return this.stalled;
    if (this.buffered >= this.batching.maxBuffered) {
      return `the audit buffer is full: ${this.buffered} records are waiting for ${this.describeTarget()} (maxBuffered)`;
    }
    return undefined;
  }

  append(input: AuditEntryInput): AuditAppendResult {
    const timings = this.batching.timings;
    if (!timings) return this.take(input);
    const started = performance.now();
    const result = this.take(input);
    timings.appended((performance.now() - started) / 1000);
    return result;
  }

  private take(input: AuditEntryInput): AuditAppendResult {
    let sealed = sealAuditRecord(input, this.head, this.batching.key);
    const why = this.cannotTake();
    if (why !== undefined) return this.lose(sealed, input, why, true);
    const max = this.batching.maxLineBytes;
    // A UTF-16 unit is at most 3 UTF-8 bytes: only long lines pay for byteLength.
    const tooLong = (line: string) => max !== undefined && line.length * 3 > max && Buffer.byteLength(line) > max;
    if (tooLong(sealed.line)) {
      // The parameters made it so (the rest is bounded): kept without the largest, not lost.
      sealed = sealAuditRecord(withParametersOmitted(input, Buffer.byteLength(sealed.line), max!), this.head, this.batching.key);
      if (tooLong(sealed.line)) {
        return this.lose(sealed, input, `the record is too large even with its largest parameters omitted: ${Buffer.byteLength(sealed.line)} bytes, more than the ${max} one record may take`, false);
      }
    }
    const { line } = sealed;
    // Only a record that will be written moves the head, so losses never break the chain.
    this.pending.push(line);
    this.head = sealed.hash;
    if (this.pending.length === this.highWater) this.flushNow();
    else this.scheduleFlush(this.batching.flushIntervalMs);
    return appendResult(sealed, { ok: true });
  }

  /**
   * Counts a record the log does not take: refused in closed mode, dropped in open mode.
   * `lasting`: the cause lasts (closed, failing, full), so only the first of a run is logged and
   * the run is summarised when it ends; otherwise (too large) each record is logged.
   */
  private lose(sealed: SealedAuditRecord, input: AuditEntryInput, why: string, lasting: boolean): AuditAppendResult {
    const refuse = this.failureMode === 'closed';
    const what = refuse ? 'refused' : 'dropped';
    const count = refuse ? ++this.refused : ++this.dropped;
    // The target as the record stores it: a connection string's password is not logged either.
    const about = `${sealed.entry_id} (agent ${input.agent_id}, ${input.action.type} ${redactSecretText(input.action.target)})`;
    const consequence = refuse ? 'its decision is denied' : 'its decision went on';
    if (!lasting) {
      this.batching.log(`${what.toUpperCase()} audit record ${about}: ${why}; ${consequence}. Counted in stats.${what}; the chain continues without it.`);
    } else if (!this.lossRun) {
      this.lossRun = { what, before: count - 1 };
      this.batching.log(
        `${refuse ? 'REFUSING' : 'DROPPING'} audit records (${refuse ? 'their decisions are denied' : 'their decisions go on'}): ${why}. ` +
          `First ${what}: ${about}. Further ones are counted in stats.${what} and summarised once the log takes records again.`,
      );
    }
    return appendResult(sealed, refuse ? { ok: false, reason: why } : { ok: true, dropped: why });
  }

  flush(): Promise<void> {
    const batch = this.writes.then(() => this.writePending());
    this.writes = batch.catch(() => undefined);
    return batch;
  }

  /**
   * Writes the first anchor (naming what the log held on open; the genesis anchor for an empty
   * log, before any record is taken) and starts anchoring every interval. Rejects when the
   * anchor cannot be written, so a sink whose anchor store is unreachable or not writable does
   * not start. Called once by the open function.
   */
  async start(): Promise<void> {
    const anchor = this.batching.anchor;
    if (!anchor) return;
    try {
      await this.writeAnchor();
    } catch (error) {
      throw new Error(`cannot write the audit anchor (${anchor.store.location}): ${this.describeError(error)}`, { cause: error });
    }
    this.anchorTimer = setInterval(() => void this.anchor(), anchor.intervalMs);
    // Anchoring must not keep the process alive; close() writes the last anchor.
    this.anchorTimer.unref();
  }

  /**
   * Anchors the last durable record unless the anchor names it already. Never rejects: a
   * failure is logged (once per run of failures) and the next interval tries again.
   */
  anchor(): Promise<void> {
    const run = this.anchoring.then(() =>
      this.writeAnchor().then(
        () => {
          if (this.anchorFailures > 0) this.batching.log(`audit anchoring recovered after ${this.anchorFailures} failed attempt(s)`);
          this.anchorFailures = 0;
        },
        (error: unknown) => {
          if (++this.anchorFailures === 1) {
            this.batching.log(
              `could not anchor the audit chain at ${this.batching.anchor?.store.location}: ${this.describeError(error)}; ` +
                `retrying every ${this.batching.anchor?.intervalMs} ms (records after the last anchor can be cut off unnoticed meanwhile)`,
            );
          }
        },
      ),
    );
    this.anchoring = run;
    return run;
  }

  /**
   * Anchors the last durable record, or, while the log holds none, its start (the genesis
   * anchor): start() writes that before the sink takes a record, so a crash before the first
   * record's anchor leaves a log its anchor vouches for, not one the next start refuses.
   */
  private async writeAnchor(): Promise<void> {
    const anchor = this.batching.anchor;
    // A snapshot: the anchor names a record that is durable now, never a buffered one.
    const durable = this.durable;
    // '' is no record's line: it stands for the genesis anchor.
    const text = durable?.text ?? '';
    if (!anchor || text === this.anchoredText) return;
    let point: AnchorPoint = GENESIS_POINT;
    if (durable) {
      const { entry_id, hash } = JSON.parse(durable.text) as AuditRecord;
      point = { entry_id, hash, segment: durable.segment, line: durable.line };
    }
    await anchor.store.write(createAnchor(point, this.batching.key));
    this.anchoredText = text;
  }

  /**
   * Flushes, anchors, stops the timers. When the last flush fails, rejects with an
   * {@link AuditRecordsUnwrittenError} carrying the lines of every record that was taken but not
   * stored: nothing retries after close, so they are what the caller can still save.
   */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    clearInterval(this.anchorTimer);
    this.anchorTimer = undefined;
    // A stalled storage is not waited for: the records it has not taken go to the caller.
    const stall = new Promise<never>((_, reject) => {
      this.onStall = () => reject(new AuditWriteError(this.stalled));
      if (this.stalled !== undefined) this.onStall();
    });
    try {
      await Promise.race([this.flush(), stall]);
    } catch (error) {
      const why =
        this.stalled === undefined
          ? this.lastError
          : `${this.stalled}. The first ${this.inflight.length} of these lines were being written and may still reach it (no other will): compare them with the log's end before appending them`;
      if (this.stalled !== undefined) this.abandoned = true;
      throw new AuditRecordsUnwrittenError(this.describeTarget(), this.bufferedLines(), why, error);
    } finally {
      this.onStall = undefined;
      // Whatever the flush managed to store is anchored, even when it failed part-way; not on
      // a storage that stopped answering (the anchor would wait on it too).
      if (this.stalled === undefined) await this.anchor();
    }
  }

  private scheduleFlush(delayMs: number): void {
    if (this.timer || this.closed) return;
    this.timer = this.background.runInAsyncScope(setTimeout, undefined, () => {
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
    this.background.runInAsyncScope(() => this.flush()).catch(() => undefined);
  }

  private async writePending(): Promise<void> {
    if (this.pending.length === 0 || this.abandoned) return;
    this.inflight = this.pending;
    this.pending = [];
    try {
      while (this.inflight.length > 0) {
        const started = performance.now();
        this.watchForStall();
        const stored = await this.writeSome(this.inflight).finally(() => this.stallEnded(started));
        // Given up on by close(): what that write stored is all that may reach the log.
        if (this.abandoned) return;
        this.batching.timings?.written((performance.now() - started) / 1000);
        const { count } = stored;
        if (!Number.isSafeInteger(count) || count < 1 || count > this.inflight.length) {
          throw new Error(`writeSome stored ${count} of ${this.inflight.length} lines`);
        }
        // Same tick as the subclass recorded them as stored: a scan sees them once, and an
        // anchor taken from here on names the last of them.
        this.durable = { text: this.inflight[count - 1] ?? '', segment: stored.segment, line: stored.line };
        this.inflight = this.inflight.slice(count);
        this.written += count;
      }
    } catch (error) {
      const kept = this.inflight.length + this.pending.length;
      this.pending = this.inflight.concat(this.pending);
      this.inflight = [];
      this.failures++;
      this.failedWrites++;
      this.lastError = this.describeError(error);
      const retryMs = this.batching.retryDelayMs?.(this.failures) ?? this.batching.flushIntervalMs;
      // After close() gave up on the stall this write ended, nothing is retried: its lines are
      // in the caller's hands already.
      if (this.failures === 1 && !this.abandoned) {
        this.batching.log(
          `audit write to ${this.describeTarget()} failed; ${kept} records kept in memory, retrying in ${retryMs} ms` +
            `${this.failureMode === 'closed' ? ', new records refused (their decisions denied) until a write succeeds' : ''}: ${this.lastError}`,
        );
      }
      this.scheduleFlush(retryMs);
      throw new AuditWriteError(`could not write audit records to ${this.describeTarget()}`, { cause: error });
    }
    this.noteSuccess();
    if (this.anchorSoon) {
      // Once: the genesis anchor vouches for no record, so the first batch is anchored now, not
      // an interval later (until then, records cut off a new log would go unnoticed).
      this.anchorSoon = false;
      await this.anchor();
    }
  }

  /** Counts the write starting now as stalled once it has gone unanswered for stallMs. */
  private watchForStall(): void {
    const stallMs = this.batching.stallMs ?? STALL_MS;
    this.stallTimer = setTimeout(() => {
      this.stalled = `a write to ${this.describeTarget()} has not been answered for ${stallMs / 1000} s (the storage stopped answering)`;
      this.batching.log(
        `${this.stalled}; ${this.buffered} records wait in memory` +
          `${this.failureMode === 'closed' ? ', new records refused (their decisions denied) until it answers' : ''}`,
      );
      this.onStall?.();
    }, stallMs);
    // Watching must not keep the process alive.
    this.stallTimer.unref();
  }

  private stallEnded(started: number): void {
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    if (this.stalled === undefined) return;
    this.stalled = undefined;
    this.batching.log(`the stalled write to ${this.describeTarget()} was answered after ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }

  private noteSuccess(): void {
    if (this.failures > 0) {
      this.batching.log(`audit writes recovered after ${this.failures} failed attempt(s)`);
      this.failures = 0;
    }
    if (this.lossRun && this.cannotTake() === undefined) {
      const { what, before } = this.lossRun;
      const lost = (what === 'refused' ? this.refused : this.dropped) - before;
      this.lossRun = undefined;
      this.batching.log(`audit log takes records again; ${lost} records were ${what} meanwhile`);
    }
  }
}

/**
 * An append's answer. Its `record` is parsed from the stored line when first read: a decision
 * never reads it, so the hot path does not pay for a parse.
 *
 * `record` is a getter on this class's prototype, not one written into each answer: V8 keeps
 * the accessor of an object literal's `get record() {…}` in old space from the start, so every
 * answer's getter, and the line it closes over, outlived the young generation. That promoted
 * ~1 KB per decision and made the minor GC pauses of a server at 2,000 decisions/s ~3 ms
 * instead of ~1 ms (docs/performance.md, "What the seventh pass changed"). The line is a
 * private field, so an answer's own keys are `ok` and, when they apply, `reason` or `dropped`.
 */
class AppendResult {
  readonly ok: boolean;
  // `declare`: set only when they apply, so an answer has no `reason` or `dropped` key otherwise.
  declare readonly reason?: string;
  declare readonly dropped?: string;
  readonly #line: string;
  #record: AuditRecord | undefined;

  constructor(line: string, outcome: { ok: true; dropped?: string } | { ok: false; reason: string }) {
    this.#line = line;
    this.ok = outcome.ok;
    if (!outcome.ok) this.reason = outcome.reason;
    else if (outcome.dropped !== undefined) this.dropped = outcome.dropped;
  }

  get record(): AuditRecord {
    return (this.#record ??= JSON.parse(this.#line) as AuditRecord);
  }
}

function appendResult(sealed: SealedAuditRecord, outcome: { ok: true; dropped?: string } | { ok: false; reason: string }): AuditAppendResult {
  return new AppendResult(sealed.line, outcome) as AuditAppendResult;
}
