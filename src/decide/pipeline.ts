/**
 * The one decision pipeline (docs/decisions.md, §1): identity → evaluation → limits → audit →
 * incidents → auto-registration. `validate_action` calls it with the agent id the caller
 * claims; an adapter in front of real tools calls it with the caller's own agent. Adapters
 * only translate their wire format in and out.
 */
import { LABEL_AUTO_REGISTERED, type AgentIdentity, type GuardApproval } from '../api/schemas.js';
import { approvalRef, approvalTtlMs, phaseOf } from '../approvals/ask.js';
import type { Approvals, Settlement } from '../approvals/approvals.js';
import type { Principal } from '../auth/authenticate.js';
import type { Authorizer } from '../auth/authorize.js';
import { parseRate, RateLimiter } from '../auth/rate-limit.js';
import type { IncidentInput, IncidentLog, IncidentRecord } from '../audit/incident-file.js';
import { newId, redactSecretText, type AuditApproval } from '../audit/record.js';
import type { AuditSink } from '../audit/sink.js';
import type { CompiledAgent } from '../engine/compile.js';
import { INCOMPLETE_POLICY_SET, type PolicySnapshot } from '../engine/snapshot.js';
import type { Decision } from '../engine/types.js';
import type { Logger } from '../log.js';
import { secondsSince, type Metrics } from '../metrics.js';
import type { PolicyStore } from '../store/store.js';
import { childSpan, noteActionId, requestContext } from '../telemetry/request-context.js';
import { agentNamed } from '../api/builders.js';
import { autoRegisteredAgent, identityOf, namespaceFor, resolveIdentity, type IncidentSpec, type UnknownAgents } from './identity.js';

export interface PipelineOptions {
  /** Create a GuardAgent for unknown agent ids, in the background. */
  autoRegister: boolean;
  /** At most this many auto-registered agents may exist. */
  autoRegisterLimit: number;
  /** Under auth, at most this many agents auto-registered for (and bound to) one caller. */
  autoRegisterPerCaller: number;
  unknownAgents: UnknownAgents;
}

export interface PipelineDeps {
  store: PolicyStore;
  authorizer: Authorizer;
  audit: AuditSink;
  incidents: IncidentLog;
  metrics: Metrics;
  log: Logger;
  options: PipelineOptions;
  /** GuardApprovals for require_approval decisions; absent, such a decision only says so. */
  approvals?: Approvals;
  now?: () => Date;
}

/** One action to decide. */
export interface DecisionInput {
  principal: Principal;
  /** The agent the caller says it acts as; undefined = the one agent it is bound to. */
  agentId: string | undefined;
  actionType: string;
  target: string;
  parameters: Readonly<Record<string, unknown>>;
  context: string;
  /** `namespace/name` of the GuardUpstream the call goes through (the gateway); rules can match it. */
  upstream?: string;
  /** The GuardApproval the caller names for this call (validate_action's approval_id). */
  approvalId?: string;
  /** Asked before an Approved approval is used for this call (see ApprovalRequest.readyToUse). */
  readyToUse?: () => Promise<string | undefined>;
}

/**
 * A decision as recorded: the engine's answer plus the id of its audit record, and the
 * GuardApproval a require_approval rule asked for or that allowed the call.
 */
export type RecordedDecision = Decision & { action_id: string; approval_id?: string };

/** `settlement`: what the approvals said, for a require_approval decision (the gateway holds on a pending one). */
export type DecideOutcome = { ok: true; decision: RecordedDecision; settlement?: Settlement } | { ok: false; error: string };

/** Turn a decision into a deny by an agent-level check (identity, rate limit), keeping the rest. */
function agentDeny(d: Decision, rule: string, reason: string): Decision {
  return {
    ...d,
    allowed: false,
    require_approval: false,
    reason,
    decision: 'deny',
    matched: [{ policy: `agent:${d.agent.id}`, rule, action: 'deny', enforcement: 'Enforce', message: reason }, ...d.matched],
  };
}

export class DecisionPipeline {
  /** Auto-registrations in flight: agent id → the caller it will be bound to. */
  private readonly pendingRegistrations = new Map<string, string>();
  private readonly agentLimiters = new Map<string, RateLimiter>();
  private readonly now: () => Date;

