/**
 * The rule index of a snapshot: given a request, the few rules that can match it, so a
 * decision costs about the same at 10 rules as at 10,000.
 *
 * Each rule is filed under one of its conditions, the first of tools, actionTypes and agents
 * whose globs all have a literal key: an exact name, a literal prefix (`crm_delete_*`) or a
 * literal suffix (`*_production`), whichever is longer. A rule with no such condition (no tool,
 * action or agent condition at all, or a glob like `*` or `*x*` in each) is looked at for every
 * request. Candidates come most significant first and are then matched in full, so the index only has to return a superset of
 * the matching rules: a glob's `prefix` and `suffix` (./glob.ts) are text every match starts
 * and ends with, which the glob tests check property by property.
 */
import type { CompiledRule } from './compile.js';
import type { Glob } from './glob.js';
import type { MatchedRule } from './types.js';

/** `localeCompare` with the default locale, without its per-call cost. */
const collator = new Intl.Collator();

/** Most significant first: priority, then namespace/policy name, then rule order. Total order. */
export function compareMatches(a: CompiledRule, b: CompiledRule): number {
  return (
    b.priority - a.priority ||
    collator.compare(a.namespace ?? '', b.namespace ?? '') ||
    collator.compare(a.policy, b.policy) ||
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

/**
 * A rule as one snapshot holds it: what a decision needs from it that does not depend on the
 * request is computed once, when the snapshot is built.
 */
export interface IndexedRule {
  readonly rule: CompiledRule;
  /** Place in the {@link compareMatches} order of the snapshot's rules; lower is more significant. */
  readonly order: number;
  /** Its `matched` / `audit_findings` entry, frozen: every decision that reports it shares it. */
  readonly matched: MatchedRule;
  /** The warning an Audit-mode match adds. */
  readonly warning: string;
}

type Key = { map: 'exact' | 'prefix' | 'suffix'; key: string };

/** The literal key of each glob, or undefined when one of them has none. */
function keysOf(globs: readonly Glob[]): Key[] | undefined {
  const keys: Key[] = [];
  for (const g of globs) {
    if (g.exact) keys.push({ map: 'exact', key: g.prefix });
    else if (g.prefix.length > 0 && g.prefix.length >= g.suffix.length) keys.push({ map: 'prefix', key: g.prefix });
    else if (g.suffix.length > 0) keys.push({ map: 'suffix', key: g.suffix });
    else return undefined;
  }
  return keys;
}

/** A trie over characters: literal prefixes walked forwards, literal suffixes backwards. */
interface TrieNode {
  next: Map<string, TrieNode> | undefined;
  rules: IndexedRule[] | undefined;
}

const trieNode = (): TrieNode => ({ next: undefined, rules: undefined });

function trieInsert(root: TrieNode, key: string, forwards: boolean): TrieNode {
  let node = root;
  for (let i = 0; i < key.length; i++) {
    const ch = key[forwards ? i : key.length - 1 - i]!;
    node.next ??= new Map();
    let child = node.next.get(ch);
    if (!child) node.next.set(ch, (child = trieNode()));
    node = child;
  }
  return node;
}

/** Rules by a literal key of their globs over one request field (tool, action type or agent id). */
class GlobIndex {
  private readonly exact = new Map<string, IndexedRule[]>();
  private readonly prefixes = trieNode();
  private readonly suffixes = trieNode();
  size = 0;

  /** File `ir` under each of `keys` (once per list: a lookup may still meet it under two keys). */
  add(ir: IndexedRule, keys: readonly Key[]): void {
    for (const { map, key } of keys) {
      let list: IndexedRule[] | undefined;
      if (map === 'exact') {
        list = this.exact.get(key);
        if (!list) this.exact.set(key, (list = []));
      } else {
        const node = trieInsert(map === 'prefix' ? this.prefixes : this.suffixes, key, map === 'prefix');
        list = node.rules ??= [];
      }
      if (list[list.length - 1] !== ir) list.push(ir);
    }
    this.size++;
  }

  /** Push the rule lists filed under a key that `valueLower` has into `out` (a rule may recur). */
  collect(valueLower: string, out: IndexedRule[][]): void {
    if (this.size === 0) return;
    const e = this.exact.get(valueLower);
    if (e) out.push(e);
    const len = valueLower.length;
    let node: TrieNode | undefined = this.prefixes;
    for (let i = 0; i < len && node.next; i++) {
      node = node.next.get(valueLower[i]!);
      if (!node) break;
      if (node.rules) out.push(node.rules);
    }
    node = this.suffixes;
    for (let i = len - 1; i >= 0 && node.next; i--) {
      node = node.next.get(valueLower[i]!);
      if (!node) break;
      if (node.rules) out.push(node.rules);
    }
  }
}

export class RuleIndex {
  private readonly byTool = new GlobIndex();
  private readonly byAction = new GlobIndex();
  private readonly byAgent = new GlobIndex();
  /** Rules without a usable key: looked at for every request. */
  private readonly always: IndexedRule[] = [];
  /** Every rule, at its {@link IndexedRule.order}. */
  private readonly byOrder: IndexedRule[] = [];
  /**
   * Scratch space for one lookup's candidate orders. Evaluation is synchronous, so one buffer
   * per snapshot is enough; it grows to the largest lookup seen.
   */
  private scratch = new Int32Array(64);

  constructor(rules: readonly CompiledRule[]) {
    const sorted = [...rules].sort(compareMatches);
    sorted.forEach((rule, order) => {
      const verb = rule.action === 'require_approval' ? 'require approval' : rule.action;
      const ir: IndexedRule = {
        rule,
        order,
        matched: Object.freeze(toMatched(rule)),
        warning: `Audit-mode policy '${rule.policy}' rule '${rule.ruleName}' would ${verb}`,
      };
      this.byOrder.push(ir);
      const filed = this.file(this.byTool, ir, rule.tools) || this.file(this.byAction, ir, rule.actionTypes) || this.file(this.byAgent, ir, rule.agents);
      if (!filed) this.always.push(ir);
    });
  }

  /** Files `ir` in `index` when every one of `globs` has a literal key; whether it did. */
  private file(index: GlobIndex, ir: IndexedRule, globs: readonly Glob[] | undefined): boolean {
    const keys = globs && keysOf(globs);
    if (keys) index.add(ir, keys);
    return keys !== undefined;
  }

  /**
   * Every rule that may match the request (values lowercased), each once, most significant
   * first ({@link bySignificance}). Read-only: do not modify the result.
   */
  candidates(targetLower: string, actionLower: string, agentLower: string): readonly IndexedRule[] {
    const lists: IndexedRule[][] = [];
    this.byTool.collect(targetLower, lists);
    this.byAction.collect(actionLower, lists);
    this.byAgent.collect(agentLower, lists);
    if (lists.length === 0) return this.always;
    // Orders, sorted as numbers (a typed array sorts without a comparator), give the
    // significance order; a rule filed under several keys shows up as adjacent duplicates.
    let n = this.always.length;
    for (const list of lists) n += list.length;
    if (n > this.scratch.length) this.scratch = new Int32Array(Math.max(n, this.scratch.length * 2));
    const orders = this.scratch;
    let k = 0;
    for (const ir of this.always) orders[k++] = ir.order;
    for (const list of lists) for (const ir of list) orders[k++] = ir.order;
    const view = orders.subarray(0, k).sort();
    const out: IndexedRule[] = [];
    for (let i = 0; i < k; i++) if (i === 0 || view[i] !== view[i - 1]) out.push(this.byOrder[view[i]!]!);
    return out;
  }
}
