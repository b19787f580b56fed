/**
 * Input and output schemas of the six MCP tools. Parameter names and response fields are the
 * original Python project's (README, "The six MCP tools"); parameters the seed took as JSON strings
 * also accept real arrays and objects.
 *
 * Fields whose bad values the seed answered with `success: false` (trust_level, rules, …) are
 * loosely typed here and checked in the handler, so old clients keep getting that answer.
 */
import { z } from 'zod';
import { TRUST_LEVELS } from '../api/schemas.js';

/** A value the seed passed as a JSON string; real JSON values are accepted as well. */
const jsonOr = <T extends z.ZodType>(schema: T, description: string) =>
  z.union([z.string().max(1_000_000), schema]).describe(description);

const Text = (max: number, description: string) => z.string().max(max).describe(description);

/**
 * A tool's arguments: unknown keys are an input error naming the ones the tool takes, so a
 * typo (`params` for `parameters`) is never silently ignored (docs/decisions.md). The
 * advertised inputSchema says `additionalProperties: false` accordingly.
 *
 * @example ToolArguments({ target: Text(10, 'x') }).safeParse({ tagret: 'a' }) // error: unknown argument "tagret"; this tool takes: target
 */
const ToolArguments = <S extends z.ZodRawShape>(shape: S) =>
  z.strictObject(shape, {
    error: (issue) =>
      issue.code === 'unrecognized_keys'
        ? `unknown argument${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}; this tool takes: ${Object.keys(shape).join(', ')}`
        : undefined,
  });

export const ValidateActionInput = ToolArguments({
  action_type: Text(253, 'Kind of action, e.g. "tool_call", "resource_access", "data_read", "data_write".'),
  target: Text(1024, 'What the action touches: a tool name, resource URI or database name.'),
  agent_id: Text(253, 'Id of the agent asking.').optional(),
  parameters: jsonOr(z.record(z.string(), z.unknown()), 'The call arguments, a JSON object (or a JSON string of one).').optional(),
  context: Text(8192, 'Why the agent wants to do this (kept in the audit log).').optional(),
  approval_id: Text(64, 'The GuardApproval an earlier require_approval answer named: refused unless it covers exactly this call. Optional: the same call finds its approval anyway.').optional(),
});

export const RegisterAgentInput = ToolArguments({
  agent_id: Text(253, 'Unique id of the agent, e.g. "prod-assistant-01".'),
  name: Text(253, 'Human-readable name.'),
  description: Text(1024, 'What the agent is for.').optional(),
  trust_level: Text(64, `One of ${TRUST_LEVELS.join(', ')} (default medium).`).optional(),
  allowed_tools: jsonOr(z.array(z.string()), 'Tool globs the agent may use, e.g. ["read_*", "query_*"]; empty = no restriction.').optional(),
  denied_tools: jsonOr(z.array(z.string()), 'Tool globs the agent may never use, e.g. ["delete_*"].').optional(),
  metadata: jsonOr(z.record(z.string(), z.unknown()), 'Free-form attributes, e.g. {"owner": "data-team"}.').optional(),
});

export const CreatePolicyInput = ToolArguments({
  policy_id: Text(253, 'Unique id, e.g. "prevent-deletions".'),
  name: Text(253, 'Human-readable name.'),
  description: Text(1024, 'What the policy controls.').optional(),
  rules: jsonOr(
    z.array(z.unknown()),
    'Rules, as a JSON array. Seed format: {"condition": {"tool_pattern": "delete_*", "trust_level_below": "admin"}, "action": "deny", "message": "…"}; ' +
      'or GuardPolicy format: {"match": {"tools": ["delete_*"], "trustLevelBelow": "admin"}, "action": "deny"}. Actions: allow, deny, require_approval.',
  ),
  priority: z.number().int().min(0).max(1_000_000).optional().describe('Higher first; orders reasons, never overrides a deny (default 100).'),
  enabled: z.boolean().optional().describe('false creates the policy Disabled (default true).'),
});

const TimeRange = Text(16, 'How far back: e.g. "1h", "24h", "7d", "30d" (default "24h").');

export const GetAuditLogInput = ToolArguments({
  agent_id: Text(253, 'Only entries of this agent.').optional(),
  action_type: Text(253, 'Only entries with this action type.').optional(),
  time_range: TimeRange.optional(),
  status: Text(16, '"allowed", "denied", or empty for all.').optional(),
  limit: z.number().int().min(1).max(1000).optional().describe('At most this many entries, newest first (default 100).'),
});

export const GetComplianceStatusInput = ToolArguments({
  time_range: TimeRange.optional(),
  include_incidents: z.boolean().optional().describe('Include recent incidents (default true).'),
  include_policy_summary: z.boolean().optional().describe('Include the policy overview (default true).'),
});

