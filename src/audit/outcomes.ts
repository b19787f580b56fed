/**
 * What an upstream MCP server answered to a tools/call the gateway let through: a record of its
 * own, after the decision's, linked to it by `action_id`. Only the shape of the answer is kept
 * (HTTP status, whether it was a tool error, how long it took, how many bytes), never the tool's
 * output. System-written like incidents: `caller` null and `revision` empty, so no decision an
 * agent asks for can look like one.
 */
import type { AuditEntryInput, AuditEvaluation, AuditRecord } from './record.js';

/** `action.type` of outcome records. */
export const OUTCOME_ACTION_TYPE = 'upstream_outcome';

const OUTCOME_EVALUATION: AuditEvaluation = {
  allowed: true,
  decision: 'allow',
  require_approval: false,
  reason: 'upstream outcome',
  matched: [],
  audit_findings: [],
};

export interface UpstreamOutcome {
  /** HTTP status of the upstream's answer; 0 when there was none (unreachable, timed out). */
  status: number;
  /** The tool result said `isError: true`, or the answer was a JSON-RPC or HTTP error, or held no answer to the call. */
  is_error: boolean;
  duration_ms: number;
  /** Bytes of the answer's body as streamed back. */
  bytes: number;
  /** Why there was no usable answer, when there was none (or no answer to the call in it). */
  error?: string;
}

/**
 * The audit entry of an upstream's answer to the decision `actionId`.
 *
 * @example audit.append(outcomeEntry({ actionId, agentId, tool: 'create_issue', upstream: 'tools/github', outcome }));
 */
export function outcomeEntry(input: { actionId: string; agentId: string; tool: string; upstream: string; outcome: UpstreamOutcome }): AuditEntryInput {
  return {
    action_id: input.actionId,
    agent_id: input.agentId,
    caller: null,
    action: { type: OUTCOME_ACTION_TYPE, target: input.tool, parameters: { ...input.outcome }, context: '', upstream: input.upstream },
    evaluation: OUTCOME_EVALUATION,
    revision: '',
  };
}

/** Whether `record` is an outcome record written by {@link outcomeEntry}. */
export function isOutcomeRecord(record: AuditRecord): boolean {
  return record.action.type === OUTCOME_ACTION_TYPE && record.caller === null && record.revision === '' && record.evaluation.reason === OUTCOME_EVALUATION.reason;
}
