/**
 * Timing helpers for in-process benchmarks: batch-timed loops with process.hrtime.bigint,
 * percentiles, and a forced GC for heap figures.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** The p-th percentile (0..100) of `sorted` (ascending), nearest rank. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export interface Timing {
  /** Nanoseconds per call, one sample per batch, ascending. */
  samples: Float64Array;
  /** Calls per timed batch. */
  batch: number;
  p50: number;
  p99: number;
  mean: number;
}

/** Cost of one `hrtime.bigint()` pair, subtracted from every batch. */
let timerOverheadNs: number | undefined;
function timerOverhead(): number {
  if (timerOverheadNs !== undefined) return timerOverheadNs;
  const n = 20_000;
  const s = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    s[i] = Number(process.hrtime.bigint() - t0);
  }
  s.sort();
  timerOverheadNs = percentile(s, 50);
  return timerOverheadNs;
}

/** Keeps results alive so the JIT cannot drop the calls being measured. */
export let blackhole: unknown;

export interface MeasureOptions {
  /** Stop after this much measuring (default 1.5 s). */
  budgetMs?: number;
  /** At most this many batches (default 200 000). */
  maxBatches?: number;
  /** A batch lasts about this long (default 2 µs): long enough to hide the timer, short enough to keep a per-call tail. */
  batchNs?: number;
  /** Warm-up before measuring (default 300 ms). */
  warmupMs?: number;
}

/**
 * Time `fn(inputs[i])` over the inputs in turn. Calls are timed in small batches (sized so a
 * batch takes about `batchNs`), the timer's own cost is subtracted, and each batch gives one
 * per-call sample. A slow function gets a batch of 1, i.e. every call is timed on its own.
 */
export function measure<I>(fn: (input: I) => unknown, inputs: readonly I[], opts: MeasureOptions = {}): Timing {
  const budgetNs = BigInt(Math.round((opts.budgetMs ?? 1500) * 1e6));
  const warmupNs = BigInt(Math.round((opts.warmupMs ?? 300) * 1e6));
  const maxBatches = opts.maxBatches ?? 200_000;
  const overhead = timerOverhead();
  let k = 0;
  const n = inputs.length;

  // Warm up and estimate the cost of one call.
  let calls = 0;
  const w0 = process.hrtime.bigint();
  let now: bigint;
  do {
    for (let j = 0; j < 16; j++) blackhole = fn(inputs[k++ % n]!);
    calls += 16;
    now = process.hrtime.bigint();
  } while (now - w0 < warmupNs && calls < 5_000_000);
  const perCall = Number(now - w0) / calls;
  const batch = Math.max(1, Math.min(10_000, Math.round((opts.batchNs ?? 2000) / perCall)));

  const samples: number[] = [];
  const start = process.hrtime.bigint();
  let last = start;
  while (samples.length < maxBatches && last - start < budgetNs) {
    const t0 = process.hrtime.bigint();
    for (let j = 0; j < batch; j++) blackhole = fn(inputs[k++ % n]!);
    last = process.hrtime.bigint();
    samples.push(Math.max(0, Number(last - t0) - overhead) / batch);
  }
  const sorted = Float64Array.from(samples).sort();
  let sum = 0;
  for (const s of sorted) sum += s;
  return { samples: sorted, batch, p50: percentile(sorted, 50), p99: percentile(sorted, 99), mean: sum / sorted.length };
}

/**
 * {@link measure} several times and keep the round with the lowest p99 (its p50 with it). On a
 * shared machine a round can be hit by other processes taking the CPU; the quietest round is
 * the best estimate of what the code itself costs. `rounds` is reported with the result.
 */
export function measureBestOf<I>(rounds: number, fn: (input: I) => unknown, inputs: readonly I[], opts: MeasureOptions = {}): Timing & { rounds: number } {
  let best: Timing | undefined;
  for (let i = 0; i < rounds; i++) {
    const t = measure(fn, inputs, { ...opts, warmupMs: i === 0 ? opts.warmupMs : 50 });
    if (!best || t.p99 < best.p99) best = t;
  }
  return { ...best!, rounds };
}

let gcFn: (() => void) | undefined;
/** A full GC, even without --expose-gc (the flag is switched on at run time). */
export function gc(): void {
  if (!gcFn) {
    setFlagsFromString('--expose-gc');
    gcFn = runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
}

/** Heap in use after a full GC, in bytes. */
export function heapUsedAfterGc(): number {
  gc();
  return process.memoryUsage().heapUsed;
}
