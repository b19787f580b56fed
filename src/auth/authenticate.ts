/**
 * Who is calling (docs/decisions.md, "Identity"). Three authenticators behind one interface:
 * - `none`: everyone is "anonymous" (local development only; logged loudly at start);
 * - `token`: a static token file, one `<sha256-hex-of-token> <subject>` per line (what
 *   `printf %s "$TOKEN" | sha256sum` prints, with `-` replaced by the subject), reloaded when
 *   it changes; the subject becomes `token:<subject>`;
 * - `kubernetes`: bearer ServiceAccount tokens checked with TokenReview, audience-bound, cached.
 * Tokens are never logged or stored; only their sha256 is used as a cache key.
 */
import { createHash } from 'node:crypto';
import { unwatchFile, watch, watchFile, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { AuthenticationV1Api, type KubeConfig } from '@kubernetes/client-node';
import { describeKubeError, withTimeout } from '../kube/client.js';
import type { Logger } from '../log.js';

export interface Principal {
  /** `anonymous`, `token:<name>` or `system:serviceaccount:<ns>:<name>`. */
  subject: string;
  groups: string[];
  /** Set for ServiceAccount callers: where their objects go. */
  serviceAccount?: { namespace: string; name: string };
}

export type AuthResult = { ok: true; principal: Principal } | { ok: false; error: 'missing_token' | 'invalid_token'; description: string };

export interface Authenticator {
  readonly mode: 'none' | 'token' | 'kubernetes';
  /** `token` is the bearer token, undefined when the request carried none. */
  authenticate(token: string | undefined): Promise<AuthResult>;
  /**
   * The answer when it costs no remote call (a token file lookup, a cached TokenReview), else
   * undefined. Lets the HTTP edge keep serving known callers from an address it has stopped
   * spending work on.
   */
  authenticateLocally(token: string | undefined): AuthResult | undefined;
  /** Remote checks made so far (TokenReviews; 0 for the others). */
  readonly remoteChecks: number;
  close(): void;
}

export const ANONYMOUS: Principal = { subject: 'anonymous', groups: [] };

export const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

const missing: AuthResult = { ok: false, error: 'missing_token', description: 'this server requires a bearer token (Authorization: Bearer …)' };
const invalid = (description: string): AuthResult => ({ ok: false, error: 'invalid_token', description });

export function noAuthenticator(): Authenticator {
  const anonymous: AuthResult = { ok: true, principal: ANONYMOUS };
  return { mode: 'none', authenticate: async () => anonymous, authenticateLocally: () => anonymous, remoteChecks: 0, close: () => {} };
}

/** Parse a token file; throws with the line number of the first bad line. */
export function parseTokenFile(text: string, path: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([0-9a-fA-F]{64})\s+([A-Za-z0-9][A-Za-z0-9._@:-]{0,200})$/.exec(line);
    if (!m) throw new Error(`${path}:${i + 1}: expected "<sha256 hex of the token> <subject>", e.g. the output of \`printf %s "$TOKEN" | sha256sum\` with "-" replaced by a name`);
    out.set(m[1]!.toLowerCase(), m[2]!);
  }
  return out;
}

/**
 * Static token file authenticator. A file that fails to parse on reload is reported and the
 * previous version stays in force (an edit gone wrong locks nobody out); a file that is gone
 * revokes every token until it is back (removing it is how one takes every token away); on
 * start either is an error.
 *
 * @example const auth = await tokenFileAuthenticator('/etc/policyguard/tokens', log);
 */
export async function tokenFileAuthenticator(path: string, log: Logger): Promise<Authenticator> {
  let text = await readFile(path, 'utf8');
  let tokens = parseTokenFile(text, path);
  log.info('token file loaded', { path, subjects: tokens.size });
  let timer: NodeJS.Timeout | undefined;
  let watcher: FSWatcher | undefined;
  const reload = async () => {
    try {
      // The folder's other files change too (a log written beside it): only a new text counts.
      const next = await readFile(path, 'utf8');
      if (next === text) return;
      tokens = parseTokenFile(next, path);
      text = next;
      log.info('token file reloaded', { path, subjects: tokens.size });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        if (text === '' && tokens.size === 0) return;
        tokens = new Map();
        text = '';
        log.error('token file removed: every token is refused until it is back', { path });
        return;
      }
      log.error(`token file not reloaded, the previous version stays in force: ${(err as Error).message}`);
    }
  };
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(() => void reload(), 100);
  };
  try {
    // Watch the folder, not the file: a Kubernetes Secret volume updates by swapping a symlink,
    // which a watch on the old file never sees.
    watcher = watch(dirname(path), soon);
    watcher.on('error', (err) => log.warn('the token file\'s folder is no longer watched; its changes are seen within 2 s', { path, error: String(err) }));
  } catch (err) {
    log.warn('cannot watch the token file\'s folder; its changes are seen within 2 s', { path, error: String(err) });
  }
  // And poll it: a folder removed and made again (or a symlinked one swapped) ends the watch
  // above for good, and a revoked file must not stay in force until a restart.
  watchFile(path, { interval: TOKEN_FILE_POLL_MS, persistent: false }, soon);
  const lookup = (token: string | undefined): AuthResult => {
    if (!token) return missing;
    const name = tokens.get(sha256(token));
    return name ? { ok: true, principal: { subject: `token:${name}`, groups: [] } } : invalid('unknown token');
  };
  return {
    mode: 'token',
    authenticate: async (token) => lookup(token),
    authenticateLocally: lookup,
    remoteChecks: 0,
    close() {
      clearTimeout(timer);
      watcher?.close();
      unwatchFile(path, soon);
    },
  };
}

