/**
 * Hostile input, property-based (fast-check): arbitrary JSON, deep nesting, huge strings,
 * invalid UTF-8 and pathological globs, thrown at the engine and at /mcp over real HTTP.
 * The process stays up, memory stays bounded, every response is a well-formed error or
 * result, and the audit chain still verifies afterwards.
 */
import { request } from 'node:http';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guardAgent, guardPolicy } from '../../src/api/builders.js';
import { verifyAuditChain } from '../../src/audit/verify.js';
import { PolicySnapshot } from '../../src/engine/snapshot.js';
import { DEFAULT_ENGINE_OPTIONS } from '../../src/engine/types.js';
import { SEED_FIXTURE, startTestServer, type TestServer } from './harness.js';

let s: TestServer;
let heapAtStart = 0;
beforeAll(async () => {
  s = await startTestServer(SEED_FIXTURE, ['--rate-limit', '0']);
  heapAtStart = process.memoryUsage().heapUsed;
});
afterAll(async () => {
  await s?.close();
});

/** POST raw bytes to /mcp; resolves with status and parsed body (or the raw text). */
function post(body: Buffer | string, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const url = new URL(`${s.pg.url}/mcp`);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: '/mcp', method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // kept as text: the assertion below reports it
          }
          resolve({ status: res.statusCode!, body: parsed });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** A response is well-formed when it is JSON-RPC: a result, or an error with a code and message. */
function assertWellFormed(r: { status: number; body: any }): void {
  expect([200, 202, 400, 406, 413, 415], `status ${r.status}: ${JSON.stringify(r.body).slice(0, 200)}`).toContain(r.status);
  if (r.status === 202) return; // a notification: no body
  expect(r.body, JSON.stringify(r.body).slice(0, 300)).toMatchObject({ jsonrpc: '2.0' });
  if ('error' in r.body) {
    expect(typeof r.body.error.code).toBe('number');
    expect(typeof r.body.error.message).toBe('string');
  } else {
    expect(r.body).toHaveProperty('result');
  }
}

const toolCall = (name: string, args: unknown) => JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args } });

/** validate_action whose parameters nest `depth` objects deep (built as text: JSON.stringify would recurse). */
const deepCall = (depth: number) =>
  `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"validate_action","arguments":{"action_type":"x","target":"y","agent_id":"test-low","parameters":${'{"a":'.repeat(depth)}"bottom"${'}'.repeat(depth)}}}}`;

