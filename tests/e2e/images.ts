// Container images without a registry (docs/e2e.md): the base image the Dockerfile names, built
// from Debian packages and the npm registry; the Dockerfile itself, built with buildah; and the
// Pod sandbox ("pause") image, compiled from the Kubernetes sources the test cluster is built from.
//
// buildah keeps its images under ~/.cache/policyguard/e2e/buildah, so the base image (keyed by
// Debian release, Node and npm version) and unchanged Dockerfile layers are built once.

import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

import { GO_MODULE_DIR, kubernetesVersion, policyguardCacheDir } from '../controlplane/binary.js';
import { REPO_ROOT } from '../controlplane/index.js';
import { note, run, step } from './util.js';

/** Bump when the base image recipe below changes: the cached base image is rebuilt. */
const BASE_RECIPE = 1;
const BUILDAH_CACHE_LIMIT = 6 * 2 ** 30;
const DEBIAN_MIRROR = process.env.E2E_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';

/**
 * Where the harness keeps what it builds once (buildah's storage).
 *
 * @example e2eCacheDir() // '/root/.cache/policyguard/e2e'
 */
export function e2eCacheDir(): string {
  return policyguardCacheDir('e2e');
}

/** What the Dockerfile's FROM lines name: `node:<NODE_VERSION>-<debian release>-slim`. */
export interface BaseImageSpec {
  /** The image reference as buildah stores it, e.g. docker.io/library/node:24.21.0-trixie-slim */
  ref: string;
  nodeVersion: string;
  debianRelease: string;
}

/**
 * Reads the base image from the Dockerfile (`ARG NODE_VERSION=…`, `FROM node:${NODE_VERSION}-<release>-slim`)
 * and checks it is the Node the tests run on (the `node` devDependency).
 *
 * @example baseImageSpec() // { ref: 'docker.io/library/node:24.21.0-trixie-slim', nodeVersion: '24.21.0', debianRelease: 'trixie' }
 */
export function baseImageSpec(): BaseImageSpec {
  const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
  const nodeVersion = /^ARG NODE_VERSION=(\S+)/m.exec(dockerfile)?.[1];
  const froms = [...dockerfile.matchAll(/^FROM node:\$\{NODE_VERSION\}-([a-z]+)-slim\b/gm)].map((m) => m[1]);
  if (!nodeVersion || froms.length === 0) throw new Error('e2e: the Dockerfile no longer has `ARG NODE_VERSION=…` and `FROM node:${NODE_VERSION}-<debian release>-slim`; update tests/e2e/images.ts');
  if (new Set(froms).size !== 1) throw new Error(`e2e: the Dockerfile's stages use different Debian releases (${froms.join(', ')})`);
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { devDependencies?: Record<string, string> };
  if (pkg.devDependencies?.node !== nodeVersion) {
    throw new Error(`e2e: the Dockerfile's NODE_VERSION (${nodeVersion}) is not the \`node\` devDependency (${pkg.devDependencies?.node}); the image must run the Node the tests run on`);
  }
  const debianRelease = froms[0]!;
  return { ref: `docker.io/library/node:${nodeVersion}-${debianRelease}-slim`, nodeVersion, debianRelease };
}

// ---- buildah --------------------------------------------------------------------------------

/** buildah with its own storage (under the cache) and short names resolved to docker.io, as Docker does. */
export class Buildah {
  private readonly root = join(e2eCacheDir(), 'buildah');
  private readonly env: NodeJS.ProcessEnv;

  constructor(private readonly runDir: string) {
    mkdirSync(runDir, { recursive: true });
    const registries = join(runDir, 'registries.conf');
    writeFileSync(registries, 'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n');
    this.env = { ...process.env, CONTAINERS_REGISTRIES_CONF: registries, BUILDAH_ISOLATION: 'chroot' };
  }

  run(args: string[], opts: { cwd?: string; allowFailure?: boolean } = {}) {
    return run('buildah', ['--root', this.root, '--runroot', join(this.runDir, 'buildah-run'), '--storage-driver', 'overlay', ...args], { ...opts, env: this.env });
  }