export const INCIDENT_TYPES = [
  'policy_violation',
  'suspicious_activity',
  'unauthorized_access',
  'rate_limit_exceeded',
  'data_exfiltration',
  'configuration_error',
  'identity_mismatch',
  'other',
] as const;
export const SEVERITIES = ['low', 'medium', 'high', 'critical'] as const;

export const ReportIncidentInput = ToolArguments({
  incident_type: Text(64, `One of ${INCIDENT_TYPES.join(', ')}; anything else is recorded as "other".`),
  severity: Text(16, `One of ${SEVERITIES.join(', ')}; "critical" suspends the agent.`),
  description: Text(8192, 'What happened.'),
  agent_id: Text(253, 'The agent involved, if any.').optional(),
  evidence: jsonOr(z.record(z.string(), z.unknown()), 'Supporting data, a JSON object.').optional(),
  recommended_action: Text(4096, 'Suggested remediation.').optional(),
});

// ---- outputs ---------------------------------------------------------------------------------

const MatchedOutput = z.object({
  policy: z.string(),
  namespace: z.string().optional(),
  rule: z.string(),
  action: z.enum(['allow', 'deny', 'require_approval']),
  enforcement: z.enum(['Enforce', 'Audit']),
  /** Absent when the agent's own settings decided (suspended, deniedTools, allowedTools, identity, rate limit). */
  priority: z.number().optional(),
  message: z.string().optional(),
});

export const ValidateActionOutput = {
  action_id: z.string().describe('"act_" + 12 hex; correlates with the audit log.'),
  allowed: z.boolean(),
  require_approval: z.boolean(),
  reason: z.string(),
  warnings: z.array(z.string()),
  decision: z.enum(['allow', 'deny', 'require_approval']),
  matched: z.array(MatchedOutput),
  audit_findings: z.array(MatchedOutput),
  agent: z.object({ id: z.string(), trust_level: z.enum(TRUST_LEVELS), registered: z.boolean() }),
  revision: z.string(),
  approval_id: z
    .string()
    .optional()
    .describe('The GuardApproval this decision asked for (require_approval: a person decides it, then the same call is allowed once), used, or was refused by.'),
};

export const RegisterAgentOutput = {
  success: z.boolean(),
  agent_id: z.string(),
  message: z.string(),
  warnings: z.array(z.string()),
};

export const CreatePolicyOutput = {
  success: z.boolean(),
  policy_id: z.string(),
  message: z.string(),
};

export const GetAuditLogOutput = {
  entries: z.array(z.record(z.string(), z.unknown())),
  count: z.number().int(),
  total: z.number().int(),
  time_range: z.string(),
  filters_applied: z.array(z.string()),
  note: z.string().optional().describe('Present when entries within the limit were left out to keep the answer small.'),
};

export const GetComplianceStatusOutput = {
  status: z.enum(['healthy', 'warning', 'critical']),
  status_message: z.string(),
  time_range: z.string(),
  generated_at: z.string(),
  metrics: z.record(z.string(), z.unknown()),
  recommendations: z.array(z.string()),
  incidents: z.record(z.string(), z.unknown()).optional(),
  policies: z.record(z.string(), z.unknown()).optional(),
  agents: z.record(z.string(), z.unknown()),
};

export const ReportIncidentOutput = {
  incident_id: z.string(),
  success: z.boolean(),
  message: z.string(),
  agent_suspended: z.boolean(),
  severity: z.enum(SEVERITIES),
  type: z.enum(INCIDENT_TYPES),
};

type Out<S extends z.ZodRawShape> = z.infer<z.ZodObject<S>>;
export type ValidateActionArgs = z.infer<typeof ValidateActionInput>;
export type RegisterAgentArgs = z.infer<typeof RegisterAgentInput>;
export type CreatePolicyArgs = z.infer<typeof CreatePolicyInput>;
export type GetAuditLogArgs = z.infer<typeof GetAuditLogInput>;
export type GetComplianceStatusArgs = z.infer<typeof GetComplianceStatusInput>;
export type ReportIncidentArgs = z.infer<typeof ReportIncidentInput>;
export type ValidateActionResult = Out<typeof ValidateActionOutput>;
export type RegisterAgentResult = Out<typeof RegisterAgentOutput>;
export type CreatePolicyResult = Out<typeof CreatePolicyOutput>;
export type GetAuditLogResult = Out<typeof GetAuditLogOutput>;
export type GetComplianceStatusResult = Out<typeof GetComplianceStatusOutput>;
export type ReportIncidentResult = Out<typeof ReportIncidentOutput>;
