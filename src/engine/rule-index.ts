/**
 * The rule index of a snapshot: given a request, the few rules that can match it, so a
 * decision costs about the same at 10 rules as at 10,000.
 *
 * Each rule is filed under one of its conditions, the first of tools, actionTypes and agents
 * whose globs all have a literal key: an exact name, a literal prefix (`crm_delete_*`) or a
 * literal suffix (`*_production`), whichever is longer. A rule with no such condition (no tool,
 * action or agent condition at all, or a glob like `*` or `*x*` in each) is looked at for every
 * request. Candidates come most significant first and are then matched in full, so the index
 * only has to return a superset of the matching rules: a glob's `prefix` and `suffix`
 * (./glob.ts) are text every match starts and ends with, which the glob tests check property by
 * property. Two exceptions skip work that is known to succeed: a rule found under the key of an
 * exact, `text*` or `*text` glob whose only other conditions are on arguments has only those
 * checked, and the snapshot matches the rules that do not depend on the tool once per agent and
 * action type (its call shapes, src/engine/snapshot.ts) and looks a tool name up once.
 *
 * Candidates are plain numbers ({@link encoded}) and what a decision needs of a rule that
 * matched is kept in arrays by order, so a lookup sorts and merges integers and reads a rule
 * only to match it.
 */
import type { CompiledRule } from './compile.js';
import type { Glob } from './glob.js';
import type { MatchedRule } from './types.js';

/**
 * Names in UTF-16 code unit order, as `Array#sort` orders strings: the same on every replica,
 * whatever its locale (`localeCompare` sorts "aa" after "z" in Danish, so two replicas could
 * give the same call different reasons, or different agents the same id).
 */
