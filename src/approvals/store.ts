/**
 * Where GuardApprovals live. Two implementations: GuardApproval objects in the cluster
 * (./kube-store.ts, kept current by a watch) and files in the standalone data dir
 * (./file-store.ts). The server reads from a local cache and writes through; a person decides
 * through an {@link ApprovalDesk} (the `policyguard approvals` CLI).
 */
import type { GuardApproval, GuardApprovalStatus } from '../api/schemas.js';

export interface ApprovalStore {
  /** Every approval known, from the local cache. */
  list(): readonly GuardApproval[];
  /** One approval by namespace (undefined in standalone mode) and name, from the cache. */
  get(namespace: string | undefined, name: string): GuardApproval | undefined;
  /** Create a Pending approval; resolves with it as stored. */
  create(approval: GuardApproval): Promise<GuardApproval>;
  /**
   * Write `status` if the approval is still the version the caller read (compare-and-set on
   * resourceVersion, or on the file's content): false when it changed meanwhile, so two
   * replicas can never both use one approval.
   */
  updateStatus(approval: GuardApproval, status: GuardApprovalStatus): Promise<boolean>;
  delete(approval: GuardApproval): Promise<void>;
  /** Called after the cache changed for approval `ref` (`namespace/name`, or the name in standalone mode; `undefined`: deleted). Returns the unsubscribe. */
  onChange(listener: (ref: string, approval: GuardApproval | undefined) => void): () => void;
  close(): Promise<void>;
}

/** A person's verdict. */
export interface ApprovalVerdict {
  phase: 'Approved' | 'Denied';
  reason?: string;
}

/** What a person uses to see and decide approvals. */
export interface ApprovalDesk {
  /** Approvals, newest first; `namespace` undefined = every namespace the desk can see. */
  list(namespace?: string): Promise<GuardApproval[]>;
  /**
   * Approve or deny a Pending approval, as the person the desk acts for. Throws an Error whose
   * message says exactly why not (not found, already decided, expired, refused by admission).
   */
  decide(name: string, namespace: string | undefined, verdict: ApprovalVerdict): Promise<GuardApproval>;
}
