/**
 * The engine: an immutable snapshot of compiled agents and rules, and the evaluation of one
 * action against it (docs/decisions.md). Building a new snapshot never disturbs readers of the old one;
 * stores swap the reference atomically.
 */
import { LABEL_AUTO_REGISTERED, trustRank, type GuardAgent, type GuardPolicy, type ObjectMeta, type TrustLevel } from '../api/schemas.js';
import { Reason } from '../api/conditions.js';
import {
  agentIdOf,
  cacheKey,
  compileAgent,
  compilePolicy,
  revisionOf,
  type CompiledAgent,
  type CompiledRule,
  type CompileResult,
} from './compile.js';
import { anyMatch, codePointName, foldCase, INVISIBLE, LONE_SURROGATE } from './glob.js';
import { Check, compareNames, encoded, RuleIndex } from './rule-index.js';
import type { ActionRequest, Decision, DecisionKind, EngineOptions, MatchedRule, ObjectProblem } from './types.js';
import { DEFAULT_ENGINE_OPTIONS, namespacedName, objectKey } from './types.js';

/** Per-object compile results, reused across snapshots (keyed by {@link cacheKey}). */
export type CompileCache = Map<string, CompileResult<CompiledAgent> | CompileResult<CompiledRule[]>>;

/**
 * A GuardAgent or GuardPolicy its author wrote that is in force in no version: it cannot be
 * read, validated or compiled, or its name is taken twice, and no earlier version of it is in
 * force. The policy set is then not what its author wrote, so every decision it could change is
 * a deny until it is fixed (docs/decisions.md, "Objects that cannot be loaded").
 */
export interface MissingObject {
  /** Undefined when the document's kind cannot be read (invalid YAML, an unknown kind). */
  kind?: 'GuardAgent' | 'GuardPolicy';
  namespace?: string;
  /** A GuardAgent's id (`spec.agentId`, else its name), when it can be read. */
  agentId?: string;
  /**
   * A GuardAgent's metadata, when it can be read: with it, one that would lose its id to a
   * GuardAgent in force (by {@link claimOrder}) holds no decision.
   */
  metadata?: ClaimMetadata;
  /** What the deny quotes: `policies/deny.yaml:3: GuardPolicy deny-drops: …`. */
  problem: string;
}

export interface SnapshotInput {
  agents: readonly GuardAgent[];
  policies: readonly GuardPolicy[];
  /** Objects the store could not take in (see {@link MissingObject}); those failing to compile are added here. */
  missing?: readonly MissingObject[];
}

export interface CompileOptions {
  /** Reuse compiled objects across snapshots. */
  cache?: CompileCache;
  /** When an object fails to compile, its version in force here stays in force. */
  previous?: PolicySnapshot;
  /** How a compile problem is quoted in a deny (standalone mode prefixes `file:line:`); default {@link formatProblem}. */
  describe?: (problem: ObjectProblem) => string;
  /** The time a resume annotation is judged against (ms since the epoch); default now. */
  now?: number;
}

/** What the rule between GuardAgents that claim one id looks at (docs/decisions.md, "Identity"). */
export type ClaimMetadata = Pick<ObjectMeta, 'name' | 'namespace' | 'creationTimestamp' | 'labels'>;

const autoRegistered = (meta: ClaimMetadata) => meta.labels?.[LABEL_AUTO_REGISTERED] === 'true';

/**
 * The order in which GuardAgents claiming one id, or ids that differ only in case, win it: an
 * object a person wrote before an auto-registered one (a caller chose its id, perhaps to squat
 * it), then the oldest, then namespace/name, so the outcome depends neither on list order nor on
 * who came first.
 */
function claimOrder(a: ClaimMetadata, b: ClaimMetadata): number {
  return (
    Number(autoRegistered(a)) - Number(autoRegistered(b)) ||
    compareNames(a.creationTimestamp ?? '', b.creationTimestamp ?? '') ||
    compareNames(namespacedName(a), namespacedName(b))
  );
}

/**
 * The agent among `winners` (the agents in force that come before it in {@link claimOrder}) that
 * a GuardAgent claiming `id` loses to: one with the same id; for an auto-registered one also one
 * whose id differs only in case, since `agents:` globs match both alike.
 */
function winnerOver<W extends { id: string }>(id: string, meta: ClaimMetadata, winners: readonly W[]): W | undefined {
  return winners.find((w) => w.id === id) ?? (autoRegistered(meta) ? winners[0] : undefined);
}

