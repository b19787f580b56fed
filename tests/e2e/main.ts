// `npm run e2e`: the image built from our Dockerfile, installed with the Helm chart on a real node,
// and checked end to end (docs/e2e.md).
//
//   sudo npm run e2e                     # one-node cluster on this machine (root, no Docker)
//   E2E_CLUSTER=kind npm run e2e         # on kind, where a Docker engine runs
//   E2E_KEEP=1 sudo npm run e2e          # keep the cluster after the checks until Ctrl-C
//
// Exit code 0 when every check passed, 1 otherwise; the last line is `N passed, N failed`.

import { ensureHelm } from '../helm/binary.js';
import { Checks, runChecks } from './checks.js';
import type { E2ECluster } from './cluster.js';
import { startKind } from './kind.js';
import { startLocalNode } from './local-node.js';
import { note, step } from './util.js';

const kind = process.env.E2E_CLUSTER ?? 'local';
if (kind !== 'local' && kind !== 'kind') {
  process.stderr.write(`e2e: E2E_CLUSTER must be "local" (the default) or "kind", not "${kind}"\n`);
  process.exit(2);
}

const t0 = Date.now();
const checks = new Checks();
let stopCluster: E2ECluster['stop'] | undefined;
let stopping: Promise<string[]> | undefined;
const teardown = (failed: boolean) => (stopping ??= stopCluster ? stopCluster({ failed }) : Promise.resolve([]));

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    note(`${signal}: tearing down`);
    void teardown(true).finally(() => process.exit(130));
  });
}

let startError: Error | undefined;
let cluster: E2ECluster | undefined;
try {
  // Helm is built from its Go module when not installed (minutes, once): before the cluster starts.
  await step('helm (tests/helm/binary.ts; built once from its Go module when not on PATH)', () => ensureHelm());
  const onStop = (stop: E2ECluster['stop']) => (stopCluster = stop);
  cluster = kind === 'kind' ? await startKind({ onStop }) : await startLocalNode({ onStop });
  checks.record(`the cluster starts: ${cluster.description}`, true);
  note(`cluster up in ${((Date.now() - t0) / 1000).toFixed(0)}s`);
  await runChecks(cluster, checks);
  if (process.env.E2E_KEEP === '1') {
    note(`E2E_KEEP=1: the cluster stays up (KUBECONFIG=${cluster.kubeconfigPath}); Ctrl-C tears it down`);
    await new Promise(() => {});
  }
} catch (e) {
  startError = e as Error;
  if (!cluster) checks.record('the cluster starts', false, startError.message);
  else note(`error: ${startError.stack ?? startError.message}`);
} finally {
  const left = await teardown(checks.anyFailed || startError !== undefined);
  if (kind === 'local' && cluster) {
    checks.record('teardown leaves nothing behind (processes, mounts, interfaces, iptables rules, sysctls, cgroups)', left.length === 0, left.length ? `left behind: ${left.join('; ')}` : undefined);
  }
}

process.stdout.write(`\n${checks.summary()}\n`);
note(`total ${((Date.now() - t0) / 1000).toFixed(0)}s`);
process.exit(startError || checks.anyFailed ? 1 : 0);
