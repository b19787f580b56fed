// A one-node Kubernetes cluster on this machine, without Docker (docs/e2e.md): the test control
// plane (tests/controlplane) plus kube-controller-manager, kube-scheduler and kubelet from the
// same kube-testenv build, Debian's containerd and runc, a CNI bridge of our own, and images
// built with buildah. Needs root. Every component is a child process with its log in the run's
// directory; stop() tears down in reverse order and undoes every change to the host.
//
// The Pod network is closed: Pods get addresses on the bridge pge2e0 (10.244.0.0/24) and one
// route, to the Service range 10.0.0.0/24, where only 10.0.0.1 (the `kubernetes` Service) answers,
// a TCP relay of ours to the API server on loopback. No default route, no NAT, no IP forwarding,
// and iptables lets Pods open connections on this host only to that relay: a Pod reaches the API
// server and other Pods, nothing else. No kube-proxy either: the harness reaches a Service's Pods
// at the addresses of its EndpointSlices (the host is on the bridge).

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ensureKubeTestenv } from '../controlplane/binary.js';
import { freePort, launch, startControlPlane, terminate, waitFor, type ControlPlane, type Managed } from '../controlplane/index.js';
import type { E2ECluster } from './cluster.js';
import { checkHostCanRunNode, hostDifferences, installHostPackages, processesMentioning, restoreHost, snapshotHost, type HostState } from './host.js';
import { Buildah, baseImageSpec, buildAppImage, ensureBaseImage, ensurePauseImage, pauseImageRef } from './images.js';
import { note, run, step, waitUntil } from './util.js';

const NODE_NAME = 'policyguard-e2e';
const BRIDGE = 'pge2e0';
const POD_SUBNET = '10.244.0.0/24';
const POD_GATEWAY = '10.244.0.1';
/** The control plane's --service-cluster-ip-range, and the `kubernetes` Service's address in it. */
const SERVICE_RANGE = '10.0.0.0/24';
const API_SERVICE_IP = '10.0.0.1';
const IMAGE = { repository: 'policyguard', tag: 'e2e' };

/**
 * What a run must undo, written when it starts and removed when it has cleaned up: a run that
 * was killed (SIGKILL, a lost machine session) is cleaned up by the next one.
 */
const RUN_STATE = '/run/policyguard-e2e.json';

interface RunState {
  pid: number;
  dir: string;
  before: HostState;
}

