// `npm run controlplane`: start the test control plane in the foreground until Ctrl-C.
//
//   npm run controlplane [-- [--dir DIR] [--keep] [--crds DIR | --no-crds]]

import { startControlPlane } from './index.js';

function parseArgs(argv: string[]): { dir?: string; keep: boolean; crdsDir?: string | null } {
  const out: { dir?: string; keep: boolean; crdsDir?: string | null } = { keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--keep') out.keep = true;
    else if (a === '--no-crds') out.crdsDir = null;
    else if (a === '--crds') out.crdsDir = argv[++i];
    else if (a === '--dir') out.dir = argv[++i];
    else if (a?.startsWith('--dir=')) out.dir = a.slice('--dir='.length);
    else if (a === '-h' || a === '--help') {
      console.log('usage: npm run controlplane [-- [--dir DIR] [--keep] [--crds DIR | --no-crds]]\nStarts etcd + kube-apiserver on loopback until Ctrl-C; applies crds/ (or DIR) unless --no-crds.');
      process.exit(0);
    } else {
      console.error(`unknown argument: ${a}`);
      process.exit(2);
    }
  }
  return out;
}

const opts = parseArgs(process.argv.slice(2));
const cp = await startControlPlane(opts);
const kubectl = await cp.binaries.kubectl();
const kubectlCmd = [kubectl.command, ...kubectl.args].join(' ');
console.log(`control plane ready
  server:     ${cp.server}
  kubeconfig: ${cp.kubeconfigPath}
  logs:       ${cp.dir}/etcd.log, ${cp.dir}/kube-apiserver.log
  binaries:   ${cp.binaries.source}

try:
  ${kubectlCmd} --kubeconfig ${cp.kubeconfigPath} get --raw /readyz
  export KUBECONFIG=${cp.kubeconfigPath}

Ctrl-C to stop${opts.keep || opts.dir ? '' : ' (the directory is removed)'}.`);

let stopping = false;
const shutdown = (signal: string) => {
  if (stopping) return;
  stopping = true;
  console.log(`\n${signal}: stopping control plane…`);
  cp.stop().then(
    () => {
      console.log('stopped');
      process.exit(0);
    },
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
};
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGHUP', () => shutdown('SIGHUP'));
