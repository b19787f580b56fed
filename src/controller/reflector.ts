/**
 * List-then-watch one custom resource, and keep its consumers' copy right:
 * - a full re-list on start, on 410 Gone (expired resourceVersion) and after errors;
 * - restarts with jittered exponential backoff, so a flapping API server is not stormed;
 * - a watch that goes silent is cut by client-node's inactivity timeout (30 s) and resumed
 *   from the last resourceVersion; bookmarks keep that resourceVersion fresh.
 *
 * Consumers get level-triggered callbacks: `onChange(ref)` after the cache changed for `ref`,
 * and `onSynced()` after every full list (the first one makes the store ready).
 */
import { CustomObjectsApi, Watch, type KubeConfig } from '@kubernetes/client-node';
import { describeKubeError, statusOf } from '../kube/client.js';
import type { Logger } from '../log.js';

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; uid?: string; resourceVersion?: string; generation?: number; [k: string]: unknown };
  [k: string]: unknown;
}

export interface ReflectorOptions {
  kubeConfig: KubeConfig;
  group: string;
  version: string;
  plural: string;
  /** Watch one namespace; undefined = all namespaces. */
  namespace?: string;
  log: Logger;
  onChange: (ref: string, obj: KubeObject | undefined) => void;
  onSynced: () => void;
  /** Server-side watch timeout; the watch is re-established after it (default 300 s). */
  watchTimeoutSeconds?: number;
  /** Backoff bounds in ms (default 200 ms … 30 s). */
  backoff?: { initialMs: number; maxMs: number };
  /**
   * The resource may not exist yet (a CRD added in a newer release, not applied on upgrade):
   * a 404 on list then counts as an empty, synced list, so the store becomes ready without it,
   * and the list is retried until the resource appears.
   */
  optional?: boolean;
  /** Told of every list, watch event and watch connection (watch liveness and watch-to-snapshot latency, src/metrics.ts). */
  observer?: WatchObserver;
}

/** Watches what arrives from the API server; see {@link ReflectorOptions.observer}. */
export interface WatchObserver {
  /**
   * A full list, a watch event or a watch connection arrived now. `changed`: a new snapshot
   * follows from it (a change, or a full list); a bookmark or a connection only proves the API
   * server answers.
   */
  received(changed: boolean): void;
}

