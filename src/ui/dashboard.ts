/**
 * What the dashboard shows, for one caller: the numbers come from the aggregation behind
 * get_compliance_status (src/audit/compliance.ts), read through {@link Tools.readAudit}, so the
 * caller sees exactly what get_compliance_status would show it (docs/decisions.md, "Identity":
 * its own agents' records unless it has admin trust or RBAC `get auditlogs`).
 */
import {
  agentInScope, aggregateDecisions, complianceLevel, complianceMetrics, decisionSeries, deniedTargets, offenders, type ComplianceMetrics, type DecisionKind,
} from '../audit/compliance.js';
import { Reason } from '../api/conditions.js';
import type { TrustLevel } from '../api/schemas.js';
import type { AuditRead } from '../mcp/tools.js';

/** The longest incident description the page gets. */
const DESCRIPTION_MAX = 500;
const clip = (text: string) => (text.length > DESCRIPTION_MAX ? `${text.slice(0, DESCRIPTION_MAX - 1)}…` : text);

/** Points on the decisions-over-time plot, whatever the range. */
export const SERIES_POINTS = 48;
/** Rows of the top-denied plots and of recent incidents. */
export const TOP = 10;

export interface DashboardData {
  generated_at: string;
  time_range: string;
  /** Whose records the numbers cover: everyone's, or the caller's agents and own calls. */
  scope: { all: true } | { all: false; agents: string[]; caller: string };
  status: string;
  status_message: string;
  metrics: ComplianceMetrics;
  by_decision: Record<DecisionKind, number>;
  series: ReturnType<typeof decisionSeries>;
  top_denied_tools: Array<{ target: string; denied: number }>;
  top_denied_agents: Array<{ agent_id: string; violations: number }>;
  agents: Array<{ id: string; namespace: string | null; name: string; trust: TrustLevel; suspended: boolean; suspension: string | null; decisions: number; denied: number }>;
  incidents: { total: number; recent: Array<{ incident_id: string; timestamp: string; type: string; severity: string; agent_id: string | null; description: string }> };
  policies: Array<{ namespace: string | null; name: string; enforcement: string; priority: number; rules: number; ready: boolean; reason: string; message: string }>;
  /** Objects or files not (fully) in force, as get_compliance_status lists them. */
  problems: readonly string[];
}

/**
 * The dashboard's data from a read made through {@link Tools.readAudit}, for decisions since `since`.
 *
 * @example
 * await tools.readAudit(ctx, async (read) => ({ ok: true, value: await dashboardData(read, { range: '24h', since, now, problems: store.problems() }) }));
 */
export async function dashboardData(read: AuditRead, args: { range: string; since: Date; now: Date; problems: readonly string[] }): Promise<DashboardData> {
  const { scope, snapshot, audit, incidents } = read;
  const { since } = args;
  const seriesBucketMs = Math.max(1000, Math.ceil((args.now.getTime() - since.getTime()) / SERIES_POINTS));
  const agg = await aggregateDecisions(audit, { since, ...(scope ? { scope } : {}) }, { seriesBucketMs });
  const metrics = complianceMetrics(agg);
  const level = complianceLevel(metrics.denial_rate);
  const recent = (await incidents.list(since)).filter((i) => agentInScope(i.agent_id, scope));
  const problemOf = (namespace: string | undefined, name: string) => snapshot.problems.find((p) => p.kind === 'GuardPolicy' && p.name === name && (p.namespace ?? '') === (namespace ?? ''));
  return {
    generated_at: args.now.toISOString(),
    time_range: args.range,
    scope: scope ? { all: false, agents: [...scope.agentIds].sort(), caller: scope.caller } : { all: true },
    status: level.status,
    status_message: level.message,
    metrics,
    by_decision: { ...agg.byDecision },
    series: decisionSeries(agg, since, args.now),
    top_denied_tools: deniedTargets(agg).slice(0, TOP),
    top_denied_agents: offenders(agg).slice(0, TOP),
    agents: [...snapshot.agents()]
      .filter((a) => agentInScope(a.id, scope))
      .map((a) => ({
        id: a.id,
        namespace: a.namespace ?? null,
        name: a.name,
        trust: a.trust,
        suspended: a.suspension !== undefined,
        suspension: a.suspension ?? null,
        decisions: agg.agents.get(a.id)?.decisions ?? 0,
        denied: agg.agents.get(a.id)?.denied ?? 0,
      }))
      .sort((a, b) => b.denied - a.denied || a.id.localeCompare(b.id)),
    incidents: {
      total: recent.length,
      // Descriptions quote the caller's target, which may be as long as a request body.
      recent: recent.slice(0, TOP).map((i) => ({ incident_id: i.incident_id, timestamp: i.timestamp, type: i.type, severity: i.severity, agent_id: i.agent_id, description: clip(i.description) })),
    },
    policies: snapshot.policies().map((p) => {
      const problem = problemOf(p.metadata.namespace, p.metadata.name);
      return {
        namespace: p.metadata.namespace ?? null,
        name: p.metadata.name,
        enforcement: p.spec.enforcement,
        priority: p.spec.priority,
        rules: p.spec.rules.length,
        ready: problem === undefined,
        reason: problem?.reason ?? Reason.Accepted,
        message: problem?.message ?? 'Compiled and in force',
      };
    }),
    problems: args.problems,
  };
}
