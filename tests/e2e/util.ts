// Small helpers of the end-to-end harness: progress with elapsed times, running commands, waiting
// with a bound. See docs/e2e.md.

import { spawn } from 'node:child_process';

const started = Date.now();

/** Seconds since the harness started, for progress lines. */
const elapsed = (): string => `${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s`;

/**
 * A progress line on stderr, with the seconds since the harness started.
 *
 * @example note('cluster up'); // [e2e   35s] cluster up
 */
export function note(message: string): void {
  process.stderr.write(`[e2e ${elapsed()}] ${message}\n`);
}

/**
 * Runs one slow step, saying when it starts and how long it took; while it runs, a line every
 * 30 s says it is still going.
 *
 * @example const image = await step('buildah bud (the Dockerfile)', () => buildImage());
 */
export async function step<T>(what: string, fn: () => Promise<T>): Promise<T> {
  const t0 = Date.now();
  note(`${what}…`);
  const ticker = setInterval(() => note(`  still ${what}… ${Math.round((Date.now() - t0) / 1000)}s`), 30_000);
  try {
    const result = await fn();
    note(`${what}: done in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    return result;
  } finally {
    clearInterval(ticker);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Resolve with a non-zero exit instead of throwing. */
  allowFailure?: boolean;
  /** Kill the command after this long (default 30 minutes: builds are slow on 2 cores). */
  timeoutMs?: number;
}

/**
 * Runs a command to completion and returns its output; throws with the last lines of its output
 * when it exits non-zero (unless `allowFailure`).
 *
 * @example const { stdout } = await run('ip', ['-j', 'link', 'show']);
 */
export function run(command: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30 * 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${command}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0 && !opts.allowFailure) {
        const out = `${stdout}\n${stderr}`.trim().split('\n').slice(-30).join('\n');
        reject(new Error(`\`${command} ${args.join(' ')}\` failed (exit ${code}):\n${out}`));
      } else resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => {}); // a command that does not read its input
    child.stdin.end(opts.input ?? '');
  });
}

/**
 * Polls `probe` every `intervalMs` until it returns a value other than undefined; throws after
 * `timeoutMs` with `what` and the last thing the probe said (its error, or `describe()`).
 *
 * @example const ip = await waitUntil('the Pod IP', 60_000, async () => (await getPod()).status?.podIP);
 */
export async function waitUntil<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
  opts: { intervalMs?: number; describe?: () => Promise<string> | string } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > deadline) {
      const state = opts.describe ? await Promise.resolve(opts.describe()).catch((e: unknown) => String(e)) : '';
      throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}${last ? ` (last error: ${last})` : ''}${state ? `\n${state}` : ''}`);
    }
    await sleep(opts.intervalMs ?? 1000);
  }
}
