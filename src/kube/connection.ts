/** Telling a Kubernetes API server that cannot be reached from one that answered with an error. */

/**
 * Why a connection failed (its cause's code, e.g. ECONNREFUSED), when `err` is or wraps the
 * "fetch failed" TypeError undici throws for a request that got no answer; else undefined.
 *
 * @example connectionFailure(err) // 'ECONNREFUSED'
 */
export function connectionFailure(err: unknown): string | undefined {
  // Bounded: a cause chain is short, and one that loops must not hang the error path.
  for (let e = err, depth = 0; e instanceof Error && depth < 10; e = e.cause, depth++) {
    if (!(e instanceof TypeError && e.message === 'fetch failed')) continue;
    const cause = e.cause as { code?: unknown; message?: unknown } | undefined;
    return typeof cause?.code === 'string' ? cause.code : String(cause?.message ?? 'no reason given');
  }
  return undefined;
}

/** Connection failures that happen before a request is sent: nothing reached the API server. */
const BEFORE_SENDING = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * Whether `err` is a {@link connectionFailure} that happened before the request was sent, so
 * the API server cannot have acted on it; a reset or timeout later may have lost only the answer.
 *
 * @example if (neverSent(err)) throw err; // "cannot reach the Kubernetes API server …"
 */
export function neverSent(err: unknown): boolean {
  const code = connectionFailure(err);
  return code !== undefined && BEFORE_SENDING.has(code);
}
