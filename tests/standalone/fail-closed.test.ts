/**
 * Fail closed (docs/decisions.md), standalone mode over real HTTP with `--auth token` and the
 * official MCP client: no agent id sheds its caller's restrictions, nobody reads everyone's
 * records, a decision the audit log cannot take is a deny, and unauthenticated floods cost
 * neither a body parse nor a token check.
 */
import { mkdir, readFile, readdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { objectNameFor } from '../../src/api/builders.js';
import { autoRegisteredName } from '../../src/decide/identity.js';
import { eventually } from './eventually.js';
import { callAs, startTestServer, writeTokenFile, type TestServer } from './harness.js';

const FIXTURE = new URL('../fixtures/fail-closed', import.meta.url).pathname;
const TOKENS = { bot: 'bot-token-0001', frozen: 'frozen-token-0002', alice: 'alice-token-0003', root: 'root-token-0004', nobody: 'nobody-token-0005', stranger: 'stranger-token-0006', intruder: 'intruder-token-0007' };

let tokens: Awaited<ReturnType<typeof writeTokenFile>>;
beforeAll(async () => {
  tokens = await writeTokenFile(TOKENS);
});
afterAll(async () => {
  await tokens?.remove();
});

const start = (flags: string[] = []) => startTestServer(FIXTURE, ['--auth', 'token', '--token-file', tokens.file, ...flags], { token: TOKENS.root });
const validate = (s: TestServer, token: string, target: string, agent_id?: string) =>
  callAs(s.pg.url, token, 'validate_action', { action_type: 'tool_call', target, ...(agent_id ? { agent_id } : {}) }).then((r) => r.json);
const incidents = async (s: TestServer) => (await callAs(s.pg.url, TOKENS.root, 'get_compliance_status', {})).json.incidents.recent as any[];
const registered = async (s: TestServer) => readdir(join(s.dataDir, 'manifests', 'guardagents')).catch(() => [] as string[]);

describe('an agent id no GuardAgent claims', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await start();
  });
  afterAll(async () => {
    await s?.close();
  });

  it('a caller bound to an agent cannot shed its restrictions by claiming an unknown id', async () => {
    expect((await validate(s, TOKENS.bot, 'send_email')).allowed).toBe(false); // its own deniedTools
    const ghost = await validate(s, TOKENS.bot, 'send_email', 'ghost-1');
    expect(ghost.allowed).toBe(false);
    expect(ghost.reason).toBe("Caller 'token:bot' is bound to 'bot' and may act only as it; 'ghost-1' is not registered (identity mismatch)");
    expect(ghost.matched[0]).toMatchObject({ policy: 'agent:ghost-1', rule: 'identities', action: 'deny' });
    // A suspended agent's caller neither.
    const frozen = await validate(s, TOKENS.frozen, 'read_x', 'ghost-2');
    expect(frozen.allowed).toBe(false);
    expect(frozen.reason).toMatch(/identity mismatch/);
  });

  it('the identity_mismatch incident concerns the agent the caller really is', async () => {
    const found = await eventually(
      () => incidents(s),
      (list) => list.some((i) => i.type === 'identity_mismatch' && i.evidence.claimed_agent === 'ghost-1'),
      'the identity_mismatch incident',
    );
    expect(found.find((i) => i.evidence.claimed_agent === 'ghost-1')).toMatchObject({ agent_id: 'bot', severity: 'high', evidence: { caller: 'token:bot', bound_agents: ['bot'] } });
  });

  it('a caller bound to no agent is denied by default under auth, and nothing is registered', async () => {
    const d = await validate(s, TOKENS.nobody, 'read_x', 'fresh-agent');
    expect(d.allowed).toBe(false);
    expect(d.reason).toBe("Agent 'fresh-agent' is not registered and caller 'token:nobody' is bound to no GuardAgent; unregistered agents are denied (--unknown-agents deny)");
    expect(d.matched[0]).toMatchObject({ rule: 'unknownAgents' });
    expect(d.matched[0].priority).toBeUndefined();
    expect(await registered(s)).toEqual([]);
  });
});

