/**
 * The HTTP edge with real requests on loopback: health endpoints, metrics, JSON-RPC errors,
 * body limits, and specific errors for bad tool input.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SEED_FIXTURE, startTestServer, type TestServer } from './harness.js';

let s: TestServer;
beforeAll(async () => {
  s = await startTestServer(SEED_FIXTURE);
});
afterAll(async () => {
  await s?.close();
});

const post = (body: string, headers: Record<string, string> = {}) =>
  fetch(`${s.pg.url}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body,
  });

describe('health and metrics', () => {
  it('/healthz and /readyz answer ok', async () => {
    for (const path of ['/healthz', '/readyz']) {
      const r = await fetch(`${s.pg.url}${path}`);
      expect(r.status, path).toBe(200);
      expect(await r.text()).toBe('ok');
    }
  });
  it('/metrics counts decisions by outcome in Prometheus text format', async () => {
    await s.call('validate_action', { action_type: 'tool_call', target: 'delete_x', agent_id: 'test-low' });
    const text = await fetch(`${s.pg.url}/metrics`).then((r) => r.text());
    expect(text).toMatch(/^# TYPE policyguard_decisions_total counter$/m);
    expect(text).toMatch(/^policyguard_decisions_total\{decision="deny"\} [1-9]\d*$/m);
    expect(text).toMatch(/^policyguard_audit_dropped_records 0$/m);
  });
});

describe('JSON-RPC edge', () => {
  it('GET /mcp is 405: the server is stateless', async () => {
    const r = await fetch(`${s.pg.url}/mcp`, { headers: { accept: 'text/event-stream' } });
    expect(r.status).toBe(405);
    expect(((await r.json()) as any).error.message).toMatch(/stateless/);
  });
  it('malformed JSON is a -32700 parse error', async () => {
    const r = await post('{"jsonrpc": "2.0", ');
    expect(r.status).toBe(400);
    expect(((await r.json()) as any).error.code).toBe(-32700);
  });
  it('a 2 MB body is refused with 413', async () => {
    const big = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'validate_action', arguments: { context: 'x'.repeat(2 * 1024 * 1024) } } });
    const r = await post(big);
    expect(r.status).toBe(413);
    expect(((await r.json()) as any).error.message).toMatch(/too large/);
  });
});

describe('bad tool input gets a specific error, never a crash', () => {
  it('parameters that are not JSON', async () => {
    const r = await s.call('validate_action', { action_type: 'tool_call', target: 'x', agent_id: 'test-low', parameters: '{not json' });
    expect(r.isError).toBe(true);
    expect(r.json).toMatch(/parameters is not valid JSON/);
  });
  it('parameters given as a real object are accepted', async () => {
    const r = await s.call('validate_action', { action_type: 'tool_call', target: 'x', agent_id: 'test-low', parameters: { table: 'users' } });
    expect(r.isError).toBe(false);
  });
  it('a missing required argument names it', async () => {
    const r = await s.call('validate_action', { action_type: 'tool_call', agent_id: 'test-low' });
    expect(r.isError).toBe(true);
    expect(r.json).toMatch(/target/);
  });
  it('an unknown argument (a typo) is an input error naming the arguments the tool takes', async () => {
    const r = await s.call('validate_action', { action_type: 'tool_call', target: 'issue_refund', agent_id: 'test-low', params: { amount: 900 } });
    expect(r.isError).toBe(true);
    // SDK v2 words input errors without the v1 prefix "MCP error -32602: ".
    expect(r.json).toBe('Input validation error: Invalid arguments for tool validate_action: unknown argument "params"; this tool takes: action_type, target, agent_id, parameters, context, approval_id');
    const listed = await s.client.listTools();
    expect(listed.tools.find((t) => t.name === 'validate_action')!.inputSchema).toMatchObject({ additionalProperties: false });
  });
  it('an unknown tool', async () => {
    const r = await s.client.callTool({ name: 'rm_rf', arguments: {} }).catch((e: Error) => ({ isError: true, content: [{ type: 'text', text: e.message }] }));
    expect(r.isError).toBe(true);
    expect(JSON.stringify(r.content)).toMatch(/rm_rf not found/);
  });
  it('an unsafe glob in create_policy is refused before anything is written', async () => {
    const r = await s.call('create_policy', { policy_id: 'redos', name: 'x', rules: [{ match: { tools: ['*a*a*a*a*a*a*a*a*a*'] }, action: 'deny' }] });
    expect(r.json.success).toBe(false);
    expect(r.json.message).toMatch(/at most 8 are allowed/);
    const status = await s.call('get_compliance_status');
    expect(status.json.policies.list.map((p: { id: string }) => p.id)).not.toContain('redos');
  });
  it('a malformed time_range and status', async () => {
    expect((await s.call('get_audit_log', { time_range: 'forever' })).json).toMatch(/time_range "forever" is not understood/);
    expect((await s.call('get_audit_log', { status: 'maybe' })).json).toMatch(/status "maybe"/);
  });
  it('an unknown severity; an unknown incident type is filed under "other"', async () => {
    expect((await s.call('report_incident', { incident_type: 'x', severity: 'apocalyptic', description: 'd' })).json).toMatch(/severity "apocalyptic" is not one of/);
    const r = await s.call('report_incident', { incident_type: 'prompt_injection', severity: 'low', description: 'd' });
    expect(r.json.type).toBe('other');
  });
});

describe('get_compliance_status', () => {
  it('reports metrics, incidents, policies and agents', async () => {
    const { json } = await s.call('get_compliance_status', { time_range: '1h' });
    expect(json.status).toMatch(/healthy|warning|critical/);
    expect(json.metrics.total_actions).toBeGreaterThan(0);
    expect(json.incidents.by_severity).toHaveProperty('critical');
    expect(json.policies.list).toEqual(expect.arrayContaining([expect.objectContaining({ id: 'test-policy', rules_count: 2, enabled: true })]));
    expect(json.agents.by_trust_level.admin).toBe(1);
    expect(json.agents.suspended).toBe(1);
  });
});

describe('POST /mcp without the router answers as the routed path does', () => {
  // `POST /mcp` runs its handlers directly; `/mcp?via=router` (the same route to Express) goes
  // through Express's router. Every answer must be the same.
  const HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  const call = (args: Record<string, unknown>) => JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'validate_action', arguments: args } });
  const cases: [string, string, Record<string, string>][] = [
    ['an allowed call (fast path)', call({ action_type: 'tool_call', target: 'read_x', agent_id: 'test-low' }), HEADERS],
    ['a denied call', call({ action_type: 'tool_call', target: 'delete_x', agent_id: 'test-low' }), HEADERS],
    ['a missing argument (the SDK words it)', call({ action_type: 'tool_call', agent_id: 'test-low' }), HEADERS],
    ['tools/list (the SDK path)', JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }), HEADERS],
    ['malformed JSON', '{"jsonrpc": ', HEADERS],
    ['JSON nested too deep', `${'['.repeat(200)}${']'.repeat(200)}`, HEADERS],
    ['an integer beyond 2^53', '{"jsonrpc":"2.0","id":12345678901234567890,"method":"tools/list"}', HEADERS],
    ['a body over the limit', call({ action_type: 'tool_call', target: 'x', agent_id: 'test-low', context: 'x'.repeat(2 * 1024 * 1024) }), HEADERS],
    ['text/plain', call({ action_type: 'tool_call', target: 'read_x', agent_id: 'test-low' }), { ...HEADERS, 'content-type': 'text/plain' }],
    ['a foreign Origin', call({ action_type: 'tool_call', target: 'read_x', agent_id: 'test-low' }), { ...HEADERS, origin: 'https://evil.example' }],
    ['two Authorization headers', call({ action_type: 'tool_call', target: 'read_x', agent_id: 'test-low' }), { ...HEADERS, authorization: 'Bearer a, Bearer b' }],
  ];
  const answer = async (path: string, body: string, headers: Record<string, string>) => {
    const r = await fetch(`${s.pg.url}${path}`, { method: 'POST', headers, body });
    return { status: r.status, type: r.headers.get('content-type'), body: (await r.text()).replace(/act_[0-9a-f]+/g, 'act_…') };
  };

  it.each(cases)('%s', async (_name, body, headers) => {
    expect(await answer('/mcp', body, headers)).toEqual(await answer('/mcp?via=router', body, headers));
  });

  it('is measured under the /mcp route, like the routed path', async () => {
    const count = async () => {
      const text = await fetch(`${s.pg.url}/metrics`).then((r) => r.text());
      return Number(/^policyguard_http_request_duration_seconds_count\{route="\/mcp",method="POST",status="200"\} (\d+)$/m.exec(text)?.[1] ?? 0);
    };
    const before = await count();
    for (let i = 0; i < 3; i++) await answer('/mcp', cases[0]![1], HEADERS);
    await answer('/mcp?via=router', cases[0]![1], HEADERS);
    expect(await count()).toBe(before + 4);
  });
});
