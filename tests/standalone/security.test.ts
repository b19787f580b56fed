/**
 * Identity, authorization and the hardened HTTP edge, with `--auth token` over real HTTP.
 */
import { appendFile, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from '../../src/auth/authenticate.js';
import { eventually } from './eventually.js';
import { callAs as callToolAs, connect, startTestServer, writeTokenFile, type TestServer } from './harness.js';

const FIXTURE = new URL('../fixtures/auth', import.meta.url).pathname;
const TOKENS = { alice: 'alice-secret-token-1', bob: 'bob-secret-token-2', root: 'root-secret-token-3', carol: 'carol-secret-token-4', chatty: 'chatty-secret-token-5', batcher: 'batcher-secret-token-6', stranger: 'stranger-secret-token-7' };

let s: TestServer;
let tokens: Awaited<ReturnType<typeof writeTokenFile>>;
let tokenFile: string;

beforeAll(async () => {
  tokens = await writeTokenFile(TOKENS);
  tokenFile = tokens.file;
  s = await startTestServer(FIXTURE, ['--auth', 'token', '--token-file', tokenFile, '--rate-limit', '20/1s'], { token: TOKENS.root });
});
afterAll(async () => {
  await s?.close();
  await tokens?.remove();
});

const callAs = (token: string, name: string, args: Record<string, unknown>) => callToolAs(s.pg.url, token, name, args);
/** The value of an unlabelled series on /metrics. */
const metric = async (name: string) => Number((await (await fetch(`${s.pg.url}/metrics`)).text()).match(new RegExp(`^${name} (\\S+)$`, 'm'))?.[1]);

const rawPost = (headers: Record<string, string>, body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' })) =>
  fetch(`${s.pg.url}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers }, body });

describe('authentication', () => {
  it('no token → 401 with WWW-Authenticate pointing at the protected-resource metadata', async () => {
    const r = await rawPost({});
    expect(r.status).toBe(401);
    const challenge = r.headers.get('www-authenticate')!;
    expect(challenge).toMatch(/^Bearer realm="policyguard", resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource"$/);
    const meta = (await fetch(challenge.match(/resource_metadata="([^"]+)"/)![1]!).then((x) => x.json())) as any;
    expect(meta.resource).toBe(`${s.pg.url}/mcp`);
  });
  it('a wrong token → 401 invalid_token', async () => {
    const r = await rawPost({ authorization: 'Bearer not-a-real-token' });
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);
  });
  it('a known token works with the official client', async () => {
    const c = await connect(s.pg.url, TOKENS.alice);
    expect((await c.listTools()).tools).toHaveLength(6);
    await c.close();
  });
  it('two Authorization headers are refused, not guessed between', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' });
    const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const url = new URL(`${s.pg.url}/mcp`);
      const req = request(
        // Raw header pairs (name, value, …): two Authorization lines; Host and framing set by hand.
        { host: url.hostname, port: url.port, path: '/mcp', method: 'POST', headers: ['host', url.host, 'content-type', 'application/json', 'content-length', String(body.length), 'authorization', `Bearer ${TOKENS.alice}`, 'authorization', `Bearer ${TOKENS.root}`] },
        (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    expect(r, r.body).toMatchObject({ status: 400 });
    expect(JSON.parse(r.body).error.message).toBe('Invalid Request: more than one Authorization header');
  });
  it('picks up a new token when the file changes', async () => {
    await appendFile(tokenFile, `${sha256('dave-token')}  dave\n`);
    await eventually(() => rawPost({ authorization: 'Bearer dave-token' }).then((r) => r.status), (st) => st === 200, 'the reloaded token file');
  });
});

describe('identity binding', () => {
  it('impersonation: with A’s token, acting as B is denied, audited with both identities, and raises identity_mismatch on A (not on B, who did nothing)', async () => {
    const { json } = await callAs(TOKENS.alice, 'validate_action', { action_type: 'tool_call', target: 'read_data', agent_id: 'agent-b' });
    expect(json.allowed).toBe(false);
    expect(json.reason).toBe("Caller 'token:alice' is not bound to agent 'agent-b' (identity mismatch)");
    // Nothing of how agent-b's own rules would judge a call is told to alice (no-deletes matches delete_* for it).
    const probe = (await callAs(TOKENS.alice, 'validate_action', { action_type: 'tool_call', target: 'delete_records', agent_id: 'agent-b' })).json;
    expect(probe.matched).toEqual([{ policy: 'agent:agent-b', rule: 'identities', action: 'deny', enforcement: 'Enforce', message: probe.reason }]);
    expect([probe.warnings, probe.audit_findings]).toEqual([[], []]);
    const audit = await callAs(TOKENS.root, 'get_audit_log', { agent_id: 'agent-b' });
    const entry = audit.json.entries.find((e: any) => e.action_id === json.action_id);
    expect(entry).toMatchObject({ agent_id: 'agent-b', caller: 'token:alice', evaluation: { allowed: false } });
    const status = await callAs(TOKENS.root, 'get_compliance_status', {});
    const incident = status.json.incidents.recent.find((i: any) => i.type === 'identity_mismatch' && i.evidence.claimed_agent === 'agent-b' && i.evidence.caller === 'token:alice');
    expect(incident.agent_id).toBe('agent-a');
  });
  it('acting as one’s own agent works; a caller bound to exactly one agent may omit agent_id', async () => {
    expect((await callAs(TOKENS.alice, 'validate_action', { action_type: 'tool_call', target: 'read_data', agent_id: 'agent-a' })).json.allowed).toBe(true);
    const omitted = await callAs(TOKENS.alice, 'validate_action', { action_type: 'tool_call', target: 'read_data' });
    expect(omitted.json.agent.id).toBe('agent-a');
  });
  it('a caller bound to several agents must say which', async () => {
    const r = await callAs(TOKENS.carol, 'validate_action', { action_type: 'tool_call', target: 'read_data' });
    expect(r.isError).toBe(true);
    expect(r.json).toMatch(/bound to 2 agents \(carol-1, carol-2\)/);
  });
});

describe('admin tools', () => {
  it('a non-admin registering an admin agent is refused and nothing is written', async () => {
    const r = await callAs(TOKENS.alice, 'register_agent', { agent_id: 'sneaky', name: 'x', trust_level: 'admin' });
    expect(r.isError).toBe(true);
    expect(r.json.success).toBe(false);
    expect(r.json.message).toMatch(/caller 'token:alice' may not create guardagents: its highest trust level is 'medium'/);
    expect(await readdir(join(s.dataDir, 'manifests')).then((d) => d)).not.toContain('guardagents');
    expect((await callAs(TOKENS.root, 'validate_action', { action_type: 'tool_call', target: 'x', agent_id: 'sneaky' })).json.agent.registered).toBe(false);
  });
  it('an admin can register agents and create policies', async () => {
    expect((await callAs(TOKENS.root, 'register_agent', { agent_id: 'new-helper', name: 'Helper', trust_level: 'high' })).json.success).toBe(true);
    expect((await callAs(TOKENS.root, 'create_policy', { policy_id: 'p1', name: 'P1', rules: [{ match: { tools: ['zap'] }, action: 'deny' }] })).json.success).toBe(true);
  });
  it('not even an admin may edit an agent bound to someone else', async () => {
    const r = await callAs(TOKENS.root, 'register_agent', { agent_id: 'agent-a', name: 'hijack', trust_level: 'admin' });
    expect(r.json.success).toBe(false);
    expect(r.json.message).toMatch(/bound to other identities/);
  });
  it('not even an admin may change an agent that is stored but not in force, under its name or another: whom it is bound to is not known', async () => {
    const broken = (name: string, agentId?: string) =>
      `apiVersion: policyguard.dev/v1alpha1\nkind: GuardAgent\nmetadata: {name: ${name}}\nspec:\n${agentId ? `  agentId: ${agentId}\n` : ''}  allowedTools: ["{read,write}_*"]\n  identities: [{user: "token:alice"}]\n`;
    const files = [join(s.configDir, 'held-agent.yaml'), join(s.configDir, 'held-x.yaml')];
    await writeFile(files[0]!, broken('held-agent'));
    await writeFile(files[1]!, broken('held-x', 'other-held'));
    try {
      await eventually(() => metric('policyguard_invalid_objects'), (n) => n === 2, 'the broken agents to be seen');
      for (const id of ['held-agent', 'other-held', 'Other-Held']) {
        const r = await callAs(TOKENS.root, 'register_agent', { agent_id: id, name: 'hijack', trust_level: 'admin' });
        expect(r.json.success).toBe(false);
        expect(r.json.message).toBe(
          `agent '${id}' is stored as a GuardAgent that is not in force (it fails to load), so whom it is bound to is not known; fix it where it was written (in a cluster, someone RBAC allows to patch guardagents may also change it here)`,
        );
      }
    } finally {
      await Promise.all(files.map((f) => rm(f)));
      await eventually(() => metric('policyguard_invalid_objects'), (n) => n === 0, 'the broken agents to be gone');
    }
  });
  it('non-admins cannot create policies', async () => {
    const r = await callAs(TOKENS.bob, 'create_policy', { policy_id: 'allow-all', name: 'x', rules: [{ action: 'allow' }] });
    expect(r.json.success).toBe(false);
  });
  it('an incident about another agent needs admin rights (a forged one would count against it); about one’s own agent it is filed, a critical one suspends it, and it says who filed it', async () => {
    const other = await callAs(TOKENS.bob, 'report_incident', { incident_type: 'other', severity: 'critical', description: 'carol exfiltrated data', agent_id: 'carol-1' });
    expect(other.isError).toBe(true);
    expect(other.json).toMatch(/^caller 'token:bob' may report incidents about the agents it acts as, or about none; about agent 'carol-1': /);
    const own = await callAs(TOKENS.bob, 'report_incident', { incident_type: 'other', severity: 'critical', description: 'I was compromised', agent_id: 'agent-b' });
    expect(own.json.agent_suspended).toBe(true);
    const byAdmin = await callAs(TOKENS.root, 'report_incident', { incident_type: 'other', severity: 'high', description: 'seen in the SIEM', agent_id: 'carol-1' });
    expect(byAdmin.json.success).toBe(true);
    const status = await callAs(TOKENS.root, 'get_compliance_status', {});
    const recent = status.json.incidents.recent as any[];
    expect(recent.some((i) => i.description === 'carol exfiltrated data')).toBe(false);
    expect(recent.find((i) => i.description === 'seen in the SIEM').evidence.reported_by).toBe('token:root');
    const huge = await callAs(TOKENS.bob, 'report_incident', { incident_type: 'other', severity: 'low', description: 'x', evidence: JSON.stringify({ blob: 'x'.repeat(20_000) }) });
    expect(huge.json).toMatch(/^evidence is \d+ bytes of JSON; at most 16384 are kept with an incident$/);
  });

  it('a caller bound to no agent, where unknown agents are denied, files no incident of its own: it could only fill the log', async () => {
    const r = await callAs(TOKENS.stranger, 'report_incident', { incident_type: 'identity_mismatch', severity: 'critical', description: 'token:data misbehaved' });
    expect(r.isError).toBe(true);
    expect(r.json).toBe("caller 'token:stranger' is bound to no agent, and unknown agents are denied (--unknown-agents deny): it may report incidents about an agent only with permission to administer it");
    const status = await callAs(TOKENS.root, 'get_compliance_status', {});
    expect((status.json.incidents.recent as any[]).some((i) => i.description === 'token:data misbehaved')).toBe(false);
  });
});

describe('GuardAgent.spec.rateLimit', () => {
  it('beyond the limit decisions are denied with a clear reason and a rate_limit_exceeded incident', async () => {
    const calls = [];
    for (let i = 0; i < 4; i++) calls.push((await callAs(TOKENS.chatty, 'validate_action', { action_type: 'tool_call', target: 'read_x' })).json);
    expect(calls.slice(0, 3).every((d) => d.allowed)).toBe(true);
    expect(calls[3].allowed).toBe(false);
    expect(calls[3].reason).toMatch(/^Rate limit exceeded for agent 'chatty': 3 requests per 1m/);
    const status = await callAs(TOKENS.root, 'get_compliance_status', {});
    expect(status.json.incidents.recent.some((i: any) => i.type === 'rate_limit_exceeded' && i.agent_id === 'chatty')).toBe(true);
  });
});

describe('HTTP edge', () => {
  it('an evil Origin → 403', async () => {
    const r = await rawPost({ authorization: `Bearer ${TOKENS.alice}`, origin: 'https://evil.example' });
    expect(r.status).toBe(403);
    expect(((await r.json()) as any).error.message).toMatch(/Origin "https:\/\/evil\.example" is not allowed/);
  });
  it('a rebinding Host → 403', async () => {
    // fetch() may not set Host; node:http may.
    const { request } = await import('node:http');
    const url = new URL(`${s.pg.url}/mcp`);
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ host: url.hostname, port: url.port, path: '/mcp', method: 'POST', headers: { host: 'attacker.example:8000', authorization: `Bearer ${TOKENS.alice}`, 'content-type': 'application/json' } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.end('{}');
    });
    expect(status).toBe(403);
  });
  it.each([
    ['a Host with user information', (host: string) => [`${host}@attacker.example`]],
    ['a Host with a quote (it is written into WWW-Authenticate)', (host: string) => [`${host}", error="x`]],
    ['two Host lines', (host: string) => [host, host]],
  ])('%s → 400, before anything is checked or announced', async (_what, hosts) => {
    const { request } = await import('node:http');
    const url = new URL(`${s.pg.url}/mcp`);
    const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const headers = [...hosts(url.host).flatMap((h) => ['host', h]), 'content-type', 'application/json', 'content-length', '2'];
      const req = request({ host: url.hostname, port: url.port, path: '/mcp', method: 'POST', headers }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('error', reject);
      req.end('{}');
    });
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error.message).toMatch(/^Invalid Request: the Host header ".*" is not one host\[:port\]$/);
  });
  it('a 2 MB body → 413', async () => {
    const r = await rawPost({ authorization: `Bearer ${TOKENS.alice}` }, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { pad: 'x'.repeat(2 * 1024 * 1024) } }));
    expect(r.status).toBe(413);
  });
  it('a burst over the per-caller limit → 429 with Retry-After, then recovery', async () => {
    const statuses = await Promise.all(Array.from({ length: 40 }, () => rawPost({ authorization: `Bearer ${TOKENS.bob}` }).then((r) => ({ status: r.status, retry: r.headers.get('retry-after') }))));
    const limited = statuses.filter((x) => x.status === 429);
    expect(limited.length).toBeGreaterThan(0);
    expect(Number(limited[0]!.retry)).toBeGreaterThanOrEqual(1);
    // Other callers are not affected.
    expect((await rawPost({ authorization: `Bearer ${TOKENS.alice}` })).status).toBe(200);
    await new Promise((r) => setTimeout(r, Number(limited[0]!.retry) * 1000));
    expect((await rawPost({ authorization: `Bearer ${TOKENS.bob}` })).status).toBe(200);
  });
  it('a batch counts each of its messages against the per-caller limit', async () => {
    const batch = (n: number) => JSON.stringify(Array.from({ length: n }, (_, i) => ({ jsonrpc: '2.0', id: i + 1, method: 'tools/list' })));
    const over = await rawPost({ authorization: `Bearer ${TOKENS.batcher}`, 'mcp-protocol-version': '2025-03-26' }, batch(25));
    expect(over.status).toBe(429);
    expect(((await over.json()) as any).error.message).toMatch(/a batch counts each of its 25 messages/);
  });
  it('tokens never reach the audit log', async () => {
    await s.restart(); // closing flushes the audit log
    const dir = join(s.dataDir, 'audit');
    let all = '';
    for (const f of await readdir(dir)) all += await readFile(join(dir, f), 'utf8');
    all += await readFile(join(s.dataDir, 'incidents.jsonl'), 'utf8');
    expect(all.length).toBeGreaterThan(0);
    for (const t of [...Object.values(TOKENS), 'dave-token']) expect(all).not.toContain(t);
  });
});