/** `namespace/name` */
export function refOf(obj: KubeObject): string {
  return `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}

/** kubectl's copy of what it last applied: as large as the object, and read by nothing here. */
const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

/**
 * What consumers get (and keep) of an object as it arrives: all of it but
 * `metadata.managedFields` and kubectl's last-applied-configuration annotation, which nothing
 * here reads and which together can outweigh the object (client-go controllers drop the same
 * with a transform).
 */
function cacheable(obj: KubeObject): KubeObject {
  delete obj.metadata.managedFields;
  const annotations = obj.metadata.annotations as Record<string, string> | undefined;
  if (annotations && LAST_APPLIED in annotations) {
    delete annotations[LAST_APPLIED];
    if (Object.keys(annotations).length === 0) delete obj.metadata.annotations;
  }
  return obj;
}

class Gone extends Error {}

export class Reflector {
  /** The resourceVersion of every object listed or watched, by {@link refOf}: consumers keep the objects themselves. */
  readonly versions = new Map<string, string | undefined>();
  private resourceVersion: string | undefined;
  private stopped = false;
  private abort: AbortController | undefined;
  private failures = 0;
  /** An optional resource's 404 was reported (once) and counted as an empty list. */
  private missingReported = false;
  private wake: (() => void) | undefined;
  private readonly api: CustomObjectsApi;
  private readonly watch: Watch;
  private readonly loop: Promise<void>;
  /** Full lists, watch connections, failures, and 410 Gone re-lists (for metrics and tests). */
  readonly stats = { lists: 0, watches: 0, errors: 0, expired: 0 };

  constructor(private readonly opts: ReflectorOptions) {
    this.api = opts.kubeConfig.makeApiClient(CustomObjectsApi);
    this.watch = new Watch(opts.kubeConfig);
    this.loop = this.run();
  }

  private get what(): string {
    return `${this.opts.plural}.${this.opts.group}${this.opts.namespace ? ` in ${this.opts.namespace}` : ''}`;
  }

  private async run(): Promise<void> {
    let needList = true;
    while (!this.stopped) {
      try {
        if (needList) await this.list();
        needList = false;
        await this.watchOnce();
        this.failures = 0;
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof Gone) {
          this.stats.expired++;
          this.opts.log.info('watch expired (410 Gone); listing again', { resource: this.what });
          needList = true;
          continue;
        }
        this.stats.errors++;
        this.failures++;
        needList = true;
        if (this.opts.optional && statusOf(err) === 404 && !this.missingReported) {
          this.missingReported = true;
          this.opts.log.warn('resource not served (CRD not installed?); treated as empty until it appears', { resource: this.what });
          this.opts.onSynced();
        }
        const { initialMs, maxMs } = this.opts.backoff ?? { initialMs: 200, maxMs: 30_000 };
        const delay = Math.min(maxMs, initialMs * 2 ** Math.min(this.failures - 1, 10)) * (0.5 + Math.random() / 2);
        this.opts.log.warn('list/watch failed; retrying', { resource: this.what, error: describeKubeError(err), retryInMs: Math.round(delay) });
        await this.sleep(delay);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  /** Full list with pagination; replaces the cache and reports every difference. */
  private async list(): Promise<void> {
    const { group, version, plural, namespace } = this.opts;
    const fresh = new Map<string, KubeObject>();
    let continueToken: string | undefined;
    let rv: string | undefined;
    do {
      const page = (namespace
        ? await this.api.listNamespacedCustomObject({ group, version, plural, namespace, limit: 500, ...(continueToken ? { _continue: continueToken } : {}) })
        : await this.api.listClusterCustomObject({ group, version, plural, limit: 500, ...(continueToken ? { _continue: continueToken } : {}) })) as {
        items: KubeObject[];
        metadata: { resourceVersion: string; continue?: string };
      };
      for (const item of page.items) fresh.set(refOf(item), cacheable(item));
      continueToken = page.metadata.continue || undefined;
      rv = page.metadata.resourceVersion;
    } while (continueToken);
    this.stats.lists++;
    // A list is always compiled (onSynced below), whatever it found.
    this.opts.observer?.received(true);
    for (const [ref, version] of this.versions) {
      if (!fresh.has(ref)) {
        this.versions.delete(ref);
        this.opts.onChange(ref, undefined);
      } else if (fresh.get(ref)!.metadata.resourceVersion === version) fresh.delete(ref);
    }
    for (const [ref, obj] of fresh) {
      this.versions.set(ref, obj.metadata.resourceVersion);
      this.opts.onChange(ref, obj);
    }
    this.resourceVersion = rv;
    this.missingReported = false;
    this.opts.onSynced();
  }

  /** One watch connection; resolves when it ends normally, rejects on errors and 410. */
  private watchOnce(): Promise<void> {
    const { group, version, plural, namespace } = this.opts;
    const path = namespace ? `/apis/${group}/${version}/namespaces/${namespace}/${plural}` : `/apis/${group}/${version}/${plural}`;
    this.stats.watches++;
    return new Promise<void>((resolve, reject) => {
      let gone = false;
      let ended = false;
      this.watch
        .watch(
          path,
          { resourceVersion: this.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: this.opts.watchTimeoutSeconds ?? 300 },
          (phase, obj: KubeObject & { code?: number; message?: string }) => {
            if (phase !== 'ERROR') this.opts.observer?.received(phase !== 'BOOKMARK');
            switch (phase) {
              case 'ADDED':
              case 'MODIFIED':
                this.versions.set(refOf(obj), obj.metadata.resourceVersion);
                this.resourceVersion = obj.metadata.resourceVersion;
                this.opts.onChange(refOf(obj), cacheable(obj));
                break;
              case 'DELETED':
                this.versions.delete(refOf(obj));
                this.resourceVersion = obj.metadata.resourceVersion;
                this.opts.onChange(refOf(obj), undefined);
                break;
              case 'BOOKMARK':
                this.resourceVersion = obj.metadata.resourceVersion;
                break;
              case 'ERROR':
                if (obj.code === 410) gone = true;
                else this.opts.log.warn('watch error event', { resource: this.what, code: obj.code, message: obj.message });
                break;
            }
          },
          (err) => {
            ended = true;
            this.abort = undefined;
            if (gone || (err as { statusCode?: number } | null)?.statusCode === 410) reject(new Gone());
            else if (err && !this.stopped && !isInactivityTimeout(err)) reject(err);
            else resolve();
          },
        )
        .then(
          (ac) => {
            // Connected (the watch did not end at once): the API server answers, though a quiet
            // watch may send nothing for a while.
            if (!ended) this.opts.observer?.received(false);
            this.abort = ac;
            if (this.stopped) ac.abort();
          },
          (err) => reject(err),
        );
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    this.wake?.();
    await this.loop;
  }
}

/** client-node ends a silent watch with a TimeoutError; that is the watchdog working, not a failure. */
function isInactivityTimeout(err: unknown): boolean {
  return err instanceof Error && err.name === 'TimeoutError';
}
