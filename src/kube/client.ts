/**
 * Small helpers over @kubernetes/client-node: loading a KubeConfig, patch content types, and
 * reading HTTP status codes from its errors.
 */
import { KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';

/** `--kubeconfig` path, else `KUBECONFIG`/`~/.kube/config`, else in-cluster. */
export function loadKubeConfig(path: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new Error('no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, or run in a pod');
  return kc;
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
    try {
      const parsed = typeof body === 'string' ? JSON.parse(body) : body;
      if (parsed && typeof parsed === 'object' && 'message' in parsed) return `HTTP ${statusOf(err)}: ${String((parsed as { message: unknown }).message)}`;
    } catch {
      // not JSON: fall through
    }
    return `HTTP ${statusOf(err)}: ${String(body).slice(0, 300)}`;
  }
  return err instanceof Error ? err.message : String(err);
}
