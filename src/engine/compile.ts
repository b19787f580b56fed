/**
 * Compile GuardAgents and GuardPolicies into the immutable structures the evaluator reads.
 * Every glob and argument condition is compiled here, once; a bad one turns into an
 * {@link ObjectProblem} for that object instead of an exception.
 */
import { createHash } from 'node:crypto';
import { ANNOTATION_RESUME, trustRank } from '../api/schemas.js';
import type { GuardAgent, GuardPolicy, LabelSelector, RuleAction, TrustLevel } from '../api/schemas.js';
import { Reason } from '../api/conditions.js';
import { compileArgument, type ArgumentTest } from './arguments.js';
import { compileGlobs, matchesSomeNamespacedName, PatternError, type Glob } from './glob.js';
import { namespacedName, type EngineOptions, type ObjectProblem } from './types.js';

export interface CompiledAgent {
  id: string;
  /** `namespace/name` of the GuardAgent, as messages show it. */
  ref: string;
  namespace: string | undefined;
  name: string;
  labels: Readonly<Record<string, string>>;
  trust: TrustLevel;
  rank: number;
  /** Why the agent is suspended, or undefined when it is not. */
  suspension: string | undefined;
  /** `undefined` = no restriction (empty or `["*"]`). */
  allowedTools: Glob[] | undefined;
  deniedTools: Glob[];
  source: GuardAgent;
}

export interface CompiledRule {
  policy: string;
  namespace: string | undefined;
  /** Namespace whose agents this rule governs; `undefined` = every agent. */
  scope: string | undefined;
  selector: ((labels: Readonly<Record<string, string>>) => boolean) | undefined;
  enforcement: 'Enforce' | 'Audit';
  priority: number;
  ruleIndex: number;
  ruleName: string;
  action: RuleAction;
  message: string | undefined;
  tools: Glob[] | undefined;
  actionTypes: Glob[] | undefined;
  agents: Glob[] | undefined;
  /** Globs over "namespace/name" of the GuardUpstream; a call through none does not match. */
  upstreams: Glob[] | undefined;
  /** Matches when the agent's rank is below this. */
  trustBelow: number | undefined;
  /** Matches when the agent's rank is at least this. */
  trustAtLeast: number | undefined;
  args: ArgumentTest[];
}

export type CompileResult<T> = { ok: true; value: T } | { ok: false; problem: ObjectProblem };

function problemFrom(kind: ObjectProblem['kind'], meta: { namespace?: string | undefined; name: string }, err: unknown): ObjectProblem {
  const isPattern = err instanceof PatternError;
  return {
    kind,
    ...(meta.namespace ? { namespace: meta.namespace } : {}),
    name: meta.name,
    reason: isPattern ? Reason.InvalidPattern : Reason.InvalidSpec,
    message: err instanceof Error ? err.message : String(err),
  };
}

/** How far ahead of the server's clock a resume time may be: the clocks of people and CI drift. */
const RESUME_CLOCK_SKEW_MS = 5 * 60_000;

/**
 * An automatic suspension is over once `policyguard.dev/resume` holds a time later than it
 * began and not later than `now` (when the agent is compiled) — or, for a clock a little
 * ahead, at most {@link RESUME_CLOCK_SKEW_MS} ahead of `now` and more than that after the
 * suspension began, so it was written after the suspension, not before. A stamp written in
 * advance (`2099-01-01T00:00:00Z`, or one kept a few minutes ahead by a job) would otherwise
 * void suspensions still to come. Compiled results are kept per object version, so an ignored
 * stamp stays ignored until the agent changes; the deny says to write the current time.
 */
function activeSuspension(agent: GuardAgent, now: number): string | undefined {
  if (agent.spec.suspended) return 'suspended by its spec';
  const s = agent.status?.suspension;
  if (!s) return undefined;
  const stamp = agent.metadata.annotations?.[ANNOTATION_RESUME];
  const resume = Date.parse(stamp ?? '');
  const suspended = `suspended since ${s.since}: ${s.reason}`;
  const since = Date.parse(s.since);
  if (!Number.isFinite(resume) || resume <= since) return suspended;
  if (resume <= now || (resume <= now + RESUME_CLOCK_SKEW_MS && resume - since > RESUME_CLOCK_SKEW_MS)) return undefined;
  return `${suspended} (its ${ANNOTATION_RESUME} ${stamp} is ahead of the server's clock, so it ends nothing: write the current time)`;
}

/** The id callers send: `spec.agentId`, else `metadata.name`. */
export function agentIdOf(agent: GuardAgent): string {
  return agent.spec.agentId ?? agent.metadata.name;
}

