/**
 * The baseline the engine is measured against: what the original project did. Every call walks
 * every rule of every policy and compiles and matches each pattern on the spot (as
 * `fnmatch(value, pattern)` did) — no index, nothing compiled ahead. The decision semantics are
 * the engine's (docs/decisions.md), so the benchmark can check that both give the
 * same answers.
 */
import { trustRank, type GuardAgent, type GuardPolicy, type TrustLevel } from '../../src/api/schemas.js';
import { compileGlob, foldCase } from '../../src/engine/glob.js';
import type { ActionRequest, DecisionKind } from '../../src/engine/types.js';

const glob = (value: string, pattern: string): boolean => compileGlob(pattern).matchLower(foldCase(value));

const anyGlob = (value: string, patterns: readonly string[] | undefined) => patterns?.find((p) => glob(value, p));

/** Sentinel: the path ran through something that is not an object. */
const BLOCKED = Symbol('blocked');

function lookup(root: unknown, path: string): unknown {
  let node = root;
  for (const key of path.split('.')) {
    if (node === null || typeof node !== 'object') return BLOCKED;
    if (!Object.hasOwn(node, key)) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

const comparable = (v: unknown) => (typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : v === null ? 'null' : undefined);
const numeric = (v: unknown) => (typeof v === 'number' ? v : typeof v === 'string' && /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(v.trim()) ? Number(v) : NaN);

/** One argument condition: true, false, or undefined when it cannot be evaluated. */
function argument(a: { path: string; operator: string; values?: string[] | undefined }, parameters: unknown): boolean | undefined {
  const v = lookup(parameters, a.path);
  if (v === BLOCKED) return undefined;
  const values = a.values ?? [];
  if (a.operator === 'Exists') return v !== undefined;
  if (a.operator === 'DoesNotExist') return v === undefined;
  if (a.operator === 'GreaterThan' || a.operator === 'LessThan') {
    if (v === undefined) return false;
    const n = numeric(v);
    if (!Number.isFinite(n)) return undefined;
    return a.operator === 'GreaterThan' ? n > Number(values[0]) : n < Number(values[0]);
  }
  if (v === undefined) return a.operator === 'NotEquals' || a.operator === 'NotIn';
  const c = comparable(v);
  if (c === undefined) return undefined;
  return a.operator === 'Equals' ? c === values[0]
    : a.operator === 'NotEquals' ? c !== values[0]
    : a.operator === 'In' ? values.includes(c)
    : a.operator === 'NotIn' ? !values.includes(c)
    : values.some((g) => glob(c, g));
}

export interface NaiveDecision {
  decision: DecisionKind;
  reason: string;
  matched: number;
}

/** Evaluate one request by scanning everything (agents by id in a Map, like the seed's dict). */
export function naiveEvaluator(agents: readonly GuardAgent[], policies: readonly GuardPolicy[], unknownTrust: TrustLevel = 'low') {
  const byId = new Map<string, GuardAgent>();
  const sorted = [...agents].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  for (const a of sorted) {
    const id = a.spec.agentId ?? a.metadata.name;
    if (!byId.has(id)) byId.set(id, a);
  }

  return (req: ActionRequest): NaiveDecision => {
    const agent = byId.get(req.agentId);
    const trust = agent?.spec.trustLevel ?? unknownTrust;
    const rank = trustRank(trust);
    const labels = agent?.metadata.labels ?? {};
    if (agent?.spec.suspended) return { decision: 'deny', reason: `Agent '${req.agentId}' is suspended by its spec`, matched: 1 };
    if (agent) {
      const denied = anyGlob(req.target, agent.spec.deniedTools);
      if (denied) return { decision: 'deny', reason: `Tool '${req.target}' is explicitly denied for agent '${req.agentId}' (deniedTools: ${denied})`, matched: 1 };
      const allowed = agent.spec.allowedTools;
      if (allowed.length > 0 && !(allowed.length === 1 && allowed[0] === '*') && !anyGlob(req.target, allowed)) {
        return { decision: 'deny', reason: `Tool '${req.target}' is not in allowed list for agent '${req.agentId}'`, matched: 1 };
      }
    }
    const strength = { deny: 3, require_approval: 2, allow: 1 } as const;
    let best: { action: DecisionKind; priority: number; policy: string; index: number; reason: string } | undefined;
    let matched = 0;
    for (const p of policies) {
      if (p.spec.enforcement !== 'Enforce') continue;
      const sel = p.spec.agentSelector?.matchLabels;
      if (sel && !Object.entries(sel).every(([k, v]) => labels[k] === v)) continue;
      p.spec.rules.forEach((rule, index) => {
        const m = rule.match;
        if (m.trustLevelBelow && !(rank < trustRank(m.trustLevelBelow))) return;
        if (m.trustLevelAtLeast && !(rank >= trustRank(m.trustLevelAtLeast))) return;
        if (m.tools && !anyGlob(req.target, m.tools)) return;
        if (m.actionTypes && !anyGlob(req.actionType, m.actionTypes)) return;
        if (m.agents && !anyGlob(req.agentId, m.agents)) return;
        // A condition that cannot be evaluated lets a deny or require_approval apply, never an allow.
        const results = (m.arguments ?? []).map((a) => argument(a, req.parameters));
        if (results.includes(false) || (rule.action === 'allow' && results.includes(undefined))) return;
        matched++;
        const reason =
          rule.message ||
          (rule.action === 'deny'
            ? `Denied by policy '${p.metadata.name}' rule '${rule.name ?? `rule-${index}`}'`
            : rule.action === 'require_approval'
              ? `Policy '${p.metadata.name}' rule '${rule.name ?? `rule-${index}`}' requires human approval`
              : `Allowed by policy '${p.metadata.name}' rule '${rule.name ?? `rule-${index}`}'`);
        const cand = { action: rule.action, priority: p.spec.priority, policy: p.metadata.name, index, reason };
        if (
          !best ||
          strength[cand.action] > strength[best.action] ||
          (strength[cand.action] === strength[best.action] &&
            (cand.priority > best.priority || (cand.priority === best.priority && (cand.policy.localeCompare(best.policy) < 0 || (cand.policy === best.policy && cand.index < best.index)))))
        ) {
          best = cand;
        }
      });
    }
    if (best) return { decision: best.action, reason: best.reason, matched };
    return { decision: 'allow', reason: 'Action permitted by default policy', matched };
  };
}