  constructor(private readonly deps: PipelineDeps) {
    this.now = deps.now ?? (() => new Date());
  }

  /** Where objects written for `principal` go (docs/decisions.md, "Identity"). */
  namespaceFor(principal: Principal): string | undefined {
    return namespaceFor(principal, this.deps.store.writeNamespace);
  }

  /**
   * Decide one action. Synchronous up to the audit append: the incident and an
   * auto-registration follow in the background, and the decision never waits for them.
   *
   * @example const out = pipeline.decide({ principal, agentId: 'etl', actionType: 'tool_call', target: 'drop_table', parameters: {}, context: '' });
   */
  async decide(input: DecisionInput): Promise<DecideOutcome> {
    const { store, authorizer, audit, metrics, options } = this.deps;
    const started = performance.now();
    const snapshot = store.snapshot();
    const identity = resolveIdentity({ authorizer, snapshot, principal: input.principal, agentId: input.agentId, unknownAgents: options.unknownAgents, writeNamespace: store.writeNamespace });
    if (!identity.ok && 'error' in identity) return { ok: false, error: identity.error };
    const agentId = identity.agentId;
    // The target as the audit record keeps it (a connection string's password redacted).
    const span = childSpan('policyguard.decide', { 'policyguard.agent_id': agentId, 'policyguard.target': redactSecretText(input.target) });
    const evaluating = performance.now();
    let decision = snapshot.evaluate({
      agentId,
      actionType: input.actionType,
      target: input.target,
      parameters: input.parameters,
      context: input.context,
      ...(identity.ok && identity.unknownAgentNamespace ? { unknownAgentNamespace: identity.unknownAgentNamespace } : {}),
      ...(input.upstream !== undefined ? { upstream: input.upstream } : {}),
    });
    metrics.evaluationSeconds.observe(secondsSince(evaluating));
    // Denied because the policy set is incomplete (docs/decisions.md, "Objects that cannot be
    // loaded"): no violation by the agent, and no id to register, as the missing object may define it.
    const incomplete = decision.matched[0]?.rule === INCOMPLETE_POLICY_SET;
    let incident: IncidentSpec | undefined;
    if (!identity.ok) {
      // Refused as that agent: how its rules would have judged the call is not the caller's to see.
      decision = agentDeny({ ...decision, matched: [], audit_findings: [], warnings: [] }, identity.refusal.rule, identity.refusal.reason);
      incident = identity.refusal.incident;
    } else {
      const agent = snapshot.agent(agentId);
      const limited = this.overRateLimit(agent);
      if (limited) {
        decision = agentDeny(decision, 'rateLimit', limited);
        incident = { type: 'rate_limit_exceeded', severity: 'medium', agentId, evidence: { limit: agent!.source.spec.rateLimit } };
      } else if (decision.decision === 'deny' && !incomplete) {
        incident = { type: 'policy_violation', severity: 'medium', agentId, evidence: { matched: decision.matched } };
      }
    }

    const actionId = newId('act_');
    noteActionId(actionId);
    let settlement: Settlement | undefined;
    // A require_approval decision asks a person (docs/decisions.md, "Approvals"); not when the
    // log cannot record it, since its record is what names the approval.
    if (identity.ok && decision.decision === 'require_approval' && this.deps.approvals && audit.available() === undefined) {
      settlement = await this.settleApproval(input, agentId, decision, actionId, snapshot);
      decision = applySettlement(decision, settlement);
    }
    const appended = audit.append({
      action_id: actionId,
      agent_id: agentId,
      caller: input.principal.subject,
      action: {
        type: input.actionType,
        target: input.target,
        parameters: input.parameters as Record<string, unknown>,
        context: input.context,
        ...(input.upstream !== undefined ? { upstream: input.upstream } : {}),
      },
      evaluation: {
        allowed: decision.allowed,
        decision: decision.decision,
        require_approval: decision.require_approval,
        reason: decision.reason,
        matched: decision.matched,
        audit_findings: decision.audit_findings,
      },
      revision: decision.revision,
      ...(settlement && 'approval' in settlement && settlement.approval ? { approval: auditApproval(settlement.approval, settlement, this.now()) } : {}),
    });
    if (!appended.ok) {
      // Fail closed (--audit-failure-mode closed): a decision the log cannot record is a deny.
      decision = { ...decision, allowed: false, require_approval: false, decision: 'deny', reason: `audit log unavailable: ${appended.reason}` };
      incident = undefined;
      metrics.auditUnavailableDenials.inc();
    }
    metrics.decisions.inc({ decision: decision.decision });
    for (const f of decision.audit_findings) metrics.auditFindings.inc({ policy: f.policy });
    metrics.decisionSeconds.observe(secondsSince(started));
    span?.setAttributes({ 'policyguard.decision': decision.decision, 'policyguard.action_id': actionId });
    span?.end();

    if (incident) {
      // The audit record above already holds the deny; the incident follows in the background
      // (in kubernetes mode record() resolves once its entry is buffered in the same log).
      const spec = incident;
      this.recordIncident({
        type: spec.type,
        severity: spec.severity,
        description: `Agent '${agentId}' attempted '${input.actionType}' on '${input.target}' - DENIED: ${decision.reason}`,
        agent_id: spec.agentId,
        action_id: actionId,
        evidence: spec.evidence,
        recommended_action: '',
      }).catch((err: unknown) => this.deps.log.warn('incident not recorded', { action_id: actionId, error: String(err) }));
    }
    if (identity.ok && !decision.agent.registered && !incomplete) this.autoRegister(agentId, snapshot, input.principal);
    const approved = settlement && 'approval' in settlement ? settlement.approval : undefined;
    return { ok: true, decision: { action_id: actionId, ...decision, ...(approved ? { approval_id: approved.metadata.name } : {}) }, ...(settlement ? { settlement } : {}) };
  }

