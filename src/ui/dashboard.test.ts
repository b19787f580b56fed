import { describe, expect, it } from 'vitest';
import { guardAgent } from '../api/builders.js';
import type { ApprovalPhase, GuardApproval } from '../api/schemas.js';
import { argumentsDigest, newApproval } from '../approvals/ask.js';
import type { IncidentRecord } from '../audit/incident-file.js';
import { decisionRecord, memorySink } from '../audit/memory-sink-fixture.js';
import type { AuditScope, AuditSink } from '../audit/sink.js';
import { PolicySnapshot } from '../engine/snapshot.js';
import { DEFAULT_ENGINE_OPTIONS } from '../engine/types.js';
import type { AuditRead } from '../mcp/tools.js';
import { printable } from '../printable.js';
import { APPROVALS_MAX, dashboardData, pendingApprovals } from './dashboard.js';

const NOW = new Date('2026-11-29T10:00:00.000Z');
const MINUTE = 60_000;

/** A GuardApproval as PolicyGuard creates it, requested `ago` ms before NOW. */
function approval(over: { agent?: string; by?: string; namespace?: string; target?: string; upstream?: string; parameters?: Record<string, unknown>; message?: string; ago?: number; ttlMs?: number; phase?: ApprovalPhase } = {}): GuardApproval {
  const ask = { agentId: over.agent ?? 'etl-bot', actionType: 'tool_call', target: over.target ?? 'drop_table', ...(over.upstream ? { upstream: over.upstream } : {}), parameters: over.parameters ?? { table: 'users' } };
  const a = newApproval({
    ask,
    digest: argumentsDigest(ask.parameters, undefined),
    namespace: over.namespace,
    matched: [{ policy: 'dba-review', rule: 'drops', action: 'require_approval', enforcement: 'Enforce' }],
    message: over.message ?? 'needs a DBA',
    revision: 'rev-1',
    requestedBy: over.by ?? 'token:etl',
    requesters: [],
    now: new Date(NOW.getTime() - (over.ago ?? MINUTE)),
    ttlMs: over.ttlMs ?? 60 * MINUTE,
  });
  const phase = over.phase ?? 'Pending';
  if (phase === 'Pending') return a;
  return { ...a, status: { phase, decidedBy: 'dba', decidedAt: NOW.toISOString(), ...(phase === 'Used' ? { actionId: 'act_1', usedAt: NOW.toISOString() } : {}) } };
}

const scope = (agents: string[], caller: string): AuditScope => ({ agentIds: new Set(agents), caller });

describe('pendingApprovals', () => {
  it('lists only approvals waiting for a person: not decided, used or expired ones, nor a Pending one past expiresAt', () => {
    const waiting = approval();
    const list = [
      waiting,
      approval({ phase: 'Approved' }),
      approval({ phase: 'Denied' }),
      approval({ phase: 'Used' }),
      approval({ phase: 'Expired' }),
      approval({ ago: 2 * MINUTE, ttlMs: MINUTE }), // Pending as stored, but expired: the sweep has not run yet
    ];
    const shown = pendingApprovals(list, undefined, NOW);
    expect(shown.count).toBe(1);
    expect(shown.pending.map((p) => p.name)).toEqual([waiting.metadata.name]);
  });

  it("shows a scoped caller its own agents' approvals and the ones it asked for, nobody else's; an unscoped caller all", () => {
    const mine = approval({ agent: 'agent-a', by: 'token:bob' });
    const askedByMe = approval({ agent: 'shared-agent', by: 'token:alice' });
    const others = approval({ agent: 'bot', by: 'token:bot' });
    const list = [mine, askedByMe, others];
    const alice = pendingApprovals(list, scope(['agent-a'], 'token:alice'), NOW);
    expect(alice.pending.map((p) => p.name).sort()).toEqual([mine.metadata.name, askedByMe.metadata.name].sort());
    expect(alice.count).toBe(2);
    expect(pendingApprovals(list, scope([], 'token:nobody'), NOW)).toEqual({ count: 0, pending: [] });
    expect(pendingApprovals(list, undefined, NOW).count).toBe(3);
  });

  it(`lists the newest first, at most ${APPROVALS_MAX}, and counts them all`, () => {
    const list = Array.from({ length: APPROVALS_MAX + 3 }, (_, i) => approval({ ago: (i + 1) * 1000, parameters: { n: i } }));
    const shown = pendingApprovals([...list].reverse(), undefined, NOW);
    expect(shown.count).toBe(APPROVALS_MAX + 3);
    expect(shown.pending.map((p) => p.name)).toEqual(list.slice(0, APPROVALS_MAX).map((a) => a.metadata.name));
  });

  it('gives each approval what a person needs to decide it, and the command that approves it in a cluster', () => {
    const a = approval({ namespace: 'team-a', upstream: 'tools/github', target: 'create_issue', parameters: { title: 'x'.repeat(300), password: 'hunter2' }, message: 'm'.repeat(1000) });
    const [shown] = pendingApprovals([a], undefined, NOW).pending;
    expect(shown).toEqual({
      name: a.metadata.name,
      namespace: 'team-a',
      agent_id: 'etl-bot',
      action_type: 'tool_call',
      target: 'create_issue',
      upstream: 'tools/github',
      arguments_preview: a.spec.argumentsPreview,
      message: `${'m'.repeat(499)}…`,
      requested_at: a.spec.requestedAt,
      expires_at: a.spec.expiresAt,
      approve_command: `policyguard approvals approve ${a.metadata.name} -n team-a`,
    });
    // The stored preview, whole (an agent cannot push what matters past a cut), secrets redacted when the approval was asked for.
    expect(shown!.arguments_preview).toBe(`{"password":"[REDACTED]","title":"${'x'.repeat(300)}"}`);
  });

  it('names the data dir in standalone mode, as one shell word whatever it contains', () => {
    const a = approval();
    const command = (dataDir?: string) => pendingApprovals([a], undefined, NOW, dataDir).pending[0]!.approve_command;
    expect(command('/var/lib/policyguard')).toBe(`policyguard approvals approve ${a.metadata.name} --data-dir /var/lib/policyguard`);
    expect(command("/tmp/it's mine; rm -rf ~")).toBe(`policyguard approvals approve ${a.metadata.name} --data-dir '/tmp/it'\\''s mine; rm -rf ~'`);
    expect(command()).toBe(`policyguard approvals approve ${a.metadata.name}`);
  });
});