/** A GuardAgent's claim on its id: one in force (`agent`), or one that cannot be loaded (`missing`). */
interface Claim {
  id: string;
  meta: ClaimMetadata;
  ref: string;
  agent?: CompiledAgent;
  missing?: MissingObject;
}

/**
 * Whose decisions a missing object holds: every agent's (`{}`), one namespace's, or one
 * agent id's. With one policy set for every agent (standalone mode) always every agent's: a
 * missing GuardAgent may be what binds a caller, and a document that cannot be read could
 * define anything. Otherwise what the object could change: a GuardAgent its id, a policy the
 * agents of its namespace, or every agent from the cluster policy namespace.
 */
type Hold = { problem: string; namespace?: string; agentId?: string };

function holdOf(m: MissingObject, options: EngineOptions): Hold {
  const scoped = options.clusterPolicyNamespace !== null;
  if (scoped && m.kind === 'GuardAgent' && m.agentId !== undefined) return { problem: m.problem, agentId: m.agentId };
  if (scoped && m.kind === 'GuardPolicy' && m.namespace !== undefined && m.namespace !== options.clusterPolicyNamespace) return { problem: m.problem, namespace: m.namespace };
  return { problem: m.problem };
}

/**
 * `GuardPolicy team/deny-drops: InvalidPattern: pattern "a{b}" uses braces…`: one line for a
 * problem, as status pages and logs show it.
 *
 * @example formatProblem({ kind: 'GuardPolicy', name: 'p', reason: Reason.InvalidSpec, message: 'x' }) // 'GuardPolicy p: InvalidSpec: x'
 */
export function formatProblem(p: ObjectProblem): string {
  return `${p.kind} ${p.namespace ? `${p.namespace}/` : ''}${p.name}: ${p.reason}: ${p.message}`;
}

type GuardObject = GuardAgent | GuardPolicy;

const objectRef = (obj: GuardObject) => objectKey(obj.kind, obj.metadata.namespace, obj.metadata.name);

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

/**
 * A rule with a condition that cannot be evaluated (and none that is false) applies when it
 * denies or asks for approval, and does not when it allows: an unreadable value never widens
 * what is allowed (docs/decisions.md).
 */
function appliesWhenIndeterminate(r: CompiledRule): boolean {
  return r.action !== 'allow';
}

/** `policy 'refunds' rule 'big': parameters.amount is "600 USD", not a number; GreaterThan cannot be evaluated, so this require_approval rule applies`. */
function indeterminateWarning(r: CompiledRule, reason: string): string {
  const outcome = appliesWhenIndeterminate(r) ? 'applies' : 'does not apply';
  const mode = r.enforcement === 'Audit' ? ' (Audit mode)' : '';
  return `policy '${r.policy}' rule '${r.ruleName}': ${reason}, so this ${r.action} rule${mode} ${outcome}`;
}

/** The rule of the `matched` entry of a deny because the policy set is incomplete (docs/decisions.md §9). */
export const INCOMPLETE_POLICY_SET = 'incompletePolicySet';

/**
 * Whitespace a name (target, action type) must not start or end with; nor may it hold an
 * {@link INVISIBLE} character anywhere. A tool server or client that trims or strips them runs
 * `delete_records` where `" delete_records"` or `"\u200bdelete_records"` was judged, and no
 * glob of a deny rule matches those. (A name that differs from its NFKC form is judged both
 * ways: {@link compatibilityForm}.)
 */
const EDGE_SPACE = /^\s|\s$/;

/** Why `req`'s target or action type cannot be judged as written, or undefined. */
function unclearName(req: Pick<ActionRequest, 'target' | 'actionType'>): string | undefined {
  // Nearly every call: printable ASCII without spaces, which neither check can object to (~20 ns a name).
  if (plainNames(req)) return undefined;
  return unclearWhy('target', req.target) ?? unclearWhy('action type', req.actionType);
}

/** Whether both names are printable ASCII without spaces: nothing to strip, and NFKC leaves them as they are. */
function plainNames(req: Pick<ActionRequest, 'target' | 'actionType'>): boolean {
  return !NOT_PLAIN.test(req.target) && !NOT_PLAIN.test(req.actionType);
}

/** A character other than printable, non-space ASCII (`!` to `~`). */
const NOT_PLAIN = /[^!-~]/;