  /** Ask the approvals about a require_approval decision: in the agent's namespace, naming everyone who may not decide it. */
  private settleApproval(input: DecisionInput, agentId: string, decision: Decision, actionId: string, snapshot: PolicySnapshot): Promise<Settlement> {
    const approvals = this.deps.approvals!;
    const agent = snapshot.agent(agentId);
    const namespace = this.deps.store.writeNamespace === undefined ? undefined : (agent?.source.metadata.namespace ?? this.namespaceFor(input.principal));
    return approvals.settle({
      ask: { agentId, actionType: input.actionType, target: input.target, ...(input.upstream !== undefined ? { upstream: input.upstream } : {}), parameters: input.parameters },
      namespace,
      ...(input.approvalId !== undefined ? { approvalId: input.approvalId } : {}),
      // Checked again just before an approval is used: the caller's own check may have waited
      // (the gateway lists an upstream), and a log that cannot take the decision's record would
      // leave the approval spent on a denied call.
      readyToUse: async () => (input.readyToUse ? await input.readyToUse() : undefined) ?? auditRefuses(this.deps.audit),
      actionId,
      matched: decision.matched,
      message: decision.reason,
      revision: decision.revision,
      requestedBy: input.principal.subject,
      requesters: (agent?.source.spec.identities ?? []).map(usernameOf),
      ttlMs: approvalTtlMs(snapshot.policies(), decision.matched, approvals.defaultTtlMs),
    });
  }

  /** Store an incident and count it (also what report_incident uses). */
  async recordIncident(input: IncidentInput): Promise<IncidentRecord> {
    const rec = await this.deps.incidents.record(input);
    this.deps.metrics.incidents.inc({ type: rec.type, severity: rec.severity });
    return rec;
  }

  /** GuardAgent.spec.rateLimit, per replica. Returns the reason when over the limit. */
  private overRateLimit(agent: CompiledAgent | undefined): string | undefined {
    const limit = agent?.source.spec.rateLimit;
    if (!limit) return undefined;
    const key = `${limit.requests}/${limit.per}`;
    let limiter = this.agentLimiters.get(key);
    if (!limiter) {
      limiter = new RateLimiter(limit.requests, parseRate(`1/${limit.per}`)!.windowMs);
      this.agentLimiters.set(key, limiter);
    }
    const take = limiter.take(agent.id, this.now().getTime());
    return take.ok ? undefined : `Rate limit exceeded for agent '${agent.id}': ${limit.requests} requests per ${limit.per}; retry in ${Math.ceil(take.retryAfterMs / 1000)} s`;
  }