/** How often the token file is also polled (fs.watchFile), whatever happens to its folder. */
const TOKEN_FILE_POLL_MS = 2000;

export interface TokenReviewOptions {
  kubeConfig: KubeConfig;
  /** Accepted audiences (default ["policyguard"]); empty = the API server's own (legacy tokens). */
  audiences: string[];
  /** How long a review result is reused (default 10 s). Revocation takes at most this long. */
  cacheTtlMs: number;
  log: Logger;
  /** At most this many cached results (default 10,000). */
  maxCached?: number;
  /**
   * How long a TokenReview that could not be made (API server unreachable, timeout) is
   * remembered, so a flood of requests does not become a flood of TokenReviews (default 1 s).
   */
  errorCacheTtlMs?: number;
  /**
   * How long a TokenReview may take (default 10 s). One that is not answered by then counts as
   * not made: the caller gets 401, rather than waiting as long as the connection hangs.
   */
  reviewTimeoutMs?: number;
}

/**
 * ServiceAccount tokens checked with the API server's TokenReview.
 *
 * @example const auth = tokenReviewAuthenticator({ kubeConfig, audiences: ['policyguard'], cacheTtlMs: 10_000, log });
 */
export function tokenReviewAuthenticator(opts: TokenReviewOptions): Authenticator {
  const api = opts.kubeConfig.makeApiClient(AuthenticationV1Api);
  const cache = new Map<string, { result: AuthResult; expires: number }>();
  /** Reviews in flight, by token hash: concurrent requests with one token share one TokenReview. */
  const inflight = new Map<string, Promise<AuthResult>>();
  const max = opts.maxCached ?? 10_000;
  const remember = (key: string, result: AuthResult, ttlMs: number) => {
    if (cache.size >= max) cache.delete(cache.keys().next().value!);
    cache.set(key, { result, expires: Date.now() + ttlMs });
  };

  let reviews = 0;
  const review = async (token: string, key: string): Promise<AuthResult> => {
    let result: AuthResult;
    reviews++;
    try {
      const answer = await withTimeout('TokenReview', opts.reviewTimeoutMs ?? 10_000, () =>
        api.createTokenReview({
          body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, ...(opts.audiences.length > 0 ? { audiences: opts.audiences } : {}) } },
        }),
      );
      const st = answer.status;
      if (!st?.authenticated || !st.user?.username) {
        result = invalid(st?.error ? `token rejected: ${st.error}` : 'token rejected');
      } else if (opts.audiences.length > 0 && !(st.audiences ?? []).some((a) => opts.audiences.includes(a))) {
        result = invalid(`token is not for this server (audience ${opts.audiences.join(', ')})`);
      } else {
        const subject = st.user.username;
        const sa = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(subject);
        result = { ok: true, principal: { subject, groups: st.user.groups ?? [], ...(sa ? { serviceAccount: { namespace: sa[1]!, name: sa[2]! } } : {}) } };
      }
    } catch (err) {
      // Remembered only briefly: the API server may be back in a moment.
      opts.log.warn('TokenReview failed', { error: describeKubeError(err) });
      result = invalid('token could not be verified right now');
      remember(key, result, opts.errorCacheTtlMs ?? 1000);
      return result;
    }
    remember(key, result, opts.cacheTtlMs);
    return result;
  };

  const cached = (key: string): AuthResult | undefined => {
    const hit = cache.get(key);
    return hit && hit.expires > Date.now() ? hit.result : undefined;
  };
  return {
    mode: 'kubernetes',
    authenticateLocally: (token) => (token ? cached(sha256(token)) : missing),
    get remoteChecks() {
      return reviews;
    },
    async authenticate(token) {
      if (!token) return missing;
      const key = sha256(token);
      const hit = cached(key);
      if (hit) return hit;
      let pending = inflight.get(key);
      if (!pending) {
        pending = review(token, key).finally(() => inflight.delete(key));
        inflight.set(key, pending);
      }
      return pending;
    },
    close() {
      cache.clear();
    },
  };
}
