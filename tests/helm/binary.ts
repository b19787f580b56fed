// Finds (or builds, once) the `helm` binary the chart tests use.
//
// Order: HELM_BIN (a path), then a Helm 3 `helm` on PATH, then a cached build of the Go module
// helm.sh/helm/v3 at HELM_VERSION in a cache outside the repository, keyed by version, next to
// the control plane's (tests/controlplane/binary.ts). The build is stamped like upstream's
// Makefile does, so `helm version` is right and `.Capabilities.KubeVersion` defaults to the
// Kubernetes minor Helm was built against instead of v1.20.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import { checkGo, policyguardCacheDir, runGo, tryLock } from '../controlplane/binary.js';

/** The Helm release built when none is installed (served by the Go module proxy). */
export const HELM_VERSION = 'v3.22.0';
const HELM_MODULE = 'helm.sh/helm/v3';
/** Measured on the 2-core development machine with an empty module cache. */
const COLD_BUILD_MINUTES = 6;

const log = (msg: string) => process.stderr.write(`[helm] ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function helmCacheDir(): string {
  return policyguardCacheDir('helm', HELM_VERSION);
}

/** `helm version --short` of a binary, or undefined if it does not run. */
function versionOf(bin: string): string | undefined {
  const r = spawnSync(bin, ['version', '--short'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

let resolved: Promise<string> | undefined;

/** The path of a Helm 3 binary, building it first if needed (minutes, once per machine). */
export function ensureHelm(): Promise<string> {
  resolved ??= resolveHelm().catch((e: unknown) => {
    resolved = undefined;
    throw e;
  });
  return resolved;
}

async function resolveHelm(): Promise<string> {
  const explicit = process.env.HELM_BIN;
  if (explicit) {
    if (!versionOf(explicit)) throw new Error(`helm: HELM_BIN=${explicit} does not run (\`${explicit} version\` failed)`);
    return explicit;
  }
  const onPath = versionOf('helm');
  if (onPath?.startsWith('v3.')) return 'helm';
  if (onPath) log(`ignoring \`helm\` on PATH (${onPath}): the chart tests pin Helm 3; using ${HELM_VERSION}`);
  const dir = helmCacheDir();
  const bin = join(dir, 'helm');
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const lock = `${dir}.lock`;
  const started = Date.now();
  let lastNote = 0;
  while (!tryLock(lock)) {
    if (existsSync(bin)) return bin;
    const s = Math.round((Date.now() - started) / 1000);
    if (s - lastNote >= 30) {
      log(`another process is building helm (lock ${lock}); waiting… ${s}s`);
      lastNote = s;
    }
    await sleep(1000);
  }
  try {
    if (!existsSync(bin)) await build(bin);
    return bin;
  } finally {
    rmSync(lock, { force: true });
  }
}

async function build(bin: string): Promise<void> {
  const goVersion = checkGo();
  const tmp = `${bin}.tmp-${process.pid}`;
  mkdirSync(tmp, { recursive: true });
  const env = { ...process.env, CGO_ENABLED: '0', GOFLAGS: '', GO111MODULE: 'on' };
  const started = Date.now();
  log(`building helm ${HELM_VERSION} from the Go module ${HELM_MODULE} with ${goVersion} into ${bin}. A cold build takes about ${COLD_BUILD_MINUTES} minutes on 2 cores; later runs reuse the binary.`);
  const ticker = setInterval(() => log(`still building helm… ${Math.round((Date.now() - started) / 1000)}s`), 30_000);
  try {
    // The Kubernetes minor Helm is built against, from its go.mod (k8s.io/client-go v0.N.x → 1.N).
    const info = JSON.parse(await runGo(['mod', 'download', '-json', `${HELM_MODULE}@${HELM_VERSION}`], { cwd: tmp, env }, 'helm')) as { GoMod?: string };
    const clientGo = info.GoMod ? /^\s*k8s\.io\/client-go\s+v0\.(\d+)\./m.exec(readFileSync(info.GoMod, 'utf8')) : null;
    if (!clientGo) throw new Error(`helm: cannot find the k8s.io/client-go version in the go.mod of ${HELM_MODULE}@${HELM_VERSION}`);
    const ldflags = ['-s', '-w', `-X ${HELM_MODULE}/internal/version.version=${HELM_VERSION}`, `-X ${HELM_MODULE}/internal/version.gitTreeState=clean`];
    for (const pkg of ['pkg/lint/rules', 'pkg/chartutil']) {
      ldflags.push(`-X ${HELM_MODULE}/${pkg}.k8sVersionMajor=1`, `-X ${HELM_MODULE}/${pkg}.k8sVersionMinor=${clientGo[1]}`);
    }
    await runGo(['install', '-trimpath', `-ldflags=${ldflags.join(' ')}`, `${HELM_MODULE}/cmd/helm@${HELM_VERSION}`], { cwd: tmp, env: { ...env, GOBIN: tmp } }, 'helm');
    renameSync(join(tmp, 'helm'), bin); // atomic within the cache directory
  } finally {
    clearInterval(ticker);
    rmSync(tmp, { recursive: true, force: true });
  }
  log(`built helm ${versionOf(bin) ?? '(version unknown)'} in ${Math.round((Date.now() - started) / 1000)}s: ${bin}`);
}

// Allow `npx tsx tests/helm/binary.ts` to pre-build (e.g. in CI before the tests run).
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  ensureHelm().then(
    (p) => process.stdout.write(`${p}\n`),
    (e: unknown) => {
      process.stderr.write(`${(e as Error).message}\n`);
      process.exit(1);
    },
  );
}
