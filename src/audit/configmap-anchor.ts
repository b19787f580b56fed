import { CoreV1Api, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import { describeKubeError, statusOf, withTimeout } from '../kube/client.js';
import { parseAnchor, type AuditAnchor, type AuditAnchorStore } from './anchor.js';
import { LABEL_APP, LABEL_REPLICA, replicaLabel } from './configmap-ring.js';

/** Marks the anchor ConfigMap; it deliberately lacks `policyguard.dev/audit`, so ring listings never see it. */
export const LABEL_AUDIT_ANCHOR = 'policyguard.dev/audit-anchor';
/** Key in `data` holding the anchor's JSON. */
export const ANCHOR_KEY = 'anchor.json';

/**
 * Name of the anchor ConfigMap of a replica (`label` from replicaLabel).
 *
 * @example
 * anchorConfigMapName('pod-0'); // 'policyguard-audit-anchor-pod-0'
 */
export function anchorConfigMapName(label: string): string {
  return `policyguard-audit-anchor-${label}`;
}

/** Conflicts in a row (someone else updating it too) before a write gives up until the next interval. */
const MAX_CONFLICTS = 5;

/**
 * The anchor of one replica's audit chain as a ConfigMap `policyguard-audit-anchor-<replica>`
 * in `namespace` (kubernetes mode, with either sink): outside the log, so someone who can edit
 * the log (the data volume, or the ring's ConfigMaps) must also be allowed to update this one.
 * Needs configmaps get, create and update in that namespace.
 *
 * @example
 * const anchor = new ConfigMapAnchorStore({ kubeConfig, namespace: 'policyguard-system', replica: 'policyguard-0' });
 * const sink = await openFileAuditSink({ dir: '/data/audit', anchor });
 */
export class ConfigMapAnchorStore implements AuditAnchorStore {
  readonly location: string;
  readonly discardHint: string;
  private readonly core: CoreV1Api;
  private readonly name: string;
  private readonly label: string;

  constructor(private readonly opts: { kubeConfig: KubeConfig; namespace: string; replica: string; requestTimeoutMs?: number }) {
    this.core = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.label = replicaLabel(opts.replica);
    this.name = anchorConfigMapName(this.label);
    this.location = `ConfigMap ${opts.namespace}/${this.name}`;
    this.discardHint = `copy ConfigMap ${opts.namespace}/${this.name} somewhere safe (it is the evidence) and delete it`;
  }

  async read(): Promise<AuditAnchor | undefined> {
    const cm = await this.get();
    if (!cm) return undefined;
    this.checkOwn(cm);
    return parseAnchor(cm.data?.[ANCHOR_KEY] ?? '', this.location);
  }

  async write(anchor: AuditAnchor): Promise<void> {
    const { namespace } = this.opts;
    for (let conflicts = 0; ; conflicts++) {
      const current = await this.get();
      if (current) this.checkOwn(current);
      const body: V1ConfigMap = {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: {
          name: this.name,
          namespace,
          labels: { ...current?.metadata?.labels, [LABEL_APP]: 'policyguard', [LABEL_AUDIT_ANCHOR]: 'true', [LABEL_REPLICA]: this.label },
          ...(current?.metadata?.annotations ? { annotations: current.metadata.annotations } : {}),
          ...(current?.metadata?.resourceVersion ? { resourceVersion: current.metadata.resourceVersion } : {}),
        },
        data: { [ANCHOR_KEY]: JSON.stringify(anchor) },
      };
      try {
        if (current) await this.call('replace', () => this.core.replaceNamespacedConfigMap({ name: this.name, namespace, body }));
        else await this.call('create', () => this.core.createNamespacedConfigMap({ namespace, body }));
        return;
      } catch (error) {
        // 409: changed or created since the read; read again (bounded, so a fight ends).
        if (statusOf(error) !== 409 || conflicts + 1 >= MAX_CONFLICTS) throw this.failure('write', error);
      }
    }
  }

  private async get(): Promise<V1ConfigMap | undefined> {
    try {
      return await this.call('read', () => this.core.readNamespacedConfigMap({ name: this.name, namespace: this.opts.namespace }));
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw this.failure('read', error);
    }
  }

  private call<T>(verb: string, request: () => Promise<T>): Promise<T> {
    return withTimeout(`${verb} ${this.location}`, this.opts.requestTimeoutMs ?? 10_000, request);
  }

  /** A one-line error naming the ConfigMap; the client's error (with its status) stays the cause. */
  private failure(verb: string, error: unknown): Error {
    return new Error(`cannot ${verb} the audit anchor ${this.location}: ${describeKubeError(error)}`, { cause: error });
  }

  /** A ConfigMap by that name that is not an anchor (a ring segment of a replica named `anchor-…`) is never read or overwritten. */
  private checkOwn(cm: V1ConfigMap): void {
    if (cm.metadata?.labels?.[LABEL_AUDIT_ANCHOR] !== 'true') {
      throw new Error(`${this.location} exists but lacks the label ${LABEL_AUDIT_ANCHOR}=true: it is not an audit anchor, and is left alone`);
    }
  }
}
