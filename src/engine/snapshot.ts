/**
 * The engine: an immutable snapshot of compiled agents and rules, and the evaluation of one
 * action against it (DESIGN §3). Building a new snapshot never disturbs readers of the old one;
 * stores swap the reference atomically.
 */
import { trustRank, type GuardAgent, type GuardPolicy, type TrustLevel } from '../api/schemas.js';
import { Reason } from '../api/conditions.js';
import {
  cacheKey,
  compileAgent,
  compilePolicy,
  revisionOf,
  type CompiledAgent,
  type CompiledRule,
  type CompileResult,
} from './compile.js';
import { anyMatch } from './glob.js';
import type { ActionRequest, Decision, DecisionKind, EngineOptions, MatchedRule, ObjectProblem } from './types.js';
import { DEFAULT_ENGINE_OPTIONS } from './types.js';

/** Per-object compile results, reused across snapshots (keyed by {@link cacheKey}). */
export type CompileCache = Map<string, CompileResult<CompiledAgent> | CompileResult<CompiledRule[]>>;

export interface SnapshotInput {
  agents: readonly GuardAgent[];
  policies: readonly GuardPolicy[];
}

export interface CompileOptions {
  /** Reuse compiled objects across snapshots. */
  cache?: CompileCache;
  /** When an object fails to compile, its version in force here stays in force. */
  previous?: PolicySnapshot;
}

type GuardObject = GuardAgent | GuardPolicy;

