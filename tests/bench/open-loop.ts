/**
 * Open-loop load: requests sent on a fixed schedule (`rate` per second, the i-th at start +
 * i/rate) whether or not earlier ones were answered, each latency measured from the request's
 * *intended* send time. A closed loop (autocannon's N connections, each waiting for its answer)
 * sends less when the server slows down and so hides the wait ("coordinated omission"); this
 * does not. The generator's own lag (actual minus intended send time) is reported beside the
 * figures.
 *
 * The generator is a small Go program (./open-loop-generator, standard library only), built
 * once into the cache like the test control plane: a Node generator's timers fire on a 1 ms
 * grid and its event loop parses answers between sends, which added ~0.6 ms at p50 and ~2 ms
 * at p99 to every figure, the size of the target itself (docs/performance.md, "Latency, open
 * loop"). Percentiles are taken here, with the other benches' {@link percentile}.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { checkGo, GO_INSTALL_HELP, goSourceHash, policyguardCacheDir, runGo } from '../controlplane/binary.js';
import { percentile } from './stats.js';

export interface OpenLoopSpec {
  url: string;
  headers: Record<string, string>;
  /** Sent in turn. */
  bodies: string[];
  /** Requests per second, offered whatever the server does. */
  rate: number;
  durationSec: number;
  /** Sent on the same schedule first, not measured. */
  warmupSec: number;
  /** Connections the generator may open (requests beyond them wait for a free one, and that wait counts). */
  maxSockets: number;
  /** A request unanswered this long after its intended send time is an error (default 10 s): a server that stops answering ends the run. */
  answerTimeoutSec?: number;
}

export interface OpenLoopResult {
  offered: number;
  /** Requests scheduled in the measured part. */
  scheduled: number;
  completed: number;
  non2xx: number;
  errors: number;
  /** Connections the generator opened. */
  connections: number;
  /** Milliseconds from the intended send time to the last byte of the answer. */
  p50: number;
  p99: number;
  p999: number;
  max: number;
  /** Milliseconds from the intended send time to the generator being ready to send: its own resolution. */
  lagP50: number;
  lagP99: number;
}

/** What the generator prints (`result` in its main.go). */
interface GeneratorOutput {
  /** Per measured request, in schedule order; -1 when it got no answer. */
  latenciesMs: number[];
  lagsMs: number[];
  non2xx: number;
  errors: number;
  connections: number;
}

const MODULE_DIR = fileURLToPath(new URL('./open-loop-generator/', import.meta.url));

/**
 * The cached generator binary, built from MODULE_DIR when its sources changed (keyed by their
 * hash); `log` hears about a build. Rejects, saying how to get Go, when it cannot be built.
 *
 * @example const bin = await generatorBinary((m) => console.error(m));
 */
export async function generatorBinary(log: (msg: string) => void = () => undefined): Promise<string> {
  const dir = policyguardCacheDir('bench', `open-loop-generator-${goSourceHash(MODULE_DIR)}`);
  const bin = join(dir, 'open-loop-generator');
  if (existsSync(bin)) return bin;
  const go = checkGo('bench', 'the open-loop load generator', GO_INSTALL_HELP);
  log(`building the open-loop load generator with ${go} into ${dir} (once; seconds)`);
  mkdirSync(dir, { recursive: true });
  const tmp = `${bin}.tmp-${process.pid}`;
  try {
    await runGo(['build', '-trimpath', '-o', tmp, '.'], { cwd: MODULE_DIR, env: { ...process.env, CGO_ENABLED: '0' } }, 'bench');
    renameSync(tmp, bin); // atomic within the cache directory
  } finally {
    rmSync(tmp, { force: true });
  }
  return bin;
}

const DEFAULT_ANSWER_TIMEOUT_SEC = 10;

/**
 * Runs the generator (its own process, so it never shares an event loop with the server), and
 * kills it if it outlives its schedule and the answer timeout by a minute.
 */
export async function runOpenLoop(spec: OpenLoopSpec): Promise<OpenLoopResult> {
  const bin = await generatorBinary();
  const full = { ...spec, answerTimeoutSec: spec.answerTimeoutSec ?? DEFAULT_ANSWER_TIMEOUT_SEC };
  const timeout = (full.warmupSec + full.durationSec + full.answerTimeoutSec + 60) * 1000;
  const { stdout } = await promisify(execFile)(bin, [JSON.stringify(full)], { maxBuffer: 256 * 1024 * 1024, timeout, killSignal: 'SIGKILL' }).catch((err: { killed?: boolean }) => {
    throw err.killed ? new Error(`the open-loop generator was still running after ${timeout / 1000} s (its schedule, the answer timeout and a minute) and was killed`) : err;
  });
  const out = JSON.parse(stdout) as GeneratorOutput;
  const answered = out.latenciesMs.filter((ms) => ms >= 0).sort((a, b) => a - b);
  const lags = [...out.lagsMs].sort((a, b) => a - b);
  return {
    offered: spec.rate,
    scheduled: out.latenciesMs.length,
    completed: answered.length,
    non2xx: out.non2xx,
    errors: out.errors,
    connections: out.connections,
    p50: percentile(answered, 50),
    p99: percentile(answered, 99),
    p999: percentile(answered, 99.9),
    max: answered.at(-1) ?? NaN,
    lagP50: percentile(lags, 50),
    lagP99: percentile(lags, 99),
  };
}