/** `now`: the clock a resume annotation is judged against (ms since the epoch). */
export function compileAgent(agent: GuardAgent, now: number): CompileResult<CompiledAgent> {
  try {
    const allowed = agent.spec.allowedTools;
    const unrestricted = allowed.length === 0 || (allowed.length === 1 && allowed[0] === '*');
    return {
      ok: true,
      value: {
        id: agentIdOf(agent),
        ref: namespacedName(agent.metadata),
        namespace: agent.metadata.namespace,
        name: agent.metadata.name,
        labels: agent.metadata.labels ?? {},
        trust: agent.spec.trustLevel,
        rank: trustRank(agent.spec.trustLevel),
        suspension: activeSuspension(agent, now),
        allowedTools: unrestricted ? undefined : compileGlobs(allowed),
        deniedTools: compileGlobs(agent.spec.deniedTools),
        source: agent,
      },
    };
  } catch (err) {
    return { ok: false, problem: problemFrom('GuardAgent', agent.metadata, err) };
  }
}

function compileSelector(sel: LabelSelector | undefined): CompiledRule['selector'] {
  if (!sel || (!sel.matchLabels && !sel.matchExpressions)) return undefined;
  const labels = Object.entries(sel.matchLabels ?? {});
  const exprs = sel.matchExpressions ?? [];
  return (l) =>
    labels.every(([k, v]) => l[k] === v) &&
    exprs.every((e) => {
      const has = Object.hasOwn(l, e.key);
      switch (e.operator) {
        case 'Exists':
          return has;
        case 'DoesNotExist':
          return !has;
        case 'In':
          return has && (e.values ?? []).includes(l[e.key]!);
        case 'NotIn':
          return !has || !(e.values ?? []).includes(l[e.key]!);
      }
    });
}

/**
 * An `upstreams` pattern, refused when no `namespace/name` can match it (`github`, `github?`,
 * `default/`, `*\/`, `a//b`): its rule would match no call at all, a deny included.
 */
function upstreamPattern(pattern: string): string {
  if (!matchesSomeNamespacedName(pattern)) {
    throw new PatternError(pattern, 'in upstreams matches no namespace/name, which is what upstreams are matched as (one "/" between two non-empty parts); write e.g. "default/github", or "*/github" for any namespace');
  }
  return pattern;
}

/** Compile a policy's rules. Disabled policies compile to no rules. */
export function compilePolicy(policy: GuardPolicy, options: EngineOptions): CompileResult<CompiledRule[]> {
  const { metadata, spec } = policy;
  if (spec.enforcement === 'Disabled') return { ok: true, value: [] };
  try {
    const ns = metadata.namespace;
    const clusterWide = options.clusterPolicyNamespace === null || ns === options.clusterPolicyNamespace;
    const selector = compileSelector(spec.agentSelector);
    const names = new Set<string>();
    const rules = spec.rules.map((rule, ruleIndex): CompiledRule => {
      const ruleName = rule.name ?? `rule-${ruleIndex}`;
      if (names.has(ruleName)) throw new Error(`rule name "${ruleName}" is used twice`);
      names.add(ruleName);
      const m = rule.match;
      const rank = (t: TrustLevel | undefined) => (t === undefined ? undefined : trustRank(t));
      return {
        policy: metadata.name,
        namespace: ns,
        scope: clusterWide ? undefined : ns,
        selector,
        enforcement: spec.enforcement as 'Enforce' | 'Audit',
        priority: spec.priority,
        ruleIndex,
        ruleName,
        action: rule.action,
        message: rule.message,
        tools: m.tools && compileGlobs(m.tools),
        actionTypes: m.actionTypes && compileGlobs(m.actionTypes),
        agents: m.agents && compileGlobs(m.agents),
        upstreams: m.upstreams && compileGlobs(m.upstreams.map(upstreamPattern)),
        trustBelow: rank(m.trustLevelBelow),
        trustAtLeast: rank(m.trustLevelAtLeast),
        args: (m.arguments ?? []).map(compileArgument),
      };
    });
    return { ok: true, value: rules };
  } catch (err) {
    return { ok: false, problem: problemFrom('GuardPolicy', metadata, err) };
  }
}

/**
 * Identity of an object's compiled form. With a uid (Kubernetes) a policy recompiles only when
 * its generation changes and an agent when its resourceVersion does (labels, status and
 * annotations matter for agents); without one (standalone) the content itself is the key.
 */
export function cacheKey(obj: GuardAgent | GuardPolicy): string {
  const { uid, generation, resourceVersion } = obj.metadata;
  const version = obj.kind === 'GuardPolicy' ? generation : resourceVersion;
  if (uid && version !== undefined) return `${obj.kind}/${uid}/${version}`;
  return `${obj.kind}/${JSON.stringify(obj)}`;
}

/** Short, stable id of a set of inputs: every replica that sees the same objects reports the same revision. */
export function revisionOf(keys: string[], options: EngineOptions): string {
  const h = createHash('sha256');
  h.update(JSON.stringify(options));
  for (const k of [...keys].sort()) h.update(k).update('\0');
  return h.digest('hex').slice(0, 12);
}