  /**
   * Fire-and-forget (docs/decisions.md, step 1). Bounded twice: `autoRegisterLimit`
   * auto-registered agents in all, and under auth `autoRegisterPerCaller` per caller (its
   * bound agents and registrations in flight), so random ids are not a way to fill etcd or the
   * disk. Under auth the new agent is bound to the caller that first used the id.
   */
  private autoRegister(agentId: string, snapshot: PolicySnapshot, principal: Principal): void {
    const { autoRegister, autoRegisterLimit, autoRegisterPerCaller } = this.deps.options;
    const { authorizer, store, metrics } = this.deps;
    const caller = principal.subject;
    if (!autoRegister || !store.isLeader() || this.pendingRegistrations.has(agentId)) return;
    let existing = this.pendingRegistrations.size;
    for (const a of snapshot.agents()) if (a.labels[LABEL_AUTO_REGISTERED] === 'true') existing++;
    const perCaller = [...this.pendingRegistrations.values()].filter((c) => c === caller).length + authorizer.boundAgents(principal, snapshot).length;
    if (existing >= autoRegisterLimit || (authorizer.enforcing && perCaller >= autoRegisterPerCaller)) {
      metrics.autoRegistrations.inc({ outcome: 'limit' });
      return;
    }
    const identities = authorizer.enforcing ? [identityOf(principal)] : undefined;
    const agent = autoRegisteredAgent(agentId, this.namespaceFor(principal), snapshot.options.unknownAgentTrust, identities);
    if (!agent) return; // an id no GuardAgent can carry; it stays an implicit agent
    // Never over another agent's object: an id may be another agent's object name.
    const owner = agentNamed(snapshot, agent.metadata.namespace, agent.metadata.name);
    if (owner !== undefined) {
      metrics.autoRegistrations.inc({ outcome: 'name_taken' });
      this.deps.log.warn('auto-registration skipped: the object name is another agent\'s', { agent: agentId, name: agent.metadata.name, owner });
      return;
    }
    this.pendingRegistrations.set(agentId, caller);
    // Background work the request only sets off: its log lines carry none of the request's ids.
    requestContext
      .exit(() => store.applyAgent(agent, 'create'))
      .then(() => metrics.autoRegistrations.inc({ outcome: 'ok' }))
      .catch((err) => {
        metrics.autoRegistrations.inc({ outcome: 'error' });
        this.deps.log.warn('auto-registration failed', { agent: agentId, error: String(err) });
      })
      .finally(() => this.pendingRegistrations.delete(agentId));
  }
}

/** The Kubernetes username of an identity bound to an agent. */
function usernameOf(identity: AgentIdentity): string {
  return identity.serviceAccount ? `system:serviceaccount:${identity.serviceAccount.namespace}:${identity.serviceAccount.name}` : identity.user!;
}

/** Why the audit log would refuse a record now, as a refusal says it; undefined when it takes them. */
function auditRefuses(audit: AuditSink): string | undefined {
  const why = audit.available();
  return why === undefined ? undefined : `the audit log cannot take the decision's record (${why})`;
}

/** What the approvals make of a require_approval decision. */
function applySettlement(d: Decision, s: Settlement): Decision {
  switch (s.outcome) {
    case 'used': {
      const { status, metadata } = s.approval;
      const why = status?.reason ? `: ${status.reason}` : '';
      return { ...d, allowed: true, require_approval: false, decision: 'allow', reason: `Approved by ${status?.decidedBy ?? 'someone'} (approval ${metadata.name}, now used)${why}. ${d.reason}` };
    }
    case 'pending':
      // The rule's message stays the reason (as the seed answered); approval_id names the ask.
      return d;
    case 'refused':
      return { ...d, allowed: false, require_approval: false, decision: 'deny', reason: `${d.reason}; ${s.reason}` };
    case 'unavailable':
      return { ...d, reason: `${d.reason}; ${s.reason}` };
  }
}

/** How a decision's audit record names its approval, and the phase this decision left it in. */
function auditApproval(approval: GuardApproval, s: Settlement, now: Date): AuditApproval {
  const decidedBy = approval.status?.decidedBy;
  return { ref: approvalRef(approval), phase: s.outcome === 'used' ? 'Used' : phaseOf(approval, now), ...(decidedBy ? { decided_by: decidedBy } : {}) };
}
