/**
 * The one aggregation of audit decisions. `get_compliance_status`, the policy reports
 * (src/controller/reports.ts) and the dashboard (src/ui) all count decisions with
 * {@link addDecision}, so a number means the same wherever it is shown. An aggregate holds
 * counters only, never records, so its memory is bounded whatever the time range: distinct
 * agents, denied targets and rule results per agent are capped, and what goes past a cap is
 * flagged, not dropped silently.
 *
 * Aggregates of disjoint record sets merge ({@link mergeAggregate}): the reports controller keeps
 * one per time bucket and scans only records newer than its last pass, instead of its whole
 * window every time.
 */
import type { AuditRecord } from './record.js';
import type { AuditFilter, AuditScope, AuditSink } from './sink.js';

/** Distinct agents counted per aggregate; beyond it `agentsCapped` is set (`unique_agents_capped`). */
export const MAX_TRACKED_AGENTS = 10_000;
/** Distinct denied targets counted per aggregate; beyond it `targetsCapped` is set. */
export const MAX_TRACKED_TARGETS = 1_000;
/** Distinct rule results kept per agent; occurrences beyond it are counted in `rulesDropped`. */
export const MAX_RULES_PER_AGENT = 256;
/** The longest target and rule message an aggregate keeps: they come from callers and policies. */
const MAX_TEXT = 256;

export type DecisionKind = 'allow' | 'deny' | 'require_approval';

/** Decisions by outcome: allowed, denied, approval needed. */
export type DecisionCounts = Record<DecisionKind, number>;

/**
 * What a matched rule says about the agent, in the words of the policy report APIs: `pass` for
 * an allow rule, `fail` for an enforced deny, `warn` for an approval needed or an Audit-mode
 * finding (which never changed the decision).
 */
export type RuleResult = 'pass' | 'fail' | 'warn';

/** How often one rule matched an agent's decisions with one result, and when last. */
export interface RuleTally {
  /** The policy name, or `agent:<id>` for the agent's own checks (docs/decisions.md, §1). */
  policy: string;
  namespace: string | undefined;
  rule: string;
  enforcement: 'Enforce' | 'Audit';
  action: DecisionKind;
  result: RuleResult;
  /** The rule's message at its last match. */
  message: string | undefined;
  count: number;
  /** Epoch milliseconds of the last match. */
  lastTime: number;
  lastTarget: string;
}

export interface AgentTally {
  decisions: number;
  /** Decisions not allowed: denies and approvals needed (`violations` in get_compliance_status). */
  denied: number;
  /** By `policy/namespace/rule/result`; only with {@link AggregateOptions.rules}. */
  rules: Map<string, RuleTally>;
  /** Rule matches not kept because {@link MAX_RULES_PER_AGENT} results were already tracked. */
  rulesDropped: number;
}

export interface AggregateOptions {
  /** Also count decisions per time bucket of this width (ms), for a plot over time. */
  seriesBucketMs?: number;
  /** Also keep per-agent rule results (the policy reports). */
  rules?: boolean;
}

export interface ComplianceAggregate {
  readonly options: AggregateOptions;
  total: number;
  /** Decisions not allowed (`evaluation.allowed === false`): denies and approvals needed. */
  denied: number;
  byDecision: DecisionCounts;
  /** Per action type, by `evaluation.allowed`. */
  byActionType: Map<string, { allowed: number; denied: number }>;
  agents: Map<string, AgentTally>;
  agentsCapped: boolean;
  /** Denied decisions (deny and approval needed) per target. */
  deniedTargets: Map<string, number>;
  targetsCapped: boolean;
  /** Bucket start (epoch ms) → decisions in it; only with {@link AggregateOptions.seriesBucketMs}. */
  series: Map<number, DecisionCounts>;
}

/** @example const agg = newAggregate({ seriesBucketMs: 1_800_000 }); */
export function newAggregate(options: AggregateOptions = {}): ComplianceAggregate {
  return {
    options,
    total: 0,
    denied: 0,
    byDecision: { allow: 0, deny: 0, require_approval: 0 },
    byActionType: new Map(),
    agents: new Map(),
    agentsCapped: false,
    deniedTargets: new Map(),
    targetsCapped: false,
    series: new Map(),
  };
}