describe('--unknown-agents evaluate', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await start(['--unknown-agents', 'evaluate']);
  });
  afterAll(async () => {
    await s?.close();
  });

  it('an unbound caller’s unknown agent is evaluated, registered bound to it, and from then on it is that agent', async () => {
    const first = await validate(s, TOKENS.nobody, 'read_x', 'newcomer');
    expect(first).toMatchObject({ allowed: true, agent: { id: 'newcomer', registered: false, trust_level: 'low' } });
    await eventually(() => validate(s, TOKENS.nobody, 'read_x', 'newcomer'), (d) => d.agent.registered === true, 'the auto-registration');
    const other = await validate(s, TOKENS.nobody, 'read_x', 'another-id');
    expect(other.allowed).toBe(false);
    expect(other.reason).toMatch(/bound to 'newcomer' and may act only as it/);
  });

  it('an id that is another agent\'s object name never replaces that agent: not by register_agent, nor by auto-registration', async () => {
    // Not through register_agent, by an admin who names the object instead of the agent.
    const real = await callAs(s.pg.url, TOKENS.root, 'register_agent', { agent_id: 'ops-bot', name: 'impostor', trust_level: 'low' });
    expect(real.isError).toBe(true);
    expect(real.json).toMatchObject({ success: false, message: "agent id 'ops-bot' would be stored as GuardAgent ops-bot, which holds agent 'Ops_Bot'; choose another id" });
    // Auto-registered, the id gets an object name of its own.
    const claimed = await validate(s, TOKENS.intruder, 'read_x', 'ops-bot');
    expect(claimed).toMatchObject({ allowed: true, agent: { id: 'ops-bot', registered: false } });
    await eventually(() => validate(s, TOKENS.intruder, 'read_x', 'ops-bot'), (d) => d.agent.registered === true, 'the auto-registration');
    expect(await registered(s)).toContain(`${autoRegisteredName('ops-bot')}.yaml`);
    expect(await registered(s)).not.toContain('ops-bot.yaml');
    expect((await validate(s, TOKENS.root, 'read_x', 'Ops_Bot')).reason).toBe("Caller 'token:root' is not bound to agent 'Ops_Bot' (identity mismatch)");
  });

  it("a policy id that is another policy's object name never replaces that policy", async () => {
    const rules = JSON.stringify([{ condition: { tool_pattern: 'purge_*' }, action: 'deny' }]);
    const first = await callAs(s.pg.url, TOKENS.root, 'create_policy', { policy_id: 'Audit_Only', name: 'audit only', rules });
    expect(first.json).toMatchObject({ success: true });
    const name = objectNameFor('Audit_Only');
    const over = await callAs(s.pg.url, TOKENS.root, 'create_policy', { policy_id: name, name: 'impostor', rules: JSON.stringify([{ condition: { tool_pattern: 'purge_*' }, action: 'allow' }]) });
    expect(over.isError).toBe(true);
    expect(over.json).toMatchObject({ success: false, message: `policy id '${name}' would be stored as GuardPolicy ${name}, which holds policy 'Audit_Only'; use that id to change it, or choose another` });
  });

  it(`nobody acts as 'policyguard-system', PolicyGuard's own id for its administrative records`, async () => {
    const d = await validate(s, TOKENS.nobody, 'read_x', 'policyguard-system');
    expect(d).toMatchObject({ allowed: false, reason: "'policyguard-system' is PolicyGuard's own id (its administrative audit records); no caller acts as it" });
    const records = await callAs(s.pg.url, TOKENS.nobody, 'get_audit_log', { agent_id: 'policyguard-system' });
    expect(JSON.stringify(records.json)).not.toContain('agent_registration');
  });

  it('auto-registration is limited per caller, not one global pool', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `burst-${i}`);
    const decisions = await Promise.all(ids.map((id) => validate(s, TOKENS.stranger, 'read_x', id)));
    expect(decisions.filter((d) => d.allowed).length).toBeGreaterThan(0);
    // Registrations land in the background; give them time, then count what the caller got.
    await eventually(async () => (await registered(s)).filter((f) => f.startsWith('burst-')).length, (n) => n >= 1, 'a registration for the stranger');
    await new Promise((r) => setTimeout(r, 300));
    expect((await registered(s)).filter((f) => f.startsWith('burst-'))).toHaveLength(1);
  });
});

describe('who may read the audit log', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await start();
    await validate(s, TOKENS.alice, 'read_alice', 'agent-a');
    await validate(s, TOKENS.bot, 'read_bot', 'bot');
    await validate(s, TOKENS.bot, 'send_bot', 'bot');
  });
  afterAll(async () => {
    await s?.close();
  });

  it('a non-admin sees only its own agents’ records', async () => {
    const log = (await callAs(s.pg.url, TOKENS.alice, 'get_audit_log', {})).json;
    expect(log.entries.map((e: any) => e.action.target)).toEqual(['read_alice']);
    expect(log.filters_applied.at(-1)).toMatch(/^scope=own agents \(agent-a\)/);
    const asked = (await callAs(s.pg.url, TOKENS.alice, 'get_audit_log', { agent_id: 'bot' })).json;
    expect(asked.entries).toEqual([]);
    const status = (await callAs(s.pg.url, TOKENS.alice, 'get_compliance_status', {})).json;
    expect(status.metrics).toMatchObject({ total_actions: 1, denied_actions: 0, unique_agents: 1 });
    expect(status.agents.total).toBe(1);
    expect(status.incidents.total).toBe(0); // bot's policy violation is not hers
  });

  it('an admin sees everyone’s', async () => {
    const log = (await callAs(s.pg.url, TOKENS.root, 'get_audit_log', {})).json;
    expect(log.entries.map((e: any) => e.action.target).sort()).toEqual(['read_alice', 'read_bot', 'send_bot']);
    const status = (await callAs(s.pg.url, TOKENS.root, 'get_compliance_status', {})).json;
    expect(status.metrics).toMatchObject({ total_actions: 3, denied_actions: 1 });
  });

  it('a record changed on disk while the server runs is not served: the reads fail, naming it', async () => {
    const dir = join(s.dataDir, 'audit');
    // Once the record is on disk (a batch goes every 100 ms).
    const { segment, text } = await eventually(
      async () => {
        const segment = join(dir, (await readdir(dir)).find((f) => /^audit-\d+\.jsonl$/.test(f)) ?? 'none');
        return { segment, text: await readFile(segment, 'utf8').catch(() => '') };
      },
      ({ text }) => text.includes('"target":"send_bot"'),
      'the record on disk',
    );
    const lines = text.split('\n');
    const at = lines.findIndex((l) => l.includes('"target":"send_bot"'));
    const edited = JSON.parse(lines[at]!) as { entry_id: string };
    // The deny made an allow, in as many bytes: what someone with the volume would write.
    lines[at] = lines[at]!.replace('"allowed":false', '"allowed":true ');
    await writeFile(segment, lines.join('\n'));
    for (const tool of ['get_audit_log', 'get_compliance_status']) {
      const answer = await callAs(s.pg.url, TOKENS.root, tool, {});
      expect(answer.isError).toBe(true);
      expect(answer.json).toMatch(new RegExp(`^the audit log holds a record that was changed after it was written: ${edited.entry_id} in audit-\\d+\\.jsonl \\(hash mismatch`));
    }
  });
});

