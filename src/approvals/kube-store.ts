/**
 * GuardApprovals in the cluster: a watch keeps the cache, writes go to the API server. Status
 * writes are full replaces carrying the resourceVersion read, so the API server refuses (409)
 * a second use of one approval by another replica (docs/decisions.md, "Approvals"). Who may
 * write what is the chart's admission policy's business (docs/deploy.md, "Approvals").
 */
import { AuthenticationV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { GROUP, GuardApprovalSchema, VERSION, type GuardApproval, type GuardApprovalStatus } from '../api/schemas.js';
import { Reflector, type KubeObject } from '../controller/reflector.js';
import { describeKubeError, statusOf } from '../kube/client.js';
import type { Logger } from '../log.js';
import { formatZodError } from '../store/manifests.js';
import { approvalRef, phaseOf } from './ask.js';
import { alreadyText } from './file-store.js';
import type { ApprovalDesk, ApprovalStore, ApprovalVerdict } from './store.js';

export const APPROVALS_PLURAL = 'guardapprovals';

const FIELD_MANAGER = 'policyguard';

/** One API error as a sentence: a 404 on the kind means its CRD is missing (an upgrade without `kubectl apply -f crds/`). */
function describe(err: unknown): string {
  if (statusOf(err) === 404) return `the API server has no ${APPROVALS_PLURAL}.${GROUP} (install the GuardApproval CRD: kubectl apply -f crds/): ${describeKubeError(err)}`;
  return describeKubeError(err);
}

/** A parsed approval; the CRD should make this always succeed, so a failure is logged, not used. */
function parse(raw: unknown, log: Logger): GuardApproval | undefined {
  const parsed = GuardApprovalSchema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const meta = (raw as KubeObject).metadata;
  log.warn('GuardApproval ignored: it does not match the schema', { approval: `${meta?.namespace}/${meta?.name}`, problem: formatZodError(parsed.error) });
  return undefined;
}

export interface KubeApprovalStoreOptions {
  kubeConfig: KubeConfig;
  /** Namespaces to watch; empty = all. */
  watchNamespaces: readonly string[];
  log: Logger;
}

export class KubeApprovalStore implements ApprovalStore {
  private readonly cache = new Map<string, GuardApproval>();
  private readonly listeners = new Set<(ref: string, approval: GuardApproval | undefined) => void>();
  private readonly reflectors: Reflector[] = [];
  private readonly api: CustomObjectsApi;

  constructor(private readonly opts: KubeApprovalStoreOptions) {
    this.api = opts.kubeConfig.makeApiClient(CustomObjectsApi);
  }

  /** Start watching (optional: a cluster without the CRD yet just has no approvals). */
  start(): void {
    const namespaces = this.opts.watchNamespaces.length > 0 ? this.opts.watchNamespaces : [undefined];
    for (const namespace of namespaces) {
      this.reflectors.push(
        new Reflector({
          kubeConfig: this.opts.kubeConfig,
          group: GROUP,
          version: VERSION,
          plural: APPROVALS_PLURAL,
          optional: true,
          ...(namespace ? { namespace } : {}),
          log: this.opts.log,
          onChange: (ref, obj) => this.set(ref, obj ? parse(obj, this.opts.log) : undefined),
          onSynced: () => undefined,
        }),
      );
    }
  }

  list(): readonly GuardApproval[] {
    return [...this.cache.values()];
  }

  get(namespace: string | undefined, name: string): GuardApproval | undefined {
    return this.cache.get(`${namespace ?? ''}/${name}`);
  }

  async create(approval: GuardApproval): Promise<GuardApproval> {
    const namespace = approval.metadata.namespace!;
    const { status, ...body } = approval;
    let created: GuardApproval;
    try {
      created = GuardApprovalSchema.parse(await this.api.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: APPROVALS_PLURAL, body, fieldManager: FIELD_MANAGER }));
    } catch (err) {
      throw new Error(`GuardApproval ${namespace}/${approval.metadata.name} not created: ${describe(err)}`, { cause: err });
    }
    // The API server drops the status of a create; Pending makes `kubectl get` say so.
    let stored = created;
    try {
      stored = GuardApprovalSchema.parse(await this.replaceStatus({ ...created, status: status ?? { phase: 'Pending' } }));
    } catch (err) {
      this.opts.log.warn('GuardApproval created but not marked Pending (an absent phase means Pending)', { approval: approvalRef(created), error: describe(err) });
    }
    this.set(approvalRef(stored), stored);
    return stored;
  }

  async updateStatus(approval: GuardApproval, status: GuardApprovalStatus): Promise<boolean> {
    try {
      const updated = GuardApprovalSchema.parse(await this.replaceStatus({ ...approval, status }));
      this.set(approvalRef(updated), updated);
      return true;
    } catch (err) {
      if (statusOf(err) !== 409) throw new Error(`GuardApproval ${approvalRef(approval)} status not written: ${describe(err)}`, { cause: err });
      await this.refresh(approval);
      return false;
    }
  }

  async delete(approval: GuardApproval): Promise<void> {
    const { namespace, name } = approval.metadata;
    try {
      await this.api.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: namespace!, plural: APPROVALS_PLURAL, name });
    } catch (err) {
      if (statusOf(err) !== 404) throw new Error(`GuardApproval ${approvalRef(approval)} not deleted: ${describe(err)}`, { cause: err });
    }
    this.set(approvalRef(approval), undefined);
  }

  onChange(listener: (ref: string, approval: GuardApproval | undefined) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    await Promise.all(this.reflectors.map((r) => r.stop()));
  }

  private replaceStatus(body: GuardApproval): Promise<unknown> {
    const { namespace, name } = body.metadata;
    return this.api.replaceNamespacedCustomObjectStatus({ group: GROUP, version: VERSION, namespace: namespace!, plural: APPROVALS_PLURAL, name, body, fieldManager: FIELD_MANAGER });
  }

  /** After a lost compare-and-set: read the approval as it is now, so the next look sees it. */
  private async refresh(approval: GuardApproval): Promise<void> {
    const { namespace, name } = approval.metadata;
    try {
      const raw = await this.api.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: namespace!, plural: APPROVALS_PLURAL, name });
      this.set(approvalRef(approval), parse(raw, this.opts.log));
    } catch (err) {
      if (statusOf(err) === 404) this.set(approvalRef(approval), undefined);
      else throw new Error(`GuardApproval ${approvalRef(approval)} not read: ${describe(err)}`, { cause: err });
    }
  }

  private set(ref: string, approval: GuardApproval | undefined): void {
    const before = this.cache.get(ref);
    if (approval) this.cache.set(ref, approval);
    else this.cache.delete(ref);
    if (before === undefined && approval === undefined) return;
    if (before && approval && before.metadata.resourceVersion === approval.metadata.resourceVersion) return;
    for (const l of this.listeners) l(ref, approval);
  }
}

