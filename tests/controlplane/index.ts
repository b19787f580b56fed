// A real Kubernetes control plane for tests: etcd + kube-apiserver on loopback, as envtest does
// for Go operators. See docs/controlplane.md.
//
//   const cp = await startControlPlane();
//   const core = cp.kubeConfig().makeApiClient(CoreV1Api);
//   ...
//   await cp.stop();

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ApiextensionsV1Api, KubeConfig, KubernetesObjectApi, type KubernetesObject } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';

import { resolveBinaries, type Binaries, type Program } from './binary.js';
import { writePki, type Pki } from './certs.js';

export { ensureKubeTestenv, kubernetesVersion, cachedBinaryPath } from './binary.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The audience PolicyGuard asks TokenRequest for; accepted next to the issuer's default. */
export const POLICYGUARD_AUDIENCE = 'policyguard';

export interface ControlPlaneOptions {
  /** Working directory (certs, etcd data, logs, kubeconfig). Default: a new temp dir. */
  dir?: string;
  /** Keep `dir` after stop(). Default false (a dir passed in `dir` is never removed). */
  keep?: boolean;
  /** Directory of YAML manifests to apply after start. Default: `<repo>/crds` if it exists; null: none. */
  crdsDir?: string | null;
  /** How long to wait for /readyz. Default 90s. */
  readyTimeoutMs?: number;
  /** Extra kube-apiserver flags (e.g. `--feature-gates=...`). */
  extraApiServerArgs?: string[];
  /**
   * Admission plugins to turn off. Default `['ServiceAccount']`: without a controller-manager no
   * `default` ServiceAccount exists, and the plugin would refuse every Pod. A cluster with a
   * controller-manager (tests/e2e) passes `[]`, so Pods get their ServiceAccount token volume.
   */
  disableAdmissionPlugins?: string[];
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number | null;
}

