/**
 * Checks that the installed CRDs are the ones this PolicyGuard was built with.
 *
 * Helm installs CRDs once and never upgrades them, so after `helm upgrade` the cluster may run
 * older CRDs than the server. An older CRD may prune what the checks rely on: unknown spec
 * fields, nulls, fields beside `spec` (docs/deploy.md, "Unknown fields and nulls"); a rule
 * with a condition dropped that way loads as if its author had not written it. Each generated
 * CRD carries the digest of its spec (SCHEMA_DIGEST_ANNOTATION, src/api/crd.ts); a CRD without
 * it, or with another, is a problem: the store denies every decision naming it, and the
 * replica is not ready, so a rolling upgrade stops with the old replicas serving. The check
 * repeats every 10 s while a problem remains, so applying the CRDs resumes decisions without a
 * restart, and every minute while none does, so a CRD replaced or installed later is seen.
 *
 * A CRD it cannot read (RBAC, or the API server failing) is a problem too: PolicyGuard cannot
 * tell whether it prunes, so it fails closed until a read succeeds. The chart grants the read
 * (ClusterRole `<release>-policyguard-crds`, `get` on the four CRDs by name).
 */
import { ApiextensionsV1Api, type KubeConfig } from '@kubernetes/client-node';
import { crdDigests, SCHEMA_DIGEST_ANNOTATION } from '../api/crd.js';
import { describeKubeError, statusOf, withTimeout } from '../kube/client.js';
import type { Logger } from '../log.js';

/** How often the CRDs are read again while one is not what this version expects. */
export const CRD_RECHECK_MS = 10_000;
/**
 * How often they are read again while all are: a CRD can be replaced later (another release's
 * GitOps sync) or appear later (an optional kind installed after the server started).
 */
export const CRD_WATCH_MS = 60_000;
/** A read the API server does not answer within this long counts as unreadable. */
export const CRD_READ_TIMEOUT_MS = 10_000;

export interface CrdCheckOptions {
  kubeConfig: KubeConfig;
  log: Logger;
  /** CRDs that may be absent (their kinds are optional): absent, they are no problem. */
  optional: ReadonlySet<string>;
  /** Called when the list of problems changes. */
  onChange: () => void;
  /** Default CRD_RECHECK_MS. */
  recheckMs?: number;
  /** Default CRD_WATCH_MS. */
  watchMs?: number;
  /** Default CRD_READ_TIMEOUT_MS. */
  readTimeoutMs?: number;
}

export class CrdCheck {
  private current: readonly string[] = [];
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly expected = crdDigests();

  constructor(private readonly opts: CrdCheckOptions) {}

  /**
   * One line per installed CRD that is not the one this version ships, e.g.
   * `CustomResourceDefinition guardpolicies.policyguard.dev is not the one this PolicyGuard …`.
   */
  problems(): readonly string[] {
    return this.current;
  }

  /** Reads the CRDs once (resolving when done), then again every recheckMs while a problem remains and every watchMs while none does. */
  async start(): Promise<void> {
    await this.check();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async check(): Promise<void> {
    const api = this.opts.kubeConfig.makeApiClient(ApiextensionsV1Api);
    const found: string[] = [];
    const timeoutMs = this.opts.readTimeoutMs ?? CRD_READ_TIMEOUT_MS;
    for (const [name, digest] of this.expected) {
      const problem = await withTimeout(`read CustomResourceDefinition ${name}`, timeoutMs, () => api.readCustomResourceDefinition({ name })).then(
        (crd) => {
          const installed = crd.metadata?.annotations?.[SCHEMA_DIGEST_ANNOTATION];
          return installed === digest ? undefined : mismatch(name, installed);
        },
        (err: unknown) => {
          const status = statusOf(err);
          if (status === 404) return this.opts.optional.has(name) ? undefined : `CustomResourceDefinition ${name} is not installed; ${APPLY}`;
          return unreadable(name, status, err);
        },
      );
      if (problem) found.push(problem);
    }
    const changed = found.join('\n') !== this.current.join('\n');
    this.current = found;
    if (changed) {
      for (const p of found) this.opts.log.error(p);
      if (found.length === 0) this.opts.log.info('the CustomResourceDefinitions are the ones this version ships');
      this.opts.onChange();
    }
    // Not again once stopped: a check under way when stop() was called ends here.
    if (this.stopped) return;
    const next = found.length > 0 ? (this.opts.recheckMs ?? CRD_RECHECK_MS) : (this.opts.watchMs ?? CRD_WATCH_MS);
    this.timer = setTimeout(() => void this.check(), next);
    this.timer.unref();
  }
}

const APPLY = 'apply the CRDs of this version (kubectl apply --server-side -f helm/policyguard/crds/; Helm never upgrades them, see docs/deploy.md, "Install with Helm")';

function unreadable(name: string, status: number | undefined, err: unknown): string {
  const fix = status === 403 ? `grant get on it (the chart's ClusterRole <release>-policyguard-crds does; docs/deploy.md, "RBAC")` : 'it is read again until a read succeeds';
  return `CustomResourceDefinition ${name} could not be read (${describeKubeError(err)}), so PolicyGuard cannot tell whether it prunes fields and nulls its checks rely on; ${fix}`;
}

function mismatch(name: string, installed: string | undefined): string {
  const what = installed ? `schema digest ${installed}` : `no ${SCHEMA_DIGEST_ANNOTATION} annotation, so it predates it`;
  return `CustomResourceDefinition ${name} is not the one this PolicyGuard ships (${what}): another version's CRD may prune fields and nulls its checks rely on; ${APPLY}`;
}
