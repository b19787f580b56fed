/**
 * What the dashboard shows, for one caller: the numbers come from the aggregation behind
 * get_compliance_status (src/audit/compliance.ts), read through {@link Tools.readAudit}, so the
 * caller sees exactly what get_compliance_status would show it (docs/decisions.md, "Identity":
 * its own agents' records unless it has admin trust or RBAC `get auditlogs`). The pending
 * approvals come from the server's GuardApproval cache, in the same scope (docs/decisions.md,
 * "Approvals").
 */
import {
  agentInScope, aggregateDecisions, complianceLevel, complianceMetrics, decisionSeries, deniedTargets, offenders, type ComplianceMetrics, type DecisionKind,
} from '../audit/compliance.js';
import { Reason } from '../api/conditions.js';
import type { GuardApproval, TrustLevel } from '../api/schemas.js';
import { phaseOf } from '../approvals/ask.js';
import { printable } from '../printable.js';
import type { AuditScope } from '../audit/sink.js';
import type { AuditRead } from '../mcp/tools.js';

/** The longest incident description or approval message the page gets. */
const DESCRIPTION_MAX = 500;
const clip = (text: string, max = DESCRIPTION_MAX) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/** Points on the decisions-over-time plot, whatever the range. */
export const SERIES_POINTS = 48;
/** Rows of the top-denied plots and of recent incidents. */
export const TOP = 10;
/** Pending approvals listed at most (the newest); the count covers all of them. */
export const APPROVALS_MAX = 50;

/** One approval waiting for a person, as the page lists it. */
export interface PendingApproval {
  name: string;
  /** Its namespace in a cluster; null in standalone mode. */
  namespace: string | null;
  agent_id: string;
  /** What the approval binds besides agent, target and arguments (`tool_call`, …). */
  action_type: string;
  target: string;
  /** namespace/name of the GuardUpstream of a gateway call; null otherwise. */
  upstream: string | null;
  /**
   * The redacted argumentsPreview as stored, whole (at most 4 KiB, with its own mark where it
   * was cut): a person sees everything they approve, not a head an agent can pad.
   */
  arguments_preview: string;
  /** Why approval is needed: the deciding rule's message. */
  message: string;
  requested_at: string;
  expires_at: string;
  /** What a person runs to approve it: the page shows it and never decides. */
  approve_command: string;
}

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
  /** Approvals waiting for a person, newest first (at most {@link APPROVALS_MAX}); `count`: all of them. */
  approvals: { pending: PendingApproval[]; count: number };
}

/**
 * Whether a scoped caller may see `approval`: its agent is one of the caller's, or the caller
 * asked for it, as a scoped audit read sees a record by its agent_id or its caller.
 */
function approvalInScope(approval: GuardApproval, scope: AuditScope | undefined): boolean {
  return agentInScope(approval.spec.agentId, scope) || approval.spec.requestedBy === scope?.caller;
}

/** `s` as one shell word: as it is when it is plainly safe, else single-quoted. */
function shellWord(s: string): string {
  return /^[\w./:@%+=,-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/** The CLI command that approves `approval`: `-n` in a cluster, `--data-dir` in standalone mode (src/cli/approvals.ts). */
function approveCommand(approval: GuardApproval, dataDir: string | undefined): string {
  const { name, namespace } = approval.metadata;
  const where = namespace ? ` -n ${shellWord(namespace)}` : dataDir ? ` --data-dir ${shellWord(dataDir)}` : '';
  return `policyguard approvals approve ${shellWord(name)}${where}`;
}

/**
 * The approvals waiting for a person (phase Pending at `now`, so an expired one never shows)
 * that `scope` may see, newest first, at most {@link APPROVALS_MAX}: as stored, for
 * {@link dashboardData} to make printable with everything else.
 *
 * @example pendingApprovals(approvalStore.list(), scope, new Date(), '/var/lib/policyguard')
 */
export function pendingApprovals(approvals: readonly GuardApproval[], scope: AuditScope | undefined, now: Date, dataDir?: string): DashboardData['approvals'] {
  const waiting = approvals
    .filter((a) => phaseOf(a, now) === 'Pending' && approvalInScope(a, scope))
    .sort((a, b) => b.spec.requestedAt.localeCompare(a.spec.requestedAt) || a.metadata.name.localeCompare(b.metadata.name));
  return {
    count: waiting.length,
    pending: waiting.slice(0, APPROVALS_MAX).map((a) => ({
      name: a.metadata.name,
      namespace: a.metadata.namespace ?? null,
      agent_id: a.spec.agentId,
      action_type: a.spec.actionType,
      target: a.spec.target,
      upstream: a.spec.upstream ?? null,
      arguments_preview: a.spec.argumentsPreview,
      message: clip(a.spec.message),
      requested_at: a.spec.requestedAt,
      expires_at: a.spec.expiresAt,
      approve_command: approveCommand(a, dataDir),
    })),
  };
}

/**
 * `value` with every string in it, object keys too, {@link printable}. Callers choose much of
 * what the page shows — targets, agent ids, action types (keys of `action_breakdown`), incident
 * descriptions and the suspensions that quote them, approval arguments — and a person must see
 * it as it is; escaping all of it covers a field added later without anyone remembering to.
 */
function printableData(value: unknown): unknown {
  if (typeof value === 'string') return printable(value);
  if (Array.isArray(value)) return value.map(printableData);
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [printable(k), printableData(v)]));
  return value;
}

/**
 * The dashboard's data from a read made through {@link Tools.readAudit}, for decisions since
 * `since`, with the approvals of `args.approvals` that are pending (`dataDir`: the standalone
 * data dir the command to approve one names). Every string in it is {@link printable}.
 *
 * @example
 * await tools.readAudit(ctx, async (read) => ({ ok: true, value: await dashboardData(read, { range: '24h', since, now, problems: store.problems(), approvals: approvalStore.list() }) }));
 */
export async function dashboardData(
  read: AuditRead,
  args: { range: string; since: Date; now: Date; problems: readonly string[]; approvals: readonly GuardApproval[]; dataDir?: string },
): Promise<DashboardData> {
  const { scope, snapshot, audit, incidents } = read;
  const { since } = args;
  const seriesBucketMs = Math.max(1000, Math.ceil((args.now.getTime() - since.getTime()) / SERIES_POINTS));
  const agg = await aggregateDecisions(audit, { since, ...(scope ? { scope } : {}) }, { seriesBucketMs });
  const metrics = complianceMetrics(agg);
  const level = complianceLevel(metrics.denial_rate);
  const recent = (await incidents.list(since)).filter((i) => agentInScope(i.agent_id, scope));
  const problemOf = (namespace: string | undefined, name: string) => snapshot.problems.find((p) => p.kind === 'GuardPolicy' && p.name === name && (p.namespace ?? '') === (namespace ?? ''));
  const data: DashboardData = {
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
    approvals: pendingApprovals(args.approvals, scope, args.now, args.dataDir),
  };
  return printableData(data) as DashboardData;
}
