/**
 * The seed project's rule format, accepted by `create_policy` and translated on the way in
 * (docs/decisions.md). Seed rules look like
 * `{"condition": {"tool_pattern": "delete_*", "trust_level_below": "admin"}, "action": "deny", "message": "…"}`.
 */
import { z } from 'zod';
import { RuleActionSchema, TrustLevelSchema, trustRank, type Rule } from './schemas.js';

/**
 * Every key is checked, at both levels: a key PolicyGuard does not read would otherwise be
 * dropped, and what it meant lost. Inside `condition` a typo (`tool_patern`) would widen the
 * rule; at the top level so would a restriction put in the wrong place (`agent_pattern` next to
 * `condition`) or `enabled: false` on an allow rule. The top level takes `condition`, `action`
 * and `message`, and the labels old clients send with a rule (`id`, `name`, `description`,
 * `enabled: true`), which change nothing. A misspelt `condition` makes the object a GuardPolicy
 * rule, which is strict too (`isSeedRule`).
 */
export const SeedRuleSchema = z.strictObject({
  condition: z
    .strictObject({
      tool_pattern: z.string().min(1).refine((p) => regexOnly(p) === undefined, { error: (i) => regexOnly(i.input as string) }).optional(),
      action_type: z.string().min(1).optional(),
      trust_level_below: TrustLevelSchema.optional(),
      trust_level_at_least: TrustLevelSchema.optional(),
    })
    .refine((c) => Object.values(c).some((v) => v !== undefined), 'condition must have at least one of tool_pattern, action_type, trust_level_below, trust_level_at_least'),
  // The seed defaulted a missing action to deny.
  action: RuleActionSchema.default('deny'),
  message: z.string().max(1024).optional(),
  id: z.unknown().optional(),
  name: z.unknown().optional(),
  description: z.unknown().optional(),
  enabled: z.literal(true, { error: 'a rule cannot be disabled here (enabled: false); leave the rule out instead' }).optional(),
});
export type SeedRule = z.infer<typeof SeedRuleSchema>;

/**
 * Why a seed `tool_pattern` reads otherwise as a glob than the earlier project read it, or
 * undefined. It turned `*` into `.*` and matched a regular expression, so `drop_.*`,
 * `^delete_` or `delete_records?` meant what a regular expression means; read as globs they
 * match nothing the author meant (a literal dot or caret, one more character), and a deny
 * written so would deny nothing. Refused, naming what to write.
 *
 * @example regexOnly('drop_.*') // 'tool_pattern "drop_.*" has ".*", …'
 */
function regexOnly(pattern: string): string | undefined {
  const token = /\.[*+?]|[\^$+?(){}|\\]/.exec(pattern)?.[0];
  if (token === undefined) return undefined;
  return `tool_pattern ${JSON.stringify(pattern)} has ${JSON.stringify(token)}, which the earlier project's regular expressions read otherwise than PolicyGuard's globs (* any run of characters, [abc] one of them, everything else literal); write it as a glob, e.g. "delete_*", and a dot you mean as [.] ("fs[.]*")`;
}

/** True when a raw rule object is in the seed's format rather than ours. */
export function isSeedRule(raw: unknown): boolean {
  return typeof raw === 'object' && raw !== null && 'condition' in raw && !('match' in raw);
}

/**
 * Translate a seed rule. `trust_level_at_least` meant "requires at least": on a deny or
 * require_approval rule it becomes `trustLevelBelow` (the rule fires for agents below it), on an
 * allow rule `trustLevelAtLeast`.
 *
 * @example
 *   fromSeedRule({ condition: { tool_pattern: 'delete_*', trust_level_at_least: 'admin' }, action: 'deny' })
 *   // → { action: 'deny', match: { tools: ['delete_*'], trustLevelBelow: 'admin' } }
 */
export function fromSeedRule(seed: SeedRule): Rule {
  const c = seed.condition;
  const match: Rule['match'] = {};
  if (c.tool_pattern) match.tools = [c.tool_pattern];
  if (c.action_type) match.actionTypes = [c.action_type];
  if (c.trust_level_below) match.trustLevelBelow = c.trust_level_below;
  if (c.trust_level_at_least) {
    if (seed.action === 'allow') match.trustLevelAtLeast = c.trust_level_at_least;
    // A deny or require_approval rule with both fires for agents below either: below the higher.
    else if (match.trustLevelBelow === undefined || trustRank(c.trust_level_at_least) > trustRank(match.trustLevelBelow)) match.trustLevelBelow = c.trust_level_at_least;
  }
  return { action: seed.action, match, ...(seed.message !== undefined ? { message: seed.message } : {}) };
}