  /** The value of a label of a stored image, or undefined if there is no such image. */
  async label(ref: string, label: string): Promise<string | undefined> {
    const r = await this.run(['inspect', '--type', 'image', '--format', `{{index .ImageAnnotations "${label}"}}|{{index .OCIv1.Config.Labels "${label}"}}`, ref], { allowFailure: true });
    if (r.code !== 0) return undefined;
    return r.stdout.trim().split('|').find((v) => v && v !== '<no value>') ?? '';
  }

  /**
   * Bounds the cache: every change of the sources leaves old layers behind. Past
   * {@link BUILDAH_CACHE_LIMIT} bytes the unnamed images (old layers, and the layer cache with
   * them) go; the next build is then a cold one. Working containers left by a build that was
   * killed go first (they hold their images); a cache that still cannot be pruned is reported
   * and the run goes on with it, since a bigger cache is no reason to fail the tests.
   */
  async pruneIfLarge(): Promise<void> {
    const du = await run('du', ['-sb', this.root], { allowFailure: true });
    const bytes = Number(du.stdout.split('\t')[0] ?? 0);
    if (bytes > BUILDAH_CACHE_LIMIT) {
      note(`buildah storage ${this.root} holds ${(bytes / 2 ** 30).toFixed(1)} GiB: removing leftover working containers and unnamed images (layer cache included)`);
      await this.run(['rm', '--all'], { allowFailure: true });
      const pruned = await this.run(['rmi', '--prune'], { allowFailure: true });
      if (pruned.code !== 0) note(`buildah could not prune its storage (exit ${pruned.code}), going on with it: ${pruned.stderr.trim().split('\n').pop()}`);
    }
  }

  /** Writes `ref` to a docker-archive tarball named `name` (how `ctr images import` and `kind load` take images). */
  async save(ref: string, name: string, file: string): Promise<void> {
    rmSync(file, { force: true });
    await this.run(['push', '--quiet', ref, `docker-archive:${file}:${name}`]);
  }
}

// ---- the base image ---------------------------------------------------------------------------

/** npm's version in the official Node release: the last "upgrade npm to X" entry of its CHANGELOG. */
function bundledNpmVersion(changelog: string, nodeVersion: string): string {
  const section = changelog.slice(changelog.indexOf(`<a id="${nodeVersion}"></a>`));
  const m = /\*\*deps\*\*: upgrade npm to (\d+\.\d+\.\d+)/.exec(section);
  if (!m?.[1]) throw new Error(`e2e: cannot find npm's version in the CHANGELOG of Node ${nodeVersion} (no "deps: upgrade npm to X")`);
  return m[1];
}

/** `npm pack NAME@VERSION` into `dir`; returns the tarball's path. */
async function npmPack(spec: string, dir: string): Promise<string> {
  const r = await run('npm', ['pack', spec, '--silent', '--pack-destination', dir], { cwd: dir });
  return join(dir, r.stdout.trim().split('\n').pop()!);
}

/**
 * Makes sure buildah has the base image the Dockerfile names, built like the official Node image
 * but from what our machines can reach: `debootstrap --variant=minbase` of the Debian release,
 * Node from the npm package `node-linux-<arch>` (what the `node` devDependency installs), npm
 * from the npm package at the version that Node release bundles, the `node` user 1000:1000.
 *
 * @example await ensureBaseImage(buildah, baseImageSpec(), workDir);
 */
