import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SYSTEM_AGENT_ID, createAuditIncidentLog } from './audit-incidents.js';
import { openFileAuditSink } from './file-sink.js';
import { incidentInput } from './incident-fixture.js';
import { OUTCOME_ACTION_TYPE, outcomeEntry } from './outcomes.js';
import { auditEntryKind } from './query.js';
import type { AuditEntryInput, AuditRecord } from './record.js';
import type { AuditQuery, AuditSink } from './sink.js';

let dir: string;
let sink: AuditSink;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pg-audit-query-'));
  sink = await openFileAuditSink({ dir, flushIntervalMs: 3_600_000, log: () => undefined });
});
afterEach(async () => {
  await sink.close();
  await rm(dir, { recursive: true, force: true });
});

const decision = (agent: string, allowed: boolean, caller: string | null = null): AuditEntryInput => ({
  action_id: `act_${Math.random().toString(16).slice(2, 14).padEnd(12, '0')}`,
  agent_id: agent,
  caller,
  action: { type: 'tool_call', target: 'db.query', parameters: {}, context: '' },
  evaluation: { allowed, decision: allowed ? 'allow' : 'deny', require_approval: false, reason: 'policy', matched: [], audit_findings: [] },
  revision: 'rev-1',
});

/** What tools.ts writes for register_agent and friends: no action_id, the system agent. */
const admin = (caller: string): AuditEntryInput => ({
  action_id: null,
  agent_id: SYSTEM_AGENT_ID,
  caller,
  action: { type: 'agent_registration', target: 'etl', parameters: {}, context: '' },
  evaluation: { allowed: true, decision: 'allow', require_approval: false, reason: 'Agent registration completed', matched: [], audit_findings: [] },
  revision: 'rev-1',
});

/**
 * Kubernetes mode's log: decisions, the incidents of the denies (audit entries carrying the
 * deny's action_id and allowed: true), and an admin entry. Flushed half-way, so both the
 * stored and the buffered records are filtered.
 */
async function fill(): Promise<Record<string, AuditRecord>> {
  const incidents = createAuditIncidentLog(sink);
  const r: Record<string, AuditRecord> = {};
  r.allowedEtl = sink.append(decision('etl', true, 'sa:etl')).record;
  r.deniedEtl = sink.append(decision('etl', false, 'sa:etl')).record;
  const incident = await incidents.record(incidentInput({ agent_id: 'etl', action_id: r.deniedEtl.action_id }));
  await sink.flush();
  r.incident = (await sink.query({ actionType: 'incident', limit: 1 })).entries[0]!;
  expect(r.incident.action.target).toBe(incident.incident_id);
  r.admin = sink.append(admin('alice')).record;
  r.allowedOps = sink.append(decision('ops', true, 'alice')).record;
  r.deniedOps = sink.append(decision('ops', false, 'sa:ops')).record;
  return r;
}

const ids = async (q: Omit<AuditQuery, 'limit'>) => (await sink.query({ ...q, limit: 100 })).entries.map((e) => e.entry_id);

describe('upstream outcomes', () => {
  it('are their own kind, never counted as decisions, and a decision that looks like one is still a decision', async () => {
    const d = sink.append({ ...decision('bot', true, 'sa:bot'), action: { type: 'tool_call', target: 'create_issue', parameters: {}, context: '', upstream: 'tools/github' } }).record;
    const outcome = sink.append(outcomeEntry({ actionId: d.action_id!, agentId: 'bot', tool: 'create_issue', upstream: 'tools/github', outcome: { status: 200, is_error: false, duration_ms: 12, bytes: 345 } })).record;
    const lookalike = sink.append({ ...decision('bot', true, 'sa:bot'), action: { type: OUTCOME_ACTION_TYPE, target: 'x', parameters: {}, context: '' } }).record;
    expect(auditEntryKind(outcome)).toBe('outcome');
    expect(outcome).toMatchObject({ action_id: d.action_id, action: { upstream: 'tools/github', parameters: { status: 200, is_error: false, bytes: 345 } } });
    expect(auditEntryKind(lookalike)).toBe('decision');
    expect((await sink.query({ kinds: ['decision'], limit: 10 })).entries.map((e) => e.entry_id)).toEqual([lookalike.entry_id, d.entry_id]);
    expect(await ids({ status: 'allowed' })).not.toContain(outcome.entry_id);
  });
});

describe('audit entry kinds', () => {
  it('tells decisions, admin entries and incidents apart from what is stored', async () => {
    const r = await fill();
    expect(auditEntryKind(r.allowedEtl!)).toBe('decision');
    expect(auditEntryKind(r.incident!)).toBe('incident');
    expect(r.incident).toMatchObject({ action_id: r.deniedEtl!.action_id, evaluation: { allowed: true } });
    expect(auditEntryKind(r.admin!)).toBe('admin');
  });

  it('a status filter returns decisions only, never the incidents that carry allowed: true', async () => {
    const r = await fill();
    expect(await ids({ status: 'allowed' })).toEqual([r.allowedOps!.entry_id, r.allowedEtl!.entry_id]);
    expect(await ids({ status: 'denied' })).toEqual([r.deniedOps!.entry_id, r.deniedEtl!.entry_id]);
    // Counting a compliance status over decisions: 4, not 6.
    expect((await sink.query({ kinds: ['decision'], limit: 0 })).total).toBe(4);
  });

  it('filters by kind', async () => {
    const r = await fill();
    expect(await ids({ kinds: ['incident'] })).toEqual([r.incident!.entry_id]);
    expect(await ids({ kinds: ['admin', 'incident'] })).toEqual([r.admin!.entry_id, r.incident!.entry_id]);
    expect(await ids({ kinds: [] })).toEqual([]);
  });

  it('filters by scope: the agents a caller may see, and what it did itself', async () => {
    const r = await fill();
    expect(await ids({ scope: { agentIds: new Set(['etl']), caller: 'alice' } })).toEqual(
      [r.allowedOps, r.admin, r.incident, r.deniedEtl, r.allowedEtl].map((e) => e!.entry_id),
    );
    expect(await ids({ scope: { agentIds: new Set(), caller: 'sa:ops' }, status: 'denied' })).toEqual([r.deniedOps!.entry_id]);
  });
});

describe('an answer bounded in bytes (maxBytes)', () => {
  it('keeps the newest entries that fit, the first always; the rest within the limit are counted as left out, total counts every match', async () => {
    const big = (n: number) => ({ ...decision('etl', true), action: { type: 'tool_call', target: 'db.query', parameters: { n, blob: 'x'.repeat(10_000) }, context: '' } });
    for (let n = 1; n <= 5; n++) sink.append(big(n));
    await sink.flush();
    const size = Buffer.byteLength(JSON.stringify((await sink.query({ limit: 1 })).entries[0]));
    const answer = await sink.query({ limit: 4, maxBytes: size * 2 + 10 });
    expect(answer.entries.map((r) => r.action.parameters['n'])).toEqual([5, 4]);
    expect([answer.leftOut, answer.total]).toEqual([2, 5]);
    // One entry larger than the bound is still answered, alone.
    expect(await sink.query({ limit: 4, maxBytes: 10 })).toMatchObject({ entries: [{ action: { parameters: { n: 5 } } }], leftOut: 3, total: 5 });
    expect((await sink.query({ limit: 4 })).leftOut).toBe(0);
  });
});
