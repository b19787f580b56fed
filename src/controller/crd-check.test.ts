/**
 * The CRD check when the API server cannot be read at all: a port nothing listens on, and one
 * that takes the connection and never answers. Either way PolicyGuard cannot tell whether the
 * installed CRDs prune what its checks rely on, so every CRD is a problem, saying why. (CRDs of
 * another version, an absent one and a refused read: tests/cluster/crd-check.test.ts and
 * tests/cluster/rbac.test.ts, on a real API server.)
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { crdDigests } from '../api/crd.js';
import { silentLogger } from '../log.js';
import { CrdCheck } from './crd-check.js';

const kubeConfigFor = (port: number): KubeConfig => {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    // Plain HTTP (nothing here speaks TLS): client-node allows it only with skipTLSVerify.
    clusters: [{ name: 'c', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return kc;
};

const listen = async (server: Server): Promise<number> => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
};

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function problemsAgainst(port: number): Promise<readonly string[]> {
  let changes = 0;
  const check = new CrdCheck({ kubeConfig: kubeConfigFor(port), log: silentLogger, optional: new Set(), onChange: () => changes++, readTimeoutMs: 300 });
  cleanups.push(() => check.stop());
  await check.start();
  expect(changes).toBe(1);
  return check.problems();
}

describe('a CRD check that cannot read the CRDs holds them all as problems', () => {
  it('nothing listens: each names the refused connection', async () => {
    const closed = createServer();
    const port = await listen(closed);
    await new Promise((resolve) => closed.close(resolve));
    const problems = await problemsAgainst(port);
    expect(problems).toHaveLength(crdDigests().size);
    for (const [i, name] of [...crdDigests().keys()].entries()) {
      expect(problems[i]).toMatch(new RegExp(`^CustomResourceDefinition ${name.replace(/\./g, '\\.')} could not be read \\(.*ECONNREFUSED\\), so PolicyGuard cannot tell whether it prunes fields and nulls its checks rely on; it is read again until a read succeeds$`));
    }
  });

  it('the connection is taken and never answered: each read gives up after its timeout and says so', async () => {
    const sockets: Socket[] = [];
    const silent = createServer((socket) => void sockets.push(socket));
    const port = await listen(silent);
    cleanups.push(() => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => silent.close(resolve));
    });
    const problems = await problemsAgainst(port);
    expect(problems).toHaveLength(crdDigests().size);
    expect(problems[0]).toMatch(/could not be read \(read CustomResourceDefinition \S+: no answer from the API server within 300 ms\)/);
  });
});
