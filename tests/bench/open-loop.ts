/**
 * An open-loop load generator: requests are sent on a fixed schedule (`rate` per second, the
 * i-th at start + i/rate) whether or not earlier ones were answered, over node:http keep-alive
 * agents, and each latency is measured from the request's *intended* send time. A closed loop
 * (autocannon's N connections, each waiting for its answer) sends less when the server slows
 * down and so hides the wait ("coordinated omission"); this does not. The generator's own lag
 * (actual minus intended send time, from timer granularity) is reported beside the figures.
 * Run as its own process: `node --import tsx tests/bench/open-loop.ts '<json OpenLoopSpec>'`
 * prints one JSON OpenLoopResult.
 */
import { Agent, request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { childMain, inChild } from './load.js';
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
  /** Sockets the agent may open (requests beyond them queue in the generator, and that wait counts). */
  maxSockets: number;
}

export interface OpenLoopResult {
  offered: number;
  /** Requests scheduled in the measured part. */
  scheduled: number;
  completed: number;
  non2xx: number;
  errors: number;
  /** Milliseconds from the intended send time to the last byte of the answer. */
  p50: number;
  p99: number;
  p999: number;
  max: number;
  /** Milliseconds from the intended to the actual send: the generator's own resolution. */
  lagP50: number;
  lagP99: number;
}

export function runOpenLoop(spec: OpenLoopSpec): Promise<OpenLoopResult> {
  const url = new URL(spec.url);
  const agent = new Agent({ keepAlive: true, maxSockets: spec.maxSockets });
  const bodies = spec.bodies.map((b) => Buffer.from(b));
  const total = Math.round(spec.rate * (spec.warmupSec + spec.durationSec));
  const warm = Math.round(spec.rate * spec.warmupSec);
  const latencies = new Float64Array(total - warm).fill(NaN);
  const lags = new Float64Array(total - warm);
  const interval = 1000 / spec.rate;
  let sent = 0;
  let done = 0;
  let non2xx = 0;
  let errors = 0;
  const start = performance.now() + 50;

  return new Promise((resolveRun) => {
    const finish = () => {
      agent.destroy();
      const measured = Array.from(latencies).filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
      const lagSorted = Array.from(lags).sort((a, b) => a - b);
      resolveRun({
        offered: spec.rate,
        scheduled: total - warm,
        completed: measured.length,
        non2xx,
        errors,
        p50: percentile(measured, 50),
        p99: percentile(measured, 99),
        p999: percentile(measured, 99.9),
        max: measured.at(-1) ?? NaN,
        lagP50: percentile(lagSorted, 50),
        lagP99: percentile(lagSorted, 99),
      });
    };
    const send = (i: number, intended: number) => {
      const body = bodies[i % bodies.length]!;
      const req = request(
        { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', agent, headers: { ...spec.headers, 'content-length': body.length } },
        (res) => {
          res.on('data', () => {});
          res.on('end', () => {
            if (i >= warm) {
              latencies[i - warm] = performance.now() - intended;
              if (res.statusCode! < 200 || res.statusCode! >= 300) non2xx++;
            }
            if (++done === total) finish();
          });
        },
      );
      req.on('error', () => {
        if (i >= warm) errors++;
        if (++done === total) finish();
      });
      req.end(body);
    };
    const tick = () => {
      const now = performance.now();
      while (sent < total && start + sent * interval <= now) {
        const intended = start + sent * interval;
        if (sent >= warm) lags[sent - warm] = now - intended;
        send(sent, intended);
        sent++;
      }
      if (sent < total) setTimeout(tick, Math.max(0, start + sent * interval - performance.now()));
    };
    setTimeout(tick, 50);
  });
}

/** {@link runOpenLoop} in a child process. */
export const openLoopInChild = (spec: OpenLoopSpec): Promise<OpenLoopResult> => inChild(fileURLToPath(import.meta.url), spec);

childMain(import.meta.url, runOpenLoop);
