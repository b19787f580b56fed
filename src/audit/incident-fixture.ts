/** A typical incident for the audit tests; `overrides` change any field. Test-only. */
import type { IncidentInput } from './incident-file.js';

export function incidentInput(overrides: Partial<IncidentInput> = {}): IncidentInput {
  return {
    type: 'policy_violation',
    severity: 'medium',
    description: 'denied shell.exec',
    agent_id: 'agent-1',
    action_id: 'act_0123456789ab',
    evidence: { target: 'shell.exec', headers: { Authorization: 'Bearer abc' } },
    recommended_action: 'review the agent',
    ...overrides,
  };
}
