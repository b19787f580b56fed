/**
 * The MCP surface (DESIGN §4): the six tools registered on an SDK `McpServer`, each with its
 * input and output schema. Results carry the seed's JSON as text content and the same object
 * as `structuredContent`.
 */
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { Metrics } from '../metrics.js';
import * as S from './schemas.js';
import type { CallContext, ToolOutcome, Tools } from './tools.js';

export const SERVER_INFO = { name: 'policyguard', version: '0.1.0' } as const;

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

/**
 * A server with the six tools bound to `tools` for one caller. Stateless: callers create one
 * per request (the SDK does not allow reusing a server across stateless requests).
 *
 * @example
 *   const server = createMcpServer(tools, metrics, { caller: 'anonymous' });
 *   await server.connect(transport);
 */
export function createMcpServer(tools: Tools, metrics: Metrics, ctx: CallContext): McpServer {
  const server = new McpServer(SERVER_INFO, {
    capabilities: { tools: { listChanged: false } },
    instructions:
      'PolicyGuard decides whether an AI agent may perform an action. Call validate_action BEFORE any sensitive action and do not proceed unless "allowed" is true; when "require_approval" is true, ask a human first.',
  });
  const run =
    <A>(name: ToolName, handler: (args: A) => Promise<ToolOutcome<object>>) =>
    async (args: A): Promise<CallToolResult> => {
      const outcome = await handler(args);
      metrics.toolCalls.inc({ tool: name, outcome: outcome.ok ? 'ok' : 'error' });
      return toCallToolResult(outcome);
    };

  server.registerTool(
    'validate_action',
    {
      title: 'Validate an action',
      description:
        'Check whether an agent may perform an action BEFORE performing it. Returns allowed / require_approval / reason, the rules that matched, and an action_id for the audit log.',
      inputSchema: S.ValidateActionInput,
      outputSchema: S.ValidateActionOutput,
      annotations: { readOnlyHint: true, idempotentHint: false, openWorldHint: false },
    },
    run('validate_action', (a) => tools.validateAction(a, ctx)),
  );
  server.registerTool(
    'register_agent',
    {
      title: 'Register an agent',
      description: 'Create or update a GuardAgent: its trust level (low, medium, high, admin) and the tools it may or may not use.',
      inputSchema: S.RegisterAgentInput,
      outputSchema: S.RegisterAgentOutput,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    run('register_agent', (a) => tools.registerAgent(a, ctx)),
  );
  server.registerTool(
    'create_policy',
    {
      title: 'Create a policy',
      description: 'Create or update a GuardPolicy from rules (seed format or GuardPolicy format).',
      inputSchema: S.CreatePolicyInput,
      outputSchema: S.CreatePolicyOutput,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    run('create_policy', (a) => tools.createPolicy(a, ctx)),
  );
  server.registerTool(
    'get_audit_log',
    {
      title: 'Read the audit log',
      description: 'Audit entries, newest first, filtered by agent, action type, time range and status.',
      inputSchema: S.GetAuditLogInput,
      outputSchema: S.GetAuditLogOutput,
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    run('get_audit_log', (a) => tools.getAuditLog(a)),
  );
  server.registerTool(
    'get_compliance_status',
    {
      title: 'Compliance status',
      description: 'Security posture over a time range: denial rate, top offenders, incidents, policies and agents, with recommendations.',
      inputSchema: S.GetComplianceStatusInput,
      outputSchema: S.GetComplianceStatusOutput,
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    run('get_compliance_status', (a) => tools.getComplianceStatus(a)),
  );
  server.registerTool(
    'report_incident',
    {
      title: 'Report an incident',
      description: 'Record a security incident. Severity "critical" suspends the agent until a human resumes it.',
      inputSchema: S.ReportIncidentInput,
      outputSchema: S.ReportIncidentOutput,
      annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: false },
    },
    run('report_incident', (a) => tools.reportIncident(a, ctx)),
  );
  return server;
}
