/**
 * Token-bucket rate limiting, keyed (per caller at the HTTP edge, per agent for
 * `GuardAgent.spec.rateLimit`). Memory is bounded: the least recently used keys are forgotten
 * first, which can only make a limit more lenient, never block someone wrongly.
 */
import { parseDuration } from '../duration.js';

export type Take = { ok: true } | { ok: false; retryAfterMs: number };

interface Bucket {
  tokens: number;
  updated: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  /**
   * @param capacity requests allowed per window (also the burst size)
   * @param windowMs the window, e.g. 60_000 for "per minute"
   * @example new RateLimiter(60, 60_000).take('agent-1') // { ok: true }
   */
  constructor(
    private readonly capacity: number,
    private readonly windowMs: number,
    private readonly maxKeys = 100_000,
  ) {}

  /**
   * Whether `key` has a token left, without taking one: for budgets that are spent only when
   * something goes wrong (failed authentications per address).
   */
  peek(key: string, now = Date.now()): Take {
    const b = this.buckets.get(key);
    if (!b) return { ok: true };
    const rate = this.capacity / this.windowMs;
    const tokens = Math.min(this.capacity, b.tokens + (now - b.updated) * rate);
    return tokens >= 1 ? { ok: true } : { ok: false, retryAfterMs: Math.ceil((1 - tokens) / rate) };
  }

  take(key: string, now = Date.now()): Take {
    const rate = this.capacity / this.windowMs; // tokens per ms
    let b = this.buckets.get(key);
    if (b) {
      this.buckets.delete(key); // re-insert below: Map order = recency
      b.tokens = Math.min(this.capacity, b.tokens + (now - b.updated) * rate);
      b.updated = now;
    } else {
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
      b = { tokens: this.capacity, updated: now };
    }
    this.buckets.set(key, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterMs: Math.ceil((1 - b.tokens) / rate) };
  }
}

/** "60/1m" → { requests: 60, windowMs: 60_000 }; undefined when malformed. */
export function parseRate(spec: string): { requests: number; windowMs: number } | undefined {
  const m = /^(\d+)\/(.+)$/.exec(spec.trim());
  const requests = Number(m?.[1]);
  const windowMs = m ? parseDuration(m[2]!) : undefined;
  return requests > 0 && windowMs !== undefined && windowMs > 0 ? { requests, windowMs } : undefined;
}

/**
 * At most `running` tasks at once and `waiting` more queued; beyond that {@link run} refuses at
 * once. Bounds the work that expensive reads (audit queries over days of records) can make the
 * server do, whoever asks.
 *
 * @example const reads = new ConcurrencyLimit(2, 8); const r = await reads.run(() => scanAudit());
 */
export class ConcurrencyLimit {
  private active = 0;
  private readonly queue: Array<() => void> = [];

  constructor(
    private readonly running: number,
    private readonly waiting: number,
  ) {}

  /** Run `task` when a slot is free; `undefined` without running it when the queue is full. */
  async run<T>(task: () => Promise<T>): Promise<{ value: T } | undefined> {
    if (this.active >= this.running) {
      if (this.queue.length >= this.waiting) return undefined;
      await new Promise<void>((resolve) => this.queue.push(resolve));
    } else this.active++;
    try {
      return { value: await task() };
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.active--;
    }
  }
}
