import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../log.js';
import { requestContext, type RequestContext } from './request-context.js';
import { startTracing } from './tracing.js';

/** A loopback port nothing listens on: the exporter's connections are refused. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('startTracing', () => {
  it("reports a failed export without the trace and action ids of the request whose span started the batch", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger('info', (line) => lines.push(JSON.parse(line) as Record<string, unknown>), 'json');
    const tracer = startTracing({ endpoint: `http://127.0.0.1:${await closedPort()}`, instance: 'test', scheduledDelayMs: 10, log });
    await requestContext.run({ trace_id: 'a'.repeat(32), action_id: 'act_000000000001' } as RequestContext, async () => {
      tracer.startRequest('POST /mcp', undefined, {}).end();
    });
    for (let waited = 0; !lines.some((l) => l.msg === 'traces not exported; spans are dropped until the endpoint takes them') && waited < 30_000; waited += 50) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const warning = lines.find((l) => l.msg === 'traces not exported; spans are dropped until the endpoint takes them');
    expect(warning).toBeDefined();
    expect(warning).not.toHaveProperty('trace_id');
    expect(warning).not.toHaveProperty('action_id');
    await tracer.shutdown();
  }, 40_000);
});