/**
 * The person's side in a cluster: lists with the kubeconfig's credentials and decides by
 * replacing the status as that user (`decidedBy` is their username, which the admission policy
 * checks).
 *
 * @example await kubeApprovalDesk(kubeConfig).decide('apr-3f9a0c1b2d4e', 'team-a', { phase: 'Approved', reason: 'ticket 42' });
 */
export function kubeApprovalDesk(kubeConfig: KubeConfig, now: () => Date = () => new Date()): ApprovalDesk {
  const api = kubeConfig.makeApiClient(CustomObjectsApi);
  const list = async (namespace?: string): Promise<GuardApproval[]> => {
    let res: { items?: unknown[] };
    try {
      res = (namespace
        ? await api.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: APPROVALS_PLURAL })
        : await api.listClusterCustomObject({ group: GROUP, version: VERSION, plural: APPROVALS_PLURAL })) as { items?: unknown[] };
    } catch (err) {
      throw new Error(`GuardApprovals not listed${namespace ? ` in namespace ${namespace}` : ' in all namespaces (pass -n NAMESPACE if you may list only one)'}: ${describe(err)}`, { cause: err });
    }
    return (res.items ?? [])
      .map((i) => GuardApprovalSchema.safeParse(i))
      .flatMap((p) => (p.success ? [p.data] : []))
      .sort((a, b) => b.spec.requestedAt.localeCompare(a.spec.requestedAt));
  };
  return {
    list,
    async decide(name, namespace, verdict: ApprovalVerdict) {
      let approval: GuardApproval | undefined;
      if (namespace) {
        try {
          approval = GuardApprovalSchema.parse(await api.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: APPROVALS_PLURAL, name }));
        } catch (err) {
          throw new Error(statusOf(err) === 404 ? `no GuardApproval ${name} in namespace ${namespace}` : `GuardApproval ${namespace}/${name} not read: ${describe(err)}`, { cause: err });
        }
      } else {
        const found = (await list()).filter((a) => a.metadata.name === name);
        if (found.length === 0) throw new Error(`no GuardApproval ${name} in any namespace you may list`);
        if (found.length > 1) throw new Error(`GuardApproval ${name} exists in several namespaces (${found.map((a) => a.metadata.namespace).join(', ')}): pass -n NAMESPACE`);
        approval = found[0]!;
      }
      const phase = phaseOf(approval, now());
      if (phase !== 'Pending') throw new Error(alreadyText(approval, phase));
      const username = await whoAmI(kubeConfig);
      const status: GuardApprovalStatus = { ...approval.status, phase: verdict.phase, decidedBy: username, decidedAt: now().toISOString(), ...(verdict.reason ? { reason: verdict.reason } : {}) };
      try {
        return GuardApprovalSchema.parse(
          await api.replaceNamespacedCustomObjectStatus({ group: GROUP, version: VERSION, namespace: approval.metadata.namespace!, plural: APPROVALS_PLURAL, name, body: { ...approval, status }, fieldManager: 'policyguard-cli' }),
        );
      } catch (err) {
        if (statusOf(err) === 409) throw new Error(`GuardApproval ${approvalRef(approval)} changed while you decided (someone else decided it, or it expired): look again with \`policyguard approvals list\``, { cause: err });
        throw new Error(`GuardApproval ${approvalRef(approval)} not ${verdict.phase.toLowerCase()}: ${describeKubeError(err)}`, { cause: err });
      }
    },
  };
}

/** The username the API server knows the kubeconfig's credentials as (a SelfSubjectReview, as `kubectl auth whoami`). */
async function whoAmI(kubeConfig: KubeConfig): Promise<string> {
  try {
    const review = await kubeConfig.makeApiClient(AuthenticationV1Api).createSelfSubjectReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' } });
    const username = review.status?.userInfo?.username;
    if (!username) throw new Error('the API server did not say who you are');
    return username;
  } catch (err) {
    throw new Error(`could not find out who you are (SelfSubjectReview, as \`kubectl auth whoami\`): ${describeKubeError(err)}`, { cause: err });
  }
}