describe('hostile input at /mcp', () => {
  it('arbitrary JSON bodies get well-formed answers', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue(), async (v) => assertWellFormed(await post(JSON.stringify(v)))),
      { numRuns: 150 },
    );
  });

  it('arbitrary arguments to every tool get a result or a specific error', async () => {
    const tools = ['validate_action', 'register_agent', 'create_policy', 'get_audit_log', 'get_compliance_status', 'report_incident'];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...tools), fc.dictionary(fc.string(), fc.jsonValue()), async (tool, args) => {
        const r = await post(toolCall(tool, args));
        assertWellFormed(r);
        if (r.body.result?.isError) expect(r.body.result.content[0].text.length).toBeGreaterThan(0);
      }),
      { numRuns: 150 },
    );
  });

  it('plausible-but-wrong validate_action arguments never crash and are always audited or refused', async () => {
    const arb = fc.record(
      {
        action_type: fc.oneof(fc.string(), fc.integer(), fc.constant(null)),
        target: fc.oneof(fc.string({ maxLength: 300 }), fc.constant('*'.repeat(100)), fc.constant('\u0000\uffff')),
        agent_id: fc.oneof(fc.string(), fc.constant('test-low')),
        parameters: fc.oneof(fc.string(), fc.jsonValue(), fc.constant('{"password": "hunter2"}')),
        context: fc.string(),
      },
      { requiredKeys: [] },
    );
    await fc.assert(fc.asyncProperty(arb, async (args) => assertWellFormed(await post(toolCall('validate_action', args)))), { numRuns: 200 });
  });

  it('deep nesting, huge strings and invalid UTF-8', async () => {
    for (const depth of [100, 5_000, 100_000]) {
      const r = await post(deepCall(depth));
      expect(r).toEqual({ status: 400, body: { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request: the JSON nests deeper than 64 levels' } } });
    }
    // 4 levels of message around the parameters: 60 levels of them are decided.
    expect((await post(deepCall(60))).body.result.structuredContent).toMatchObject({ decision: expect.any(String) });
    assertWellFormed(await post(toolCall('validate_action', { action_type: 'x', target: 'y'.repeat(900_000), agent_id: 'test-low' })));
    assertWellFormed(await post(toolCall('validate_action', { action_type: 'x', target: 'y', agent_id: 'test-low', context: 'z'.repeat(900_000) })));
    const bad = Buffer.concat([Buffer.from('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"validate_action","arguments":{"target":"'), Buffer.from([0xff, 0xfe, 0xc3, 0x28]), Buffer.from('","action_type":"x","agent_id":"test-low"}}}')]);
    assertWellFormed(await post(bad));
    assertWellFormed(await post(Buffer.from([0x7b, 0xff, 0xff, 0x7d])));
    assertWellFormed(await post('['.repeat(200_000) + ']'.repeat(200_000)));
  });

  it('a number parsing would change is refused, not decided on (or forwarded) changed', async () => {
    for (const n of ['1234567890123456789', '-9007199254740993', '9007199254740993.0', '900719925474099.3e1', '9.1e15', '1e23', '1e300', '1e400', '1e-400', '500.00000000000001']) {
      const r = await post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"validate_action","arguments":{"action_type":"x","target":"y","agent_id":"test-low","parameters":{"id":${n}}}}}`);
      expect(r).toEqual({ status: 400, body: { jsonrpc: '2.0', id: null, error: { code: -32600, message: `Invalid Request: the number ${n} cannot be kept exactly (JSON numbers here are IEEE doubles: integers up to ±2^53, about 16 significant digits); send it as a string` } } });
    }
    // Long digit runs in strings, exact integers and decimals that read back as written pass.
    for (const ok of ['"12345678901234567890"', '9007199254740991', '0.30000000000000004', '1e15', '1.5e-30', '150.0']) {
      const r = await post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"validate_action","arguments":{"action_type":"x","target":"y","agent_id":"test-low","parameters":{"id":${ok}}}}}`);
      expect(r.body.result.structuredContent, ok).toMatchObject({ decision: expect.any(String) });
    }
  });

  it('a body that is not in the Content-Encoding it claims is a parse error of the caller, not an internal error', async () => {
    const r = await post('{"jsonrpc":"2.0","id":1,"method":"tools/list"}', { 'content-encoding': 'gzip' });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ jsonrpc: '2.0', id: null, error: { code: -32700, message: expect.stringMatching(/^Parse error: the body could not be read as sent \(.+\)$/) } });
  });

  it('an object key "__proto__" is refused, not dropped unseen from what is decided, digested and audited', async () => {
    const body = (parameters: string) => `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"validate_action","arguments":{"action_type":"x","target":"y","agent_id":"test-low","parameters":${parameters}}}}`;
    const message = 'the JSON has an object key "__proto__", which tools written in JavaScript can take as the object\'s prototype and which PolicyGuard could neither judge nor record; rename the key';
    for (const parameters of ['{"amount":900,"__proto__":{"amount":1}}', '{"\\u005f_proto__":{}}']) {
      expect(await post(body(parameters))).toEqual({ status: 400, body: { jsonrpc: '2.0', id: null, error: { code: -32600, message: `Invalid Request: ${message}` } } });
    }
    const inString = await post(toolCall('validate_action', { action_type: 'x', target: 'y', agent_id: 'test-low', parameters: '{"amount":900,"__proto__":{}}' }));
    expect(inString.body.result).toMatchObject({ isError: true, content: [{ text: `parameters: ${message}` }] });
  });

  it('JSON text inside an argument gets the same limits: too deep or an inexact number is a specific error', async () => {
    const call = (parameters: string) => post(toolCall('validate_action', { action_type: 'x', target: 'y', agent_id: 'test-low', parameters }));
    const deep = await call(`${'{"a":'.repeat(100)}1${'}'.repeat(100)}`);
    expect(deep.body.result).toMatchObject({ isError: true, content: [{ text: 'parameters: the JSON nests deeper than 64 levels' }] });
    const inexact = await call('{"id":1234567890123456789}');
    expect(inexact.body.result.content[0].text).toBe('parameters: the number 1234567890123456789 cannot be kept exactly (JSON numbers here are IEEE doubles: integers up to ±2^53, about 16 significant digits); send it as a string');
  });

  it('pathological globs are refused by create_policy without hanging', async () => {
    for (const pattern of ['*'.repeat(50) + 'x', '+(a|b)*(c|d)', '{a,b}{c,d}{e,f}', '!(x)', 'a'.repeat(300)]) {
      const r = await post(toolCall('create_policy', { policy_id: 'evil', name: 'evil', rules: [{ match: { tools: [pattern] }, action: 'deny' }] }));
      assertWellFormed(r);
      expect(r.body.result.structuredContent?.success ?? false, pattern).toBe(false);
    }
  });

  it('get_audit_log answers at most 8 MiB of entries, saying how many it left out: large records cannot make it hold them all', async () => {
    // Twelve decisions of ~900 KB of arguments each: 1,000 of them in one answer ran the server out of memory.
    const blob = 'b'.repeat(900_000);
    for (let i = 0; i < 12; i++) {
      const r = await post(toolCall('validate_action', { action_type: 'bulk_import', target: 'import_rows', agent_id: 'test-low', parameters: JSON.stringify({ i, blob }) }));
      expect(r.body.result.structuredContent, `call ${i}`).toMatchObject({ decision: expect.any(String) });
    }
    const read = await post(toolCall('get_audit_log', { action_type: 'bulk_import', limit: 1000 }));
    const answer = read.body.result.structuredContent;
    expect(answer.total).toBe(12);
    expect(answer.count).toBeGreaterThan(0);
    expect(answer.count).toBeLessThan(10);
    expect(answer.entries.map((e: { action: { parameters: { i: number } } }) => e.action.parameters.i)).toEqual([11, 10, 9, 8, 7, 6, 5, 4, 3].slice(0, answer.count));
    expect(answer.note).toBe(`${12 - answer.count} more entries within the limit were left out: an answer holds at most 8 MiB of entries; ask for fewer, a shorter time_range or narrower filters`);
  });

  it('the server is still healthy, memory is bounded, and the audit chain verifies', async () => {
    expect((await fetch(`${s.pg.url}/healthz`)).status).toBe(200);
    const ok = await post(toolCall('validate_action', { action_type: 'tool_call', target: 'read_data', agent_id: 'test-low' }));
    expect(ok.body.result.structuredContent.allowed).toBe(true);
    // The server runs in this process: whatever the hostile requests left behind shows here.
    const grownMb = (process.memoryUsage().heapUsed - heapAtStart) / 1024 / 1024;
    process.stderr.write(`[hostile] heap grew by ${grownMb.toFixed(1)} MB over the hostile runs\n`);
    expect(grownMb).toBeLessThan(256);
    await s.restart(); // flush
    const verdict = await verifyAuditChain(join(s.dataDir, 'audit'));
    expect(verdict).toMatchObject({ ok: true });
    expect((verdict as { records: number }).records).toBeGreaterThan(0);
  });
});

describe('hostile input to the engine', () => {
  it('any pattern either compiles or is reported as a problem naming it, and evaluation never throws', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ minLength: 1, maxLength: 40 }), { minLength: 1, maxLength: 5 }), fc.string(), fc.jsonValue(), (patterns, target, params) => {
        const policy = guardPolicy({ name: 'p' }, { rules: [{ match: { tools: patterns, arguments: [{ path: 'a.b', operator: 'Glob', values: patterns }] }, action: 'deny' }] });
        const snap = PolicySnapshot.compile({ agents: [guardAgent({ name: 'x' })], policies: [policy] }, DEFAULT_ENGINE_OPTIONS);
        for (const p of snap.problems) expect(patterns.some((pat) => p.message.includes(JSON.stringify(pat)))).toBe(true);
        const d = snap.evaluate({ agentId: 'x', actionType: 'tool_call', target, parameters: { a: { b: params } } as Record<string, unknown> });
        expect(['allow', 'deny', 'require_approval']).toContain(d.decision);
      }),
      { numRuns: 500 },
    );
  });
});
