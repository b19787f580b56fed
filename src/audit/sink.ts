import type { AuditEntryInput, AuditRecord } from './record.js';

/** Filters for {@link AuditSink.query}; all given filters must match. */
export interface AuditQuery {
  /** Only records with `timestamp >= since`. */
  since?: Date;
  agentId?: string;
  actionType?: string;
  /** `denied` means `evaluation.allowed === false` (so it includes require_approval). */
  status?: 'allowed' | 'denied';
  /** Most entries to return; `total` still counts every match. */
  limit: number;
}

export interface AuditQueryResult {
  /** Newest first, at most `limit`. */
  entries: AuditRecord[];
  /** Matches before `limit` was applied. */
  total: number;
}

/** Where audit records go: the file sink (file-sink.ts) or the ConfigMap ring (configmap-sink.ts). */
export interface AuditSink {
  /**
   * Redacts parameters and context, assigns entry_id, timestamp, prev_hash and hash, and
   * enqueues the record for writing. Synchronous so a decision is never delayed by the disk;
   * never throws for a well-typed input. When the sink cannot take it (buffer full, closed) the
   * record is still returned but not stored, and counted in `stats.dropped`.
   */
  append(input: AuditEntryInput): AuditRecord;
  /** Sees every appended record, including those still buffered. */
  query(q: AuditQuery): Promise<AuditQueryResult>;
  /** Resolves when every record appended before the call is durable; rejects if a write failed. */
  flush(): Promise<void>;
  /** Flush, then release timers and files. */
  close(): Promise<void>;
  /** `dropped` counts records lost because the buffer was full; `buffered` are not yet durable. */
  readonly stats: { written: number; dropped: number; buffered: number };
}

/** A sink could not persist records; they stay buffered and are retried. */
export class AuditWriteError extends Error {
  override readonly name = 'AuditWriteError';
}

/**
 * Whether `record` passes the filters of `q` (everything but `limit`). Shared by the sinks so
 * they agree on what a filter means.
 *
 * @example
 * matchesAuditQuery(record, { status: 'denied', since: new Date(Date.now() - 3_600_000), limit: 100 });
 */
export function matchesAuditQuery(record: AuditRecord, q: AuditQuery): boolean {
  if (q.since && Date.parse(record.timestamp) < q.since.getTime()) return false;
  if (q.agentId !== undefined && record.agent_id !== q.agentId) return false;
  if (q.actionType !== undefined && record.action.type !== q.actionType) return false;
  if (q.status !== undefined && record.evaluation.allowed !== (q.status === 'allowed')) return false;
  return true;
}