const clip = (text: string) => (text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT - 1)}…` : text);
const ruleKey = (t: Pick<RuleTally, 'policy' | 'namespace' | 'rule' | 'result'>) => `${t.namespace ?? ''}/${t.policy}/${t.rule}/${t.result}`;

/** The tally of `agentId`, created unless the aggregate already tracks {@link MAX_TRACKED_AGENTS}. */
function agentTally(agg: ComplianceAggregate, agentId: string): AgentTally | undefined {
  let tally = agg.agents.get(agentId);
  if (tally) return tally;
  if (agg.agents.size >= MAX_TRACKED_AGENTS) {
    agg.agentsCapped = true;
    return undefined;
  }
  tally = { decisions: 0, denied: 0, rules: new Map(), rulesDropped: 0 };
  agg.agents.set(agentId, tally);
  return tally;
}

function countTarget(agg: ComplianceAggregate, target: string, n: number): void {
  const key = clip(target);
  const count = agg.deniedTargets.get(key);
  if (count !== undefined) agg.deniedTargets.set(key, count + n);
  else if (agg.deniedTargets.size < MAX_TRACKED_TARGETS) agg.deniedTargets.set(key, n);
  else agg.targetsCapped = true;
}

function addCounts(into: DecisionCounts, from: DecisionCounts): void {
  into.allow += from.allow;
  into.deny += from.deny;
  into.require_approval += from.require_approval;
}

/** Keeps `t` (count included) in `agent`, merging with the tally it already has for that rule and result. */
function addRule(agent: AgentTally, t: RuleTally): void {
  const key = ruleKey(t);
  const had = agent.rules.get(key);
  if (!had) {
    if (agent.rules.size >= MAX_RULES_PER_AGENT) agent.rulesDropped += t.count;
    else agent.rules.set(key, { ...t });
    return;
  }
  had.count += t.count;
  if (t.lastTime >= had.lastTime) {
    had.lastTime = t.lastTime;
    had.lastTarget = t.lastTarget;
    had.message = t.message;
  }
}

const ACTIONS: readonly string[] = ['allow', 'deny', 'require_approval'];

/**
 * The rule results one decision yields: its Enforce matches (allow → pass, deny → fail,
 * require_approval → warn) and its Audit-mode findings (warn). Entries that do not look like a
 * matched rule (a record from an older version, a foreign line) are skipped.
 */
function ruleResults(record: AuditRecord, time: number): RuleTally[] {
  const out: RuleTally[] = [];
  const read = (entry: unknown, audit: boolean) => {
    if (!entry || typeof entry !== 'object') return;
    const m = entry as Record<string, unknown>;
    if (typeof m.policy !== 'string' || typeof m.rule !== 'string' || typeof m.action !== 'string' || !ACTIONS.includes(m.action)) return;
    const action = m.action as DecisionKind;
    out.push({
      policy: m.policy,
      namespace: typeof m.namespace === 'string' ? m.namespace : undefined,
      rule: m.rule,
      enforcement: audit ? 'Audit' : 'Enforce',
      action,
      result: audit || action === 'require_approval' ? 'warn' : action === 'allow' ? 'pass' : 'fail',
      message: typeof m.message === 'string' ? clip(m.message) : undefined,
      count: 1,
      lastTime: time,
      lastTarget: clip(record.action.target),
    });
  };
  for (const m of record.evaluation.matched) read(m, false);
  for (const f of record.evaluation.audit_findings) read(f, true);
  return out;
}

/** A decision refusing a caller who claimed to be `record.agent_id` (src/decide/identity.ts). */
function refusedClaim(record: AuditRecord): boolean {
  const first = record.evaluation.matched[0] as { policy?: unknown; rule?: unknown } | undefined;
  return first?.policy === `agent:${record.agent_id}` && first.rule === 'identities';
}

/**
 * Counts one decision record (callers pass decisions only: {@link foldDecisions} asks the sink
 * for them). The only place a decision is counted.
 *
 * @example
 * const agg = newAggregate();
 * await audit.scan({ kinds: ['decision'] }, (r) => addDecision(agg, r));
 */
export function addDecision(agg: ComplianceAggregate, record: AuditRecord): void {
  const { allowed, decision } = record.evaluation;
  const time = Date.parse(record.timestamp);
  agg.total++;
  if (!allowed) agg.denied++;
  agg.byDecision[decision]++;
  let byType = agg.byActionType.get(record.action.type);
  if (!byType) agg.byActionType.set(record.action.type, (byType = { allowed: 0, denied: 0 }));
  if (allowed) byType.allowed++;
  else byType.denied++;
  const bucketMs = agg.options.seriesBucketMs;
  if (bucketMs) {
    const start = Math.floor(time / bucketMs) * bucketMs;
    let counts = agg.series.get(start);
    if (!counts) agg.series.set(start, (counts = { allow: 0, deny: 0, require_approval: 0 }));
    counts[decision]++;
  }
  if (!allowed) countTarget(agg, record.action.target, 1);

  // A caller refused as this agent (identity mismatch) is not this agent's doing.
  if (refusedClaim(record)) return;
  const agent = agentTally(agg, record.agent_id);
  if (!agent) return;
  agent.decisions++;
  if (!allowed) agent.denied++;
  if (agg.options.rules) for (const t of ruleResults(record, time)) addRule(agent, t);
}

/**
 * Adds `from` to `into`: the aggregate of both record sets, as if every record had been added to
 * `into` (the sets must not overlap). Caps apply as in {@link addDecision}.
 *
 * @example
 * const window = newAggregate({ rules: true });
 * for (const bucket of buckets) mergeAggregate(window, bucket);
 */
export function mergeAggregate(into: ComplianceAggregate, from: ComplianceAggregate): void {
  into.total += from.total;
  into.denied += from.denied;
  addCounts(into.byDecision, from.byDecision);
  for (const [type, c] of from.byActionType) {
    const had = into.byActionType.get(type);
    if (had) {
      had.allowed += c.allowed;
      had.denied += c.denied;
    } else into.byActionType.set(type, { ...c });
  }
  for (const [start, c] of from.series) {
    const had = into.series.get(start);
    if (had) addCounts(had, c);
    else into.series.set(start, { ...c });
  }
  for (const [target, n] of from.deniedTargets) countTarget(into, target, n);
  into.targetsCapped ||= from.targetsCapped;
  for (const [id, a] of from.agents) {
    const agent = agentTally(into, id);
    if (!agent) continue;
    agent.decisions += a.decisions;
    agent.denied += a.denied;
    agent.rulesDropped += a.rulesDropped;
    for (const t of a.rules.values()) addRule(agent, t);
  }
  into.agentsCapped ||= from.agentsCapped;
}

/**
 * Streams the decisions that match `filter` (newest first) into the aggregate `into` picks for
 * each (undefined: not counted). Reads counters only, never keeps records.
 *
 * @example
 * await foldDecisions(audit, { since }, (r) => bucketFor(Date.parse(r.timestamp)));
 */
export async function foldDecisions(audit: Pick<AuditSink, 'scan'>, filter: Omit<AuditFilter, 'kinds'>, into: (record: AuditRecord) => ComplianceAggregate | undefined): Promise<void> {
  await audit.scan({ ...filter, kinds: ['decision'] }, (record) => {
    const agg = into(record);
    if (agg) addDecision(agg, record);
  });
}

/**
 * The aggregate of the decisions that match `filter`.
 *
 * @example
 * const agg = await aggregateDecisions(audit, { since: new Date(Date.now() - 86_400_000), scope });
 * complianceMetrics(agg).denied_actions;
 */
export async function aggregateDecisions(audit: Pick<AuditSink, 'scan'>, filter: Omit<AuditFilter, 'kinds'>, options: AggregateOptions = {}): Promise<ComplianceAggregate> {
  const agg = newAggregate(options);
  await foldDecisions(audit, filter, () => agg);
  return agg;
}

/** Percent of decisions not allowed, two decimals (0 without decisions). */
export function denialRate(agg: ComplianceAggregate): number {
  return agg.total > 0 ? Math.round((agg.denied / agg.total) * 10_000) / 100 : 0;
}

export type ComplianceLevel = 'healthy' | 'warning' | 'critical';

/**
 * The compliance level of a denial rate, and what it means.
 *
 * @example complianceLevel(12.5) // { status: 'warning', message: 'Elevated denial rate - review agent configurations' }
 */
export function complianceLevel(rate: number): { status: ComplianceLevel; message: string } {
  if (rate > 20) return { status: 'critical', message: 'High denial rate indicates potential security issues or misconfigured policies' };
  if (rate > 10) return { status: 'warning', message: 'Elevated denial rate - review agent configurations' };
  return { status: 'healthy', message: 'Security posture is within acceptable parameters' };
}

/** Agents by decisions not allowed, most first, then by id; agents without any are left out. */
export function offenders(agg: ComplianceAggregate): Array<{ agent_id: string; violations: number }> {
  return [...agg.agents.entries()]
    .filter(([, a]) => a.denied > 0)
    .map(([agent_id, a]) => ({ agent_id, violations: a.denied }))
    .sort((a, b) => b.violations - a.violations || a.agent_id.localeCompare(b.agent_id));
}

/** Targets by decisions not allowed, most first, then by name. */
export function deniedTargets(agg: ComplianceAggregate): Array<{ target: string; denied: number }> {
  return [...agg.deniedTargets.entries()].map(([target, denied]) => ({ target, denied })).sort((a, b) => b.denied - a.denied || a.target.localeCompare(b.target));
}

/** The `metrics` of get_compliance_status (without its `scope`, which the caller adds). */
export interface ComplianceMetrics {
  total_actions: number;
  allowed_actions: number;
  denied_actions: number;
  denial_rate: number;
  top_offenders: Array<{ agent_id: string; violations: number }>;
  action_breakdown: Record<string, { allowed: number; denied: number }>;
  unique_agents: number;
  unique_agents_capped?: true;
}

/**
 * The `metrics` object of get_compliance_status.
 *
 * @example const { denial_rate, top_offenders } = complianceMetrics(await aggregateDecisions(audit, { since }));
 */
export function complianceMetrics(agg: ComplianceAggregate): ComplianceMetrics {
  return {
    total_actions: agg.total,
    allowed_actions: agg.total - agg.denied,
    denied_actions: agg.denied,
    denial_rate: denialRate(agg),
    top_offenders: offenders(agg).slice(0, 5),
    action_breakdown: Object.fromEntries([...agg.byActionType.entries()].map(([type, c]) => [type, { ...c }])),
    unique_agents: agg.agents.size,
    ...(agg.agentsCapped ? { unique_agents_capped: true as const } : {}),
  };
}

/**
 * Decisions per bucket from `since` to `until`, empty buckets included, as parallel arrays
 * (x in epoch seconds, as plots want it). Needs {@link AggregateOptions.seriesBucketMs}.
 *
 * @example const { t, allow, deny, require_approval } = decisionSeries(agg, since, now);
 */
export function decisionSeries(agg: ComplianceAggregate, since: Date, until: Date): { bucket_ms: number; t: number[] } & Record<DecisionKind, number[]> {
  const bucketMs = agg.options.seriesBucketMs;
  if (!bucketMs) throw new Error('decisionSeries needs an aggregate made with seriesBucketMs');
  const out = { bucket_ms: bucketMs, t: [] as number[], allow: [] as number[], deny: [] as number[], require_approval: [] as number[] };
  for (let start = Math.floor(since.getTime() / bucketMs) * bucketMs; start <= until.getTime(); start += bucketMs) {
    const c = agg.series.get(start);
    out.t.push(start / 1000);
    out.allow.push(c?.allow ?? 0);
    out.deny.push(c?.deny ?? 0);
    out.require_approval.push(c?.require_approval ?? 0);
  }
  return out;
}

/**
 * Whether agent `agentId`'s data is in `scope` (undefined: everything is): the agents and the
 * incidents (by their `agent_id`) a scoped caller sees. The records themselves are scoped by the
 * sink's scan (docs/decisions.md, "Identity").
 *
 * @example agents.filter((a) => agentInScope(a.id, scope)); incidents.filter((i) => agentInScope(i.agent_id, scope));
 */
export function agentInScope(agentId: string | null, scope: AuditScope | undefined): boolean {
  return !scope || (agentId !== null && scope.agentIds.has(agentId));
}
