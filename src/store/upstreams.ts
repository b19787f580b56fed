/**
 * GuardUpstreams as the stores hold them: what the gateway may use in this mode. A header value
 * in kubernetes mode comes only from a Secret of the upstream's own namespace: a `file` or `env`
 * source would let whoever may create a GuardUpstream send the operator's own files (its
 * ServiceAccount token) or environment to a URL of their choosing. Standalone manifests are
 * the administrator's, so there it is the other way round: files and environment, no Secrets.
 */
import type { GuardUpstream } from '../api/schemas.js';
import { Reason } from '../api/conditions.js';
import type { ObjectProblem } from '../engine/types.js';

/** Namespace of an upstream without one (standalone manifests usually have none). */
export const DEFAULT_NAMESPACE = 'default';

/** `namespace/name`: the gateway path segment pair and what `upstreams` rule globs match. */
export function upstreamRef(u: Pick<GuardUpstream, 'metadata'>): string {
  return `${u.metadata.namespace ?? DEFAULT_NAMESPACE}/${u.metadata.name}`;
}

/**
 * Why `u` cannot be used in this mode, or undefined.
 *
 * @example upstreamProblem(upstream, 'kubernetes') // { reason: 'InvalidSpec', message: 'headers[0] … file …' }
 */
export function upstreamProblem(u: GuardUpstream, mode: 'kubernetes' | 'standalone'): ObjectProblem | undefined {
  for (const [i, h] of u.spec.headers.entries()) {
    const wrong =
      mode === 'kubernetes'
        ? h.valueFrom.file !== undefined || h.valueFrom.env !== undefined
          ? 'file and env sources are for standalone mode; in a cluster use secretKeyRef (a Secret in the same namespace)'
          : undefined
        : h.valueFrom.secretKeyRef !== undefined
          ? 'secretKeyRef needs a cluster, so the gateway does not serve this upstream in standalone mode (there use file, e.g. a mounted Secret, or env)'
          : undefined;
    if (wrong) {
      return {
        kind: 'GuardUpstream',
        ...(u.metadata.namespace ? { namespace: u.metadata.namespace } : {}),
        name: u.metadata.name,
        reason: Reason.InvalidSpec,
        message: `headers[${i}] (${h.name}): ${wrong}`,
      };
    }
  }
  return undefined;
}
