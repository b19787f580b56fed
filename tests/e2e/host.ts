// The host side of the one-node cluster (docs/e2e.md): what it needs (root, namespaces, Debian
// packages, installed here if missing), and a snapshot of everything a node can change
// (mounts, network interfaces and namespaces, iptables rules, sysctls, cgroups, a few runtime
// directories), so the harness can undo exactly what the run changed and prove nothing is left.

import { existsSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { note, run } from './util.js';

/** Debian packages the node needs, each with a file that shows it is installed. */
export const HOST_PACKAGES: Record<string, string> = {
  containerd: '/usr/bin/containerd',
  runc: '/usr/sbin/runc',
  'containernetworking-plugins': '/usr/lib/cni/bridge',
  buildah: '/usr/bin/buildah',
  debootstrap: '/usr/sbin/debootstrap',
  iptables: '/usr/sbin/iptables-save',
  // The pause binary is compiled from the Kubernetes module with gcc -static.
  gcc: '/usr/bin/gcc',
  'libc6-dev': '/usr/lib/x86_64-linux-gnu/libc.a',
};

/**
 * Fails with a message that says what to do when this machine cannot run the node: not root,
 * not Linux, no namespaces, no overlayfs or cgroups.
 *
 * @example checkHostCanRunNode();
 */
export async function checkHostCanRunNode(): Promise<void> {
  const elsewhere = 'On a machine with Docker, `E2E_CLUSTER=kind npm run e2e` runs the same checks on kind.';
  if (process.platform !== 'linux') throw new Error(`e2e: the one-node cluster runs on Linux only (this is ${process.platform}). ${elsewhere}`);
  if (process.getuid?.() !== 0) {
    throw new Error(
      'e2e: the one-node cluster needs root: containerd, runc and the kubelet create mounts, cgroups, network namespaces and ' +
        `interfaces, and missing Debian packages are installed with apt-get. Run \`sudo npm run e2e\`. ${elsewhere}`,
    );
  }
  const unshare = await run('unshare', ['--net', '--mount', '--pid', '--fork', 'true'], { allowFailure: true }).catch((e: unknown) => ({ code: -1, stderr: String(e), stdout: '' }));
  if (unshare.code !== 0) {
    throw new Error(`e2e: this machine does not let root create namespaces (\`unshare --net --mount --pid --fork true\`: ${unshare.stderr.trim()}); Pods need them. ${elsewhere}`);
  }
  if (!/\boverlay\b/.test(readFileSync('/proc/filesystems', 'utf8'))) throw new Error(`e2e: the kernel has no overlayfs (not in /proc/filesystems); containerd's snapshotter needs it. ${elsewhere}`);
  if (!existsSync('/sys/fs/cgroup/memory') && !existsSync('/sys/fs/cgroup/cgroup.controllers')) throw new Error(`e2e: no cgroup filesystem under /sys/fs/cgroup. ${elsewhere}`);
}

/**
 * Installs the Debian packages of {@link HOST_PACKAGES} that are missing (apt-get, as root).
 *
 * @example await installHostPackages();
 */
export async function installHostPackages(): Promise<void> {
  const missing = Object.entries(HOST_PACKAGES).filter(([, file]) => !existsSync(file)).map(([pkg]) => pkg);
  if (missing.length === 0) return;
  if (!existsSync('/usr/bin/apt-get')) {
    throw new Error(`e2e: missing ${missing.join(', ')}, and this is not a Debian-like system (no apt-get): install them with your package manager`);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  note(`installing ${missing.join(' ')} (apt-get)`);
  await run('apt-get', ['update', '-qq'], { env });
  await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { env });
}

// ---- what a node changes, and undoing it ----------------------------------------------------

/** Directories a container runtime or kubelet creates outside the harness's own directory. */
const RUNTIME_DIRS = ['/run/containerd', '/var/lib/cni', '/var/log/pods', '/var/log/containers', '/run/netns'];
/** sysctls that change on their own. */
const VOLATILE_SYSCTLS = [/^kernel\/ns_last_pid$/, /^kernel\/random\//, /^fs\/dentry-state$/, /^net\/netfilter\/nf_conntrack_count$/];

export interface HostState {
  mounts: string[];
  links: string[];
  netns: string[];
  iptables: Record<string, IptablesState>;
  sysctls: Record<string, string>;
  /** First-level cgroups under each controller, e.g. `memory/kubepods`. */
  cgroups: string[];
  dirs: string[];
}

interface IptablesState {
  /**
   * `table chain`: chains we may have made, and built-in chains that drop by default. A built-in
   * chain that accepts by default filters nothing when it has no rules (which `rules` lists), so
   * it is left out: the first iptables rule on a host where none was ever set creates its table
   * with every built-in chain, and removing the rule leaves them, empty and accepting.
   */
  chains: string[];
  /** `table -A CHAIN spec…` */
  rules: string[];
}

function mountPoints(): string[] {
  // Field 5 of mountinfo is the mount point (octal escapes for spaces and the like).
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean).map((l) => l.split(' ')[4]!.replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))));
}