export interface ControlPlane {
  dir: string;
  kubeconfigPath: string;
  /** https://127.0.0.1:<port> */
  server: string;
  etcdUrl: string;
  /** The service-account token issuer (also a default API audience). */
  issuer: string;
  pki: Pki;
  binaries: Binaries;
  /** A fresh KubeConfig (admin, system:masters) loaded from kubeconfigPath. */
  kubeConfig(): KubeConfig;
  /** Runs kubectl with --kubeconfig pointing at this control plane. */
  kubectl(args: string[], opts?: { input?: string }): Promise<ExecResult>;
  stopApiServer(): Promise<void>;
  startApiServer(): Promise<void>;
  restartApiServer(): Promise<void>;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort if the runner exits without stop(): 'exit' handlers must be synchronous, so
  // SIGKILL. (On Linux the kube-testenv children also get SIGTERM via PR_SET_PDEATHSIG when
  // this process dies in a way that runs no handlers.)
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

const TMP_PREFIX = 'policyguard-cp-';
const OWNER_FILE = 'owner.json';

/**
 * Removes temp dirs of control planes whose owning process died without stop() (killed test
 * runner: its etcd and apiserver are gone too, see exitWithParent in the Go code). Only dirs
 * with an owner.json naming a dead process on this host are touched.
 */
function sweepAbandonedDirs(): void {
  let entries: string[];
  try {
    entries = readdirSync(tmpdir()).filter((e) => e.startsWith(TMP_PREFIX));
  } catch {
    return;
  }
  for (const e of entries) {
    const dir = join(tmpdir(), e);
    try {
      const owner = JSON.parse(readFileSync(join(dir, OWNER_FILE), 'utf8')) as { pid?: number; host?: string };
      if (owner.host !== hostname() || typeof owner.pid !== 'number' || owner.pid === process.pid) continue;
      try {
        process.kill(owner.pid, 0);
        continue; // alive
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') continue;
      }
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // no owner file, or a race with its owner: leave it
    }
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function tail(file: string, lines = 40): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A child process started by {@link launch}. */
export interface Managed {
  child: ChildProcess;
  exited: Promise<number | null>;
  exitCode: () => number | null | undefined; // undefined while running
}

/**
 * Starts a long-running program with its output appended to `logFile`; it is killed when this
 * process exits.
 *
 * @example const etcd = launch({ command: 'etcd', args: [] }, ['--data-dir', dir], join(dir, 'etcd.log'));
 */
export function launch(program: Program, args: string[], logFile: string): Managed {
  const fd = openSync(logFile, 'a');
  writeFileSync(fd, `\n==== ${new Date().toISOString()} ${program.command} ${[...program.args, ...args].join(' ')}\n`);
  const child = spawn(program.command, [...program.args, ...args], {
    stdio: ['ignore', fd, fd],
    detached: false,
    env: { ...process.env, KUBE_TESTENV_EXIT_WITH_PARENT: '1' },
  });
  closeSync(fd);
  installExitHook();
  live.add(child);
  let code: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => {
    child.on('exit', (c, signal) => {
      live.delete(child);
      code = c ?? (signal ? -1 : null);
      resolve(code);
    });
    child.on('error', (e) => {
      live.delete(child);
      writeFileSync(logFile, `spawn error: ${e.message}\n`, { flag: 'a' });
      code = -1;
      resolve(code);
    });
  });
  return { child, exited, exitCode: () => code };
}

/**
 * SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited.
 *
 * @example await terminate(etcd);
 */
export async function terminate(m: Managed | undefined, graceMs = 15_000): Promise<void> {
  if (!m || m.exitCode() !== undefined) return;
  m.child.kill('SIGTERM');
  const timer = setTimeout(() => m.child.kill('SIGKILL'), graceMs);
  await m.exited;
  clearTimeout(timer);
}

/** GET a URL; resolves with status and body, rejects on connection errors. */
function get(url: string, tls?: { ca: string; cert: string; key: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(
      u,
      { method: 'GET', timeout: 5000, ...(tls ?? {}) },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Polls `probe` until it returns true, failing early (with the log's last lines) if the process
 * exits and late if `timeoutMs` passes.
 *
 * @example await waitFor('etcd', etcd, log, 60_000, async () => (await fetch(url)).ok);
 */
export async function waitFor(
  what: string,
  m: Managed,
  logFile: string,
  timeoutMs: number,
  probe: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const code = m.exitCode();
    if (code !== undefined) {
      throw new Error(`controlplane: ${what} exited (code ${code}) before it was ready. Last lines of ${logFile}:\n${tail(logFile)}`);
    }
    try {
      if (await probe()) return;
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(250);
  }
  throw new Error(
    `controlplane: ${what} not ready after ${timeoutMs / 1000}s${last ? ` (last error: ${last})` : ''}. Last lines of ${logFile}:\n${tail(logFile)}`,
  );
}

function kubeconfigYaml(server: string, pki: Pki): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return `apiVersion: v1
kind: Config
clusters:
- name: policyguard-test
  cluster:
    server: ${server}
    certificate-authority-data: ${b64(pki.pem.ca)}
users:
- name: admin
  user:
    client-certificate-data: ${b64(pki.pem.adminCert)}
    client-key-data: ${b64(pki.pem.adminKey)}
contexts:
- name: policyguard-test
  context:
    cluster: policyguard-test
    user: admin
current-context: policyguard-test
`;
}

export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const binaries = await resolveBinaries();
  const ownDir = !opts.dir;
  if (ownDir) sweepAbandonedDirs();
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), TMP_PREFIX));
  mkdirSync(dir, { recursive: true });
  if (ownDir) writeFileSync(join(dir, OWNER_FILE), JSON.stringify({ pid: process.pid, host: hostname() }));
  const pki = writePki(join(dir, 'pki'));
  const [etcdPort, peerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
  const etcdUrl = `http://127.0.0.1:${etcdPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const server = `https://127.0.0.1:${apiPort}`;
  const issuer = 'https://kubernetes.default.svc.cluster.local';
  const etcdLog = join(dir, 'etcd.log');
  const apiLog = join(dir, 'kube-apiserver.log');
  const kubeconfigPath = join(dir, 'kubeconfig');
  const readyTimeoutMs = opts.readyTimeoutMs ?? 90_000;
  const adminTls = { ca: pki.pem.ca, cert: pki.pem.adminCert, key: pki.pem.adminKey };

  // Flags accepted by both the real etcd and `kube-testenv etcd`.
  const etcdArgs = [
    `--name=default`,
    `--data-dir=${join(dir, 'etcd')}`,
    `--listen-client-urls=${etcdUrl}`,
    `--advertise-client-urls=${etcdUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=default=${peerUrl}`,
    `--unsafe-no-fsync=true`,
    `--log-level=warn`,
  ];
  const disabledPlugins = opts.disableAdmissionPlugins ?? ['ServiceAccount'];
  const apiArgs = [
    `--etcd-servers=${etcdUrl}`,
    `--bind-address=127.0.0.1`,
    `--secure-port=${apiPort}`,
    `--cert-dir=${join(dir, 'apiserver-certs')}`,
    `--tls-cert-file=${pki.servingCert}`,
    `--tls-private-key-file=${pki.servingKey}`,
    `--client-ca-file=${pki.caCert}`,
    `--authorization-mode=RBAC`,
    `--service-account-issuer=${issuer}`,
    `--service-account-key-file=${pki.saPub}`,
    `--service-account-signing-key-file=${pki.saKey}`,
    // Tokens must carry one of these audiences: the issuer (the default for TokenRequest without
    // audiences, and for kubectl create token) and PolicyGuard's own.
    `--api-audiences=${issuer},${POLICYGUARD_AUDIENCE}`,
    `--service-cluster-ip-range=10.0.0.0/24`,
    `--advertise-address=127.0.0.1`,
    `--allow-privileged=true`,
    ...(disabledPlugins.length ? [`--disable-admission-plugins=${disabledPlugins.join(',')}`] : []),
    `--endpoint-reconciler-type=none`,
    ...(opts.extraApiServerArgs ?? []),
  ];

  let etcd: Managed | undefined;
  let apiserver: Managed | undefined;

  const startEtcd = async () => {
    etcd = launch(binaries.etcd, etcdArgs, etcdLog);
    const e = etcd;
    await waitFor('etcd', e, etcdLog, 60_000, async () => {
      const r = await get(`${etcdUrl}/health`);
      return r.status === 200 && /"health"\s*:\s*"true"/.test(r.body);
    });
  };
  const startApiServer = async () => {
    if (apiserver && apiserver.exitCode() === undefined) throw new Error('controlplane: kube-apiserver is already running');
    apiserver = launch(binaries.apiserver, apiArgs, apiLog);
    const a = apiserver;
    await waitFor('kube-apiserver', a, apiLog, readyTimeoutMs, async () => {
      const r = await get(`${server}/readyz`, adminTls);
      return r.status === 200 && r.body.trim() === 'ok';
    });
  };
  const stopApiServer = async () => {
    await terminate(apiserver);
  };
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await terminate(apiserver);
    await terminate(etcd);
    if (ownDir && !opts.keep) rmSync(dir, { recursive: true, force: true });
  };

  try {
    await startEtcd();
    await startApiServer();
    writeFileSync(kubeconfigPath, kubeconfigYaml(server, pki), { mode: 0o600 });
    const kubeConfig = () => {
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfigPath);
      return kc;
    };
    const crdsDir = opts.crdsDir === undefined ? join(REPO_ROOT, 'crds') : opts.crdsDir;
    if (crdsDir && existsSync(crdsDir)) await applyCrdDir(await binaries.kubectl(), kubeconfigPath, kubeConfig(), crdsDir);

    return {
      dir,
      kubeconfigPath,
      server,
      etcdUrl,
      issuer,
      pki,
      binaries,
      kubeConfig,
      kubectl: async (args, o) => runKubectl(await binaries.kubectl(), ['--kubeconfig', kubeconfigPath, ...args], o?.input),
      stopApiServer,
      startApiServer,
      restartApiServer: async () => {
        await stopApiServer();
        await startApiServer();
      },
      stop,
    };
  } catch (e) {
    const keep = opts.keep;
    opts.keep = true; // keep logs of a failed start for diagnosis
    await stop();
    opts.keep = keep;
    rmSync(join(dir, OWNER_FILE), { force: true }); // and out of sweepAbandonedDirs' reach
    // eslint-disable-next-line preserve-caught-error -- the message already carries the cause; vitest would print it twice
    throw new Error(`${(e as Error).message}\n(control plane files kept in ${dir})`);
  }
}

