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

/** Run the load generator in a child process on this project's Node (never in the server's event loop). */
export function loadInChild(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((ok, fail) => {
    execFile(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), JSON.stringify(spec)], { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) return fail(new Error(`load generator failed: ${stderr || err.message}`));
      ok(JSON.parse(stdout) as LoadResult);
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  runLoad(JSON.parse(process.argv[2]!) as LoadSpec).then(
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