async function links(): Promise<string[]> {
  const r = await run('ip', ['-o', 'link', 'show']);
  return r.stdout.split('\n').filter(Boolean).map((l) => l.split(': ')[1]!.split('@')[0]!);
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

async function iptablesState(cmd: string): Promise<IptablesState> {
  if (!existsSync(`/usr/sbin/${cmd}-save`)) return { chains: [], rules: [] };
  const r = await run(`${cmd}-save`, [], { allowFailure: true });
  const state: IptablesState = { chains: [], rules: [] };
  let table = '';
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('*')) table = line.slice(1);
    else if (line.startsWith(':')) {
      const [chain, policy] = line.slice(1).split(' ');
      if (policy !== 'ACCEPT') state.chains.push(`${table} ${chain}`);
    }
    else if (line.startsWith('-A ')) state.rules.push(`${table} ${line}`);
  }
  return state;
}

function sysctls(): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const name of listDir(join('/proc/sys', rel))) {
      const key = rel ? `${rel}/${name}` : name;
      const path = join('/proc/sys', key);
      let st;
      try {
        st = statSync(path);
      } catch {
        continue;
      }
      if (st.isDirectory()) walk(key);
      else if (st.mode & 0o200 && st.mode & 0o400 && !VOLATILE_SYSCTLS.some((re) => re.test(key))) {
        try {
          out[key] = readFileSync(path, 'utf8');
        } catch {
          // unreadable for root too (EIO, EPERM on some): not ours to restore
        }
      }
    }
  };
  walk('');
  return out;
}

function cgroups(): string[] {
  const root = '/sys/fs/cgroup';
  const controllers = listDir(root).filter((c) => !c.includes(',') && statSync(join(root, c), { throwIfNoEntry: false })?.isDirectory());
  return controllers.flatMap((c) => listDir(join(root, c)).filter((d) => statSync(join(root, c, d), { throwIfNoEntry: false })?.isDirectory()).map((d) => `${c}/${d}`));
}

/**
 * Everything of the host a node may change, read now.
 *
 * @example const before = await snapshotHost();
 */
export async function snapshotHost(): Promise<HostState> {
  return {
    mounts: mountPoints(),
    links: await links(),
    netns: listDir('/run/netns'),
    iptables: { iptables: await iptablesState('iptables'), ip6tables: await iptablesState('ip6tables') },
    sysctls: sysctls(),
    cgroups: cgroups(),
    dirs: RUNTIME_DIRS.filter((d) => existsSync(d)),
  };
}

const added = (before: string[], after: string[]): string[] => {
  const b = new Set(before);
  return after.filter((x) => !b.has(x));
};

/**
 * What differs between two snapshots, one line per difference; empty when nothing does.
 *
 * @example hostDifferences(before, await snapshotHost()) // ['network interface pge2e0', 'sysctl kernel.panic = 10 (was 1)']
 */
export function hostDifferences(before: HostState, after: HostState): string[] {
  const out: string[] = [];
  for (const m of added(before.mounts, after.mounts)) out.push(`mount ${m}`);
  for (const l of added(before.links, after.links)) out.push(`network interface ${l}`);
  for (const n of added(before.netns, after.netns)) out.push(`network namespace /run/netns/${n}`);
  for (const cmd of Object.keys(after.iptables)) {
    for (const c of added(before.iptables[cmd]!.chains, after.iptables[cmd]!.chains)) out.push(`${cmd} chain ${c}`);
    for (const r of added(before.iptables[cmd]!.rules, after.iptables[cmd]!.rules)) out.push(`${cmd} rule ${r}`);
  }
  for (const [k, v] of Object.entries(before.sysctls)) {
    const now = after.sysctls[k];
    if (now !== undefined && now !== v) out.push(`sysctl ${k.replaceAll('/', '.')} = ${now.trim()} (was ${v.trim()})`);
  }
  for (const c of added(before.cgroups, after.cgroups)) out.push(`cgroup /sys/fs/cgroup/${c}`);
  for (const d of added(before.dirs, after.dirs)) out.push(`directory ${d}`);
  return out;
}

