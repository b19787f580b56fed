import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SYSTEM_AGENT_ID, createAuditIncidentLog } from './audit-incidents.js';
import { openFileAuditSink } from './file-sink.js';
import { incidentInput } from './incident-fixture.js';
import type { IncidentInput, IncidentRecord } from './incident-file.js';
import type { AuditSink } from './sink.js';
import { verifyAuditChain } from './verify.js';

let dir: string;
const sinks: AuditSink[] = [];
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pg-audit-incidents-'));
});
afterEach(async () => {
  vi.useRealTimers();
  await Promise.allSettled(sinks.splice(0).map((sink) => sink.close()));
  await rm(dir, { recursive: true, force: true });
});

async function openSink(opts: { failureMode?: 'closed' | 'open' } = {}): Promise<AuditSink> {
  const sink = await openFileAuditSink({ dir, flushIntervalMs: 3_600_000, log: () => undefined, ...opts });
  sinks.push(sink);
  return sink;
}

const incident = (overrides: Partial<IncidentInput> = {}): IncidentInput => incidentInput({ severity: 'high', ...overrides });

describe('incident log in the audit log', () => {
  it('appends an audit entry of type incident and returns the incident it holds', async () => {
    const audit = await openSink();
    const seen: IncidentRecord[] = [];
    const log = createAuditIncidentLog(audit, (i) => seen.push(i));
    const recorded = await log.record(incident());

    const { entries } = await audit.query({ limit: 10 });
    expect(entries).toHaveLength(1);
    const entry = entries[0]!;
    expect(entry).toMatchObject({
      action_id: 'act_0123456789ab',
      agent_id: 'agent-1',
      caller: null,
      action: {
        type: 'incident',
        target: recorded.incident_id,
        parameters: {
          type: 'policy_violation',
          severity: 'high',
          description: 'denied shell.exec',
          evidence: { target: 'shell.exec', headers: { Authorization: '[REDACTED]' } },
          recommended_action: 'review the agent',
          status: 'open',
          resolution: null,
        },
        context: '',
      },
      evaluation: { allowed: true, decision: 'allow', require_approval: false, reason: 'incident recorded', matched: [], audit_findings: [] },
      revision: '',
    });
    // Nothing the entry already says is repeated in the parameters.
    expect(Object.keys(entry.action.parameters).sort()).toEqual(
      ['description', 'evidence', 'recommended_action', 'resolution', 'severity', 'status', 'type'],
    );
    expect(recorded).toEqual({
      incident_id: expect.stringMatching(/^inc_[0-9a-f]{12}$/),
      timestamp: entry.timestamp,
      type: 'policy_violation',
      severity: 'high',
      description: 'denied shell.exec',
      agent_id: 'agent-1',
      action_id: 'act_0123456789ab',
      evidence: { target: 'shell.exec', headers: { Authorization: '[REDACTED]' } },
      recommended_action: 'review the agent',
      status: 'open',
      resolution: null,
    });
    expect(seen).toEqual([recorded]);
    await audit.flush();
    expect(await readFile(join(dir, 'audit-000001.jsonl'), 'utf8')).not.toContain('Bearer abc');
  });

  it('attributes an incident about no agent to the system, and reads agent_id back as null', async () => {
    const audit = await openSink();
    const log = createAuditIncidentLog(audit);
    const recorded = await log.record(incident({ agent_id: null, action_id: undefined }));
    const { entries } = await audit.query({ limit: 1 });
    expect(entries[0]).toMatchObject({ agent_id: SYSTEM_AGENT_ID, action_id: null });
    expect(recorded).toMatchObject({ agent_id: null, action_id: null });
    expect(await log.list()).toEqual([recorded]);
  });

  it('lists incidents newest first across a reopen, in the verified chain, skipping other entries', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2026-01-01T00:00:00.000Z'));
    const audit = await openSink();
    const log = createAuditIncidentLog(audit);
    const first = await log.record(incident({ description: 'first' }));
    // A decision about an action an agent called "incident" is not an incident.
    audit.append({
      action_id: null,
      agent_id: 'agent-1',
      caller: 'system:serviceaccount:x:y',
      action: { type: 'incident', target: 'inc_000000000000', parameters: {}, context: '' },
      evaluation: { allowed: false, decision: 'deny', require_approval: false, reason: 'no', matched: [], audit_findings: [] },
      revision: 'rev-1',
    });
    vi.setSystemTime(new Date('2026-01-01T01:00:00.000Z'));
    const second = await log.record(incident({ description: 'second', severity: 'critical' }));
    await audit.close();

    const reopened = createAuditIncidentLog(await openSink());
    expect(await reopened.list()).toEqual([second, first]);
    expect(await reopened.list(new Date('2026-01-01T00:30:00.000Z'))).toEqual([second]);
    expect(await verifyAuditChain(dir)).toMatchObject({ ok: true, records: 3, segments: 1 });
  });

  it('asks the log for incidents only, bounded in bytes: decisions an agent called "incident", however large, are never gathered', async () => {
    const audit = await openSink();
    const log = createAuditIncidentLog(audit);
    const real = await log.record(incident({ description: 'real' }));
    for (let i = 0; i < 3; i++) {
      audit.append({
        action_id: null,
        agent_id: 'agent-1',
        caller: 'token:agent-1',
        action: { type: 'incident', target: 'inc_000000000000', parameters: { blob: 'x'.repeat(200_000), i }, context: '' },
        evaluation: { allowed: false, decision: 'deny', require_approval: false, reason: 'no', matched: [], audit_findings: [] },
        revision: 'rev-1',
      });
    }
    const gathered: number[] = [];
    const query = audit.query.bind(audit);
    const watched: AuditSink = Object.assign(Object.create(audit) as AuditSink, {
      query: async (q: Parameters<AuditSink['query']>[0]) => {
        expect(q.maxBytes).toBeGreaterThan(0);
        const result = await query(q);
        gathered.push(result.entries.length);
        return result;
      },
    });
    expect(await createAuditIncidentLog(watched).list()).toEqual([real]);
    expect(gathered).toEqual([1]);
    await audit.close();
  });

  it.each([
    ['closed', 'refused'],
    ['open', 'dropped'],
  ] as const)('rejects when the %s-mode sink %s the entry, and still raises it through onIncident', async (failureMode, what) => {
    const audit = await openSink({ failureMode });
    const seen: IncidentRecord[] = [];
    const log = createAuditIncidentLog(audit, (i) => seen.push(i));
    await audit.close();
    await expect(log.record(incident())).rejects.toThrow(new RegExp(`was not stored: the audit sink ${what} its entry aud_\\w+: the audit sink is closed`));
    expect(audit.stats[what]).toBe(1);
    expect(seen).toHaveLength(1);
  });

  it('says so when onIncident throws, with the incident stored anyway', async () => {
    const audit = await openSink();
    const log = createAuditIncidentLog(audit, () => {
      throw new Error('events API down');
    });
    await expect(log.record(incident())).rejects.toThrow(/is in the audit log, but onIncident failed: Error: events API down/);
    expect(await log.list()).toHaveLength(1);
  });
});
