/**
 * Writes `status.observedGeneration` and the `Ready` condition of every GuardAgent and
 * GuardPolicy (leader only). Level-triggered: after each compile every object is compared with
 * what its status should say, and only differences are written, one at a time from a queue
 * that re-reads the object when it gets to it.
 */
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { GROUP, VERSION, type Condition } from '../api/schemas.js';
import { CONDITION_READY, Reason } from '../api/conditions.js';
import { describeKubeError, mergePatch, statusOf } from '../kube/client.js';
import type { Logger } from '../log.js';
import { objectKey } from '../engine/types.js';
import { KINDS, type KubernetesStore } from '../store/kubernetes.js';
import type { ObjectProblem } from '../engine/types.js';
import type { KubeObject } from './reflector.js';

export interface StatusWriterOptions {
  kubeConfig: KubeConfig;
  store: KubernetesStore;
  log: Logger;
  isLeader: () => boolean;
}

/** Concurrent status writes. */
const WORKERS = 8;

interface Desired {
  status: 'True' | 'False';
  reason: string;
  message: string;
}

const ACCEPTED: Desired = { status: 'True', reason: Reason.Accepted, message: 'Compiled and in force' };

function desired(problem: ObjectProblem | undefined): Desired {
  return problem ? { status: 'False', reason: problem.reason, message: problem.message.slice(0, 32_768) } : ACCEPTED;
}

function readyOf(obj: KubeObject): { observedGeneration?: number; ready?: Condition } {
  const status = (obj.status ?? {}) as { observedGeneration?: number; conditions?: Condition[] };
  return { observedGeneration: status.observedGeneration, ready: status.conditions?.find((c) => c.type === CONDITION_READY) };
}

export class StatusWriter {
  private readonly api: CustomObjectsApi;
  private readonly queue = new Set<string>();
  private readonly inFlight = new Set<string>();
  private stopped = false;
  /** Status writes made (for tests: only the leader makes any). */
  writes = 0;

  constructor(private readonly opts: StatusWriterOptions) {
    this.api = opts.kubeConfig.makeApiClient(CustomObjectsApi);
  }

  /** Queue every object whose status differs from what it should be. */
  sync(): void {
    if (!this.opts.isLeader() || this.stopped) return;
    const problems = this.opts.store.objectProblems();
    for (const { kind, obj } of this.opts.store.rawObjects()) {
      const key = objectKey(kind, obj.metadata.namespace, obj.metadata.name);
      if (this.differs(obj, desired(problems.get(key)))) this.queue.add(key);
    }
    this.drain();
  }

  private differs(obj: KubeObject, want: Desired): boolean {
    const { observedGeneration, ready } = readyOf(obj);
    return observedGeneration !== obj.metadata.generation || ready?.status !== want.status || ready.reason !== want.reason || ready.message !== want.message;
  }

  /**
   * Up to {@link WORKERS} reconciles at once (one at a time caps status writes at one API
   * round trip each, ~50/s); never two for the same object.
   */
  private drain(): void {
    for (const key of this.queue) {
      if (this.inFlight.size >= WORKERS || this.stopped || !this.opts.isLeader()) return;
      if (this.inFlight.has(key)) continue; // picked up again when the current write ends
      this.queue.delete(key);
      this.inFlight.add(key);
      void this.reconcile(key).finally(() => {
        this.inFlight.delete(key);
        this.drain();
      });
    }
  }

  private async reconcile(key: string): Promise<void> {
    // Re-read: the object may have changed or gone since it was queued.
    const found = this.opts.store.rawObject(key);
    if (!found) return;
    const { kind, obj } = found;
    const want = desired(this.opts.store.objectProblems().get(key));
    if (!this.differs(obj, want)) return;
    const { ready } = readyOf(obj);
    const condition: Condition = {
      type: CONDITION_READY,
      status: want.status,
      reason: want.reason,
      message: want.message,
      observedGeneration: obj.metadata.generation ?? 0,
      lastTransitionTime: ready?.status === want.status && ready.lastTransitionTime ? ready.lastTransitionTime : new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    };
    try {
      await this.api.patchNamespacedCustomObjectStatus(
        {
          group: GROUP,
          version: VERSION,
          namespace: obj.metadata.namespace!,
          plural: KINDS[kind].plural,
          name: obj.metadata.name,
          body: { status: { observedGeneration: obj.metadata.generation, conditions: [condition] } },
        },
        mergePatch,
      );
      this.writes++;
    } catch (err) {
      if (statusOf(err) === 404) return; // deleted meanwhile
      this.opts.log.warn('status update failed; will retry on the next change', { object: key, error: describeKubeError(err) });
    }
  }

  stop(): void {
    this.stopped = true;
  }
}