describe('dashboardData', () => {
  // What callers choose, with what would make one thing look like another on the page.
  const TARGET = 'drop_prod\u202etxt.exe';
  const AGENT = 'etl\u001b[32m-ok';
  const TYPE = 'tool_call\u2066';
  const DESCRIPTION = 'Denied \u001b[31mdrop_prod\u202etxt.exe\u001b[0m\r\nall fine';

  /** A read of one denied call, one incident about it and one suspended agent quoting it, as the MCP tools would see them. */
  function read(): AuditRead {
    const suspended = guardAgent({ name: 'etl' }, { trustLevel: 'low' });
    suspended.status = { suspension: { since: new Date(NOW.getTime() - MINUTE).toISOString(), reason: `critical incident inc_0123456789ab: ${DESCRIPTION}` } };
    const incident: IncidentRecord = {
      incident_id: 'inc_0123456789ab', timestamp: NOW.toISOString(), type: 'policy_violation', severity: 'critical', description: DESCRIPTION,
      agent_id: AGENT, evidence: {}, recommended_action: '', status: 'open', resolution: null,
    };
    return {
      scope: undefined,
      snapshot: PolicySnapshot.compile({ agents: [suspended], policies: [] }, DEFAULT_ENGINE_OPTIONS),
      audit: memorySink([decisionRecord({ at: NOW.getTime() - MINUTE, agent: AGENT, target: TARGET, decision: 'deny', type: TYPE })]) as unknown as AuditSink,
      incidents: { list: async () => [incident], record: async () => incident },
    };
  }

  it('shows every string a caller chose with its control and bidirectional characters escaped, so one call cannot look like another', async () => {
    const approvals = [approval({ agent: AGENT, target: TARGET, parameters: { note: 'a\u200bb\u2066' } })];
    const data = await dashboardData(read(), { range: '1h', since: new Date(NOW.getTime() - 60 * MINUTE), now: NOW, problems: [`approvals/a.yaml: bad line "x\n${TARGET}"`], approvals });
    expect(data.top_denied_tools).toEqual([{ target: 'drop_prod\\u202etxt.exe', denied: 1 }]);
    expect(data.top_denied_agents).toEqual([{ agent_id: 'etl\\u001b[32m-ok', violations: 1 }]);
    expect(data.metrics.top_offenders).toEqual(data.top_denied_agents);
    expect(Object.keys(data.metrics.action_breakdown)).toEqual(['tool_call\\u2066']);
    const escaped = 'Denied \\u001b[31mdrop_prod\\u202etxt.exe\\u001b[0m\\u000d\\u000aall fine';
    expect(data.incidents.recent).toEqual([expect.objectContaining({ agent_id: 'etl\\u001b[32m-ok', description: escaped })]);
    expect(data.agents[0]!.suspension).toContain(`: critical incident inc_0123456789ab: ${escaped}`);
    expect(data.problems).toEqual(['approvals/a.yaml: bad line "x\\u000adrop_prod\\u202etxt.exe"']);
    expect(data.approvals.pending[0]).toMatchObject({ agent_id: 'etl\\u001b[32m-ok', target: 'drop_prod\\u202etxt.exe', arguments_preview: '{"note":"a\\u200bb\\u2066"}' });
    // And nothing anywhere, key or value, that printable would still change.
    const unprintable: string[] = [];
    JSON.stringify(data, (key: string, value: unknown) => {
      for (const s of [key, value]) if (typeof s === 'string' && printable(s) !== s) unprintable.push(s);
      return value;
    });
    expect(unprintable).toEqual([]);
  });
});
