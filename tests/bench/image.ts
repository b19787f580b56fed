/**
 * The server as the image runs it, for the benches that measure what users get: the bundle
 * (`npm run build`, dist/policyguard.js) in its own process, with the image's environment (the
 * Dockerfile's ENV: NODE_ENV, MALLOC_ARENA_MAX, NODE_OPTIONS), the node flags of its ENTRYPOINT,
 * and the V8 heap Node gives it in the chart's container.
 *
 * Node sizes V8's heap from the memory cgroup's limit. Measured in a real 512 MiB memory cgroup
 * (the chart's `resources.limits.memory`): a heap limit of 259 MB and a young generation of
 * 1 MB semi-spaces, which `--max-old-space-size=256 --max-semi-space-size=1` reproduce here,
 * where the host's 24 GB give 4 GB and 64 MB. The image's NODE_OPTIONS come after those flags,
 * so its own `--max-semi-space-size` wins, as it does in the pod (docs/deploy.md, "Sizing").
 *
 * PG_BENCH_HEAP=host leaves out the container's heap (the host's defaults, still with the
 * image's NODE_OPTIONS); PG_BENCH_HEAP='--max-semi-space-size=4 …' adds flags after the image's
 * (they win), to try another size.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../controlplane/index.js';
import { printInfo } from './report.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** What `npm run build` makes and the image runs. */
export const MAIN = join(ROOT, 'dist', 'policyguard.js');

/** What Node derives from the chart's 512 MiB memory limit (measured, see the header). */
const CONTAINER_HEAP = ['--max-old-space-size=256', '--max-semi-space-size=1'];

/** How the image starts the server: the Dockerfile's runtime stage (its last), as the benches read it. */
export interface ImageCommand {
  /** What its ENV instructions set. */
  env: Record<string, string>;
  /** The flags its ENTRYPOINT gives `node` before the script. */
  nodeFlags: string[];
}

/**
 * Reads the runtime stage (the last) of a Dockerfile: ENV as `KEY=value` pairs, values
 * optionally in double quotes, and an ENTRYPOINT in exec form `["node", …flags, "<script>"]`.
 * As Docker reads it, comment lines are dropped first and lines are joined at a trailing backslash.
 *
 * @example readImage('FROM node\nENV A=1 \\\n    B="x y"\nENTRYPOINT ["node", "--x", "/app/main.js"]\n');
 *   // { env: { A: '1', B: 'x y' }, nodeFlags: ['--x'] }
 */
