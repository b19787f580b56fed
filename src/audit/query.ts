import { incidentFromAudit } from './audit-incidents.js';
import { isOutcomeRecord } from './outcomes.js';
import type { AuditRecord } from './record.js';
import type { AuditEntryKind, AuditFilter, AuditQuery, AuditQueryResult, AuditSink } from './sink.js';

/**
 * What a record is, read from what is stored (nothing extra is written): `incident` when
 * {@link incidentFromAudit} recognises it (kubernetes mode keeps incidents in the audit log; they
 * carry the deny's action_id), `outcome` for an upstream's answer to a gated call (outcomes.ts),
 * `decision` when it has an action_id otherwise, `admin` for the rest (the administrative
 * entries of tools.ts have action_id null).
 *
 * @example
 * const decisions = entries.filter((e) => auditEntryKind(e) === 'decision');
 */
export function auditEntryKind(record: AuditRecord): AuditEntryKind {
  if (incidentFromAudit(record)) return 'incident';
  if (isOutcomeRecord(record)) return 'outcome';
  return record.action_id === null ? 'admin' : 'decision';
}

/**
 * Whether `record` passes `filter`. The one definition both sinks use, so they agree on what a
 * filter means. A `status` matches decisions only; the kind is worked out only when a filter
 * needs it.
 *
 * @example
 * matchesAuditQuery(record, { status: 'denied', since: new Date(Date.now() - 3_600_000) });
 */
export function matchesAuditQuery(record: AuditRecord, filter: AuditFilter): boolean {
  if (filter.since && Date.parse(record.timestamp) < filter.since.getTime()) return false;
  if (filter.agentId !== undefined && record.agent_id !== filter.agentId) return false;
  if (filter.actionType !== undefined && record.action.type !== filter.actionType) return false;
  if (filter.scope && !filter.scope.agentIds.has(record.agent_id) && record.caller !== filter.scope.caller) return false;
  if (filter.status !== undefined && record.evaluation.allowed !== (filter.status === 'allowed')) return false;
  if (filter.status !== undefined || filter.kinds !== undefined) {
    const kind = auditEntryKind(record);
    if (filter.status !== undefined && kind !== 'decision') return false;
    if (filter.kinds !== undefined && !filter.kinds.includes(kind)) return false;
  }
  return true;
}

/**
 * `query` on top of `scan`: the newest `limit` matches, as many as fit in `maxBytes`, and the
 * count of all of them. Both sinks answer queries this way, so ordering and filtering live in
 * one place (their scans). The byte bound keeps an answer's memory bounded whatever records
 * callers made large (a record may hold up to ~4 MiB of arguments).
 *
 * @example
 * query(q) { return queryByScan(this, q); }
 */
export async function queryByScan(sink: Pick<AuditSink, 'scan'>, q: AuditQuery): Promise<AuditQueryResult> {
  const limit = Math.max(0, Math.floor(q.limit));
  const entries: AuditRecord[] = [];
  let bytes = 0;
  let leftOut = 0;
  const { matched } = await sink.scan(q, (record) => {
    if (entries.length + leftOut >= limit) return;
    if (q.maxBytes !== undefined) {
      const size = leftOut > 0 ? Infinity : Buffer.byteLength(JSON.stringify(record));
      if (entries.length > 0 && bytes + size > q.maxBytes) {
        leftOut++;
        return;
      }
      bytes += size;
    }
    entries.push(record);
  });
  return { entries, total: matched, leftOut };
}
