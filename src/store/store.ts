/**
 * What the MCP tools need from a source of truth. Two implementations: the standalone store
 * (a folder of YAML manifests) and the Kubernetes store (CRs, watched by the controller).
 */
import type { GuardAgent, GuardAgentSpec, GuardPolicy, GuardUpstream, Suspension } from '../api/schemas.js';
import type { PolicySnapshot } from '../engine/snapshot.js';


export interface ApplyResult {
  /** Where it was written: a file path or `namespace/name`. */
  location: string;
}

/**
 * What a write may do, matching the permission the caller was checked for: `create` makes an
 * object that does not exist (RBAC `create`), `update` changes the one that does (RBAC
 * `patch`). Either refuses, with a {@link StoreChangedError}, when the object is no longer
 * as the caller's check saw it, so neither permission stands in for the other.
 */
export type WriteIntent = 'create' | 'update';

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

/**
 * A write refused because the object is not as the caller's checks saw it: it exists for a
 * `create` (someone created it meanwhile; in a cluster, also one in a namespace not watched),
 * or, for an `update`, it changed, or it is gone or another object (deleted, or deleted and
 * created again). A cluster's replicas see changes a moment late, so a retry soon after
 * decides afresh. Nothing was written.
 */
export class StoreChangedError extends Error {
  override name = 'StoreChangedError';
  constructor(
    /** `Kind namespace/name`, or the manifest's `Kind name` in standalone mode. */
    readonly object: string,
    readonly intent: WriteIntent,
    /** In a cluster, permissions are RBAC's and a server may watch only some namespaces. */
    cluster: boolean,
  ) {
    super(
      intent === 'create'
        ? `${object} exists, though it did not when this call was checked (someone created it meanwhile${cluster ? ', or it is in a namespace this server does not watch' : ''}); a create does not overwrite it, so nothing was written. Retry to change it${cluster ? ', which takes permission to change it (RBAC patch), not only to create' : ''}`
        : `${object} was changed, deleted or created again since ${cluster ? 'this server last saw it (replicas see changes a moment late)' : 'this call was checked'}; nothing was written. Retry`,
    );
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
   * Create or update a GuardAgent (register_agent, auto-registration), as `intent` says; throws
   * {@link StoreChangedError} when the object is not as that intent expects. An update is of
   * the version `agent.metadata` names (its uid and resourceVersion, in Kubernetes mode): pass
   * the metadata of the object the caller's checks read, as the snapshot held it. In Kubernetes
   * mode, throws {@link StoreConflictError} rather than take fields another manager owns, and,
   * when `specFields` is given, writes only those fields of the spec: the others stay with
   * whoever set them (GitOps), instead of becoming co-owned by PolicyGuard with unchanged values.
   */
  applyAgent(agent: GuardAgent, intent: WriteIntent, specFields?: readonly (keyof GuardAgentSpec)[]): Promise<ApplyResult>;
  /** Create or update a GuardPolicy (create_policy), as {@link applyAgent} does. */
  applyPolicy(policy: GuardPolicy, intent: WriteIntent): Promise<ApplyResult>;
  /**
   * Whether an object of this kind, namespace and name exists, in force or not: writing it is
   * then an `update`, which takes permission to change it, not only to create (RBAC `patch`).
   */
  holds(kind: 'GuardAgent' | 'GuardPolicy', namespace: string | undefined, name: string): boolean;
  /**
   * The namespaces of the GuardAgents held, in force or not, that are the agent `agentId` (their
   * spec.agentId, else their name) ignoring case, as agent ids clash; `undefined` for standalone's
   * objects without one.
   */
  agentHolders(agentId: string): Array<string | undefined>;
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
