/**
 * The MCP surface: the six tools registered on an SDK `McpServer`, each with its
 * input and output schema. Results carry the seed's JSON as text content and the same object
 * as `structuredContent`. The same server answers both protocol revisions (./revisions.ts).
 */
import { McpServer, type CacheScope, type CallToolResult, type McpServerOptions, type ToolAnnotations } from '@modelcontextprotocol/server';
import { z } from 'zod';
import type { Metrics } from '../metrics.js';
import { VERSION } from '../version.js';
import * as S from './schemas.js';
import type { CallContext, ToolOutcome, Tools } from './tools.js';

export const SERVER_INFO = { name: 'policyguard', version: VERSION } as const;

export const TOOL_NAMES = [
  'validate_action',
  'register_agent',
  'create_policy',
  'get_audit_log',
  'get_compliance_status',
  'report_incident',
] as const;
export type ToolName = (typeof TOOL_NAMES)[number];

/** Turn a handler's outcome into an MCP tool result. */
export function toCallToolResult(outcome: ToolOutcome<object>): CallToolResult {
  if (outcome.ok) {
    return {
      content: [{ type: 'text', text: JSON.stringify(outcome.value, null, 2) }],
      structuredContent: outcome.value as Record<string, unknown>,
    };
  }
  if (outcome.value !== undefined) {
    return {
      content: [{ type: 'text', text: JSON.stringify(outcome.value, null, 2) }],
      structuredContent: outcome.value as Record<string, unknown>,
      isError: true,
    };
  }
  return { content: [{ type: 'text', text: outcome.error }], isError: true };
}

/** One tool: what MCP clients see (name, schemas, hints) and which handler answers it. */
export interface ToolSpec {
  title: string;
  description: string;
  /** Strict: unknown arguments are an input error (./schemas.ts). */
  input: z.ZodObject;
  output: z.ZodObject;
  annotations: ToolAnnotations;
  run(tools: Tools, args: any, ctx: CallContext): Promise<ToolOutcome<object>>;
}

/** The six tools. The SDK path (below) and the fast path (./fast-path.ts) both read this table. */
export const TOOL_SPECS: Record<ToolName, ToolSpec> = {
  validate_action: {
    title: 'Validate an action',
    description:
      'Check whether an agent may perform an action BEFORE performing it. Returns allowed / require_approval / reason, the rules that matched, and an action_id for the audit log.',
    input: S.ValidateActionInput,
    output: z.object(S.ValidateActionOutput),
    annotations: { readOnlyHint: true, idempotentHint: false, openWorldHint: false },
    run: (tools, args, ctx) => tools.validateAction(args, ctx),
  },
  register_agent: {
    title: 'Register an agent',
    description: 'Create or update a GuardAgent: its trust level (low, medium, high, admin) and the tools it may or may not use.',
    input: S.RegisterAgentInput,
    output: z.object(S.RegisterAgentOutput),
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    run: (tools, args, ctx) => tools.registerAgent(args, ctx),
  },
  create_policy: {
    title: 'Create a policy',
    description: 'Create or update a GuardPolicy from rules (seed format or GuardPolicy format).',
    input: S.CreatePolicyInput,
    output: z.object(S.CreatePolicyOutput),
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    run: (tools, args, ctx) => tools.createPolicy(args, ctx),
  },
  get_audit_log: {
    title: 'Read the audit log',
    description: 'Audit entries, newest first, filtered by agent, action type, time range and status.',
    input: S.GetAuditLogInput,
    output: z.object(S.GetAuditLogOutput),
    annotations: { readOnlyHint: true, openWorldHint: false },
    run: (tools, args, ctx) => tools.getAuditLog(args, ctx),
  },
  get_compliance_status: {
    title: 'Compliance status',
    description: 'Security posture over a time range: denial rate, top offenders, incidents, policies and agents, with recommendations.',
    input: S.GetComplianceStatusInput,
    output: z.object(S.GetComplianceStatusOutput),
    annotations: { readOnlyHint: true, openWorldHint: false },
    run: (tools, args, ctx) => tools.getComplianceStatus(args, ctx),
  },
  report_incident: {
    title: 'Report an incident',
    description: 'Record a security incident. Severity "critical" suspends the agent until a human resumes it.',
    input: S.ReportIncidentInput,
    output: z.object(S.ReportIncidentOutput),
    annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: false },
    run: (tools, args, ctx) => tools.reportIncident(args, ctx),
  },
};

/**
 * How long a 2026-07-28 client may reuse a `tools/list` or `server/discover` answer. Both
 * change only when PolicyGuard itself is upgraded (tools, schemas, instructions, versions), so
 * a client that cached one before a rolling upgrade sees the new one within five minutes; a
 * refetch every five minutes costs nothing.
 */
export const LIST_TTL_MS = 5 * 60_000;

/**
 * Who may keep those answers (the revision's `cacheScope`). Without authentication they are
 * the same for everyone, so shared caches (a gateway, a proxy) may keep them: `public`. Under
 * `--auth token|kubernetes` they are `private` to the caller: a shared cache answering from
 * its copy would answer a caller we never authenticated (who must get our 401), and the tool
 * list may differ by caller once tools are filtered by permission.
 *
 * Tool results carry no cache hints: the revision defines none for `tools/call`, so a client
 * never reuses one. That is what `validate_action` needs: each call is one decision with its
 * own action_id, audit record and rate-limit count, against the policies in force at that
 * moment. The other tools read or change live state (audit log, agents, incidents).
 *
 * @example listCacheScope('none') // 'public'
 */
export function listCacheScope(authMode: 'none' | 'token' | 'kubernetes'): CacheScope {
  return authMode === 'none' ? 'public' : 'private';
}

export interface McpServerSettings {
  /** Who may cache `tools/list` and `server/discover` answers ({@link listCacheScope}). */
  listCacheScope: CacheScope;
}

const INSTRUCTIONS =
  'PolicyGuard decides whether an AI agent may perform an action. Call validate_action BEFORE any sensitive action and do not proceed unless "allowed" is true; when "require_approval" is true, ask a human first.';

/**
 * A server with the six tools bound to `tools` for one caller. Stateless: callers create one
 * per request (the SDK does not allow reusing a server across stateless requests).
 *
 * @example
 *   const server = createMcpServer(tools, metrics, { principal: ANONYMOUS }, { listCacheScope: 'public' });
 *   await server.connect(transport);
 */
export function createMcpServer(tools: Tools, metrics: Metrics, ctx: CallContext, settings: McpServerSettings): McpServer {
  const hint = { ttlMs: LIST_TTL_MS, cacheScope: settings.listCacheScope };
  const options: McpServerOptions = {
    capabilities: { tools: { listChanged: false } },
    instructions: INSTRUCTIONS,
    cacheHints: { 'tools/list': hint, 'server/discover': hint },
  };
  const server = new McpServer(SERVER_INFO, options);
  for (const name of TOOL_NAMES) {
    const spec = TOOL_SPECS[name];
    server.registerTool(
      name,
      { title: spec.title, description: spec.description, inputSchema: spec.input, outputSchema: spec.output, annotations: spec.annotations },
      async (args: unknown): Promise<CallToolResult> => {
        const outcome = await spec.run(tools, args, ctx);
        metrics.toolCalls.inc({ tool: name, outcome: outcome.ok ? 'ok' : 'error' });
        return toCallToolResult(outcome);
      },
    );
  }
  return server;
}