describe('a decision the audit log cannot take', () => {
  /** Make the audit log's next write fail: its segment file becomes a folder. */
  async function breakAuditLog(s: TestServer): Promise<string> {
    const dir = join(s.dataDir, 'audit');
    await validate(s, TOKENS.alice, 'read_warmup', 'agent-a');
    const segment = await eventually(async () => (await readdir(dir)).find((f) => /^audit-\d+\.jsonl$/.test(f)), (f) => f !== undefined, 'the first segment');
    const path = join(dir, segment!);
    // The sink may create the file again between the two calls (a batch still on its way): until
    // the folder takes its place.
    for (;;) {
      await rm(path, { force: true });
      const made = await mkdir(path).then(() => true, (e: NodeJS.ErrnoException) => (e.code === 'EEXIST' ? false : Promise.reject(e)));
      if (made) return path;
    }
  }

  it('is a deny (closed, the default); admin changes are refused; decisions resume when writes do', async () => {
    const s = await start();
    try {
      const broken = await breakAuditLog(s);
      const denied = await eventually(() => validate(s, TOKENS.alice, 'read_x', 'agent-a'), (d) => d.allowed === false, 'a deny while the audit log fails');
      expect(denied.reason).toMatch(/^audit log unavailable: /);
      const write = await callAs(s.pg.url, TOKENS.root, 'register_agent', { agent_id: 'while-broken', name: 'x' });
      expect(write.isError).toBe(true);
      expect(write.json.message).toMatch(/audit log unavailable: .*nothing was changed/);
      expect(await registered(s)).toEqual([]);
      const metrics = await fetch(`${s.pg.url}/metrics`).then((r) => r.text());
      expect(metrics).toMatch(/^policyguard_audit_unavailable_denials_total [1-9]\d*$/m);

      await rmdir(broken);
      await eventually(() => validate(s, TOKENS.alice, 'read_x', 'agent-a'), (d) => d.allowed === true, 'decisions after the audit log recovered');
    } finally {
      await s.close();
    }
  });

  it('goes on with --audit-failure-mode open', async () => {
    const s = await start(['--audit-failure-mode', 'open']);
    try {
      await breakAuditLog(s);
      await new Promise((r) => setTimeout(r, 500)); // let a write fail
      const d = await validate(s, TOKENS.alice, 'read_x', 'agent-a');
      expect(d.allowed).toBe(true);
    } finally {
      await s.close().catch(() => undefined); // the final flush fails: the log is still broken
    }
  });
});

describe('unauthenticated floods are cheap', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await start(['--auth-failure-limit', '5/1m']);
  });
  afterAll(async () => {
    await s?.close();
  });
  const post = (headers: Record<string, string>, body: string) =>
    fetch(`${s.pg.url}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers }, body });

  it('authentication comes before the body is parsed', async () => {
    const r = await post({}, '{"jsonrpc": "2.0", ');
    expect(r.status).toBe(401); // not a -32700 parse error: the body was never read
  });

  it('an address that keeps failing authentication is refused before any work', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await post({ authorization: `Bearer wrong-${i}` }, '{}')).status);
    expect(statuses.slice(0, 4).every((st) => st === 401)).toBe(true);
    expect(statuses.at(-1)).toBe(429);
    const refused = await post({ authorization: 'Bearer wrong-again' }, '{}');
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // A caller known without a remote check still gets through from that address.
    const known = await post({ authorization: `Bearer ${TOKENS.alice}` }, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }));
    expect(known.status).toBe(200);
    const metrics = await fetch(`${s.pg.url}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/^policyguard_http_rejected_total\{reason="auth_failures"\} [1-9]\d*$/m);
  });
});