export function readImage(dockerfile: string): ImageCommand {
  const lines = dockerfile
    .split(/\r?\n/)
    .filter((l) => !/^\s*#/.test(l))
    .join('\n')
    .replace(/\\\n/g, ' ')
    .split('\n');
  const lastFrom = lines.findLastIndex((l) => /^\s*FROM\s/i.test(l));
  if (lastFrom < 0) throw new Error('the Dockerfile has no FROM line');
  const env: Record<string, string> = {};
  let entrypoint: string | undefined;
  for (const line of lines.slice(lastFrom + 1)) {
    const m = /^\s*(ENV|ENTRYPOINT)\s+(.*)$/i.exec(line);
    if (!m) continue;
    const rest = m[2]!.trim();
    if (m[1]!.toUpperCase() === 'ENTRYPOINT') {
      entrypoint = rest;
      continue;
    }
    const pair = /([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)\s*/gy;
    let end = 0;
    for (let p = pair.exec(rest); p; p = pair.exec(rest)) {
      env[p[1]!] = p[2]!.startsWith('"') ? p[2]!.slice(1, -1).replace(/\\(.)/g, '$1') : p[2]!;
      end = pair.lastIndex;
    }
    if (end !== rest.length) throw new Error(`the Dockerfile's \`ENV ${rest}\` is not in KEY=value form from "${rest.slice(end)}"; the benches read the image's environment from it (tests/bench/image.ts)`);
  }
  return { env, nodeFlags: nodeFlagsOf(entrypoint) };
}

/** The flags between `node` and the script in an exec-form ENTRYPOINT, or why it cannot be read. */
function nodeFlagsOf(entrypoint: string | undefined): string[] {
  let argv: unknown;
  try {
    argv = entrypoint === undefined ? undefined : JSON.parse(entrypoint);
  } catch {
    argv = undefined;
  }
  if (!Array.isArray(argv) || argv[0] !== 'node' || argv.length < 2 || !argv.every((a) => typeof a === 'string')) {
    throw new Error(`the Dockerfile's runtime stage needs an ENTRYPOINT ["node", …flags, "<script>"] (exec form), not ${entrypoint === undefined ? 'none' : `\`${entrypoint}\``}; the benches start the server as it does (tests/bench/image.ts)`);
  }
  return argv.slice(1, -1) as string[];
}

/** The image's environment and node flags, as the benches run the bundle; `describe` says so in a line. */
export function imageProcess(): { env: NodeJS.ProcessEnv; nodeFlags: string[]; describe: string } {
  const { env: image, nodeFlags } = readImage(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
  const extra = process.env.PG_BENCH_HEAP;
  const heap = extra === 'host' ? [] : CONTAINER_HEAP;
  const nodeOptions = [...heap, image.NODE_OPTIONS ?? '', extra?.startsWith('--') ? extra : ''].filter(Boolean).join(' ');
  const env = { ...process.env, ...image, NODE_OPTIONS: nodeOptions };
  const shown = Object.entries({ ...image, NODE_OPTIONS: nodeOptions }).map(([k, v]) => `${k}=${/\s/.test(v) ? `'${v}'` : v}`);
  return { env, nodeFlags, describe: `${shown.join(' ')} node ${[...nodeFlags, MAIN].join(' ')}${extra === 'host' ? " (PG_BENCH_HEAP=host: the host's heap)" : ''}` };
}

/** `npm run build` (type-check, then bundle into dist/: scripts/build.ts), so a bench measures the current code as built; seconds taken. */
export function buildServer(): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) =>
    execFile('npm', ['run', 'build', '--silent'], { cwd: ROOT }, (err, stdout, stderr) =>
      err ? reject(new Error(`npm run build failed: ${`${stdout}${stderr}`.trim() || err.message}`)) : resolve((performance.now() - started) / 1000),
    ),
  );
}

/**
 * Start `node dist/policyguard.js <args>` as the image runs it (see {@link imageProcess}). Each
 * line it logs is passed to `onLine`; an exit other than 0 or by signal is printed with the
 * last lines, naming the process as `name`.
 */
export function spawnImageServer(name: string, args: string[], onLine: (line: string) => void = () => {}): ChildProcess {
  const { env, nodeFlags } = imageProcess();
  const child = spawn(process.execPath, [...nodeFlags, MAIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env });
  child.stderr!.setEncoding('utf8');
  let tail = '';
  child.stderr!.on('data', (d: string) => {
    tail = (tail + d).slice(-2000);
    for (const line of d.split('\n')) if (line.trim()) onLine(line.trim());
  });
  child.on('exit', (code) => {
    if (code !== 0 && code !== null) printInfo(`${name} exited with ${code}: ${tail.trim().split('\n').slice(-3).join(' | ')}`);
  });
  return child;
}

/**
 * `serve --standalone` over `configDir` as the image runs it, on a free loopback port, with no
 * per-caller rate limit; resolves once /readyz answers. A server that exits first, or is not
 * ready within 30 s, is an error (and is stopped).
 */
export async function startStandaloneImageServer(configDir: string, dataDir: string): Promise<{ child: ChildProcess; base: string }> {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const child = spawnImageServer('server', ['serve', '--standalone', '--config-dir', configDir, '--data-dir', dataDir, '--port', String(port), '--rate-limit', '0', '--log-level', 'warn']);
  const exited = new Promise<never>((_, reject) => child.once('exit', (code, signal) => reject(new Error(`the server exited (${code ?? signal}) before it was ready`))));
  exited.catch(() => undefined); // a normal exit later is not an error
  try {
    await Promise.race([waitFor('the server to be ready', 30_000, async () => (await fetch(`${base}/readyz`)).ok, 100), exited]);
  } catch (err) {
    await stopImageServer(child);
    throw err;
  }
  return { child, base };
}

/** Poll `check` every `everyMs` until it holds (a throw counts as not yet), or fail after `timeoutMs` naming `what`. */
export async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean>, everyMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Stop a server started by {@link spawnImageServer}: SIGTERM (it drains and flushes its audit
 * log) and wait for it to exit; one still running after `graceMs` is killed, and that is an error.
 */
export async function stopImageServer(child: ChildProcess, graceMs = 30_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const late = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), graceMs)))]);
  clearTimeout(timer);
  if (!late) return;
  child.kill('SIGKILL');
  await exited;
  throw new Error(`the server (pid ${child.pid}) was still running ${graceMs / 1000} s after SIGTERM and was killed`);
}