/** Runs a program to completion, feeding it `input`, collecting its output. */
export function runProgram(program: Program, args: string[], opts: { input?: string; cwd?: string } = {}): Promise<ExecResult> {
  const input = opts.input;
  return new Promise((resolve, reject) => {
    const child = spawn(program.command, [...program.args, ...args], { stdio: ['pipe', 'pipe', 'pipe'], ...(opts.cwd ? { cwd: opts.cwd } : {}) });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ stdout, stderr, code }));
    // A program that exits without reading its input (helm on a usage error) closes the pipe:
    // the EPIPE that follows is not an error of ours; its exit code and output say what happened.
    child.stdin.on('error', () => {});
    child.stdin.end(input ?? '');
  });
}

export function runKubectl(program: Program, args: string[], input?: string): Promise<ExecResult> {
  return runProgram(program, args, input === undefined ? {} : { input });
}

// ---- manifests -----------------------------------------------------------------------------

/**
 * Applies the CRDs in `dir` with kubectl (server-side), as a user would, and waits until they
 * are Established. Not through client-node: its typed serializer drops `default` from
 * JSONSchemaProps (the TS field is `_default`), so structural defaults would silently vanish.
 */
export async function applyCrdDir(kubectl: Program, kubeconfigPath: string, kc: KubeConfig, dir: string): Promise<void> {
  const res = await runKubectl(kubectl, ['--kubeconfig', kubeconfigPath, 'apply', '--server-side', '--field-manager', 'policyguard-tests', '-f', dir]);
  if (res.code !== 0) throw new Error(`controlplane: kubectl apply -f ${dir} failed: ${res.stderr || res.stdout}`);
  const names = [...res.stdout.matchAll(/customresourcedefinition\.apiextensions\.k8s\.io\/(\S+)/g)].map((m) => m[1]!);
  await Promise.all(names.map((n) => waitForCrdEstablished(kc, n)));
}

