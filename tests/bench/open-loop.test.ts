/**
 * The open-loop generator of `npm run bench -- latency` against node:http servers on loopback
 * that behave in known ways. Only lower bounds on latencies are asserted: a slow machine can
 * only make them larger.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runOpenLoop, type OpenLoopSpec } from './open-loop.js';

let server: Server | undefined;

async function serve(handler: (req: IncomingMessage, body: string, res: ServerResponse) => void): Promise<string> {
  server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => handler(req, body, res));
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
}

afterEach(async () => {
  const running = server;
  server = undefined;
  if (!running) return;
  running.closeAllConnections();
  await new Promise((resolve) => running.close(resolve));
});

const spec = (url: string, over: Partial<OpenLoopSpec> = {}): OpenLoopSpec => ({
  url,
  headers: { 'content-type': 'application/json', 'x-check': 'yes' },
  bodies: ['{"n":1}'],
  rate: 500,
  durationSec: 0.8,
  warmupSec: 0.2,
  maxSockets: 16,
  ...over,
});

describe('open-loop generator', () => {
  beforeAll(async () => {
    // The first run builds the generator (seconds; cached afterwards).
    await runOpenLoop(spec(await serve((_req, _body, res) => res.end('ok')), { durationSec: 0.05, warmupSec: 0 }));
  }, 120_000);

  it('sends each body in turn with the headers given, and counts answers, non-2xx and connections', async () => {
    const seen = new Map<string, number>();
    const url = await serve((req, body, res) => {
      seen.set(body, (seen.get(body) ?? 0) + 1);
      const right = req.method === 'POST' && req.url === '/mcp' && req.headers['content-type'] === 'application/json' && req.headers['x-check'] === 'yes';
      res.statusCode = !right ? 400 : body === '"bad"' ? 500 : 200;
      res.end('answer');
    });
    const r = await runOpenLoop(spec(url, { bodies: ['"good"', '"bad"'] }));
    // 500/s for 0.2 + 0.8 s: 500 requests, 400 of them measured.
    expect([...seen.entries()].sort()).toEqual([['"bad"', 250], ['"good"', 250]]);
    expect(r).toMatchObject({ offered: 500, scheduled: 400, completed: 400, non2xx: 200, errors: 0 });
    expect(r.connections).toBeGreaterThanOrEqual(1);
    expect(r.connections).toBeLessThanOrEqual(16);
    expect(r.p50).toBeGreaterThan(0);
    expect(r.lagP50).toBeGreaterThanOrEqual(0);
  });

  it('measures from the intended send time: every request scheduled while the server stalls shows the stall', async () => {
    let count = 0;
    const url = await serve((_req, _body, res) => {
      // The 300th request (after warm-up) holds the event loop for 80 ms, as a long GC would.
      if (++count === 300) {
        const until = performance.now() + 80;
        while (performance.now() < until);
      }
      res.end('ok');
    });
    // Four connections: a closed loop over them would record at most four long waits.
    const r = await runOpenLoop(spec(url, { maxSockets: 4 }));
    expect(r.completed).toBe(400);
    // At 500/s, the ~20 requests scheduled in the stall's first 40 ms each waited at least 40 ms:
    // 5% of the 400, so the p99 shows it. A closed loop over four connections would have waited
    // for four of them and sent the rest after the stall, leaving p99 short of 40 ms.
    expect(r.p99).toBeGreaterThanOrEqual(40);
  });

  it('counts a request whose connection the server drops as an error, opens a new one and goes on', async () => {
    const url = await serve((req, body, res) => {
      if (body === '"drop"') req.socket.destroy();
      else res.end('ok');
    });
    const r = await runOpenLoop(spec(url, { bodies: ['"a"', '"b"', '"c"', '"drop"'] }));
    expect(r).toMatchObject({ scheduled: 400, completed: 300, errors: 100, non2xx: 0 });
    expect(r.connections).toBeGreaterThanOrEqual(100);
  });

  it('waits for a connection to close as well as to become idle: a server that closes each one after its answer, one socket', async () => {
    const url = await serve((_req, _body, res) => {
      res.setHeader('connection', 'close');
      setTimeout(() => res.end('ok'), 5);
    });
    const r = await runOpenLoop(spec(url, { maxSockets: 1 }));
    expect(r).toMatchObject({ scheduled: 400, completed: 400, errors: 0, connections: 500 });
  });

  it('counts a request the server never answers as an error once the answer timeout passes, and ends', async () => {
    const url = await serve((_req, body, res) => {
      if (body !== '"silent"') res.end('ok');
    });
    const r = await runOpenLoop(spec(url, { bodies: ['"a"', '"silent"'], answerTimeoutSec: 0.5 }));
    expect(r).toMatchObject({ scheduled: 400, completed: 200, errors: 200, non2xx: 0 });
  });

  it('refuses a spec it cannot run, saying why', async () => {
    await expect(runOpenLoop(spec('https://127.0.0.1:1/mcp'))).rejects.toThrow(/url must be http:\/\/host:port\/path, got "https:\/\/127.0.0.1:1\/mcp"/);
    await expect(runOpenLoop(spec('http://127.0.0.1:1/mcp', { rate: 0 }))).rejects.toThrow(/rate, durationSec, maxSockets and answerTimeoutSec must be positive/);
  });
});