/** The PIDs in a cgroup and all its children. */
function cgroupProcesses(path: string): number[] {
  const own = (() => {
    try {
      return readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  })();
  const children = listDir(path).filter((c) => statSync(join(path, c), { throwIfNoEntry: false })?.isDirectory());
  return [...own, ...children.flatMap((c) => cgroupProcesses(join(path, c)))];
}

/**
 * Removes a cgroup the run created (e.g. the kubelet's `kubepods`): first kills what still runs
 * in it (containers of a killed run outlive their shims), then removes it and its children,
 * deepest first (the kernel refuses a cgroup with children or processes).
 */
async function removeCgroup(path: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const pids = cgroupProcesses(path);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const remove = (p: string) => {
    for (const child of listDir(p)) if (statSync(join(p, child), { throwIfNoEntry: false })?.isDirectory()) remove(join(p, child));
    rmdirSync(p);
  };
  remove(path);
}

/**
 * Undoes every change to the host since `before`, in dependency order: cgroups (killing what
 * still runs in them), mounts (deepest first), network namespaces, interfaces, iptables rules
 * then chains, sysctls, runtime directories. Returns what it undid, for the log; problems are
 * collected, not thrown, so one stubborn leftover does not stop the rest from being cleaned.
 *
 * @example const undone = await restoreHost(before);
 */
export async function restoreHost(before: HostState): Promise<string[]> {
  const now = await snapshotHost();
  const done: string[] = [];
  const attempt = async (what: string, fn: () => Promise<unknown> | unknown) => {
    try {
      await fn();
      done.push(what);
    } catch (e) {
      done.push(`${what}: FAILED (${(e as Error).message.split('\n')[0]})`);
    }
  };
  // Processes first: what still runs in cgroups the run created holds mounts and namespaces.
  for (const c of added(before.cgroups, now.cgroups)) await attempt(`rmdir /sys/fs/cgroup/${c} (after killing what runs in it)`, () => removeCgroup(join('/sys/fs/cgroup', c)));
  for (const m of added(before.mounts, now.mounts).sort((a, b) => b.length - a.length)) {
    await attempt(`umount ${m}`, async () => {
      const r = await run('umount', [m], { allowFailure: true });
      if (r.code !== 0) await run('umount', ['-l', m]);
    });
  }
  for (const n of added(before.netns, now.netns)) await attempt(`ip netns del ${n}`, () => run('ip', ['netns', 'del', n]));
  for (const l of added(before.links, now.links)) {
    await attempt(`ip link del ${l}`, async () => {
      const r = await run('ip', ['link', 'del', l], { allowFailure: true });
      if (r.code !== 0 && !/Cannot find device/.test(r.stderr)) throw new Error(r.stderr.trim()); // a veth goes with its peer
    });
  }
  for (const cmd of Object.keys(now.iptables)) {
    const b = before.iptables[cmd]!;
    const n = now.iptables[cmd]!;
    for (const rule of added(b.rules, n.rules)) {
      const [table, , ...spec] = rule.split(' ');
      await attempt(`${cmd} -t ${table} -D ${spec.join(' ')}`, () => run(cmd, ['-t', table!, '-D', ...splitRule(spec.join(' '))]));
    }
    const newChains = added(b.chains, n.chains);
    for (const c of newChains) {
      const [table, chain] = c.split(' ');
      await attempt(`${cmd} -t ${table} -F ${chain}`, () => run(cmd, ['-t', table!, '-F', chain!]));
    }
    for (const c of newChains) {
      const [table, chain] = c.split(' ');
      await attempt(`${cmd} -t ${table} -X ${chain}`, () => run(cmd, ['-t', table!, '-X', chain!]));
    }
  }
  for (const [k, v] of Object.entries(before.sysctls)) {
    const cur = now.sysctls[k];
    if (cur !== undefined && cur !== v) await attempt(`sysctl ${k.replaceAll('/', '.')}=${v.trim()} (was ${cur.trim()})`, () => writeFileSync(join('/proc/sys', k), v));
  }
  for (const d of added(before.dirs, now.dirs)) await attempt(`rm -r ${d}`, () => rmSync(d, { recursive: true, force: true }));
  return done;
}

/** Splits an iptables-save rule into arguments, keeping quoted strings (comments) whole. */
function splitRule(spec: string): string[] {
  return [...spec.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
}

/**
 * PIDs of processes whose command line contains `marker` (e.g. the harness's own directory).
 *
 * @example processesMentioning('/tmp/policyguard-e2e-AbC123') // containerd's shims of that run
 */
export function processesMentioning(marker: string): number[] {
  const out: number[] = [];
  for (const pid of listDir('/proc').filter((p) => /^\d+$/.test(p))) {
    if (Number(pid) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker)) out.push(Number(pid));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