function unclearWhy(what: string, name: string): string | undefined {
  const invisible = INVISIBLE.exec(name);
  if (invisible || EDGE_SPACE.test(name)) {
    const where = EDGE_SPACE.test(name) ? 'whitespace at its start or end' : `the invisible or control character ${codePointName(invisible![0].codePointAt(0)!)}`;
    return `The ${what} ${JSON.stringify(name)} has ${where}; a client or tool that strips it would run another name than the one judged, so the call is denied`;
  }
  if (LONE_SURROGATE.test(name)) {
    return `The ${what} ${JSON.stringify(name)} holds half of a surrogate pair, which is not a character (strict JSON readers refuse it); the call is denied`;
  }
  return undefined;
}

/**
 * `req` with its target and action type in Unicode's compatibility form (NFKC), when that
 * differs from what was sent: fullwidth letters, ligatures, superscripts, decomposed accents.
 * No glob matches `ｄｅｌｅｔｅ_records` as it matches `delete_records`, which is what a tool
 * that normalizes runs; so a call is judged as written and as it reads, the stricter decision
 * standing ({@link PolicySnapshot.evaluate}).
 */
function compatibilityForm<R extends Pick<ActionRequest, 'target' | 'actionType'>>(req: R): R | undefined {
  const target = req.target.normalize('NFKC');
  const actionType = req.actionType.normalize('NFKC');
  return target === req.target && actionType === req.actionType ? undefined : { ...req, target, actionType };
}

/** How strict a decision is: the stricter of two readings of a call stands. */
const STRICTNESS: Readonly<Record<DecisionKind, number>> = { allow: 0, require_approval: 1, deny: 2 };

/** The `matched` entry of a deny by the agent's own settings (suspended, deniedTools, allowedTools) or of an incomplete policy set. */
function agentCheck(agentId: string, rule: string, message: string): MatchedRule {
  return { policy: `agent:${agentId}`, rule, action: 'deny', enforcement: 'Enforce', message };
}

/**
 * What the snapshot knows of every call of one agent (with its namespace when unknown), action
 * type and upstream ({@link PolicySnapshot} `callShape`):
 * - `candidates`: the rules that do not depend on the tool, matched ({@link RuleIndex.callShape});
 * - `rest`: for the rules a tool key finds with {@link Check.Rest}, whether their other
 *   conditions hold, learnt the first time a call of the shape meets each: 2 bits per rule, by
 *   order, {@link REST_PER_WORD} to a small integer ({@link REST_UNKNOWN}, {@link REST_FAILS},
 *   or {@link REST_HOLDS} plus the {@link Check} left). Everything those conditions read is
 *   fixed by the shape. Made when a call first needs it: a plain array of small integers costs
 *   a first call less than a typed array's separately allocated buffer.
 */
interface CallShape {
  readonly candidates: Int32Array;
  rest: number[] | undefined;
}

const REST_UNKNOWN = 0;
const REST_FAILS = 1;
/** Stored plus the {@link Check} left: `None` (0) or `Arguments` (1). */
const REST_HOLDS = 2;
/** 30 bits to a word: a small integer (V8 keeps 31-bit integers unboxed). */
const REST_PER_WORD = 15;

/**
 * What a memo may hold: at most `maxEntries` entries and `maxBytes` of entries and keys
 * (strings: 2 bytes per UTF-16 unit). An entry that does not fit with the others makes the memo
 * forget them and start afresh; one larger than the whole budget is not kept. Agent ids,
 * namespaces, action types, upstreams and tool names come from callers, so what callers send
 * must not grow a memo without bound.
 */
class Budget {
  private entries = 0;
  private bytes = 0;
  constructor(
    private readonly maxEntries: number,
    private readonly maxBytes: number,
    /** Makes the memo forget every entry. */
    private readonly forget: () => void,
  ) {}

  /** Whether the memo may keep an entry of `bytes`; counted when it may. */
  admit(bytes: number): boolean {
    if (bytes > this.maxBytes) return false;
    if (this.entries >= this.maxEntries || this.bytes + bytes > this.maxBytes) this.forgetAll();
    this.entries++;
    this.bytes += bytes;
    return true;
  }

  /** Make the memo forget every entry, and count afresh. */
  forgetAll(): void {
    this.forget();
    this.entries = 0;
    this.bytes = 0;
  }
}

/** Call shapes under a key of two parts, within a {@link Budget}. */
class ShapeMemo<A, B> {
  static readonly MAX_SHAPES = 4096;
  /** At 10,000 rules a shape's `rest` is 2.7 KB: 4,096 of them fit with their candidates. */
  static readonly MAX_BYTES = 12 * 2 ** 20;
  private readonly shapes = new Map<A, Map<B, CallShape>>();
  private readonly budget = new Budget(ShapeMemo.MAX_SHAPES, ShapeMemo.MAX_BYTES, () => this.shapes.clear());

