// Finds (or builds, once) the binaries of the test control plane.
//
// Order, as envtest: TEST_ASSET_KUBE_APISERVER / TEST_ASSET_ETCD / TEST_ASSET_KUBECTL override
// single binaries; KUBEBUILDER_ASSETS names a directory with kube-apiserver, etcd (and maybe
// kubectl). Whatever is still missing comes from `kube-testenv`, built from the Go module in
// ./go into a cache outside the repository, keyed by Kubernetes version and a hash of the sources.

import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeSync,
} from 'node:fs';
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A program to run: `command` followed by `args` and then the caller's arguments. */
export interface Program {
  command: string;
  args: string[];
}

export interface Binaries {
  etcd: Program;
  apiserver: Program;
  /** Resolved lazily: kubectl from the assets dir, else the kube-testenv kubectl subcommand. */
  kubectl: () => Promise<Program>;
  /** Where the binaries came from, for logs. */
  source: string;
}

export const GO_MODULE_DIR = fileURLToPath(new URL('./go/', import.meta.url));
const MIN_GO = [1, 24] as const;
/** Measured on the 2-core development machine (see docs/controlplane.md). */
const COLD_BUILD_MINUTES = 12;

const log = (msg: string) => process.stderr.write(`[controlplane] ${msg}\n`);

/** The Kubernetes version the Go module pins (`k8s.io/kubernetes vX.Y.Z` in go.mod). */
export function kubernetesVersion(): string {
  const mod = readFileSync(join(GO_MODULE_DIR, 'go.mod'), 'utf8');
  const m = /^\s*k8s\.io\/kubernetes\s+(v\d+\.\d+\.\d+\S*)/m.exec(mod);
  if (!m?.[1]) throw new Error(`controlplane: cannot find the k8s.io/kubernetes version in ${GO_MODULE_DIR}go.mod`);
  return m[1];
}

/**
 * Short hash of a Go module's go.mod, go.sum (when it has one) and *.go files: any change gives
 * a new cache entry.
 *
 * @example goSourceHash(GO_MODULE_DIR) // 'f19cbe3de59f'
 */
export function goSourceHash(dir: string): string {
  const h = createHash('sha256');
  const files = ['go.mod', ...(existsSync(join(dir, 'go.sum')) ? ['go.sum'] : []), ...readdirSync(dir).filter((f) => f.endsWith('.go')).sort()];
  for (const f of files) {
    h.update(f).update('\0').update(readFileSync(join(dir, f))).update('\0');
  }
  return h.digest('hex').slice(0, 12);
}

/**
 * `~/.cache/policyguard/<parts…>` (`$XDG_CACHE_HOME` honoured): where the tests keep what they
 * build once.
 *
 * @example policyguardCacheDir('helm', 'v3.19.0')
 */
export function policyguardCacheDir(...parts: string[]): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'policyguard', ...parts);
}

export function cacheDir(): string {
  return policyguardCacheDir('controlplane', `${kubernetesVersion()}-${goSourceHash(GO_MODULE_DIR)}`);
}

/** Path of the cached kube-testenv binary (it may not exist yet). */
export function cachedBinaryPath(): string {
  return join(cacheDir(), 'kube-testenv');
}

function assetPath(envVar: string, file: string): string | undefined {
  const explicit = process.env[envVar];
  if (explicit) {
    if (!existsSync(explicit)) throw new Error(`controlplane: ${envVar}=${explicit} does not exist`);
    return explicit;
  }
  const dir = process.env.KUBEBUILDER_ASSETS;
  if (dir) {
    const p = join(dir, file);
    if (existsSync(p)) return p;
  }
  return undefined;
}

