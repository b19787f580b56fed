// The same checks on kind, for machines with a Docker engine (docs/e2e.md): `docker build` of the
// Dockerfile, a throwaway kind cluster, `kind load`, and a port-forward per Pod (the host is not
// on kind's Pod network).

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { KubeConfig } from '@kubernetes/client-node';

import { resolveBinaries, type Program } from '../controlplane/binary.js';
import { REPO_ROOT, runKubectl } from '../controlplane/index.js';
import type { E2ECluster } from './cluster.js';
import { note, run, step } from './util.js';

const CLUSTER = process.env.E2E_KIND_CLUSTER ?? 'policyguard-e2e';
const IMAGE = { repository: 'policyguard', tag: 'e2e' };

async function need(command: string, args: string[], hint: string): Promise<void> {
  const r = await run(command, args, { allowFailure: true }).catch(() => ({ code: -1 }));
  if (r.code !== 0) throw new Error(`e2e (kind): \`${command} ${args.join(' ')}\` failed: ${hint}`);
}

/** kubectl from PATH if there is one, else kube-testenv's (built from Go, see docs/controlplane.md). */
async function kubectlProgram(): Promise<Program> {
  const onPath = await run('kubectl', ['version', '--client'], { allowFailure: true }).catch(() => ({ code: -1 }));
  return onPath.code === 0 ? { command: 'kubectl', args: [] } : (await resolveBinaries()).kubectl();
}

/**
 * Builds the image with Docker and starts a kind cluster with it loaded.
 *
 * @example const cluster = await startKind();
 */
export async function startKind(opts: { onStop?: (stop: E2ECluster['stop']) => void } = {}): Promise<E2ECluster> {
  await need('docker', ['info'], 'a running Docker engine is needed (or run as root without E2E_CLUSTER=kind: the one-node cluster needs no Docker)');
  await need('kind', ['version'], 'install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)');
  const dir = mkdtempSync(join(tmpdir(), 'policyguard-e2e-kind-'));
  const kubeconfigPath = join(dir, 'kubeconfig');
  const kubectl = await kubectlProgram();
  const forwards = new Map<string, { child: ChildProcess; url: Promise<string> }>();
  let created = false;

  const stop = async (): Promise<string[]> => {
    for (const f of forwards.values()) f.child.kill();
    if (process.env.E2E_KEEP === '1') note(`keeping kind cluster ${CLUSTER} (kind delete cluster --name ${CLUSTER})`);
    else if (created) await run('kind', ['delete', 'cluster', '--name', CLUSTER], { allowFailure: true });
    rmSync(dir, { recursive: true, force: true });
    return [];
  };
  opts.onStop?.(stop);
  try {
    await step(`docker build -t ${IMAGE.repository}:${IMAGE.tag}`, () => run('docker', ['build', '-t', `${IMAGE.repository}:${IMAGE.tag}`, REPO_ROOT]));
    await step(`kind create cluster --name ${CLUSTER}`, () => run('kind', ['create', 'cluster', '--name', CLUSTER, '--kubeconfig', kubeconfigPath, '--wait', '180s']));
    created = true;
    await step('kind load docker-image', () => run('kind', ['load', 'docker-image', `${IMAGE.repository}:${IMAGE.tag}`, '--name', CLUSTER]));
  } catch (e) {
    await stop();
    throw e;
  }
  const node = `${CLUSTER}-control-plane`;
  return {
    description: `kind cluster ${CLUSTER}`,
    kubeconfigPath,
    workDir: dir,
    kubeConfig: () => {
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfigPath);
      return kc;
    },
    kubectl: (args, input) => runKubectl(kubectl, ['--kubeconfig', kubeconfigPath, ...args], input),
    image: IMAGE,
    nodeName: node,
    podUrl: (pod, port) => {
      const key = `${pod.namespace}/${pod.name}:${port}`;
      let f = forwards.get(key);
      if (!f) {
        const child = spawn(kubectl.command, [...kubectl.args, '--kubeconfig', kubeconfigPath, '-n', pod.namespace, 'port-forward', `pod/${pod.name}`, `:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
        const url = new Promise<string>((resolve, reject) => {
          let out = '';
          child.stdout.setEncoding('utf8').on('data', (d: string) => {
            out += d;
            const m = /Forwarding from 127\.0\.0\.1:(\d+)/.exec(out);
            if (m) resolve(`http://127.0.0.1:${m[1]}`);
          });
          child.on('exit', (code) => {
            forwards.delete(key);
            reject(new Error(`port-forward to ${key} exited (${code})`));
          });
        });
        url.catch(() => {});
        f = { child, url };
        forwards.set(key, f);
      }
      return f.url;
    },
    makeNodeDir: async (name) => {
      const path = `/var/local/policyguard-e2e/${name}`;
      await run('docker', ['exec', node, 'mkdir', '-p', path]);
      return path;
    },
    stop,
  };
}