/**
 * Creates (or replaces) every object in the YAML files of `dir`, then waits for CRDs to be
 * Established. For CRDs whose schemas carry `default`s use {@link applyCrdDir} (see there).
 */
export async function applyManifestDir(kc: KubeConfig, dir: string): Promise<KubernetesObject[]> {
  const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
  const objects: KubernetesObject[] = [];
  for (const f of files) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, f), 'utf8'))) {
      if (doc.errors.length) throw new Error(`controlplane: ${join(dir, f)}: ${doc.errors[0]?.message}`);
      const obj = doc.toJS() as KubernetesObject | null;
      if (obj && typeof obj === 'object' && obj.kind) objects.push(obj);
    }
  }
  return applyObjects(kc, objects);
}

/** Creates each object, replacing it if it exists; waits for CustomResourceDefinitions to be Established. */
export async function applyObjects(kc: KubeConfig, objects: KubernetesObject[]): Promise<KubernetesObject[]> {
  const client = KubernetesObjectApi.makeApiClient(kc);
  const out: KubernetesObject[] = [];
  // CRDs first, so custom objects in the same set can be created after them.
  const isCrd = (o: KubernetesObject) => o.kind === 'CustomResourceDefinition';
  for (const obj of [...objects.filter(isCrd), ...objects.filter((o) => !isCrd(o))]) {
    if (!isCrd(obj) && objects.some(isCrd)) await Promise.all(objects.filter(isCrd).map((c) => waitForCrdEstablished(kc, c.metadata?.name ?? '')));
    const what = `${obj.kind} ${obj.metadata?.namespace ? `${obj.metadata.namespace}/` : ''}${obj.metadata?.name ?? '?'}`;
    try {
      try {
        out.push(await client.create(obj));
      } catch (e) {
        if ((e as { code?: number }).code !== 409) throw e;
        const existing = await client.read({ apiVersion: obj.apiVersion, kind: obj.kind, metadata: { name: obj.metadata?.name ?? '', namespace: obj.metadata?.namespace } });
        out.push(await client.replace({ ...obj, metadata: { ...obj.metadata, resourceVersion: existing.metadata?.resourceVersion } }));
      }
    } catch (e) {
      // No `cause`: client-node's ApiException repeats the raw body and headers at length.
      // eslint-disable-next-line preserve-caught-error -- see above
      throw new Error(`controlplane: the API server rejected ${what}: ${apiErrorMessage(e)}`);
    }
  }
  await Promise.all(objects.filter(isCrd).map((c) => waitForCrdEstablished(kc, c.metadata?.name ?? '')));
  return out;
}

/** The Status message of a client-node ApiException (its own message embeds headers and the raw body). */
export function apiErrorMessage(e: unknown): string {
  const err = e as { code?: number; body?: unknown; message?: string };
  if (typeof err.body === 'string') {
    try {
      const status = JSON.parse(err.body) as { message?: string; reason?: string };
      if (status.message) return `${err.code ?? ''} ${status.reason ?? ''}: ${status.message}`.trim();
    } catch {
      // not JSON
    }
  }
  return err.message ?? String(e);
}

export async function waitForCrdEstablished(kc: KubeConfig, name: string, timeoutMs = 30_000): Promise<void> {
  const api = kc.makeApiClient(ApiextensionsV1Api);
  const deadline = Date.now() + timeoutMs;
  let conditions = '';
  while (Date.now() < deadline) {
    const crd = await api.readCustomResourceDefinition({ name });
    const conds = crd.status?.conditions ?? [];
    conditions = conds.map((c) => `${c.type}=${c.status}${c.message ? ` (${c.message})` : ''}`).join(', ');
    if (conds.some((c) => c.type === 'Established' && c.status === 'True')) return;
    await sleep(200);
  }
  throw new Error(`controlplane: CRD ${name} not Established after ${timeoutMs / 1000}s: ${conditions || 'no conditions'}`);
}
