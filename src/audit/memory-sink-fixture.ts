/**
 * Decision records with chosen timestamps, and an in-memory `scan` over them (newest first, with
 * the sinks' own filter), for tests of the aggregation and the report window. Test-only.
 */
import { matchesAuditQuery } from './query.js';
import type { AuditRecord } from './record.js';
import type { AuditSink } from './sink.js';

let counter = 0;

/** A decision record at `at` (epoch ms); `matched` and `findings` are stored as given. */
export function decisionRecord(d: {
  at: number;
  agent: string;
  target: string;
  decision: 'allow' | 'deny' | 'require_approval';
  matched?: unknown[];
  findings?: unknown[];
  type?: string;
  caller?: string;
}): AuditRecord {
  const n = (++counter).toString(16).padStart(12, '0');
  return {
    entry_id: `aud_${n}`,
    timestamp: new Date(d.at).toISOString(),
    action_id: `act_${n}`,
    agent_id: d.agent,
    caller: d.caller ?? null,
    action: { type: d.type ?? 'tool_call', target: d.target, parameters: {}, context: '' },
    evaluation: { allowed: d.decision === 'allow', decision: d.decision, require_approval: d.decision === 'require_approval', reason: 'test', matched: d.matched ?? [], audit_findings: d.findings ?? [] },
    revision: 'rev-test',
    prev_hash: '0'.repeat(64),
    hash: '0'.repeat(64),
  };
}

/** `records` (more can be pushed later) behind a sink's `scan`; `read` counts the records each scan passed on. */
export function memorySink(records: AuditRecord[] = []): Pick<AuditSink, 'scan'> & { records: AuditRecord[]; read: number } {
  const sink = {
    records,
    read: 0,
    async scan(filter: Parameters<AuditSink['scan']>[0], visit: Parameters<AuditSink['scan']>[1]) {
      const newestFirst = [...sink.records].sort((a, b) => (a.timestamp < b.timestamp ? 1 : a.timestamp > b.timestamp ? -1 : 0));
      let matched = 0;
      for (const r of newestFirst) {
        if (!matchesAuditQuery(r, filter)) continue;
        matched++;
        sink.read++;
        if (visit(r) === false) break;
      }
      return { scanned: newestFirst.length, matched };
    },
  };
  return sink;
}