export async function ensureBaseImage(buildah: Buildah, spec: BaseImageSpec, workDir: string): Promise<void> {
  const key = `${spec.debianRelease}-node${spec.nodeVersion}-recipe${BASE_RECIPE}`;
  const label = 'dev.policyguard.e2e.base';
  if ((await buildah.label(spec.ref, label)) === key) {
    note(`base image ${spec.ref} (${key}) is cached`);
    return;
  }
  const dir = mkdtempSync(join(workDir, 'base-'));
  const rootfs = join(dir, 'rootfs');
  try {
    await step(`debootstrap --variant=minbase ${spec.debianRelease} (about 2 minutes)`, () =>
      run('debootstrap', ['--variant=minbase', '--include=libatomic1', spec.debianRelease, rootfs, DEBIAN_MIRROR]),
    );
    // As Debian's -slim images: no package caches, lists, documentation or translations.
    for (const p of ['var/cache/apt/archives', 'var/lib/apt/lists', 'usr/share/doc', 'usr/share/man', 'usr/share/info', 'usr/share/locale']) {
      rmSync(join(rootfs, p), { recursive: true, force: true });
      mkdirSync(join(rootfs, p), { recursive: true });
    }
    const arch = { x64: 'x64', arm64: 'arm64' }[process.arch as string];
    if (!arch) throw new Error(`e2e: no node-linux-* npm package for ${process.arch}`);
    const npmVersion = await step(`Node ${spec.nodeVersion} and its npm from the npm registry`, async () => {
      const nodeTgz = await npmPack(`node-linux-${arch}@${spec.nodeVersion}`, dir);
      const unpacked = join(dir, 'node-pkg');
      mkdirSync(unpacked);
      await run('tar', ['-xzf', nodeTgz, '-C', unpacked, '--strip-components=1']);
      // The official image unpacks the release tarball into /usr/local: bin/node, include/, share/.
      const local = join(rootfs, 'usr', 'local');
      for (const sub of ['bin', 'include', 'share']) await run('cp', ['-a', join(unpacked, sub), local]);
      const version = bundledNpmVersion(readFileSync(join(unpacked, 'CHANGELOG.md'), 'utf8'), spec.nodeVersion);
      const npmTgz = await npmPack(`npm@${version}`, dir);
      const npmDir = join(local, 'lib', 'node_modules', 'npm');
      mkdirSync(npmDir, { recursive: true });
      await run('tar', ['-xzf', npmTgz, '-C', npmDir, '--strip-components=1', '--no-same-owner']);
      symlinkSync('../lib/node_modules/npm/bin/npm-cli.js', join(local, 'bin', 'npm'));
      symlinkSync('../lib/node_modules/npm/bin/npx-cli.js', join(local, 'bin', 'npx'));
      symlinkSync('node', join(local, 'bin', 'nodejs'));
      return version;
    });
    await run('chroot', [rootfs, 'sh', '-c', 'groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node && node --version && npm --version']);
    await step(`buildah commit ${spec.ref}`, async () => {
      const ctr = (await buildah.run(['from', '--quiet', 'scratch'])).stdout.trim();
      try {
        const mnt = (await buildah.run(['mount', ctr])).stdout.trim();
        try {
          await run('sh', ['-c', `tar -C "$1" -cf - . | tar -C "$2" -xpf -`, 'sh', rootfs, mnt]);
        } finally {
          await buildah.run(['umount', ctr]);
        }
        await buildah.run([
          'config', '--env', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', '--env', `NODE_VERSION=${spec.nodeVersion}`,
          '--cmd', '["node"]', '--label', `${label}=${key}`, '--label', `dev.policyguard.e2e.npm=${npmVersion}`,
          '--os', 'linux', '--arch', process.arch === 'x64' ? 'amd64' : 'arm64', ctr,
        ]);
        await buildah.run(['commit', '--quiet', '--rm', ctr, spec.ref]);
      } catch (e) {
        await buildah.run(['rm', ctr], { allowFailure: true });
        throw e;
      }
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- the application image -----------------------------------------------------------------

/**
 * Builds the repository's Dockerfile with `buildah bud --pull=never` (the base image must be
 * local), with host networking for `npm ci`, reusing unchanged layers.
 *
 * @example await buildAppImage(buildah, 'localhost/policyguard:e2e', workDir);
 */
export async function buildAppImage(buildah: Buildah, ref: string, workDir: string): Promise<void> {
  await buildah.pruneIfLarge();
  const volumes = await npmSettingsVolumes(workDir);
  await step(`buildah bud --pull=never -t ${ref} (the Dockerfile; cold: npm ci twice, a few minutes)`, () =>
    buildah.run(['bud', '--pull=never', '--network=host', '--layers', '--quiet', ...volumes.flatMap((v) => ['--volume', v]), '-t', ref, '-f', join(REPO_ROOT, 'Dockerfile'), REPO_ROOT]),
  );
}

/**
 * The `npm ci` of the Dockerfile must reach the registry this machine's npm uses, trusting the
 * same certificate authorities (ours may sit behind a TLS-inspecting proxy). Both are lent to
 * the build's RUN steps as read-only mounts (npm's global config file, /usr/local/etc/npmrc in
 * the Node image, and the CA file), so they never end up in a layer and the Dockerfile stays
 * the one users build.
 */
async function npmSettingsVolumes(workDir: string): Promise<string[]> {
  const config = async (key: string) => {
    const v = (await run('npm', ['config', 'get', key])).stdout.trim();
    return v === 'null' || v === 'undefined' ? '' : v;
  };
  const registry = await config('registry');
  const cafile = (await config('cafile')) || process.env.NODE_EXTRA_CA_CERTS || '';
  const lines = [`registry=${registry}`];
  const volumes: string[] = [];
  if (cafile && existsSync(cafile)) {
    lines.push('cafile=/usr/local/etc/policyguard-build-ca.crt');
    volumes.push(`${cafile}:/usr/local/etc/policyguard-build-ca.crt:ro`);
  }
  const npmrc = join(workDir, 'build-npmrc');
  writeFileSync(npmrc, `${lines.join('\n')}\n`);
  return [`${npmrc}:/usr/local/etc/npmrc:ro`, ...volumes];
}

// ---- the pause image ---------------------------------------------------------------------------

/**
 * The pause image's name: built here, never pulled.
 *
 * @example pauseImageRef() // 'localhost/policyguard-e2e/pause:3.10.1'
 */
export function pauseImageRef(): string {
  return `localhost/policyguard-e2e/pause:${pauseTag()}`;
}

function kubernetesSourceDir(): string {
  const gomodcache = process.env.GOMODCACHE || join(process.env.GOPATH || join(homedir(), 'go'), 'pkg', 'mod');
  return join(gomodcache, 'k8s.io', `kubernetes@${kubernetesVersion()}`);
}

function pauseTag(): string {
  const makefile = join(kubernetesSourceDir(), 'build', 'pause', 'Makefile');
  return existsSync(makefile) ? (/^TAG \?= (\S+)/m.exec(readFileSync(makefile, 'utf8'))?.[1] ?? 'local') : 'local';
}

/**
 * Builds the Pod sandbox image from upstream build/pause/linux/pause.c of the Kubernetes module
 * the cluster runs (gcc -static, the flags of upstream's Makefile), once per Kubernetes version.
 *
 * @example await ensurePauseImage(buildah);
 */
export async function ensurePauseImage(buildah: Buildah): Promise<string> {
  const ref = pauseImageRef();
  const source = join(kubernetesSourceDir(), 'build', 'pause', 'linux', 'pause.c');
  if (!existsSync(source)) {
    // The module is in the Go module cache once kube-testenv was built; fetch it otherwise.
    await run('go', ['mod', 'download', `k8s.io/kubernetes@${kubernetesVersion()}`], { cwd: GO_MODULE_DIR });
  }
  const digest = createHash('sha256').update(readFileSync(source)).digest('hex').slice(0, 12);
  if ((await buildah.label(ref, 'dev.policyguard.e2e.pause')) === digest) return ref;
  await step(`the pause image ${ref} (gcc -static ${source})`, async () => {
    const dir = mkdtempSync(join(e2eCacheDir(), 'pause-'));
    try {
      const bin = join(dir, 'pause');
      await run('gcc', ['-Os', '-Wall', '-Werror', '-static', `-DVERSION=v${pauseTag()}-policyguard`, '-o', `${bin}.tmp`, source]);
      renameSync(`${bin}.tmp`, bin);
      chmodSync(bin, 0o755);
      const ctr = (await buildah.run(['from', '--quiet', 'scratch'])).stdout.trim();
      await buildah.run(['copy', ctr, bin, '/pause']);
      await buildah.run(['config', '--entrypoint', '["/pause"]', '--user', '65535:65535', '--label', `dev.policyguard.e2e.pause=${digest}`, ctr]);
      await buildah.run(['commit', '--quiet', '--rm', ctr, ref]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  return ref;
}
