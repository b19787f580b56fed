import { z } from 'zod';
import { INCIDENT_LIST_LIMIT, INCIDENT_LIST_MAX_BYTES, type IncidentInput, type IncidentLog, type IncidentRecord } from './incident-file.js';
import { newId, type AuditEvaluation, type AuditRecord } from './record.js';
import { AuditWriteError, type AuditSink } from './sink.js';

/** `agent_id` of the audit entry of an incident that concerns no agent. */
export const SYSTEM_AGENT_ID = 'policyguard-system';
/** `action.type` of the audit entries that hold incidents. */
export const INCIDENT_ACTION_TYPE = 'incident';

const INCIDENT_EVALUATION: AuditEvaluation = {
  allowed: true,
  decision: 'allow',
  require_approval: false,
  reason: 'incident recorded',
  matched: [],
  audit_findings: [],
};

const INCIDENT_ID = /^inc_[0-9a-f]{12}$/;

/**
 * `action.parameters` of an incident entry: the incident minus what the entry already says
 * (id = target, timestamp, agent, action id). `agent_id: null` is kept only for an incident
 * about no agent, whose entry is attributed to {@link SYSTEM_AGENT_ID}.
 */
const StoredIncidentSchema = z.object({
  type: z.string(),
  severity: z.enum(['low', 'medium', 'high', 'critical']),
  description: z.string(),
  evidence: z.record(z.string(), z.unknown()),
  recommended_action: z.string(),
  status: z.literal('open'),
  resolution: z.null(),
  agent_id: z.null().optional(),
});

/**
 * The incident log of kubernetes mode. Events expire (an hour by default) and compliance
 * queries need incidents for longer, so each incident is an entry of the audit log itself —
 * in its hash chain, in whichever sink is configured — and `onIncident` turns it into the
 * short-lived Event. `record()` resolves once the entry is buffered in the sink (durable with
 * the sink's next batch, like every decision); it rejects when the sink refused (closed mode)
 * or dropped (open mode) the entry (`onIncident` is still called: the Event may be the only
 * trace left), and when `onIncident` throws (the incident is stored then). `action_id` reads back as `null` when
 * it was not given.
 *
 * @example
 * const incidents = createAuditIncidentLog(audit, (i) => events.record(i));
 * const incident = await incidents.record({ type: 'policy_violation', severity: 'high', description: 'denied shell.exec',
 *   agent_id: 'etl', evidence: { target: 'shell.exec' }, recommended_action: 'review the agent' });
 * const lastDay = await incidents.list(new Date(Date.now() - 86_400_000));
 */
export function createAuditIncidentLog(audit: AuditSink, onIncident?: (i: IncidentRecord) => void): IncidentLog {
  return {
    async record(input: IncidentInput): Promise<IncidentRecord> {
      const incidentId = newId('inc_');
      const taken = audit.append({
        action_id: input.action_id ?? null,
        agent_id: input.agent_id ?? SYSTEM_AGENT_ID,
        caller: null,
        action: {
          type: INCIDENT_ACTION_TYPE,
          target: incidentId,
          parameters: {
            type: input.type,
            severity: input.severity,
            description: input.description,
            evidence: input.evidence,
            recommended_action: input.recommended_action,
            status: 'open',
            resolution: null,
            ...(input.agent_id === null ? { agent_id: null } : {}),
          },
          context: '',
        },
        evaluation: INCIDENT_EVALUATION,
        revision: '',
      });
      const entry = taken.record;
      const incident = incidentFromAudit(entry);
      if (!incident) throw new Error(`incident ${incidentId}: its audit entry does not read back as an incident`);
      // The Event is raised even when the entry was not taken: it may be the only trace an operator sees.
      const lost = taken.ok ? taken.dropped : taken.reason;
      let failed: { error: unknown } | undefined;
      try {
        onIncident?.(incident);
      } catch (error) {
        failed = { error };
      }
      if (lost !== undefined) {
        throw new AuditWriteError(`incident ${incidentId} was not stored: the audit sink ${taken.ok ? 'dropped' : 'refused'} its entry ${entry.entry_id}: ${lost}`, {
          ...(failed ? { cause: failed.error } : {}),
        });
      }
      if (failed) {
        throw new Error(`incident ${incidentId} is in the audit log, but onIncident failed: ${String(failed.error)}`, { cause: failed.error });
      }
      return incident;
    },

    async list(since?: Date): Promise<IncidentRecord[]> {
      const { entries } = await audit.query({
        ...(since ? { since } : {}),
        actionType: INCIDENT_ACTION_TYPE,
        // Incidents only: a decision an agent asked for with action_type "incident" (and large arguments) is not one.
        kinds: ['incident'],
        limit: INCIDENT_LIST_LIMIT,
        maxBytes: INCIDENT_LIST_MAX_BYTES,
      });
      return entries.map(incidentFromAudit).filter((incident) => incident !== undefined);
    },
  };
}

/**
 * The incident an audit entry holds, or undefined when the entry is not one written by
 * {@link createAuditIncidentLog} (an agent may well send an action of type "incident" to
 * validate_action; that is a decision, not an incident).
 *
 * @example
 * const incidents = entries.map(incidentFromAudit).filter((i) => i !== undefined);
 */
export function incidentFromAudit(entry: AuditRecord): IncidentRecord | undefined {
  if (
    entry.action.type !== INCIDENT_ACTION_TYPE ||
    !INCIDENT_ID.test(entry.action.target) ||
    entry.caller !== null ||
    entry.revision !== '' ||
    entry.evaluation.reason !== INCIDENT_EVALUATION.reason
  ) {
    return undefined;
  }
  const stored = StoredIncidentSchema.safeParse(entry.action.parameters);
  if (!stored.success) return undefined;
  const p = stored.data;
  return {
    incident_id: entry.action.target,
    timestamp: entry.timestamp,
    type: p.type,
    severity: p.severity,
    description: p.description,
    agent_id: p.agent_id === null ? null : entry.agent_id,
    action_id: entry.action_id,
    evidence: p.evidence,
    recommended_action: p.recommended_action,
    status: p.status,
    resolution: p.resolution,
  };
}