/** Resolves etcd and kube-apiserver, building kube-testenv if either is not provided. */
export async function resolveBinaries(): Promise<Binaries> {
  const apiserverPath = assetPath('TEST_ASSET_KUBE_APISERVER', 'kube-apiserver');
  const etcdPath = assetPath('TEST_ASSET_ETCD', 'etcd');
  const kubectlPath = assetPath('TEST_ASSET_KUBECTL', 'kubectl');
  if (process.env.KUBEBUILDER_ASSETS && (!apiserverPath || !etcdPath)) {
    throw new Error(
      `controlplane: KUBEBUILDER_ASSETS=${process.env.KUBEBUILDER_ASSETS} must contain kube-apiserver and etcd ` +
        `(found: ${[apiserverPath, etcdPath].filter(Boolean).join(', ') || 'neither'}). ` +
        `Fill it with e.g. \`setup-envtest use -p path\`, or unset it to build kube-testenv from tests/controlplane/go.`,
    );
  }
  let testenv: string | undefined;
  const ensure = async () => (testenv ??= await ensureKubeTestenv());
  const apiserver = apiserverPath ? { command: apiserverPath, args: [] } : { command: await ensure(), args: ['kube-apiserver'] };
  const etcd = etcdPath ? { command: etcdPath, args: [] } : { command: await ensure(), args: ['etcd'] };
  const kubectl = async (): Promise<Program> =>
    kubectlPath ? { command: kubectlPath, args: [] } : { command: await ensure(), args: ['kubectl'] };
  const source = testenv ? `kube-testenv ${kubernetesVersion()} (${testenv})` : `KUBEBUILDER_ASSETS/TEST_ASSET_* (${apiserver.command}, ${etcd.command})`;
  return { etcd, apiserver, kubectl, source };
}

// ---- building ------------------------------------------------------------------------------

const INSTALL_GO = 'Install Go >= 1.24 (e.g. `apt-get install golang-go` if your distribution ships >= 1.24, or from https://go.dev/dl/)';
const GO_HELP =
  `${INSTALL_GO}, ` +
  'or set KUBEBUILDER_ASSETS to a directory holding kube-apiserver and etcd binaries ' +
  '(as for envtest, e.g. `export KUBEBUILDER_ASSETS=$(setup-envtest use -p path 1.35.x)`).';
/** How to get Go, for tools that have no other source than their Go module. */
export const GO_INSTALL_HELP = `${INSTALL_GO}.`;

/**
 * Checks that a usable `go` is on PATH; throws an Error saying how to get one otherwise. `who`
 * and `what` name the tool being built in the messages (default: the test control plane).
 */