function objectRef(obj: GuardObject): string {
  return `${obj.kind}/${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}

/**
 * Candidate lookup by tool name: exact names in a Map, globs grouped by their literal prefix,
 * rules without a tool condition always considered. Only candidates are matched in full.
 */
class RuleIndex {
  private readonly anyTool: CompiledRule[] = [];
  private readonly exact = new Map<string, CompiledRule[]>();
  private readonly byPrefix = new Map<string, CompiledRule[]>();
  private readonly prefixLengths: number[];

  constructor(rules: readonly CompiledRule[]) {
    const lengths = new Set<number>();
    const push = (map: Map<string, CompiledRule[]>, key: string, rule: CompiledRule) => {
      const list = map.get(key);
      if (list) {
        if (list[list.length - 1] !== rule) list.push(rule);
      } else map.set(key, [rule]);
    };
    for (const rule of rules) {
      if (!rule.tools) {
        this.anyTool.push(rule);
        continue;
      }
      for (const g of rule.tools) {
        if (g.exact) push(this.exact, g.prefix, rule);
        else {
          push(this.byPrefix, g.prefix, rule);
          lengths.add(g.prefix.length);
        }
      }
    }
    this.prefixLengths = [...lengths].sort((a, b) => a - b);
  }

  /** Rules that may match `targetLower`; a rule can appear more than once. */
  candidates(targetLower: string): CompiledRule[][] {
    const out: CompiledRule[][] = [this.anyTool];
    const e = this.exact.get(targetLower);
    if (e) out.push(e);
    for (const len of this.prefixLengths) {
      if (len > targetLower.length) break;
      const p = this.byPrefix.get(targetLower.slice(0, len));
      if (p) out.push(p);
    }
    return out;
  }
}

const ACTION_STRENGTH: Record<DecisionKind, number> = { deny: 3, require_approval: 2, allow: 1 };

/** Most significant first: priority, then namespace/policy name, then rule order. Total order. */
function compareMatches(a: CompiledRule, b: CompiledRule): number {
  return (
    b.priority - a.priority ||
    (a.namespace ?? '').localeCompare(b.namespace ?? '') ||
    a.policy.localeCompare(b.policy) ||
    a.ruleIndex - b.ruleIndex
  );
}

function toMatched(r: CompiledRule): MatchedRule {
  return {
    policy: r.policy,
    ...(r.namespace ? { namespace: r.namespace } : {}),
    rule: r.ruleName,
    action: r.action,
    enforcement: r.enforcement,
    priority: r.priority,
    ...(r.message !== undefined ? { message: r.message } : {}),
  };
}

function ruleReason(r: CompiledRule): string {
  if (r.message) return r.message;
  switch (r.action) {
    case 'deny':
      return `Denied by policy '${r.policy}' rule '${r.ruleName}'`;
    case 'require_approval':
      return `Policy '${r.policy}' rule '${r.ruleName}' requires human approval`;
    case 'allow':
      return `Allowed by policy '${r.policy}' rule '${r.ruleName}'`;
  }
}

interface ResolvedAgent {
  id: string;
  namespace: string | undefined;
  labels: Readonly<Record<string, string>>;
  trust: TrustLevel;
  rank: number;
  registered: boolean;
  compiled: CompiledAgent | undefined;
}

export class PolicySnapshot {
  private readonly agentsById: ReadonlyMap<string, CompiledAgent>;
  private readonly index: RuleIndex;

  private constructor(
    readonly revision: string,
    readonly options: EngineOptions,
    agents: Map<string, CompiledAgent>,
    rules: CompiledRule[],
    /** Objects not (fully) in force, with the reason; input for status conditions. */
    readonly problems: readonly ObjectProblem[],
    /** Counts for status pages. */
    readonly counts: { agents: number; policies: number; rules: number },
    /** The version of each object (by kind/namespace/name) that is in force. */
    private readonly inForce: ReadonlyMap<string, GuardObject>,
  ) {
    this.agentsById = agents;
    this.index = new RuleIndex(rules);
  }

  /** An empty snapshot: no agents, no policies. */
  static empty(options: EngineOptions = DEFAULT_ENGINE_OPTIONS): PolicySnapshot {
    return PolicySnapshot.compile({ agents: [], policies: [] }, options);
  }

  /**
   * Compile objects into a snapshot. An object that fails to compile is listed in `problems`
   * and left out, unless `previous` had a good version of it: that version stays in force.
   *
   * @example
   *   const snap = PolicySnapshot.compile({ agents, policies }, DEFAULT_ENGINE_OPTIONS);
   *   snap.evaluate({ agentId: 'etl', actionType: 'tool_call', target: 'drop_table', parameters: {} });
   */
  static compile(input: SnapshotInput, options: EngineOptions, opts: CompileOptions = {}): PolicySnapshot {
    const cache = opts.cache ?? new Map();
    const problems: ObjectProblem[] = [];
    const keys: string[] = [];
    const touched = new Set<string>();
    const inForce = new Map<string, GuardObject>();
    const compileOne = <T, O extends GuardObject>(obj: O, build: (o: O) => CompileResult<T>): CompileResult<T> => {
      const once = (o: O): CompileResult<T> => {
        const key = cacheKey(o);
        touched.add(key);
        let hit = cache.get(key) as CompileResult<T> | undefined;
        if (!hit) {
          hit = build(o);
          cache.set(key, hit as CompileResult<CompiledAgent>);
        }
        return hit;
      };
      let res = once(obj);
      let used: O = obj;
      if (!res.ok) {
        const last = opts.previous?.inForce.get(objectRef(obj)) as O | undefined;
        const lastRes = last && last !== obj ? once(last) : undefined;
        if (last && lastRes?.ok) {
          const gen = last.metadata.generation === undefined ? 'the last good version' : `generation ${last.metadata.generation}`;
          problems.push({ ...res.problem, message: `${res.problem.message}; ${gen} stays in force` });
          res = lastRes;
          used = last;
        } else problems.push(res.problem);
      }
      if (res.ok) {
        inForce.set(objectRef(used), used);
        keys.push(cacheKey(used));
      }
      return res;
    };

    // Agents: one id, one agent. On a clash the oldest object wins (then namespace/name), so the
    // outcome does not depend on list order; the others are reported as Conflict.
    const claimants = new Map<string, CompiledAgent[]>();
    for (const agent of input.agents) {
      const res = compileOne(agent, compileAgent);
      if (!res.ok) continue;
      const list = claimants.get(res.value.id) ?? [];
      list.push(res.value);
      claimants.set(res.value.id, list);
    }
    const agents = new Map<string, CompiledAgent>();
    for (const [id, list] of claimants) {
      list.sort(
        (a, b) =>
          (a.source.metadata.creationTimestamp ?? '').localeCompare(b.source.metadata.creationTimestamp ?? '') ||
          a.key.localeCompare(b.key),
      );
      agents.set(id, list[0]!);
      for (const loser of list.slice(1)) {
        problems.push({
          kind: 'GuardAgent',
          ...(loser.namespace ? { namespace: loser.namespace } : {}),
          name: loser.name,
          reason: Reason.Conflict,
          message: `agentId "${id}" is already claimed by GuardAgent ${list[0]!.key}`,
        });
      }
    }

    const rules: CompiledRule[] = [];
    for (const policy of input.policies) {
      const res = compileOne(policy, (p) => compilePolicy(p, options));
      if (res.ok) rules.push(...res.value);
    }

    // Forget compiled objects no longer present, so the cache tracks the live set.
    for (const key of cache.keys()) if (!touched.has(key)) cache.delete(key);

    return new PolicySnapshot(revisionOf(keys, options), options, agents, rules, problems, {
      agents: agents.size,
      policies: input.policies.length,
      rules: rules.length,
    }, inForce);
  }

  /** The GuardAgent that claims `agentId`, if any. */
  agent(agentId: string): CompiledAgent | undefined {
    return this.agentsById.get(agentId);
  }

  /** Every agent in force. */
  agents(): IterableIterator<CompiledAgent> {
    return this.agentsById.values();
  }

  /** Every policy in force (including Disabled ones, which compile to no rules). */
  policies(): GuardPolicy[] {
    return [...this.inForce.values()].filter((o): o is GuardPolicy => o.kind === 'GuardPolicy');
  }

  private resolve(agentId: string): ResolvedAgent {
    const a = this.agentsById.get(agentId);
    if (a) return { id: a.id, namespace: a.namespace, labels: a.labels, trust: a.trust, rank: a.rank, registered: true, compiled: a };
    const trust = this.options.unknownAgentTrust;
    return { id: agentId, namespace: undefined, labels: {}, trust, rank: trustRank(trust), registered: false, compiled: undefined };
  }

  private ruleMatches(r: CompiledRule, agent: ResolvedAgent, req: ActionRequest, actionLower: string, agentLower: string, targetLower: string): boolean {
    if (r.scope !== undefined && r.scope !== agent.namespace) return false;
    if (r.selector && !r.selector(agent.labels)) return false;
    if (r.trustBelow !== undefined && !(agent.rank < r.trustBelow)) return false;
    if (r.trustAtLeast !== undefined && !(agent.rank >= r.trustAtLeast)) return false;
    if (r.tools && !anyMatch(r.tools, targetLower)) return false;
    if (r.actionTypes && !anyMatch(r.actionTypes, actionLower)) return false;
    if (r.agents && !anyMatch(r.agents, agentLower)) return false;
    for (const test of r.args) if (!test(req.parameters)) return false;
    return true;
  }

  /** Evaluate one action (DESIGN §3). Pure: no I/O, no clock, no randomness. */
  evaluate(req: ActionRequest): Decision {
    const agent = this.resolve(req.agentId);
    const targetLower = req.target.toLowerCase();
    const actionLower = req.actionType.toLowerCase();
    const agentLower = agent.id.toLowerCase();

    const enforced: CompiledRule[] = [];
    const audited: CompiledRule[] = [];
    const seen = new Set<CompiledRule>();
    for (const bucket of this.index.candidates(targetLower)) {
      for (const r of bucket) {
        if (seen.has(r)) continue;
        seen.add(r);
        if (this.ruleMatches(r, agent, req, actionLower, agentLower, targetLower)) {
          (r.enforcement === 'Enforce' ? enforced : audited).push(r);
        }
      }
    }
    enforced.sort(compareMatches);
    audited.sort(compareMatches);

    const warnings: string[] = [];
    if (!agent.registered) {
      warnings.push(`Agent '${agent.id}' is not registered; evaluated at trust level '${agent.trust}'`);
    }
    for (const r of audited) {
      warnings.push(`Audit-mode policy '${r.policy}' rule '${r.ruleName}' would ${r.action === 'require_approval' ? 'require approval' : r.action}`);
    }

    const decide = (decision: DecisionKind, reason: string, matched: MatchedRule[]): Decision => ({
      allowed: decision === 'allow',
      require_approval: decision === 'require_approval',
      reason,
      warnings,
      decision,
      matched,
      audit_findings: audited.map(toMatched),
      agent: { id: agent.id, trust_level: agent.trust, registered: agent.registered },
      revision: this.revision,
    });
    const agentCheck = (rule: string, message: string): MatchedRule => ({
      policy: `agent:${agent.id}`,
      rule,
      action: 'deny',
      enforcement: 'Enforce',
      priority: Number.MAX_SAFE_INTEGER,
      message,
    });

    const a = agent.compiled;
    if (a?.suspension) {
      const reason = `Agent '${agent.id}' is ${a.suspension}`;
      return decide('deny', reason, [agentCheck('suspended', reason)]);
    }
    const denied = a && anyMatch(a.deniedTools, targetLower);
    if (denied) {
      const reason = `Tool '${req.target}' is explicitly denied for agent '${agent.id}' (deniedTools: ${denied.pattern})`;
      return decide('deny', reason, [agentCheck('deniedTools', reason)]);
    }
    if (a?.allowedTools && !anyMatch(a.allowedTools, targetLower)) {
      const reason = `Tool '${req.target}' is not in allowed list for agent '${agent.id}'`;
      return decide('deny', reason, [agentCheck('allowedTools', reason)]);
    }

    let winner: CompiledRule | undefined;
    for (const r of enforced) {
      if (!winner || ACTION_STRENGTH[r.action] > ACTION_STRENGTH[winner.action]) winner = r;
    }
    const matched = enforced.map(toMatched);
    if (winner) return decide(winner.action, ruleReason(winner), matched);
    return this.options.defaultDecision === 'allow'
      ? decide('allow', 'Action permitted by default policy', matched)
      : decide('deny', 'No rule allows this action; the default decision is deny', matched);
  }
}

