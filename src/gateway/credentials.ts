/**
 * The headers a GuardUpstream sends its upstream, resolved from where the manifest says their
 * values are (src/store/upstreams.ts says which sources each mode allows). Values are read when
 * needed and kept for a short time, so a rotated Secret or file is picked up without a restart;
 * they are never logged or audited. Anything that cannot be read fails the call (fail closed):
 * the gateway never calls an upstream without the credentials its GuardUpstream names.
 */
import { readFile } from 'node:fs/promises';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { GROUP, type GuardUpstream, type HeaderValueSource } from '../api/schemas.js';
import { describeKubeError, statusOf } from '../kube/client.js';

/** A Secret must carry this label to be read for an upstream (it says its owner meant it to be). */
export const LABEL_UPSTREAM_CREDENTIALS = `${GROUP}/upstream-credentials`;

/** A header value could not be read; the message says which header, where from and why. */
export class CredentialError extends Error {
  override readonly name = 'CredentialError';
}

export interface CredentialSource {
  /** The upstream's configured headers with their current values. */
  headersFor(upstream: GuardUpstream): Promise<Record<string, string>>;
}

/** Reads one value; `where` names the source for messages. */
type Reader = (source: HeaderValueSource, namespace: string) => Promise<string>;

function source(read: Reader, ttlMs: number, now: () => number): CredentialSource {
  const cache = new Map<string, { value: string; expires: number }>();
  return {
    async headersFor(upstream) {
      const namespace = upstream.metadata.namespace ?? '';
      const out: Record<string, string> = {};
      for (const h of upstream.spec.headers) {
        const key = `${namespace}\0${JSON.stringify(h.valueFrom)}`;
        let hit = cache.get(key);
        if (!hit || hit.expires <= now()) {
          try {
            hit = { value: (await read(h.valueFrom, namespace)).trim(), expires: now() + ttlMs };
          } catch (err) {
            cache.delete(key);
            throw new CredentialError(`header ${h.name} of GuardUpstream ${namespace ? `${namespace}/` : ''}${upstream.metadata.name}: ${(err as Error).message}`, { cause: err });
          }
          cache.set(key, hit);
        }
        if (hit.value === '') throw new CredentialError(`header ${h.name} of GuardUpstream ${upstream.metadata.name}: its value is empty`);
        out[h.name] = `${h.prefix ?? ''}${hit.value}`;
      }
      return out;
    },
  };
}

/**
 * Kubernetes mode: keys of Secrets in the GuardUpstream's own namespace, and only Secrets
 * labelled `policyguard.dev/upstream-credentials: "true"` — whoever may create a GuardUpstream
 * cannot make the gateway send some other Secret of the namespace to a URL of their choosing.
 *
 * @example const creds = kubernetesCredentials({ kubeConfig, ttlMs: 10_000 });
 */
export function kubernetesCredentials(opts: { kubeConfig: KubeConfig; ttlMs: number; now?: () => number }): CredentialSource {
  const core = opts.kubeConfig.makeApiClient(CoreV1Api);
  return source(
    async (from, namespace) => {
      const ref = from.secretKeyRef;
      if (!ref) throw new Error('only secretKeyRef sources are read in a cluster');
      let secret;
      try {
        secret = await core.readNamespacedSecret({ name: ref.name, namespace });
      } catch (err) {
        const status = statusOf(err);
        const why = status === 404 ? 'not found' : `cannot be read: ${describeKubeError(err)}${status === 403 ? ' (the chart grants this only with gateway.readSecrets=true)' : ''}`;
        throw new Error(`Secret ${namespace}/${ref.name} ${why}`, { cause: err });
      }
      if (secret.metadata?.labels?.[LABEL_UPSTREAM_CREDENTIALS] !== 'true') {
        throw new Error(`Secret ${namespace}/${ref.name} lacks the label ${LABEL_UPSTREAM_CREDENTIALS}: "true" that allows PolicyGuard to send it to an upstream`);
      }
      const value = secret.data?.[ref.key];
      if (value === undefined) throw new Error(`Secret ${namespace}/${ref.name} has no key ${JSON.stringify(ref.key)}`);
      return Buffer.from(value, 'base64').toString('utf8');
    },
    opts.ttlMs,
    opts.now ?? Date.now,
  );
}

/**
 * Standalone mode: files (e.g. a mounted Secret) and the server's environment variables.
 *
 * @example const creds = localCredentials({ env: process.env, ttlMs: 10_000 });
 */
export function localCredentials(opts: { env: Readonly<Record<string, string | undefined>>; ttlMs: number; now?: () => number }): CredentialSource {
  return source(
    async (from) => {
      if (from.file !== undefined) {
        try {
          return await readFile(from.file, 'utf8');
        } catch (err) {
          throw new Error(`file ${from.file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
        }
      }
      if (from.env !== undefined) {
        const value = opts.env[from.env];
        if (value === undefined) throw new Error(`environment variable ${from.env} is not set`);
        return value;
      }
      throw new Error('only file and env sources are read in standalone mode');
    },
    opts.ttlMs,
    opts.now ?? Date.now,
  );
}
