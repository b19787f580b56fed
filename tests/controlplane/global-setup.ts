// vitest globalSetup for the `cluster` project: one control plane shared by all test files.
// Test files get at it through ./test-context.ts (sharedKubeConfig(), sharedKubectl()).

import type { TestProject } from 'vitest/node';

import { startControlPlane, type ControlPlane } from './index.js';

declare module 'vitest' {
  interface ProvidedContext {
    /** kubeconfig (admin, system:masters) of the shared test control plane. */
    kubeconfigPath: string;
    /** https://127.0.0.1:<port> of the shared kube-apiserver. */
    controlPlaneServer: string;
    /** How to run kubectl: command + leading args (before --kubeconfig ...). */
    kubectlCommand: { command: string; args: string[] };
  }
}

let cp: ControlPlane | undefined;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const started = Date.now();
  cp = await startControlPlane();
  const kubectl = await cp.binaries.kubectl();
  process.stderr.write(
    `[controlplane] shared control plane ready in ${Math.round((Date.now() - started) / 1000)}s at ${cp.server} (kubeconfig ${cp.kubeconfigPath}; ${cp.binaries.source})\n`,
  );
  project.provide('kubeconfigPath', cp.kubeconfigPath);
  project.provide('controlPlaneServer', cp.server);
  project.provide('kubectlCommand', kubectl);
  process.env.KUBECONFIG_TEST = cp.kubeconfigPath;
  return async () => {
    await cp?.stop();
    cp = undefined;
  };
}
