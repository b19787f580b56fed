/**
 * The load generator, run as its own process so it never shares an event loop with the server
 * under test: `node --import tsx tests/bench/load.ts '<json LoadSpec>'` prints one JSON
 * LoadResult on stdout. autocannon cycles through `bodies` on every connection.
 */
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

export interface LoadSpec {
  url: string;
  connections: number;
  durationSec: number;
  headers: Record<string, string>;
  bodies: string[];
}

export interface LoadResult {
  requestsPerSec: number;
  /** Milliseconds. */
  p50: number;
  p99: number;
  max: number;
  /** Responses received (2xx and others). */
  completed: number;
  non2xx: number;
  errors: number;
  timeouts: number;
}

export function runLoad(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url: spec.url,
        connections: spec.connections,
        duration: spec.durationSec,
        requests: spec.bodies.map((body) => ({ method: 'POST', headers: spec.headers, body })),
      },
      (err, r) => {
        if (err) return reject(err);
        resolve({
          requestsPerSec: r.requests.average,
          p50: r.latency.p50,
          p99: r.latency.p99,
          max: r.latency.max,
          completed: r.requests.total,
          non2xx: r.non2xx,
          errors: r.errors,
          timeouts: r.timeouts,
        });
      },
    );
  });
}

/**
 * Run a load generator module (`file`, whose main takes one JSON argument and prints one JSON
 * result) in a child process on this project's Node, never in the server's event loop.
 */
export function inChild<T>(file: string, spec: unknown): Promise<T> {
  return new Promise((ok, fail) => {
    execFile(process.execPath, ['--import', 'tsx', file, JSON.stringify(spec)], { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) return fail(new Error(`load generator failed: ${stderr || err.message}`));
      ok(JSON.parse(stdout) as T);
    });
  });
}

/** {@link runLoad} in a child process. */
export const loadInChild = (spec: LoadSpec): Promise<LoadResult> => inChild(fileURLToPath(import.meta.url), spec);

/**
 * The child side of {@link inChild}: when `moduleUrl` is the script Node was started with, run
 * `run` on the spec in argv[2], print its result as JSON and exit.
 */
export function childMain<S, T>(moduleUrl: string, run: (spec: S) => Promise<T>): void {
  if (!process.argv[1] || resolve(process.argv[1]) !== fileURLToPath(moduleUrl)) return;
  run(JSON.parse(process.argv[2]!) as S).then(
    (r) => {
      process.stdout.write(JSON.stringify(r) + '\n');
      process.exit(0);
    },
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}

childMain(import.meta.url, runLoad);
