/**
 * The seed project's rule format, accepted by `create_policy` and translated on the way in
 * (docs/decisions.md). Seed rules look like
 * `{"condition": {"tool_pattern": "delete_*", "trust_level_below": "admin"}, "action": "deny", "message": "…"}`.
 */
import { z } from 'zod';
import { RuleActionSchema, TrustLevelSchema, type Rule } from './schemas.js';

/**
 * Unknown keys inside `condition` are errors: a misspelt condition (`tool_patern`) would
 * otherwise be dropped and widen the rule, which for an allow rule allows by accident.
 * Unknown keys at the top level are ignored, as the seed ignored them, so old clients that send
 * extra fields (`id`, `name`, `enabled`, …) keep working: no top-level key can widen a rule. A
 * misspelt `action` falls back to deny, a misspelt `message` loses only the message, and a
 * misspelt `condition` makes the object a GuardPolicy rule, which is strict (`isSeedRule`).
 */
export const SeedRuleSchema = z.object({
  condition: z
    .strictObject({
      tool_pattern: z.string().min(1).optional(),
      action_type: z.string().min(1).optional(),
      trust_level_below: TrustLevelSchema.optional(),
      trust_level_at_least: TrustLevelSchema.optional(),
    })
    .refine((c) => Object.values(c).some((v) => v !== undefined), 'condition must have at least one of tool_pattern, action_type, trust_level_below, trust_level_at_least'),
  // The seed defaulted a missing action to deny.
  action: RuleActionSchema.default('deny'),
  message: z.string().max(1024).optional(),
});
export type SeedRule = z.infer<typeof SeedRuleSchema>;

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
    // A seed rule with both: the stricter "below" wins; the two said the same thing.
    else match.trustLevelBelow ??= c.trust_level_at_least;
  }
  return { action: seed.action, match, ...(seed.message !== undefined ? { message: seed.message } : {}) };
}