  get(a: A, b: B): CallShape | undefined {
    return this.shapes.get(a)?.get(b);
  }

  /** Remember `shape`; `bytes`: what it and its key may hold. */
  set(a: A, b: B, shape: CallShape, bytes: number): void {
    if (!this.budget.admit(bytes)) return;
    let byB = this.shapes.get(a);
    if (!byB) this.shapes.set(a, (byB = new Map()));
    byB.set(b, shape);
  }

  /** Shapes held, counted in the maps themselves (for tests of the bound). */
  size(): number {
    let n = 0;
    for (const byB of this.shapes.values()) n += byB.size;
    return n;
  }

  clear(): void {
    this.budget.forgetAll();
  }
}

/**
 * The tool candidates ({@link RuleIndex.toolCandidates}) of each tool name, within a
 * {@link Budget}. Looking a name up walks a trie node by node, each a Map read from memory that
 * other calls have pushed out of the cache; a remembered name costs one Map read.
 */
class ToolMemo {
  static readonly MAX_TOOLS = 4096;
  static readonly MAX_BYTES = 4 * 2 ** 20;
  private readonly tools = new Map<string, Int32Array>();
  private readonly budget = new Budget(ToolMemo.MAX_TOOLS, ToolMemo.MAX_BYTES, () => this.tools.clear());

  constructor(private readonly index: RuleIndex) {}

  /** The tool candidates of `targetLower`, looked up the first time. */
  candidates(targetLower: string): Int32Array {
    let found = this.tools.get(targetLower);
    if (!found) {
      found = this.index.toolCandidates(targetLower);
      if (this.budget.admit(found.byteLength + 2 * targetLower.length)) this.tools.set(targetLower, found);
    }
    return found;
  }

  /** Tool names held (for tests of the bound). */
  size(): number {
    return this.tools.size;
  }

  clear(): void {
    this.budget.forgetAll();
  }
}