/** Cleans up after a run that died without tearing down; refuses to start beside a live one. */
async function recoverKilledRun(): Promise<void> {
  if (!existsSync(RUN_STATE)) return;
  const state = JSON.parse(readFileSync(RUN_STATE, 'utf8')) as RunState;
  let alive = true;
  try {
    process.kill(state.pid, 0);
  } catch {
    alive = false;
  }
  if (alive) throw new Error(`e2e: another run (pid ${state.pid}, ${state.dir}) is using this machine's node; wait for it, or stop it`);
  note(`cleaning up after a run that was killed (pid ${state.pid}, ${state.dir})`);
  for (const pid of processesMentioning(state.dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  const undone = await restoreHost(state.before);
  if (undone.length) note(`undid:\n  ${undone.join('\n  ')}`);
  await run('rm', ['-rf', '--one-file-system', state.dir]);
  rmSync(RUN_STATE, { force: true });
}

/** Fails when the Pod or Service range is already in use on this machine (a route or an address). */
async function checkAddressesFree(): Promise<void> {
  const toInt = (ip: string) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  const overlaps = (cidr: string, other: string) => {
    const [a = '', al = '32'] = cidr.split('/');
    const [b = '', bl = '32'] = other.split('/');
    const bits = Math.min(Number(al), Number(bl));
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    return ((toInt(a) & mask) >>> 0) === ((toInt(b) & mask) >>> 0);
  };
  const routes = (await run('ip', ['-4', '-o', 'route', 'show', 'table', 'all'])).stdout.split('\n').map((l) => l.split(' ')[0] ?? '').filter((d) => /^\d+\.\d+\.\d+\.\d+/.test(d));
  const addrs = [...(await run('ip', ['-4', '-o', 'addr', 'show'])).stdout.matchAll(/inet (\S+)/g)].map((m) => m[1]!);
  for (const used of [...routes, ...addrs]) {
    for (const ours of [POD_SUBNET, SERVICE_RANGE]) {
      if (used !== '127.0.0.0/8' && !used.startsWith('127.') && overlaps(ours, used)) {
        throw new Error(`e2e: ${ours} (the test cluster's ${ours === POD_SUBNET ? 'Pod' : 'Service'} range) overlaps ${used}, already in use on this machine; free it or run on another machine`);
      }
    }
  }
  if ((await run('ip', ['link', 'show', BRIDGE], { allowFailure: true })).code === 0) throw new Error(`e2e: the interface ${BRIDGE} exists already (another e2e run, or one that was killed: \`ip link del ${BRIDGE}\`)`);
}

function httpsOk(url: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { rejectUnauthorized: false, timeout: 5000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** A TCP relay from `host:port` to the API server on loopback: the `kubernetes` Service for Pods. */
function relay(host: string, port: number, target: number): Promise<Server> {
  const server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1');
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    client.pipe(upstream).pipe(client);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

function containerdConfig(dir: string): string {
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return `version = 2
root = "${dir}/containerd/root"
state = "${dir}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "${dir}/containerd.sock"
[ttrpc]
  address = "${dir}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/containerd/opt"
[${cri}]
  sandbox_image = "${pauseImageRef()}"
  # This machine's root lacks CAP_SYS_RESOURCE: containerd may only raise oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
[${cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[${cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[${cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "${dir}/runc"
[${cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "${dir}/cni/net.d"
`;
}

function cniConfig(dir: string): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'policyguard-e2e',
    plugins: [{
      type: 'bridge', bridge: BRIDGE,
      // No gateway or masquerading: the plugin would turn on IP forwarding and add NAT rules.
      isGateway: false, ipMasq: false, hairpinMode: false,
      ipam: {
        type: 'host-local', dataDir: join(dir, 'cni', 'ipam'),
        ranges: [[{ subnet: POD_SUBNET, gateway: POD_GATEWAY }]],
        routes: [{ dst: SERVICE_RANGE, gw: POD_GATEWAY }],
      },
    }],
  }, null, 2);
}

function kubeletConfig(dir: string, cp: ControlPlane, ports: { kubelet: number; healthz: number }): string {
  return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://${dir}/containerd.sock
# This machine: cgroup v1, no systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# The API server reaches the kubelet (logs, exec) at the node's address, on the bridge.
address: ${POD_GATEWAY}
port: ${ports.kubelet}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${ports.healthz}
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${cp.pki.caCert}}
authorization: {mode: Webhook}
clusterDomain: cluster.local
resolvConf: ${dir}/resolv.conf
podCIDR: ${POD_SUBNET}
podLogsDir: ${dir}/pod-logs
maxPods: 30
serializeImagePulls: false
# Never delete the images we built (nothing could pull them back), never evict for a full disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
`;
}

/**
 * Builds the images and starts the one-node cluster. Throws with a message saying why when this
 * machine cannot run it (not root, no namespaces); tears down what it started if it fails.
 *
 * @example const cluster = await startLocalNode(); try { … } finally { await cluster.stop({ failed: false }); }
 */
export async function startLocalNode(opts: { onStop?: (stop: E2ECluster['stop']) => void } = {}): Promise<E2ECluster> {
  await checkHostCanRunNode();
  await recoverKilledRun();
  const before = await snapshotHost();
  const dir = mkdtempSync(join(tmpdir(), 'policyguard-e2e-'));
  writeFileSync(RUN_STATE, JSON.stringify({ pid: process.pid, dir, before } satisfies RunState));
  const procs: Array<{ name: string; m: Managed }> = [];
  let cp: ControlPlane | undefined;
  let apiRelay: Server | undefined;
  const ctr = (args: string[], allowFailure = false) => run('ctr', ['--address', join(dir, 'containerd.sock'), '--namespace', 'k8s.io', ...args], { allowFailure });

  const stop = async ({ failed }: { failed: boolean }): Promise<string[]> => {
    await step('tearing down the node', async () => {
      if (cp) {
        // Pods first, while the kubelet runs: it stops their containers and tears down their network.
        await cp.kubectl(['delete', 'deployments,replicasets,pods', '--all', '--all-namespaces', '--grace-period=5', '--wait=false']);
        await waitUntil('all Pods to be gone', 90_000, async () => ((await cp!.kubectl(['get', 'pods', '-A', '-o', 'name'])).stdout.trim() === '' ? true : undefined)).catch((e: unknown) => note(String(e)));
        await waitUntil('containerd to run no container', 60_000, async () => ((await ctr(['tasks', 'ls', '-q'], true)).stdout.trim() === '' ? true : undefined)).catch((e: unknown) => note(String(e)));
      }
      for (const p of [...procs].reverse().filter((x) => x.name !== 'containerd')) await terminate(p.m);
      // Whatever the kubelet left: kill and remove it through containerd.
      for (const id of (await ctr(['tasks', 'ls', '-q'], true)).stdout.split('\n').filter(Boolean)) await ctr(['tasks', 'kill', '-s', 'SIGKILL', id], true);
      for (const id of (await ctr(['tasks', 'ls', '-q'], true)).stdout.split('\n').filter(Boolean)) await ctr(['tasks', 'rm', '-f', id], true);
      for (const p of procs.filter((x) => x.name === 'containerd')) await terminate(p.m);
      apiRelay?.close();
      await cp?.stop();
      // containerd's shims outlive it by design; theirs name our socket on their command line.
      for (const pid of processesMentioning(dir)) {
        note(`killing leftover process ${pid}`);
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    });
    const undone = await restoreHost(before);
    if (undone.length) note(`undid on this host:\n  ${undone.join('\n  ')}`);
    if (failed) {
      const logs = mkdtempSync(join(tmpdir(), 'policyguard-e2e-logs-'));
      await run('sh', ['-c', 'cd "$1" && find . -name "*.log" -not -path "./containerd/*" | tar -cf - -T - | tar -C "$2" -xf -', 'sh', dir, logs], { allowFailure: true });
      note(`logs kept in ${logs}`);
    }
    await run('rm', ['-rf', '--one-file-system', dir]);
    rmSync(RUN_STATE, { force: true });
    const left = hostDifferences(before, await snapshotHost());
    const procsLeft = processesMentioning(dir);
    return [...left, ...procsLeft.map((p) => `process ${p}`)];
  };

  opts.onStop?.(stop); // a signal during the start must tear down too
  try {
    await installHostPackages();
    await checkAddressesFree();
    const buildah = new Buildah(join(dir, 'buildah'));
    const base = baseImageSpec();
    const testenv = await step('kube-testenv (control plane and node components; cached after the first build)', () => ensureKubeTestenv());
    await ensureBaseImage(buildah, base, dir);
    await ensurePauseImage(buildah);
    await buildAppImage(buildah, `localhost/${IMAGE.repository}:${IMAGE.tag}`, dir);
    const archives = { app: join(dir, 'app.tar'), pause: join(dir, 'pause.tar') };
    await buildah.save(`localhost/${IMAGE.repository}:${IMAGE.tag}`, `docker.io/library/${IMAGE.repository}:${IMAGE.tag}`, archives.app);
    await buildah.save(pauseImageRef(), pauseImageRef(), archives.pause);

    // The control plane, with Pods' ServiceAccount tokens, and able to reach the kubelet (logs, exec).
    const cpDir = join(dir, 'cp');
    cp = await step('starting the control plane', () =>
      startControlPlane({
        dir: cpDir,
        disableAdmissionPlugins: [],
        extraApiServerArgs: [
          `--kubelet-client-certificate=${join(cpDir, 'pki', 'admin.crt')}`, `--kubelet-client-key=${join(cpDir, 'pki', 'admin.key')}`,
          '--kubelet-preferred-address-types=InternalIP',
        ],
      }),
    );
    const controlPlane = cp;
    const admin = controlPlane.kubeconfigPath;
    const component = (name: string, args: string[]) => {
      const m = launch({ command: testenv, args: [name] }, args, join(dir, `${name}.log`));
      procs.push({ name, m });
      return m;
    };

    const [kcmPort, schedPort] = [await freePort(), await freePort()];
    const kcm = component('kube-controller-manager', [
      `--kubeconfig=${admin}`, `--authentication-kubeconfig=${admin}`, `--authorization-kubeconfig=${admin}`,
      '--bind-address=127.0.0.1', `--secure-port=${kcmPort}`, `--cert-dir=${join(dir, 'kcm')}`, '--leader-elect=false',
      `--root-ca-file=${controlPlane.pki.caCert}`, `--service-account-private-key-file=${controlPlane.pki.saKey}`, '--cluster-name=policyguard-e2e',
    ]);
    const scheduler = component('kube-scheduler', [
      `--kubeconfig=${admin}`, `--authentication-kubeconfig=${admin}`, `--authorization-kubeconfig=${admin}`,
      '--bind-address=127.0.0.1', `--secure-port=${schedPort}`, '--leader-elect=false',
    ]);

    await step(`the Pod network: bridge ${BRIDGE} ${POD_GATEWAY}, and ${API_SERVICE_IP}:443 to the API server`, async () => {
      await run('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
      await run('ip', ['addr', 'add', `${POD_GATEWAY}/24`, 'dev', BRIDGE]);
      await run('ip', ['addr', 'add', `${API_SERVICE_IP}/32`, 'dev', BRIDGE]);
      await run('ip', ['link', 'set', BRIDGE, 'up']);
      // On this host, a Pod may open connections only to the API server relay; replies to the
      // kubelet's probes and our calls are ESTABLISHED. (restoreHost removes these rules again.)
      await run('iptables', ['-I', 'INPUT', '-i', BRIDGE, '-j', 'DROP']);
      await run('iptables', ['-I', 'INPUT', '-i', BRIDGE, '-d', API_SERVICE_IP, '-p', 'tcp', '--dport', '443', '-j', 'ACCEPT']);
      await run('iptables', ['-I', 'INPUT', '-i', BRIDGE, '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT']);
      await run('ip6tables', ['-I', 'INPUT', '-i', BRIDGE, '-j', 'DROP']); // Pods have IPv6 link-local addresses too
      apiRelay = await relay(API_SERVICE_IP, 443, Number(new URL(controlPlane.server).port));
      mkdirSync(join(dir, 'cni', 'net.d'), { recursive: true });
      writeFileSync(join(dir, 'cni', 'net.d', '10-policyguard-e2e.conflist'), cniConfig(dir));
    });

    await step('starting containerd and loading the images', async () => {
      writeFileSync(join(dir, 'containerd.toml'), containerdConfig(dir));
      const containerd = { name: 'containerd', m: launch({ command: 'containerd', args: [] }, ['--config', join(dir, 'containerd.toml')], join(dir, 'containerd.log')) };
      procs.push(containerd);
      await waitFor('containerd', containerd.m, join(dir, 'containerd.log'), 60_000, async () => (await ctr(['version'], true)).code === 0);
      for (const file of Object.values(archives)) await ctr(['images', 'import', file]);
    });

    await step(`starting the kubelet and waiting for Node ${NODE_NAME} to be Ready`, async () => {
      writeFileSync(join(dir, 'resolv.conf'), '# Pods have no DNS: nothing outside the Pod network answers.\n');
      const ports = { kubelet: await freePort(), healthz: await freePort() };
      writeFileSync(join(dir, 'kubelet.yaml'), kubeletConfig(dir, controlPlane, ports));
      const kubelet = component('kubelet', [
        `--config=${join(dir, 'kubelet.yaml')}`, `--kubeconfig=${admin}`, `--root-dir=${join(dir, 'kubelet')}`,
        `--hostname-override=${NODE_NAME}`, `--node-ip=${POD_GATEWAY}`, // a node IP may not be loopback
      ]);
      await waitFor('kubelet', kubelet, join(dir, 'kubelet.log'), 180_000, async () => {
        const r = await controlPlane.kubectl(['get', 'node', NODE_NAME, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']);
        return r.stdout.trim() === 'True';
      });
    });

    await step('waiting for the controller-manager (default ServiceAccount, kube-root-ca.crt) and the scheduler', async () => {
      await waitFor('kube-controller-manager', kcm, join(dir, 'kube-controller-manager.log'), 120_000, async () =>
        (await controlPlane.kubectl(['-n', 'default', 'get', 'serviceaccount/default', 'configmap/kube-root-ca.crt'])).code === 0);
      await waitFor('kube-scheduler', scheduler, join(dir, 'kube-scheduler.log'), 60_000, () => httpsOk(`https://127.0.0.1:${schedPort}/healthz`));
    });

    return {
      description: `local node ${NODE_NAME} (${controlPlane.binaries.source}, containerd ${(await run('containerd', ['--version'])).stdout.split(' ')[2] ?? '?'}, ${dir})`,
      kubeconfigPath: admin,
      workDir: dir,
      kubeConfig: () => controlPlane.kubeConfig(),
      kubectl: (args, input) => controlPlane.kubectl(args, input === undefined ? {} : { input }),
      image: IMAGE,
      closedPodRoutes: [POD_SUBNET, SERVICE_RANGE],
      nodeName: NODE_NAME,
      podUrl: (pod, port) => Promise.resolve(`http://${pod.ip}:${port}`),
      makeNodeDir: (name) => {
        const p = join(dir, 'volumes', name);
        mkdirSync(p, { recursive: true });
        return Promise.resolve(p);
      },
      stop,
    };
  } catch (e) {
    const left = await stop({ failed: true });
    if (left.length) note(`left behind after a failed start:\n  ${left.join('\n  ')}`);
    throw e;
  }
}