export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Most significant first: priority, then namespace/policy name, then rule order. Total order. */
export function compareMatches(a: CompiledRule, b: CompiledRule): number {
  return (
    b.priority - a.priority ||
    compareNames(a.namespace ?? '', b.namespace ?? '') ||
    compareNames(a.policy, b.policy) ||
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

/** A literal key of a glob; `proves`: every value filed under it matches the glob. */
type Key = { map: 'exact' | 'prefix' | 'suffix'; key: string; proves: boolean };

/** The literal key of each glob, or undefined when one of them has none. */
function keysOf(globs: readonly Glob[]): Key[] | undefined {
  const keys: Key[] = [];
  for (const g of globs) {
    if (g.exact) keys.push({ map: 'exact', key: g.prefix, proves: true });
    else if (g.prefix.length > 0 && g.prefix.length >= g.suffix.length) keys.push({ map: 'prefix', key: g.prefix, proves: g.affix === 'prefix' });
    else if (g.suffix.length > 0) keys.push({ map: 'suffix', key: g.suffix, proves: g.affix === 'suffix' });
    else return undefined;
  }
  return keys;
}

/** A trie over characters (UTF-16 units): literal prefixes walked forwards, literal suffixes backwards. */
interface TrieNode {
  next: Map<number, TrieNode> | undefined;
  rules: number[] | undefined;
}

const trieNode = (): TrieNode => ({ next: undefined, rules: undefined });

function trieInsert(root: TrieNode, key: string, forwards: boolean): TrieNode {
  let node = root;
  for (let i = 0; i < key.length; i++) {
    const unit = key.charCodeAt(forwards ? i : key.length - 1 - i);
    node.next ??= new Map();
    let child = node.next.get(unit);
    if (!child) node.next.set(unit, (child = trieNode()));
    node = child;
  }
  return node;
}

/**
 * Rules by a literal key of their globs over one request field (tool, action type or agent id),
 * as {@link encoded} candidates: lists of plain numbers, so a lookup reads no rule.
 */
class GlobIndex {
  private readonly exact = new Map<string, number[]>();
  private readonly prefixes = trieNode();
  private readonly suffixes = trieNode();
  size = 0;
  /** Whether a candidate with {@link Check.Rest} was filed. */
  hasRest = false;

  /** File the candidate `value(key)` under each of `keys` (once per list: a lookup may still meet a rule under two keys). */
  add(keys: readonly Key[], value: (key: Key) => number): void {
    for (const k of keys) {
      let list: number[] | undefined;
      if (k.map === 'exact') {
        list = this.exact.get(k.key);
        if (!list) this.exact.set(k.key, (list = []));
      } else {
        const node = trieInsert(k.map === 'prefix' ? this.prefixes : this.suffixes, k.key, k.map === 'prefix');
        list = node.rules ??= [];
      }
      const v = value(k);
      if (encoded.check(v) === Check.Rest) this.hasRest = true;
      const last = list[list.length - 1];
      if (last === undefined || encoded.order(last) !== encoded.order(v)) list.push(v);
      else if (v < last) list[list.length - 1] = v; // the same rule: keep what proves more
    }
    this.size++;
  }

  /** Push the candidate lists filed under a key that `valueLower` has into `out` (a rule may recur). */
  collect(valueLower: string, out: number[][]): void {
    if (this.size === 0) return;
    const e = this.exact.get(valueLower);
    if (e) out.push(e);
    const len = valueLower.length;
    let node: TrieNode | undefined = this.prefixes;
    for (let i = 0; i < len && node.next; i++) {
      node = node.next.get(valueLower.charCodeAt(i));
      if (!node) break;
      if (node.rules) out.push(node.rules);
    }
    node = this.suffixes;
    for (let i = len - 1; i >= 0 && node.next; i--) {
      node = node.next.get(valueLower.charCodeAt(i));
      if (!node) break;
      if (node.rules) out.push(node.rules);
    }
  }
}

/**
 * What a call still has to check of a candidate rule: the low two bits of an encoded
 * candidate ({@link encoded}).
 */
export const Check = {
  /** Every condition holds (it has none on arguments). */
  None: 0,
  /** Every condition but those on arguments holds. */
  Arguments: 1,
  /**
   * The tool condition holds; the conditions on the caller, action type and upstream are to be
   * checked, then those on arguments. Those conditions are the same for every call of one call
   * shape, so the snapshot learns the answer once per shape and rule (src/engine/snapshot.ts).
   */
  Rest: 2,
  /** Nothing is known yet: match it in full. */
  All: 3,
} as const;
export type Check = (typeof Check)[keyof typeof Check];

/** How strongly a rule's action decides: the strongest enforced match wins (docs/decisions.md). */
const STRENGTH = { allow: 1, require_approval: 2, deny: 3 } as const;

/**
 * A candidate rule as one number, so a lookup sorts and merges plain integers and a decision
 * learns what it needs of a rule that fully matched without reading the rule itself:
 * `order << 5 | enforced << 4 | strength << 2 | check`. Sorted as numbers, candidates are in
 * significance order.
 */
export const encoded = {
  order: (v: number): number => v >> 5,
  check: (v: number): Check => (v & 3) as Check,
  enforced: (v: number): boolean => (v & 16) !== 0,
  /** 1 allow, 2 require_approval, 3 deny. */
  strength: (v: number): number => (v >> 2) & 3,
};

/**
 * Sorts the first `k` numbers of `buf` in place and returns an array that starts with them. A
 * lookup's tool candidates are usually a handful: an insertion sort costs less than a typed
 * array's `sort()` call there.
 */
function sortPrefix(buf: Int32Array, k: number): Int32Array {
  if (k > 32) return buf.subarray(0, k).sort();
  for (let i = 1; i < k; i++) {
    const v = buf[i]!;
    let j = i - 1;
    while (j >= 0 && buf[j]! > v) {
      buf[j + 1] = buf[j]!;
      j--;
    }
    buf[j + 1] = v;
  }
  return buf;
}

/** A growable scratch buffer of encoded candidates. */
class Scratch {
  buf = new Int32Array(64);
  ensure(n: number): Int32Array {
    if (n > this.buf.length) this.buf = new Int32Array(Math.max(n, this.buf.length * 2));
    return this.buf;
  }
}

export class RuleIndex {
  private readonly byTool = new GlobIndex();
  private readonly byAction = new GlobIndex();
  private readonly byAgent = new GlobIndex();
  /** Rules without a usable key ({@link encoded}): looked at for every request. */
  private readonly always: number[] = [];
  /** Whether a lookup may return a candidate with {@link Check.Rest}. */
  readonly hasRest: boolean;
  /**
   * Every rule at its order (its place in the {@link compareMatches} order of the snapshot's
   * rules; lower is more significant), with what a decision needs of it that does not depend on
   * the request, computed once: its `matched` / `audit_findings` entry (frozen: every decision
   * that reports it shares it), the warning an Audit-mode match adds, and its {@link encoded}
   * bits. Kept side by side, so a decision reads these without touching the rule.
   */
  private readonly rules: CompiledRule[];
  private readonly matchedAt: MatchedRule[] = [];
  private readonly warningAt: string[] = [];
  private readonly bitsAt: number[] = [];
  /**
   * Scratch space for a lookup's tool candidates and for a merge. Evaluation is synchronous, so
   * one pair per snapshot is enough; they grow to the largest lookup seen.
   */
  private readonly toolScratch = new Scratch();
  private readonly mergeScratch = new Scratch();

  constructor(rules: readonly CompiledRule[]) {
    // An order must fit {@link encoded}'s 26 bits. Far beyond what a cluster can hold (policies
    // have at most 256 rules each), but refused rather than wrapped around into a wrong order.
    if (rules.length >= 2 ** 26) throw new RangeError(`rule index: ${rules.length} rules, more than ${2 ** 26 - 1} cannot be ordered`);
    this.rules = [...rules].sort(compareMatches);
    this.rules.forEach((rule, order) => {
      const verb = rule.action === 'require_approval' ? 'require approval' : rule.action;
      this.matchedAt.push(Object.freeze(toMatched(rule)));
      this.warningAt.push(`Audit-mode policy '${rule.policy}' rule '${rule.ruleName}' would ${verb}`);
      this.bitsAt.push((order << 5) | (rule.enforcement === 'Enforce' ? 16 : 0) | (STRENGTH[rule.action] << 2));
      const filed = this.file(this.byTool, order, rule.tools) || this.file(this.byAction, order, rule.actionTypes) || this.file(this.byAgent, order, rule.agents);
      if (!filed) this.always.push(this.bitsAt[order]! | Check.All);
    });
    this.hasRest = this.byTool.hasRest;
  }

  /** How many rules there are: orders run from 0 to one less. */
  get size(): number {
    return this.rules.length;
  }

  /**
   * Files the rule at `order` in `index` when every one of `globs` has a literal key; whether it
   * did. Found by tool under a key that proves its glob, a rule is known to match but for its
   * arguments when it has no other conditions, and but for its other conditions
   * ({@link Check.Rest}) when it has; found under a key that does not prove, it is matched in
   * full. Nothing is proven for rules filed by action type or agent id: {@link callShape}
   * matches those once per agent and action type.
   */
  private file(index: GlobIndex, order: number, globs: readonly Glob[] | undefined): boolean {
    const keys = globs && keysOf(globs);
    if (!keys) return false;
    const r = this.rules[order]!;
    const onlyToolsAndArguments =
      r.scope === undefined && r.selector === undefined && r.trustBelow === undefined && r.trustAtLeast === undefined &&
      r.actionTypes === undefined && r.agents === undefined && r.upstreams === undefined;
    const proven = onlyToolsAndArguments ? (r.args.length === 0 ? Check.None : Check.Arguments) : Check.Rest;
    index.add(keys, (k) => this.bitsAt[order]! | (index === this.byTool && k.proves ? proven : Check.All));
    return true;
  }

  /** The rule at `order` ({@link encoded}). */
  at(order: number): CompiledRule {
    return this.rules[order]!;
  }

  /** The `matched` / `audit_findings` entry of the rule at `order`. */
  matched(order: number): MatchedRule {
    return this.matchedAt[order]!;
  }

  /** The warning an Audit-mode match of the rule at `order` adds. */
  warning(order: number): string {
    return this.warningAt[order]!;
  }

  /**
   * The part of a lookup that does not depend on the tool: every rule filed by action type or
   * agent id that the request may match, and every rule looked at always, each once, most
   * significant first, {@link encoded} with `check(rule)`; a rule for which `check` says
   * `undefined` is left out. A new array: callers may keep it (the snapshot remembers it per
   * agent and action type, src/engine/snapshot.ts).
   */
  callShape(actionLower: string, agentLower: string, check: (rule: CompiledRule) => Check | undefined): Int32Array {
    const lists: number[][] = [this.always];
    this.byAction.collect(actionLower, lists);
    this.byAgent.collect(agentLower, lists);
    let n = 0;
    for (const list of lists) n += list.length;
    const orders = new Int32Array(n);
    let k = 0;
    for (const list of lists) for (const v of list) orders[k++] = encoded.order(v);
    // Orders sorted as numbers (a typed array sorts without a comparator) give the significance
    // order; a rule filed under several keys shows up as adjacent duplicates.
    orders.sort();
    // Encoded in place: `m` never passes `i`, and the last order seen is kept apart from the array.
    let m = 0;
    let previous = -1;
    for (let i = 0; i < k; i++) {
      const order = orders[i]!;
      if (order === previous) continue;
      previous = order;
      const c = check(this.rules[order]!);
      if (c !== undefined) orders[m++] = this.bitsAt[order]! | c;
    }
    return orders.slice(0, m);
  }

  /**
   * The rules filed by tool that `targetLower` may match, each once, most significant first,
   * {@link encoded}: of a rule filed under two keys the value has, the entry that proves more.
   * A new array: callers may keep it (the snapshot remembers it per tool, src/engine/snapshot.ts).
   */
  toolCandidates(targetLower: string): Int32Array {
    const lists: number[][] = [];
    this.byTool.collect(targetLower, lists);
    let n = 0;
    for (const list of lists) n += list.length;
    const buf = this.toolScratch.ensure(n);
    let k = 0;
    for (const list of lists) for (const v of list) buf[k++] = v;
    const sorted = sortPrefix(buf, k);
    // One rule's entries are adjacent once sorted, the one that proves more (a lower check) first.
    let m = 0;
    for (let j = 0; j < k; j++) if (m === 0 || encoded.order(sorted[j]!) !== encoded.order(sorted[m - 1]!)) sorted[m++] = sorted[j]!;
    return sorted.slice(0, m);
  }

  /**
   * The candidates of a request: `shape` ({@link callShape}) and `tool` ({@link toolCandidates})
   * merged, most significant first. A rule is filed in one index only, so they share no rule.
   * The result is `shape` itself or a view of scratch space that the next call overwrites: read
   * it at once.
   */
  merge(shape: Int32Array, tool: Int32Array): Int32Array {
    if (tool.length === 0) return shape;
    const out = this.mergeScratch.ensure(shape.length + tool.length);
    let i = 0;
    let j = 0;
    let m = 0;
    while (j < tool.length) out[m++] = i < shape.length && shape[i]! < tool[j]! ? shape[i++]! : tool[j++]!;
    while (i < shape.length) out[m++] = shape[i++]!;
    return out.subarray(0, m);
  }

  /**
   * Every rule that may match the request (values lowercased), each once, most significant
   * first. A new array.
   */
  candidates(targetLower: string, actionLower: string, agentLower: string): CompiledRule[] {
    const merged = this.merge(this.callShape(actionLower, agentLower, () => Check.All), this.toolCandidates(targetLower));
    const out: CompiledRule[] = [];
    for (let i = 0; i < merged.length; i++) out.push(this.rules[encoded.order(merged[i]!)]!);
    return out;
  }
}
