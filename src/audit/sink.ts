import type { AuditEntryInput, AuditRecord } from './record.js';

/**
 * What a record is: a decision of `validate_action` (it has an `action_id`), an administrative
 * change (register_agent, create_policy, report_incident: no `action_id`), an incident of
 * kubernetes mode (audit-incidents.ts), or what an upstream answered to a call the gateway let
 * through (outcomes.ts). See {@link auditEntryKind} in query.ts.
 */
export type AuditEntryKind = 'decision' | 'admin' | 'incident' | 'outcome';

/** Records a caller may see: those of its agents, and those it caused itself. */
export interface AuditScope {
  agentIds: ReadonlySet<string>;
  /** A record whose `caller` is this is in scope whatever its agent. */
  caller: string;
}

/** Filters for {@link AuditSink.scan} and {@link AuditSink.query}; all given filters must match. */
export interface AuditFilter {
  /** Only records with `timestamp >= since`. */
  since?: Date;
  agentId?: string;
  actionType?: string;
  /**
   * Decisions only: `allowed` or `denied` (`evaluation.allowed === false`, so it includes
   * require_approval). Admin and incident entries never match a status.
   */
  status?: 'allowed' | 'denied';
  /** Only records of these kinds. */
  kinds?: readonly AuditEntryKind[];
  /** Only records in this scope. */
  scope?: AuditScope;
}

/** An {@link AuditFilter} with a bound on the entries returned. */
export interface AuditQuery extends AuditFilter {
  /** Most entries to return; `total` still counts every match. */
  limit: number;
  /** Most bytes of entries (as JSON) to return, the first entry always; undefined: no bound. */
  maxBytes?: number;
}

export interface AuditQueryResult {
  /** Newest first, at most `limit`. */
  entries: AuditRecord[];
  /** Matches before `limit` was applied. */
  total: number;
  /** Entries within `limit` left out because they would have passed `maxBytes`. */
  leftOut: number;
}

/**
 * What a sink does when it cannot take a record (docs/decisions.md): `closed` refuses it, and
 * the caller denies the decision; `open` drops it (counted, logged) and the decision goes on.
 */
export type AuditFailureMode = 'closed' | 'open';

/**
 * The answer of {@link AuditSink.append}. `ok` says whether the caller may act on what the
 * record describes. `ok: false` (closed mode): the record was refused and is not stored; deny
 * with `audit log unavailable: ${reason}`. `ok: true` with `dropped` (open mode only): the record
 * is lost (counted in `stats.dropped`, logged) and the caller goes on regardless. `record` is the
 * record as stored (or as it would have been), parsed from its line when first read: a getter,
 * so a spread or JSON copy of an answer leaves it out (read `record`, do not copy the answer).
 */
export type AuditAppendResult =
  | { ok: true; record: AuditRecord; dropped?: string }
  | { ok: false; record: AuditRecord; reason: string };

export interface AuditStats {
  /** Records stored. */
  written: number;
  /** Open mode: records lost (buffer full, closed, too large even with their largest parameters omitted); their decisions went on. */
  dropped: number;
  /** Closed mode: records refused (writes failing, buffer full, closed, too large even with their largest parameters omitted); their decisions were denied. */
  refused: number;
  /** Records appended but not yet durable. */
  buffered: number;
  /**
   * Writes to storage that failed since start, each retry counted: in open mode, where no
   * decision is denied for it, the sign that records wait in memory for a log that refuses them.
   */
  failedWrites: number;
  /** Writes that failed in a row, up to now: 0 once one succeeds (what an alert on a lasting failure reads). */
  writesFailing: number;
}

/** Where audit records go: the file sink (file-sink.ts) or the ConfigMap ring (configmap-sink.ts). */
export interface AuditSink {
  /**
   * Redacts parameters and context, assigns entry_id, timestamp, prev_hash, hash (and mac with
   * a key), and enqueues the record for writing. Synchronous and cheap so a decision is never
   * delayed by the disk; never throws for a well-typed input. Whether the record was taken is
   * in the result.
   */
  append(input: AuditEntryInput): AuditAppendResult;
  /**
   * Why {@link append} would refuse a record now (closed mode: the sink is closed, its writes
   * are failing, or its buffer is full), or undefined when it would take one. Always undefined
   * in open mode. Cheap: meant to be asked before an administrative change is made, so a change
   * the log cannot record is not made at all.
   */
  available(): string | undefined;
  /**
   * Visits the records that match `filter`, newest first, including those still buffered,
   * until `visit` returns false. Memory stays bounded by what `visit` keeps (the ConfigMap sink
   * reads its rings whole: at most ring size × 900 KiB per replica). `scanned` counts the
   * records read, `matched` those passed to `visit`.
   */
  scan(filter: AuditFilter, visit: (record: AuditRecord) => boolean | void): Promise<{ scanned: number; matched: number }>;
  /** The newest `limit` matching records and how many match in all: a {@link scan}. */
  query(q: AuditQuery): Promise<AuditQueryResult>;
  /** Resolves when every record appended before the call is durable; rejects if a write failed. */
  flush(): Promise<void>;
  /**
   * Flush, anchor the chain head, then release timers and files. Rejects with an
   * {@link AuditRecordsUnwrittenError} when records it took could not be stored.
   */
  close(): Promise<void>;
  readonly failureMode: AuditFailureMode;
  readonly stats: AuditStats;
}

/**
 * A read of the log met a record whose hash is not its text's, or that does not link to the
 * record after it (./batching-sink.ts, checkedRecord): the read is refused, naming it, rather
 * than serving a log changed on disk.
 */
export class AuditRecordTamperedError extends Error {
  override readonly name = 'AuditRecordTamperedError';
  constructor(entryId: string, where: string, why: string) {
    super(`the audit log holds a record that was changed after it was written: ${entryId} in ${where} (${why}); nothing is read from it until \`policyguard audit verify\` has been run and the log put right`);
  }
}

/** A sink could not persist records; they stay buffered and are retried. */
export class AuditWriteError extends Error {
  override readonly name: string = 'AuditWriteError';
}

/** Ids named in the message of an {@link AuditRecordsUnwrittenError}; every line is in `lines`. */
const IDS_IN_MESSAGE = 20;

/**
 * A sink was closed with records it had taken (their decisions answered) but could not store:
 * `lines` are those records, oldest first, exactly as they would have been written. They chain
 * onto the last stored record, so appended to the log before anything else is, they verify.
 *
 * @example
 * try { await sink.close(); } catch (e) { if (e instanceof AuditRecordsUnwrittenError) for (const l of e.lines) process.stderr.write(`${l}\n`); }
 */
export class AuditRecordsUnwrittenError extends AuditWriteError {
  override readonly name = 'AuditRecordsUnwrittenError';
  readonly entryIds: readonly string[];

  /** `why`: the last write's error, described. */
  constructor(
    target: string,
    readonly lines: readonly string[],
    why: string,
    cause: unknown,
  ) {
    const entryIds = lines.map((line) => (JSON.parse(line) as { entry_id: string }).entry_id);
    const named = entryIds.slice(0, IDS_IN_MESSAGE).join(', ') + (entryIds.length > IDS_IN_MESSAGE ? ` and ${entryIds.length - IDS_IN_MESSAGE} more` : '');
    super(
      `${lines.length} audit record(s) were answered but never written to ${target}, and are not in the audit log: ${named}. ` +
        `The last write failed: ${why}`,
      { cause },
    );
    this.entryIds = entryIds;
  }
}
