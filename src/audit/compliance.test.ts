import { describe, expect, it } from 'vitest';
import {
  MAX_RULES_PER_AGENT, MAX_TRACKED_AGENTS, addDecision, aggregateDecisions, agentInScope, complianceMetrics, decisionSeries, deniedTargets, mergeAggregate, newAggregate,
  type ComplianceAggregate,
} from './compliance.js';
import type { AuditRecord } from './record.js';
import { decisionRecord, memorySink } from './memory-sink-fixture.js';

const T0 = Date.parse('2026-11-01T00:00:00.000Z');
const deny = { policy: 'no-drops', namespace: 'team-a', rule: 'drops', action: 'deny', enforcement: 'Enforce', priority: 100, message: 'no drops' };
const allow = { policy: 'reads', namespace: 'team-a', rule: 'rule-0', action: 'allow', enforcement: 'Enforce', priority: 10 };
const approval = { policy: 'refunds', namespace: 'team-a', rule: 'big', action: 'require_approval', enforcement: 'Enforce', message: 'needs a human' };
const finding = { policy: 'email-dry-run', rule: 'external', action: 'deny', enforcement: 'Audit', message: 'external recipient' };

/** The records of a small day: 3 agents, every outcome, an Audit finding and an agent-level deny. */
function day(): AuditRecord[] {
  return [
    decisionRecord({ at: T0 + 1_000, agent: 'etl', target: 'read_a', decision: 'allow', matched: [allow] }),
    decisionRecord({ at: T0 + 2_000, agent: 'etl', target: 'drop_users', decision: 'deny', matched: [deny, allow] }),
    decisionRecord({ at: T0 + 3_000, agent: 'etl', target: 'drop_orders', decision: 'deny', matched: [deny] }),
    decisionRecord({ at: T0 + 4_000, agent: 'etl', target: 'issue_refund', decision: 'require_approval', matched: [approval] }),
    decisionRecord({ at: T0 + 5_000, agent: 'bot', target: 'send_email', decision: 'allow', findings: [finding], type: 'api_call' }),
    decisionRecord({ at: T0 + 6_000, agent: 'bot', target: 'send_sms', decision: 'deny', matched: [{ policy: 'agent:bot', rule: 'deniedTools', action: 'deny', enforcement: 'Enforce', message: 'denied tool' }] }),
    decisionRecord({ at: T0 + 7_000, agent: 'ghost', target: 'drop_users', decision: 'deny', matched: ['not a rule', { policy: 1 }] }),
  ];
}

function fold(records: AuditRecord[], options = { rules: true, seriesBucketMs: 2_000 }): ComplianceAggregate {
  const agg = newAggregate(options);
  for (const r of records) addDecision(agg, r);
  return agg;
}

