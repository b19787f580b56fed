/** Inputs and outputs of the policy engine. Field names of Decision follow the seed (snake_case). */
import type { Enforcement, RuleAction, TrustLevel } from '../api/schemas.js';
import type { Reason } from '../api/conditions.js';

/**
 * `Kind/namespace/name`: how an object is keyed wherever it is looked up (the snapshot's objects
 * in force; the stores' problems, status and overrides).
 *
 * @example objectKey('GuardPolicy', 'team', 'no-drops') // 'GuardPolicy/team/no-drops'
 */
export function objectKey(kind: string, namespace: string | undefined, name: string): string {
  return `${kind}/${namespace ?? ''}/${name}`;
}

/**
 * `namespace/name`, or the name alone (standalone mode): how messages show an object.
 *
 * @example namespacedName({ namespace: 'team', name: 'etl' }) // 'team/etl'
 */
export function namespacedName(meta: { namespace?: string | undefined; name: string }): string {
  return meta.namespace ? `${meta.namespace}/${meta.name}` : meta.name;
}

export interface EngineOptions {
  /** Decision when no Enforce rule matches. */
  defaultDecision: 'allow' | 'deny';
  /** Trust of an agent id that no GuardAgent claims. */
  unknownAgentTrust: TrustLevel;
  /**
   * Policies in this namespace apply to every agent; others only to agents in their own
   * namespace. `null` (standalone mode): every policy applies to every agent.
   */
  clusterPolicyNamespace: string | null;
}

export const DEFAULT_ENGINE_OPTIONS: EngineOptions = {
  defaultDecision: 'allow',
  unknownAgentTrust: 'low',
  clusterPolicyNamespace: null,
};

export interface ActionRequest {
  agentId: string;
  actionType: string;
  target: string;
  parameters: Readonly<Record<string, unknown>>;
  context?: string;
  /**
   * Namespace an agent id that no GuardAgent claims is evaluated in, so that namespaced
   * policies apply to it (e.g. the caller's namespace). Absent: no namespace, and only
   * cluster-wide policies apply. Ignored for registered agents, which have their own.
   */
  unknownAgentNamespace?: string;
  /** `namespace/name` of the GuardUpstream the call goes through (the MCP gateway); absent for validate_action. */
  upstream?: string;
}

/**
 * One rule that matched, or the agent-level check that decided (`policy: "agent:<id>"`, which
 * has no priority: the agent's own lists come before every policy).
 */
export interface MatchedRule {
  policy: string;
  namespace?: string;
  rule: string;
  action: RuleAction;
  enforcement: Exclude<Enforcement, 'Disabled'>;
  priority?: number;
  message?: string;
}

export type DecisionKind = 'allow' | 'deny' | 'require_approval';

export interface Decision {
  allowed: boolean;
  require_approval: boolean;
  reason: string;
  warnings: string[];
  decision: DecisionKind;
  /** Enforce-mode matches, most significant first; the first one of the winning action decided. */
  matched: MatchedRule[];
  /** Audit-mode matches: reported, never enforced. */
  audit_findings: MatchedRule[];
  agent: { id: string; trust_level: TrustLevel; registered: boolean };
  /** Engine snapshot that made the decision. */
  revision: string;
}

/** Why an object is not (or not fully) in force; becomes its Ready=False condition. */
export interface ObjectProblem {
  kind: 'GuardAgent' | 'GuardPolicy' | 'GuardUpstream';
  namespace?: string;
  name: string;
  reason: Reason;
  message: string;
}
