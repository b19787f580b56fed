/**
 * An in-memory {@link ApprovalStore} for unit tests, with compare-and-set on a version counter
 * like the API server's resourceVersion, and a way to decide as a person would. Test-only.
 */
import type { GuardApproval, GuardApprovalStatus } from '../api/schemas.js';
import { approvalRef } from './ask.js';
import type { ApprovalStore } from './store.js';

export class MemoryApprovalStore implements ApprovalStore {
  private readonly items = new Map<string, GuardApproval>();
  private readonly listeners = new Set<(ref: string, approval: GuardApproval | undefined) => void>();
  private version = 0;
  /** Set to make create() fail with this message. */
  failCreate: string | undefined;
  creates = 0;

  list(): readonly GuardApproval[] {
    return [...this.items.values()];
  }

  get(namespace: string | undefined, name: string): GuardApproval | undefined {
    return this.items.get(namespace ? `${namespace}/${name}` : name);
  }

  async create(approval: GuardApproval): Promise<GuardApproval> {
    await Promise.resolve();
    if (this.failCreate) throw new Error(this.failCreate);
    this.creates++;
    return this.put({ ...approval, metadata: { ...approval.metadata, resourceVersion: String(++this.version) } });
  }

  async updateStatus(approval: GuardApproval, status: GuardApprovalStatus): Promise<boolean> {
    await Promise.resolve();
    const current = this.items.get(approvalRef(approval));
    if (!current || current.metadata.resourceVersion !== approval.metadata.resourceVersion) return false;
    this.put({ ...current, status, metadata: { ...current.metadata, resourceVersion: String(++this.version) } });
    return true;
  }

  async delete(approval: GuardApproval): Promise<void> {
    this.items.delete(approvalRef(approval));
    for (const l of this.listeners) l(approvalRef(approval), undefined);
  }

  onChange(listener: (ref: string, approval: GuardApproval | undefined) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {}

  /** A person's decision, as the API server would store it. */
  decide(approval: GuardApproval, phase: 'Approved' | 'Denied', by = 'alice', reason = 'ok', at = new Date(approval.spec.requestedAt)): GuardApproval {
    const current = this.items.get(approvalRef(approval))!;
    return this.put({ ...current, status: { ...current.status, phase, decidedBy: by, decidedAt: at.toISOString(), reason }, metadata: { ...current.metadata, resourceVersion: String(++this.version) } });
  }

  private put(approval: GuardApproval): GuardApproval {
    this.items.set(approvalRef(approval), approval);
    for (const l of this.listeners) l(approvalRef(approval), approval);
    return approval;
  }
}
