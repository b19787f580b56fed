/**
 * Small helpers over @kubernetes/client-node: loading a KubeConfig, patch content types, and
 * reading HTTP status codes from its errors.
 */
import { KubeConfig, PatchStrategy, setHeaderOptions, type Cluster } from '@kubernetes/client-node';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { AgentOptions } from 'node:https';

/** `--kubeconfig` path, else `KUBECONFIG`/`~/.kube/config`, else in-cluster. */
export function loadKubeConfig(path: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new Error('no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, or run in a pod');
  shareConnections(kc);
  return kc;
}

/** The part of client-node's KubeConfig that builds a request's undici dispatcher (private in its types). */
interface DispatcherFactory {
  createDispatcher?: (cluster: Cluster | null, agentOptions: AgentOptions) => unknown;
  createDispatcherOptions(cluster: Cluster | null, agentOptions: AgentOptions): unknown;
}

/**
 * client-node 2.0.1 builds a new undici Agent — a new connection pool, so a new TCP and TLS
 * connection — for every API call. An operator makes thousands (status patches, Events, the
 * Lease, audit ConfigMaps), each paying a handshake and leaving sockets and TLS state for the
 * garbage collector. Here one dispatcher serves every call with the same connection options
 * (server, CA, client certificate, proxy), so calls reuse kept-alive connections.
 * tests/cluster/kube-client.test.ts counts the connections; if client-node changes how it
 * builds dispatchers this does nothing and that test fails.
 */
function shareConnections(kc: KubeConfig): void {
  const factory = kc as unknown as DispatcherFactory;
  const create = factory.createDispatcher?.bind(kc);
  if (!create) return;
  const shared = new Map<string, unknown>();
  factory.createDispatcher = (cluster, agentOptions) => {
    const options = factory.createDispatcherOptions(cluster, agentOptions);
    const key = createHash('sha256').update(JSON.stringify({ server: cluster?.server, options })).digest('hex');
    if (!shared.has(key)) shared.set(key, create(cluster, agentOptions));
    return shared.get(key);
  };
}

/** The namespace this pod runs in, when in a cluster. */
export function podNamespace(): string | undefined {
  try {
    return readFileSync('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

export const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
export const serverSideApply = setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply);
export const jsonPatch = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);

/** HTTP status of a client-node ApiException, or undefined. */
export function statusOf(err: unknown): number | undefined {
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; statusCode?: unknown };
    if (typeof e.code === 'number') return e.code;
    if (typeof e.statusCode === 'number') return e.statusCode;
  }
  return undefined;
}

/** A readable one-line description of a client-node error. */
export function describeKubeError(err: unknown): string {
  if (err && typeof err === 'object' && 'body' in err) {
    const body = (err as { body: unknown }).body;
    if (body === undefined || body === '') return `HTTP ${statusOf(err)}`;
    try {
      const parsed = typeof body === 'string' ? JSON.parse(body) : body;
      if (parsed && typeof parsed === 'object' && 'message' in parsed) return `HTTP ${statusOf(err)}: ${String((parsed as { message: unknown }).message)}`;
    } catch {
      // not JSON: fall through
    }
    return `HTTP ${statusOf(err)}: ${String(body).slice(0, 300)}`;
  }
  if (!(err instanceof Error)) return String(err);
  // A failed connection says only "fetch failed"; its cause says why (ECONNREFUSED, ENOTFOUND …).
  const cause = err.cause as { code?: unknown; message?: unknown } | undefined;
  const why = typeof cause?.code === 'string' ? cause.code : typeof cause?.message === 'string' ? cause.message : undefined;
  return why && !err.message.includes(why) ? `${err.message}: ${why}` : err.message;
}

/**
 * `request()`, rejected after `timeoutMs` with a message naming `what`; a late answer is then
 * found by the next read. Every API call of the audit ring, its anchor and the CRD check goes
 * through this, so a hung connection never stalls writes, checks or shutdown.
 *
 * @example
 * const cm = await withTimeout('read pod-0-3', 10_000, () => core.readNamespacedConfigMap({ name, namespace }));
 */
export async function withTimeout<T>(what: string, timeoutMs: number, request: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer from the API server within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([request(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
