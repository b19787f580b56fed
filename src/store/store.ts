/**
 * What the MCP tools need from a source of truth. Two implementations: the standalone store
 * (a folder of YAML manifests) and the Kubernetes store (CRs, watched by the controller).
 */
import type { GuardAgent, GuardAgentSpec, GuardPolicy, GuardUpstream, Suspension } from '../api/schemas.js';
import type { PolicySnapshot } from '../engine/snapshot.js';


export interface ApplyResult {
  /** False when an object of that kind and name already existed and was updated. */
  created: boolean;
  /** Where it was written: a file path or `namespace/name`. */
  location: string;
}

/** One field another field manager owns, as the API server reports a server-side apply conflict. */
export interface FieldConflict {
  /** E.g. `.spec.trustLevel`. */
  field: string;
  /** E.g. `argocd-controller`. */
  manager: string;
}

/**
 * A write refused because it would change fields another writer (Argo CD, Flux, kubectl) owns.
 * PolicyGuard never takes them over (docs/deploy.md, "GitOps"); the message says which fields,
 * whose they are and what to do.
 *
 * @example
 * try { await store.applyAgent(agent); } catch (e) { if (e instanceof StoreConflictError) return fail(e.message); throw e; }
 */
export class StoreConflictError extends Error {
  override name = 'StoreConflictError';
  constructor(
    /** `Kind namespace/name`. */
    readonly object: string,
    readonly conflicts: readonly FieldConflict[],
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export interface PolicyStore {
  /** The snapshot in force. Swapped atomically on every change; never blocks. */
  snapshot(): PolicySnapshot;
  /**
   * Why this store cannot serve yet (its first full load has not compiled, say), or undefined
   * once it can: /readyz, the gateway and the policyguard_ready gauge answer from it.
   */
  notReady(): string | undefined;
  /** Human-readable lines: objects or files not (fully) in force and why. */
  problems(): readonly string[];
  /**
   * Create or update a GuardAgent (register_agent). In Kubernetes mode, throws
   * {@link StoreConflictError} rather than take fields another manager owns, and, when
   * `specFields` is given, applies only those fields of the spec: the others stay with whoever
   * set them (GitOps), instead of becoming co-owned by PolicyGuard with unchanged values.
   */
  applyAgent(agent: GuardAgent, specFields?: readonly (keyof GuardAgentSpec)[]): Promise<ApplyResult>;
  /** Create or update a GuardPolicy (create_policy). In Kubernetes mode, throws {@link StoreConflictError} rather than take fields another manager owns. */
  applyPolicy(policy: GuardPolicy): Promise<ApplyResult>;
  /**
   * Whether an object of this kind, namespace and name exists, in force or not: writing it is
   * then an update, which takes permission to change it, not only to create (RBAC `patch`).
   */
  holds(kind: 'GuardAgent' | 'GuardPolicy', namespace: string | undefined, name: string): boolean;
  /** The usable GuardUpstream `namespace/name` (see ./upstreams.ts), or undefined. */
  upstream(ref: string): GuardUpstream | undefined;
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
