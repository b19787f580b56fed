/**
 * What the MCP tools need from a source of truth. Two implementations: the standalone store
 * (a folder of YAML manifests) and the Kubernetes store (CRs, watched by the controller).
 */
import type { GuardAgent, GuardPolicy, Suspension } from '../api/schemas.js';
import type { PolicySnapshot } from '../engine/snapshot.js';

export interface ApplyResult {
  /** False when an object of that kind and name already existed and was updated. */
  created: boolean;
  /** Where it was written: a file path or `namespace/name`. */
  location: string;
}

export interface PolicyStore {
  /** The snapshot in force. Swapped atomically on every change; never blocks. */
  snapshot(): PolicySnapshot;
  /** True once the first full load has compiled. */
  ready(): boolean;
  /** Human-readable lines: objects or files not (fully) in force and why. */
  problems(): readonly string[];
  /** Create or update a GuardAgent (register_agent). */
  applyAgent(agent: GuardAgent): Promise<ApplyResult>;
  /** Create or update a GuardPolicy (create_policy). */
  applyPolicy(policy: GuardPolicy): Promise<ApplyResult>;
  /** Record an automatic suspension in the agent's status. False when no GuardAgent claims the id. */
  suspendAgent(agentId: string, suspension: Suspension): Promise<boolean>;
  /**
   * True when this replica may make background writes (auto-registration). Always true in
   * standalone mode; in Kubernetes mode only the Lease holder.
   */
  isLeader(): boolean;
  /** Where objects written through MCP go (namespace in Kubernetes mode). */
  readonly writeNamespace: string | undefined;
  close(): Promise<void>;
}
