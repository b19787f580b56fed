// For test files of the `cluster` project: the shared control plane started by global-setup.ts.
//
//   import { sharedKubeConfig } from '../controlplane/test-context.js';
//   const kc = sharedKubeConfig();

import { KubeConfig } from '@kubernetes/client-node';
import { inject } from 'vitest';

import { runKubectl, type ExecResult } from './index.js';

export function sharedKubeconfigPath(): string {
  const p = inject('kubeconfigPath') ?? process.env.KUBECONFIG_TEST;
  if (!p) throw new Error('controlplane: no shared control plane; run this file in the vitest `cluster` project (its globalSetup starts one)');
  return p;
}

/** A fresh KubeConfig (admin, system:masters) for the shared control plane. */
export function sharedKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(sharedKubeconfigPath());
  return kc;
}

/** Runs kubectl against the shared control plane. */
export function sharedKubectl(args: string[], input?: string): Promise<ExecResult> {
  return runKubectl(inject('kubectlCommand'), ['--kubeconfig', sharedKubeconfigPath(), ...args], input);
}