export function checkGo(who = 'controlplane', what = 'the test control plane', help = GO_HELP): string {
  const r = spawnSync('go', ['env', 'GOVERSION'], { encoding: 'utf8' });
  if (r.error) {
    throw new Error(`${who}: ${what} is built from Go modules, but \`go\` was not found on PATH (${r.error.message}). ${help}`);
  }
  const v = r.stdout.trim();
  const m = /^go(\d+)\.(\d+)/.exec(v);
  if (r.status !== 0 || !m) throw new Error(`${who}: \`go env GOVERSION\` failed (${(r.stderr || v).trim()}). ${help}`);
  const [maj, min] = [Number(m[1]), Number(m[2])];
  if (maj < MIN_GO[0] || (maj === MIN_GO[0] && min < MIN_GO[1])) {
    throw new Error(`${who}: found ${v}, but building ${what} needs Go >= ${MIN_GO.join('.')}. ${help}`);
  }
  return v;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Takes a build lock, or returns false when another live process holds it. Breaks stale locks. */
export function tryLock(lockPath: string): boolean {
  try {
    const fd = openSync(lockPath, 'wx');
    writeSync(fd, JSON.stringify({ pid: process.pid, host: hostname(), at: new Date().toISOString() }));
    closeSync(fd);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  let stale: boolean;
  try {
    const info = JSON.parse(readFileSync(lockPath, 'utf8')) as { pid?: number; host?: string };
    const ageMs = Date.now() - statSync(lockPath).mtimeMs;
    stale = (info.host === hostname() && typeof info.pid === 'number' && !pidAlive(info.pid)) || ageMs > 60 * 60_000;
  } catch {
    // Half-written or vanished lock: treat as stale only if it is old.
    try {
      stale = Date.now() - statSync(lockPath).mtimeMs > 60_000;
    } catch {
      stale = true; // gone
    }
  }
  if (stale) {
    rmSync(lockPath, { force: true });
    return tryLock(lockPath);
  }
  return false;
}

let inProcess: Promise<string> | undefined;

/**
 * Returns the path of the cached kube-testenv binary, building it first if needed. Concurrent
 * callers (in this process or others) share one build via a lock file next to the cache entry.
 */
export function ensureKubeTestenv(): Promise<string> {
  inProcess ??= ensureKubeTestenvUncached().finally(() => {
    inProcess = undefined;
  });
  return inProcess;
}

async function ensureKubeTestenvUncached(): Promise<string> {
  const dir = cacheDir();
  const bin = join(dir, 'kube-testenv');
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const lockPath = `${dir}.lock`;
  const started = Date.now();
  let lastNote = -30; // say so at once, then every 30s
  while (!tryLock(lockPath)) {
    if (existsSync(bin)) return bin;
    const s = Math.round((Date.now() - started) / 1000);
    if (s - lastNote >= 30) {
      log(`another process is building kube-testenv (lock ${lockPath}); waiting… ${s}s`);
      lastNote = s;
    }
    await sleep(1000);
  }
  try {
    if (existsSync(bin)) return bin; // built while we waited for the lock
    await build(bin);
    return bin;
  } finally {
    rmSync(lockPath, { force: true });
  }
}

/**
 * Runs `go args`, keeping only the last lines of its output; on failure throws with them,
 * prefixed by `who` (the tool being built). Returns the kept output.
 */
export async function runGo(args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv }, who: string): Promise<string> {
  const output: string[] = [];
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn('go', args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const collect = (b: Buffer) => {
      output.push(b.toString());
      if (output.length > 400) output.splice(0, output.length - 400);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', reject);
    child.on('close', resolve);
  });
  const text = output.join('');
  if (code !== 0) throw new Error(`${who}: \`go ${args.join(' ')}\` in ${opts.cwd} failed (exit ${code}):\n${text.split('\n').slice(-40).join('\n')}`);
  return text;
}

async function build(bin: string): Promise<void> {
  const goVersion = checkGo();
  const k8s = kubernetesVersion();
  const [, major = '1', minor = '0'] = /^v(\d+)\.(\d+)/.exec(k8s) ?? [];
  const tmp = `${bin}.tmp-${process.pid}`;
  // Stamp the version the way upstream's hack/lib/version.sh does, so /version and kubectl
  // report v1.x.y instead of v0.0.0-master.
  const ldflags = ['-s', '-w'];
  for (const pkg of ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version']) {
    ldflags.push(
      `-X ${pkg}.gitVersion=${k8s}`, `-X ${pkg}.gitMajor=${major}`, `-X ${pkg}.gitMinor=${minor}`,
      `-X ${pkg}.gitTreeState=clean`, `-X ${pkg}.buildDate=1970-01-01T00:00:00Z`,
    );
  }
  const args = ['build', '-trimpath', `-ldflags=${ldflags.join(' ')}`, '-o', tmp, '.'];
  log(
    `building kube-testenv (kube-apiserver + etcd + kubectl, and for tests/e2e kube-controller-manager + kube-scheduler + kubelet; Kubernetes ${k8s}) with ${goVersion} into ${bin}. ` +
      `A cold build (empty Go module and build caches) takes about ${COLD_BUILD_MINUTES} minutes on 2 cores; later runs reuse the binary.`,
  );
  const started = Date.now();
  const ticker = setInterval(() => log(`still building kube-testenv… ${Math.round((Date.now() - started) / 1000)}s`), 30_000);
  try {
    await runGo(args, { cwd: GO_MODULE_DIR, env: { ...process.env, CGO_ENABLED: '0', GOFLAGS: [process.env.GOFLAGS, '-mod=readonly'].filter(Boolean).join(' ') } }, 'controlplane');
    renameSync(tmp, bin); // atomic within the cache directory
  } finally {
    clearInterval(ticker);
    rmSync(tmp, { force: true });
  }
  log(`built kube-testenv in ${Math.round((Date.now() - started) / 1000)}s: ${bin}`);
}