/** `3:abc`, or `-` for undefined: fields joined this way cannot be confused with one another. */
const field = (s: string | undefined): string => (s === undefined ? '-' : `${s.length}:${s}`);

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
  /** The length of a call shape's `rest`. */
  private readonly restWords: number;
  /**
   * Call shapes ({@link callShape}): of registered agents called without an upstream (the
   * common case) by agent and action type; of the others by a key naming the agent (and, when
   * unknown, its namespace) and the upstream, and by action type. Each within its own budget, so
   * a flood of unknown ids does not make registered agents start afresh. A cache: what it holds
   * follows from the snapshot alone, so it never changes an answer, only its cost.
   */
  private readonly agentShapes = new ShapeMemo<CompiledAgent, string>();
  private readonly otherShapes = new ShapeMemo<string, string>();
  /** Tool candidates by tool name: a cache too. */
  private readonly tools: ToolMemo;

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
    /** Missing objects and whose decisions they deny, sorted by problem. */
    private readonly holds: readonly Hold[],
  ) {
    this.agentsById = agents;
    this.index = new RuleIndex(rules);
    this.tools = new ToolMemo(this.index);
    this.restWords = this.index.hasRest ? Math.ceil(this.index.size / REST_PER_WORD) : 0;
  }

  /** An empty snapshot: no agents, no policies. */
  static empty(options: EngineOptions = DEFAULT_ENGINE_OPTIONS): PolicySnapshot {
    return PolicySnapshot.compile({ agents: [], policies: [] }, options);
  }

  /**
   * Compile objects into a snapshot. An object that fails to compile is listed in `problems`
   * and left out, unless `previous` had a good version of it: that version stays in force.
   * Left out with no good version, it is missing, as are `input.missing`: the decisions it could
   * change are denied by {@link evaluate}.
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
    const missing: MissingObject[] = [...(input.missing ?? [])];
    const describe = opts.describe ?? formatProblem;
    const now = opts.now ?? Date.now();
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
        } else {
          problems.push(res.problem);
          const { kind, namespace } = res.problem;
          missing.push({ kind: obj.kind, ...(namespace ? { namespace } : {}), ...(kind === 'GuardAgent' ? { agentId: agentIdOf(obj as GuardAgent), metadata: obj.metadata } : {}), problem: describe(res.problem) });
        }
      }
      if (res.ok) {
        inForce.set(objectRef(used), used);
        keys.push(cacheKey(used));
      }
      return res;
    };

    // Agents: one id, one agent (docs/decisions.md, "Identity"). On a clash the first in
    // claimOrder wins; the others are reported as Conflict. In kubernetes mode a GuardAgent that
    // cannot be loaded claims its id too: one that would win keeps the id from younger claimants
    // (they are Conflict, bound to nothing, while it holds the id's decisions), so a broken edit
    // of an agent does not hand its identity binding to a squatter (docs/decisions.md §9).
    const claimants = new Map<string, Claim[]>();
    const claim = (c: Claim) => {
      const folded = foldCase(c.id);
      const list = claimants.get(folded) ?? [];
      list.push(c);
      claimants.set(folded, list);
    };
    for (const agent of input.agents) {
      const res = compileOne(agent, (a) => compileAgent(a, now));
      if (res.ok) claim({ id: res.value.id, meta: res.value.source.metadata, ref: res.value.ref, agent: res.value });
    }
    const scoped = options.clusterPolicyNamespace !== null;
    for (const m of missing) {
      if (scoped && m.kind === 'GuardAgent' && m.agentId !== undefined && m.metadata !== undefined) claim({ id: m.agentId, meta: m.metadata, ref: namespacedName(m.metadata), missing: m });
    }
    const agents = new Map<string, CompiledAgent>();
    /** Missing GuardAgents that would lose their id to one in force, had they been valid: they hold nothing. */
    const outranked = new Set<MissingObject>();
    for (const list of claimants.values()) {
      list.sort((a, b) => claimOrder(a.meta, b.meta));
      const winners: Claim[] = [];
      for (const c of list) {
        const winner = winnerOver(c.id, c.meta, winners);
        if (!winner) {
          winners.push(c);
          if (c.agent) agents.set(c.agent.id, c.agent);
          continue;
        }
        if (c.missing) {
          // Only a claimant in force outranks a missing one (two broken claimants both hold).
          if (winner.agent) outranked.add(c.missing);
          continue;
        }
        const agent = c.agent!;
        const byPerson = autoRegistered(agent.source.metadata) && !autoRegistered(winner.meta) ? ', which a person wrote: it wins over this auto-registered agent whatever their ages' : '';
        const broken = winner.missing ? ', which cannot be loaded: it holds the id until it is fixed' : '';
        problems.push({
          kind: 'GuardAgent',
          ...(agent.namespace ? { namespace: agent.namespace } : {}),
          name: agent.name,
          reason: Reason.Conflict,
          message: winner.id === agent.id
            ? `agentId "${agent.id}" is already claimed by GuardAgent ${winner.ref}${broken}${byPerson}`
            : `agentId "${agent.id}" differs only in case from "${winner.id}" of GuardAgent ${winner.ref}${broken}${byPerson}; agents: globs would match both`,
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

    // A GuardAgent that would lose its id to one in force, had it been valid, could change none
    // of that id's decisions: it holds none, so a tenant cannot deny another namespace's agent
    // by claiming its id with a broken object (docs/decisions.md §9). One that would win, or one
    // whose metadata cannot be read, holds them (its deniedTools might have restricted the agent).
    // Standalone mode holds every decision for any missing object (holdOf).
    const holds = missing.filter((m) => !outranked.has(m)).map((m) => holdOf(m, options)).sort((a, b) => compareNames(a.problem, b.problem));
    // A missing object changes decisions, so it is part of what the revision names.
    for (const h of holds) keys.push(`missing:${JSON.stringify(h)}`);
    return new PolicySnapshot(revisionOf(keys, options), options, agents, rules, problems, {
      agents: agents.size,
      policies: input.policies.length,
      rules: rules.length,
    }, inForce, holds);
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

  /** The problems of the missing objects (`input.missing` and those that failed to compile with no good version) that hold decisions, sorted. */
  missing(): string[] {
    return this.holds.map((h) => h.problem);
  }

  /**
   * Why the decisions of this agent are denied while the policy set is incomplete: the reason,
   * naming the first missing object that could change them, or undefined when none could.
   */
  private heldReason(agentId: string, namespace: string | undefined, registered: boolean): string | undefined {
    if (this.holds.length === 0) return undefined;
    // An id no agent in force has is held by a held id it equals ignoring case, as case twins
    // are compared (src/decide/identity.ts): else `BOT` would be judged by the rules written
    // for a broken `bot` (agent globs ignore case). An agent in force keeps its own decisions:
    // a broken twin must not deny it (see the squatting rule above).
    const folded = registered ? undefined : foldCase(agentId);
    const held = this.holds.filter((h) => (h.agentId === undefined || h.agentId === agentId || (folded !== undefined && foldCase(h.agentId) === folded)) && (h.namespace === undefined || h.namespace === namespace));
    if (held.length === 0) return undefined;
    const more = held.length > 1 ? ` (and ${held.length - 1} more)` : '';
    return `The policy set is incomplete, so this call is denied until it is fixed: ${held[0]!.problem}${more}`;
  }

  private resolve(req: Pick<ActionRequest, 'agentId' | 'unknownAgentNamespace'>): ResolvedAgent {
    const a = this.agentsById.get(req.agentId);
    if (a) return { id: a.id, namespace: a.namespace, labels: a.labels, trust: a.trust, rank: a.rank, registered: true, compiled: a };
    const trust = this.options.unknownAgentTrust;
    return { id: req.agentId, namespace: req.unknownAgentNamespace, labels: {}, trust, rank: trustRank(trust), registered: false, compiled: undefined };
  }

  /** Whether every condition of `r` but its argument conditions holds. */
  private matchesCall(r: CompiledRule, agent: ResolvedAgent, req: Pick<ActionRequest, 'upstream'>, actionLower: string, agentLower: string, targetLower: string): boolean {
    return (!r.tools || anyMatch(r.tools, targetLower) !== undefined) && this.matchesShape(r, agent, req, actionLower, agentLower);
  }

  /**
   * Whether the conditions of `r` on the caller, the action type and the upstream hold: all but
   * those on the tool and the arguments, so the same for every call of one call shape.
   */
  private matchesShape(r: CompiledRule, agent: ResolvedAgent, req: Pick<ActionRequest, 'upstream'>, actionLower: string, agentLower: string): boolean {
    if (r.scope !== undefined && r.scope !== agent.namespace) return false;
    if (r.selector && !r.selector(agent.labels)) return false;
    if (r.trustBelow !== undefined && !(agent.rank < r.trustBelow)) return false;
    if (r.trustAtLeast !== undefined && !(agent.rank >= r.trustAtLeast)) return false;
    if (r.actionTypes && !anyMatch(r.actionTypes, actionLower)) return false;
    if (r.agents && !anyMatch(r.agents, agentLower)) return false;
    if (r.upstreams && (req.upstream === undefined || !anyMatch(r.upstreams, foldCase(req.upstream)))) return false;
    return true;
  }

  /**
   * What is left to check of the rule at `order`, found with {@link Check.Rest} by a call of
   * `shape`: `None` or `Arguments`, or undefined when it does not match. Worked out from the
   * rule the first time, then read from `shape.rest`.
   */
  private restCheck(shape: CallShape, order: number, agent: ResolvedAgent, req: ActionRequest, actionLower: string, agentLower: string): Check | undefined {
    const rest = (shape.rest ??= new Array<number>(this.restWords).fill(0));
    const word = Math.floor(order / REST_PER_WORD);
    const shift = (order - word * REST_PER_WORD) * 2;
    let known = (rest[word]! >> shift) & 3;
    if (known === REST_UNKNOWN) {
      const r = this.index.at(order);
      known = !this.matchesShape(r, agent, req, actionLower, agentLower) ? REST_FAILS : REST_HOLDS + (r.args.length === 0 ? Check.None : Check.Arguments);
      rest[word] = rest[word]! | (known << shift);
    }
    return known === REST_FAILS ? undefined : ((known - REST_HOLDS) as Check);
  }

  /** Whether the argument conditions of `r` hold: `true`, `false`, or the reasons of those that could not be evaluated when none is false. */
  private argumentsHold(r: CompiledRule, req: ActionRequest): boolean | string[] {
    let unknown: string[] | undefined;
    for (const test of r.args) {
      const result = test(req.parameters);
      if (result === false) return false;
      if (result !== true) (unknown ??= []).push(result.indeterminate);
    }
    return unknown ?? true;
  }

  /**
   * The candidates of a call that do not depend on its tool ({@link RuleIndex.callShape}), with
   * what is left to check of each: a rule without a tool condition is matched here, once per
   * agent (with its namespace when unknown), action type and upstream, since nothing else it
   * looks at varies from call to call; one with a tool condition is left to the call.
   * Remembered in {@link agentShapes} and {@link otherShapes}.
   */
  private callShape(agent: ResolvedAgent, req: ActionRequest, actionLower: string, agentLower: string): CallShape {
    const registered = req.upstream === undefined ? agent.compiled : undefined;
    const who = registered ? '' : `${agent.registered ? 'r' : `u${field(agent.namespace)}`}${field(agent.id)}${field(req.upstream === undefined ? undefined : foldCase(req.upstream))}`;
    const known = registered ? this.agentShapes.get(registered, actionLower) : this.otherShapes.get(who, actionLower);
    if (known) return known;
    const candidates = this.index.callShape(actionLower, agentLower, (r) => {
      if (r.tools !== undefined) return Check.All;
      if (!this.matchesShape(r, agent, req, actionLower, agentLower)) return undefined;
      return r.args.length === 0 ? Check.None : Check.Arguments;
    });
    const shape: CallShape = { candidates, rest: undefined };
    const bytes = candidates.byteLength + 4 * this.restWords;
    if (registered) this.agentShapes.set(registered, actionLower, shape, bytes + 2 * actionLower.length);
    else this.otherShapes.set(who, actionLower, shape, bytes + 2 * (who.length + actionLower.length));
    return shape;
  }

  /** How many call shapes and tool names are remembered (for tests of the bounds). */
  memoSizes(): { callShapes: number; tools: number } {
    return { callShapes: this.agentShapes.size() + this.otherShapes.size(), tools: this.tools.size() };
  }

  /** For benchmarks and tests: forget every call shape and tool name, so the next call of each works it out afresh. */
  forgetMemos(): void {
    this.agentShapes.clear();
    this.otherShapes.clear();
    this.tools.clear();
  }

  /**
   * The decisions a call could get, whatever its arguments: what the MCP gateway's tools/list
   * needs (a tool denied for every argument is not listed; one that needs approval is marked).
   * A rule with argument conditions may or may not match, so the answer is a superset of what
   * any one call gets; `['deny']` alone means denied for certain.
   *
   * @example snap.possibleDecisions({ agentId: 'etl', actionType: 'tool_call', target: 'drop_table' }) // Set { 'deny' }
   */
  possibleDecisions(req: Omit<ActionRequest, 'parameters' | 'context'>): ReadonlySet<DecisionKind> {
    const written = this.possibleAsWritten(req);
    const normal = plainNames(req) ? undefined : compatibilityForm(req);
    return normal ? new Set([...written, ...this.possibleAsWritten(normal)]) : written;
  }

  private possibleAsWritten(req: Omit<ActionRequest, 'parameters' | 'context'>): ReadonlySet<DecisionKind> {
    const agent = this.resolve(req);
    if (this.heldReason(agent.id, agent.namespace, agent.registered) || unclearName(req)) return new Set(['deny']);
    const targetLower = foldCase(req.target);
    const actionLower = foldCase(req.actionType);
    const a = agent.compiled;
    if (a?.suspension || (a && anyMatch(a.deniedTools, targetLower)) || (a?.allowedTools && !anyMatch(a.allowedTools, targetLower))) return new Set(['deny']);
    const certain = new Set<DecisionKind>();
    const maybe = new Set<DecisionKind>();
    const agentLower = foldCase(agent.id);
    for (const rule of this.index.candidates(targetLower, actionLower, agentLower)) {
      if (rule.enforcement !== 'Enforce' || !this.matchesCall(rule, agent, req, actionLower, agentLower, targetLower)) continue;
      (rule.args.length === 0 ? certain : maybe).add(rule.action);
    }
    if (certain.has('deny')) return new Set(['deny']);
    const out = new Set<DecisionKind>();
    if (maybe.has('deny')) out.add('deny');
    if (certain.has('require_approval') || maybe.has('require_approval')) out.add('require_approval');
    if (!certain.has('require_approval')) {
      if (certain.has('allow') || maybe.has('allow')) out.add('allow');
      // No rule may match at all: the default decides.
      if (!certain.has('allow')) out.add(this.options.defaultDecision);
    }
    return out;
  }

  /** Evaluate one action (docs/decisions.md). Pure: no I/O, no clock, no randomness. */
  evaluate(req: ActionRequest): Decision {
    // Nearly every call: plain names, judged once, as written.
    if (plainNames(req)) return this.evaluateAsWritten(req, true);
    const written = this.evaluateAsWritten(req, false);
    // Nothing is stricter than a deny: the reading need not be judged.
    const normal = written.decision === 'deny' ? undefined : compatibilityForm(req);
    if (!normal) return written;
    const read = this.evaluateAsWritten(normal, false);
    if (STRICTNESS[read.decision] <= STRICTNESS[written.decision]) return written;
    const warning = `The ${normal.target === req.target ? 'action type' : 'target'} was judged as it reads in Unicode's compatibility form (NFKC), ${JSON.stringify(normal.target === req.target ? normal.actionType : normal.target)}, as a client or tool that normalizes it would run it: that reading is the stricter`;
    return { ...read, warnings: [...read.warnings, warning] };
  }

  /** `plain`: {@link plainNames} holds, so there is nothing unclear to look for. */
  private evaluateAsWritten(req: ActionRequest, plain: boolean): Decision {
    const agent = this.resolve(req);
    const held = this.heldReason(agent.id, agent.namespace, agent.registered);
    if (held !== undefined) return this.decision('deny', held, [agentCheck(agent.id, INCOMPLETE_POLICY_SET, held)], [], [], agent);
    const unclear = plain ? undefined : unclearName(req);
    if (unclear !== undefined) return this.decision('deny', unclear, [agentCheck(agent.id, 'unclearName', unclear)], [], [], agent);
    const targetLower = foldCase(req.target);
    const actionLower = foldCase(req.actionType);
    const agentLower = foldCase(agent.id);

    // Matches most significant first (candidates come in that order): enforced ones, audited
    // ones with their warnings, and the first of the strongest enforced action, which decides.
    const matched: MatchedRule[] = [];
    const findings: MatchedRule[] = [];
    const auditWarnings: string[] = [];
    let winner = -1;
    let winnerStrength = 0;
    let indeterminate: { rule: CompiledRule; reasons: string[] }[] | undefined;
    const shape = this.callShape(agent, req, actionLower, agentLower);
    const candidates = this.index.merge(shape.candidates, this.tools.candidates(targetLower));
    for (let i = 0; i < candidates.length; i++) {
      const v = candidates[i]!;
      const order = encoded.order(v);
      const found = encoded.check(v);
      const check = found === Check.Rest ? this.restCheck(shape, order, agent, req, actionLower, agentLower) : found;
      if (check === undefined) continue;
      if (check !== Check.None) {
        const rule = this.index.at(order);
        const holds = check === Check.All && !this.matchesCall(rule, agent, req, actionLower, agentLower, targetLower) ? false : this.argumentsHold(rule, req);
        if (holds === false) continue;
        if (holds !== true) {
          (indeterminate ??= []).push({ rule, reasons: holds });
          if (!appliesWhenIndeterminate(rule)) continue;
        }
      }
      if (encoded.enforced(v)) {
        matched.push(this.index.matched(order));
        if (encoded.strength(v) > winnerStrength) {
          winnerStrength = encoded.strength(v);
          winner = order;
        }
      } else {
        findings.push(this.index.matched(order));
        auditWarnings.push(this.index.warning(order));
      }
    }

    const warnings: string[] = [];
    if (!agent.registered) {
      warnings.push(`Agent '${agent.id}' is not registered; evaluated at trust level '${agent.trust}'`);
    }
    if (indeterminate) {
      for (const { rule, reasons } of indeterminate) for (const reason of reasons) warnings.push(indeterminateWarning(rule, reason));
    }
    for (const w of auditWarnings) warnings.push(w);

    // No closures here: a decision makes no function objects (and tsx's keepNames would name each one per call).
    const a = agent.compiled;
    if (a) {
      let check: 'suspended' | 'deniedTools' | 'allowedTools' | undefined;
      let reason = '';
      const denied = a.suspension ? undefined : anyMatch(a.deniedTools, targetLower);
      if (a.suspension) {
        check = 'suspended';
        reason = `Agent '${agent.id}' is ${a.suspension}`;
      } else if (denied) {
        check = 'deniedTools';
        reason = `Tool '${req.target}' is explicitly denied for agent '${agent.id}' (deniedTools: ${denied.pattern})`;
      } else if (a.allowedTools && !anyMatch(a.allowedTools, targetLower)) {
        check = 'allowedTools';
        reason = `Tool '${req.target}' is not in allowed list for agent '${agent.id}'`;
      }
      if (check) return this.decision('deny', reason, [agentCheck(agent.id, check, reason)], findings, warnings, agent);
    }

    if (winner >= 0) {
      const rule = this.index.at(winner);
      return this.decision(rule.action, ruleReason(rule), matched, findings, warnings, agent);
    }
    return this.options.defaultDecision === 'allow'
      ? this.decision('allow', 'Action permitted by default policy', matched, findings, warnings, agent)
      : this.decision('deny', 'No rule allows this action; the default decision is deny', matched, findings, warnings, agent);
  }

  private decision(decision: DecisionKind, reason: string, matched: MatchedRule[], findings: MatchedRule[], warnings: string[], agent: ResolvedAgent): Decision {
    return {
      allowed: decision === 'allow',
      require_approval: decision === 'require_approval',
      reason,
      warnings,
      decision,
      matched,
      audit_findings: findings,
      agent: { id: agent.id, trust_level: agent.trust, registered: agent.registered },
      revision: this.revision,
    };
  }
}