describe('addDecision', () => {
  it('counts decisions as get_compliance_status does: not allowed = denies and approvals needed', () => {
    const m = complianceMetrics(fold(day()));
    expect(m).toEqual({
      total_actions: 7,
      allowed_actions: 2,
      denied_actions: 5,
      denial_rate: 71.43,
      top_offenders: [
        { agent_id: 'etl', violations: 3 },
        { agent_id: 'bot', violations: 1 },
        { agent_id: 'ghost', violations: 1 },
      ],
      action_breakdown: { tool_call: { allowed: 1, denied: 5 }, api_call: { allowed: 1, denied: 0 } },
      unique_agents: 3,
    });
  });

  it('a caller refused as an agent (identity mismatch) counts in the totals, not as that agent\'s violation', () => {
    const claim = decisionRecord({ at: T0 + 8_000, agent: 'bot', target: 'read_x', decision: 'deny', matched: [{ policy: 'agent:bot', rule: 'identities', action: 'deny', enforcement: 'Enforce', message: 'not bound' }] });
    const m = complianceMetrics(fold([...day(), claim, claim]));
    expect(m).toMatchObject({ total_actions: 9, denied_actions: 7 });
    expect(m.top_offenders).toContainEqual({ agent_id: 'bot', violations: 1 });
  });

  it('yields a result per matched rule: pass for allow rules, fail for enforced denies, warn for approvals and Audit findings', () => {
    const agg = fold(day());
    const results = (agent: string) => [...agg.agents.get(agent)!.rules.values()].map((t) => [t.namespace ?? '', t.policy, t.rule, t.result, t.count, t.lastTarget, new Date(t.lastTime).toISOString()]);
    expect(results('etl')).toEqual([
      ['team-a', 'reads', 'rule-0', 'pass', 2, 'drop_users', '2026-11-01T00:00:02.000Z'],
      ['team-a', 'no-drops', 'drops', 'fail', 2, 'drop_orders', '2026-11-01T00:00:03.000Z'],
      ['team-a', 'refunds', 'big', 'warn', 1, 'issue_refund', '2026-11-01T00:00:04.000Z'],
    ]);
    expect(results('bot')).toEqual([
      ['', 'email-dry-run', 'external', 'warn', 1, 'send_email', '2026-11-01T00:00:05.000Z'],
      ['', 'agent:bot', 'deniedTools', 'fail', 1, 'send_sms', '2026-11-01T00:00:06.000Z'],
    ]);
    expect(agg.agents.get('bot')!.rules.get('/email-dry-run/external/warn')).toMatchObject({ enforcement: 'Audit', action: 'deny', message: 'external recipient' });
    // Entries that are not matched rules are skipped, the decision still counts.
    expect(agg.agents.get('ghost')).toMatchObject({ decisions: 1, denied: 1, rules: new Map() });
  });

  it('keeps the latest target and message whatever order records come in (scans are newest first)', () => {
    const agg = fold([...day()].reverse());
    expect(agg.agents.get('etl')!.rules.get('team-a/no-drops/drops/fail')).toMatchObject({ count: 2, lastTarget: 'drop_orders', lastTime: T0 + 3_000 });
  });

  it('counts decisions per time bucket and denied targets', () => {
    const agg = fold(day());
    const s = decisionSeries(agg, new Date(T0), new Date(T0 + 7_000));
    expect(s).toEqual({ bucket_ms: 2_000, t: [0, 2, 4, 6].map((x) => (T0 + x * 1000) / 1000), allow: [1, 0, 1, 0], deny: [0, 2, 0, 2], require_approval: [0, 0, 1, 0] });
    expect(deniedTargets(agg)).toEqual([
      { target: 'drop_users', denied: 2 },
      { target: 'drop_orders', denied: 1 },
      { target: 'issue_refund', denied: 1 },
      { target: 'send_sms', denied: 1 },
    ]);
  });

  it('stays bounded: agents, targets and rule results beyond their caps are flagged, not kept', () => {
    const agg = newAggregate({ rules: true });
    for (let i = 0; i <= MAX_TRACKED_AGENTS; i++) addDecision(agg, decisionRecord({ at: T0, agent: `a${i}`, target: `drop_${i}`, decision: 'deny' }));
    expect(agg.agents.size).toBe(MAX_TRACKED_AGENTS);
    expect(complianceMetrics(agg)).toMatchObject({ total_actions: MAX_TRACKED_AGENTS + 1, unique_agents: MAX_TRACKED_AGENTS, unique_agents_capped: true });
    expect(agg.targetsCapped).toBe(true);
    const one = newAggregate({ rules: true });
    for (let i = 0; i < MAX_RULES_PER_AGENT + 3; i++) addDecision(one, decisionRecord({ at: T0, agent: 'etl', target: 'x', decision: 'deny', matched: [{ ...deny, rule: `r${i}` }] }));
    expect(one.agents.get('etl')).toMatchObject({ decisions: MAX_RULES_PER_AGENT + 3, rulesDropped: 3 });
    expect(one.agents.get('etl')!.rules.size).toBe(MAX_RULES_PER_AGENT);
  });
});

describe('mergeAggregate', () => {
  it.each([1, 3, 5])('the merge of aggregates of a split equals the aggregate of the whole (split at %i)', (at) => {
    const records = day();
    const merged = fold(records.slice(0, at));
    mergeAggregate(merged, fold(records.slice(at)));
    expect(merged).toEqual(fold(records));
  });
});

describe('aggregateDecisions', () => {
  it('reads decisions only, within the filter, in scope', async () => {
    const sink = memorySink([
      ...day(),
      decisionRecord({ at: T0 - 1, agent: 'etl', target: 'too_old', decision: 'deny' }),
      { ...decisionRecord({ at: T0 + 8_000, agent: 'policyguard-system', target: 'etl', decision: 'allow' }), action_id: null }, // an admin record
    ]);
    const all = await aggregateDecisions(sink, { since: new Date(T0) });
    expect(all.total).toBe(7);
    const scoped = await aggregateDecisions(sink, { since: new Date(T0), scope: { agentIds: new Set(['bot']), caller: 'token:bot' } });
    expect(complianceMetrics(scoped)).toMatchObject({ total_actions: 2, denied_actions: 1, unique_agents: 1 });
  });

  it('agentInScope: everything without a scope; a scope sees its agents only, and no incident without an agent', () => {
    const scope = { agentIds: new Set(['bot']), caller: 'token:bot' };
    expect([agentInScope('etl', undefined), agentInScope(null, undefined), agentInScope('bot', scope), agentInScope('etl', scope), agentInScope(null, scope)]).toEqual([true, true, true, false, false]);
  });
});
