/**
 * Approvals in standalone mode (docs/decisions.md, "Approvals"): a require_approval decision
 * asks for a GuardApproval in the data dir, a person decides it with the real CLI
 * (`policyguard approvals … --data-dir`), and the same call is then allowed once; the gateway
 * holds a call until the decision. Real server, official MCP client, a real Python upstream.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './cli.js';
import { readResult } from './clients.js';
import { eventually } from './eventually.js';
import { callAs, connect, startTestServer, writeTokenFile, type TestServer } from './harness.js';
import { pythonAvailability } from './python-client.js';
import { startPythonUpstream, type Upstream } from './upstreams.js';

const python = pythonAvailability();
const TOKENS = { bot: 'bot-token-0001' };

let root: string;
let fixture: string;
let tokens: Awaited<ReturnType<typeof writeTokenFile>>;
let py: Upstream | undefined;
/** --approval-hold 30s, --approval-ttl 1h. */
let s: TestServer;
/** --approval-hold 1s, --approval-ttl 3s: for a hold that ends undecided, and for expiry. */
let short: TestServer;

async function writeFixture(dir: string, upstreamUrl: string): Promise<void> {
  await writeFile(
    join(dir, 'approvals.yaml'),
    `apiVersion: policyguard.dev/v1alpha1
kind: GuardAgent
metadata: {name: bot}
spec:
  trustLevel: medium
  identities: [{user: "token:bot"}]
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardUpstream
metadata: {name: py}
spec:
  url: ${upstreamUrl}
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardPolicy
metadata: {name: people-decide}
spec:
  rules:
    - name: drops
      match: {tools: ["drop_*"]}
      action: require_approval
      message: Dropping a table needs a DBA
    - name: big-refunds
      match: {tools: ["refund"], arguments: [{path: amount, operator: GreaterThan, values: ["500"]}]}
      action: require_approval
      message: Refunds above 500 need a person
`,
  );
}

const validate = (server: TestServer, parameters: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  callAs(server.pg.url, TOKENS.bot, 'validate_action', { agent_id: 'bot', action_type: 'tool_call', target: 'drop_table', parameters, ...extra });

/** A control or bidi character other than the newline that ends lines. */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u202e]/;

const cli = (server: TestServer, ...args: string[]) => runCli(['approvals', ...args, '--data-dir', server.dataDir]);

/** The approvals as the CLI prints them (-o json). */
async function listed(server: TestServer): Promise<any[]> {
  const r = await cli(server, 'list', '-o', 'json');
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}

/** The audit records written so far (a restart flushes them). */
async function auditEntries(server: TestServer): Promise<any[]> {
  await server.restart();
  const dir = join(server.dataDir, 'audit');
  let text = '';
  for (const f of (await readdir(dir)).filter((n) => n.endsWith('.jsonl'))) text += await readFile(join(dir, f), 'utf8');
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pg-approvals-'));
  tokens = await writeTokenFile(TOKENS);
  if (python.ok) py = await startPythonUpstream(join(root, 'upstream.log'));
  fixture = join(root, 'fixture');
  await mkdir(fixture);
  await writeFixture(fixture, py?.url ?? 'http://127.0.0.1:9/mcp');
  const auth = ['--auth', 'token', '--token-file', tokens.file];
  // s has an audit key, so its argument digests are keyed; short has none (plain sha256).
  const key = join(root, 'audit.key');
  await writeFile(key, 'k'.repeat(48), { mode: 0o600 });
  s = await startTestServer(fixture, [...auth, '--approval-hold', '30s', '--audit-key-file', key], { token: TOKENS.bot });
  short = await startTestServer(fixture, [...auth, '--approval-hold', '1s', '--approval-ttl', '3s'], { token: TOKENS.bot });
}, 180_000);
afterAll(async () => {
  await s?.close();
  await short?.close();
  await py?.stop();
  await tokens?.remove();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('validate_action and GuardApprovals (standalone)', () => {
  it('require_approval asks for a Pending GuardApproval with the call, the rule and the expiry; the same ask gets the same one', async () => {
    const first = await validate(s, { table: 'users', password: 'hunter2' });
    expect(first.json).toMatchObject({ allowed: false, decision: 'require_approval', require_approval: true, approval_id: expect.stringMatching(/^apr-[0-9a-f]{12}$/) });
    const id = first.json.approval_id;
    expect(first.json.reason).toBe('Dropping a table needs a DBA'); // the rule's message, as ever; approval_id names the ask
    const again = await validate(s, { password: 'hunter2', table: 'users' });
    expect(again.json).toMatchObject({ decision: 'require_approval', approval_id: id });

    const approval = (await listed(s)).find((a) => a.metadata.name === id);
    expect(approval.spec).toMatchObject({
      agentId: 'bot',
      actionType: 'tool_call',
      target: 'drop_table',
      argumentsPreview: '{"password":"[REDACTED]","table":"users"}',
      argumentsDigest: expect.stringMatching(/^hmac-sha256:[0-9a-f]{64}$/), // keyed: an approver cannot test guesses of redacted values
      rules: [{ policy: 'people-decide', rule: 'drops' }],
      message: 'Dropping a table needs a DBA',
      requestedBy: 'token:bot',
      requesters: ['token:bot'],
    });
    expect(Date.parse(approval.spec.expiresAt) - Date.parse(approval.spec.requestedAt)).toBe(3_600_000);
    expect(approval.status).toEqual({ phase: 'Pending' });
    const table = await cli(s, 'list', '--pending');
    expect(table.stdout).toMatch(new RegExp(`^NAME +AGENT +TARGET +PHASE +DECIDED BY +EXPIRES +ARGUMENTS\\n(.*\\n)*${id} +bot +drop_table +Pending +<none> +in 60m +\\{"password":"\\[REDACTED\\]","table":"users"\\}`, 'm'));
    // A long preview shows its head, and says it is one.
    const long = (await validate(s, { table: 'orders', a_summary: 'x'.repeat(80) })).json.approval_id;
    const longTable = await cli(s, 'list', '--pending');
    expect(longTable.stdout).toMatch(new RegExp(`^${long} .*\\{"a_summary":"x{43}\\.\\.\\. \\(\\d+ characters: -o json shows all\\)$`, 'm'));
  });

  it('what an agent chose cannot disguise itself on the approver\'s terminal: a disguised target is denied outright, control characters in arguments are shown escaped, hidden values are said to be hidden', async () => {
    // On a terminal this target would erase its own line and print a harmless-looking one.
    const disguised = 'drop_table_prod\r\u001b[2Kapr-000000000000   bot   read_docs\u202e';
    const refused = await callAs(s.pg.url, TOKENS.bot, 'validate_action', { agent_id: 'bot', action_type: 'tool_call', target: disguised });
    expect(refused.json).toMatchObject({ decision: 'deny', matched: [{ rule: 'unclearName' }] });
    expect(refused.json).not.toHaveProperty('approval_id');
    const { json } = await callAs(s.pg.url, TOKENS.bot, 'validate_action', { agent_id: 'bot', action_type: 'tool_call', target: 'drop_table_prod', parameters: { table: 'x\u001b[31m\r\u001b[2K', api_key: 'k' } });
    const id = json.approval_id;
    const table = await cli(s, 'list', '--pending');
    expect(table.stdout.split('\n').find((l) => l.startsWith(id))).toContain('drop_table_prod');
    expect(table.stdout).not.toMatch(RAW_CONTROL);
    const denied = await cli(s, 'deny', id);
    expect(denied.stdout).not.toMatch(RAW_CONTROL);
    expect(denied.stdout).toContain('  arguments: {"api_key":"[REDACTED]","table":"x\\u001b[31m\\r\\u001b[2K"}\n  (not every value is shown:');
  });

  it('approve: the same call is allowed once, naming the approval in its audit record; the next one needs a new approval', async () => {
    const { json } = await validate(s, { table: 'orders' });
    const id = json.approval_id;
    const approved = await cli(s, 'approve', id, '--reason', 'ticket 42');
    expect(approved.stderr).toBe('');
    expect(approved.code).toBe(0);
    expect(approved.stdout).toMatch(new RegExp(`^approval ${id} approved by local:\\S+: agent 'bot' may now call 'drop_table' once with these arguments, until `));
    const allowed = await eventually(() => validate(s, { table: 'orders' }), (r) => r.json.allowed === true, 'the approval to be seen');
    expect(allowed.json).toMatchObject({ decision: 'allow', approval_id: id, reason: expect.stringMatching(new RegExp(`^Approved by local:\\S+ \\(approval ${id}, now used\\): ticket 42\\. Dropping a table needs a DBA$`)) });
    const next = await validate(s, { table: 'orders' });
    expect(next.json).toMatchObject({ decision: 'require_approval', approval_id: expect.not.stringMatching(id) });
    expect((await listed(s)).find((a) => a.metadata.name === id).status).toMatchObject({ phase: 'Used', actionId: allowed.json.action_id, reason: 'ticket 42' });
    // The approval cannot be decided again.
    const twice = await cli(s, 'deny', id);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toMatch(new RegExp(`^policyguard: approval ${id} was approved by local:\\S+ and already used \\(${allowed.json.action_id}\\)\\n$`));

    const metrics = await (await fetch(`${s.pg.url}/metrics`)).text();
    expect(metrics).toMatch(/^policyguard_approvals_total\{event="requested"\} [1-9]/m);
    expect(metrics).toMatch(/^policyguard_approvals_total\{event="used"\} 1$/m);
    expect(metrics).toMatch(/^policyguard_approvals_pending [1-9]/m);

    const entries = await auditEntries(s);
    const use = entries.find((e) => e.action_id === allowed.json.action_id);
    expect(use).toMatchObject({ evaluation: { decision: 'allow', allowed: true }, approval: { ref: id, phase: 'Used', decided_by: expect.stringMatching(/^local:/) } });
    const asked = entries.find((e) => e.action_id === json.action_id);
    expect(asked).toMatchObject({ evaluation: { decision: 'require_approval' }, approval: { ref: id, phase: 'Pending' } });
    expect(entries.find((e) => e.action.type === 'approval_approved' && e.approval?.ref === id)).toMatchObject({ action_id: null, agent_id: 'bot', evaluation: { reason: expect.stringContaining(`approval ${id} approved by local:`) } });
  });

  it('deny: the call is refused, and the decision stands', async () => {
    const { json } = await validate(s, { table: 'audit_trail' });
    const id = json.approval_id;
    expect((await cli(s, 'deny', id, '--reason', 'never in prod')).code).toBe(0);
    const refused = await eventually(() => validate(s, { table: 'audit_trail' }), (r) => r.json.decision === 'deny', 'the denial to be seen');
    expect(refused.json).toMatchObject({ allowed: false, approval_id: id, reason: expect.stringMatching(new RegExp(`^Dropping a table needs a DBA; approval ${id} was denied by local:\\S+: never in prod \\(the same call is refused until `)) });
    const approveAfter = await cli(s, 'approve', id);
    expect(approveAfter.code).toBe(1);
    expect(approveAfter.stderr).toMatch(new RegExp(`approval ${id} was already denied by local:`));
  });

  it('an approval covers its arguments only: other arguments need their own, and naming it for them is refused', async () => {
    const { json } = await validate(s, { table: 'sessions' });
    expect((await cli(s, 'approve', json.approval_id)).code).toBe(0);
    const other = await validate(s, { table: 'payments' });
    expect(other.json).toMatchObject({ decision: 'require_approval', approval_id: expect.not.stringMatching(json.approval_id) });
    const named = await validate(s, { table: 'payments' }, { approval_id: json.approval_id });
    expect(named.json).toMatchObject({ decision: 'deny', approval_id: json.approval_id, reason: expect.stringContaining(`approval ${json.approval_id} does not cover this call: its arguments differ`) });
    // The approval is still there for its own call.
    expect((await validate(s, { table: 'sessions' }, { approval_id: json.approval_id })).json).toMatchObject({ decision: 'allow', approval_id: json.approval_id });
  });

  it('expiry: an undecided approval expires; naming it is refused, and it can no longer be approved', async () => {
    const { json } = await validate(short, { table: 'tmp' });
    const id = json.approval_id;
    await eventually(() => listed(short), (all) => all.find((a) => a.metadata.name === id)?.status?.phase === 'Expired', 'the sweep to mark it Expired', 20_000);
    const named = await validate(short, { table: 'tmp' }, { approval_id: id });
    expect(named.json).toMatchObject({ decision: 'deny', reason: expect.stringContaining(`approval ${id} expired at `) });
    const late = await cli(short, 'approve', id);
    expect(late.code).toBe(1);
    expect(late.stderr).toMatch(new RegExp(`^policyguard: approval ${id} expired at .*; the agent must ask again\\n$`));
    const asked = await validate(short, { table: 'tmp' });
    expect(asked.json.approval_id).not.toBe(id);
  });

  it('a decision file that is not a valid decision allows nothing, and is named as such: the list still works, approve says what to do', async () => {
    const { json } = await validate(s, { table: 'invoices' });
    const id = json.approval_id;
    const file = join(s.dataDir, 'approvals', `${id}.decision.json`);
    await writeFile(file, '{"phase":"Approved"}\n');
    const listedAs = async () => (await listed(s)).find((a) => a.metadata.name === id)?.status?.phase;
    expect(await listedAs()).toBe('Pending');
    expect((await validate(s, { table: 'invoices' })).json).toMatchObject({ decision: 'require_approval', approval_id: id });
    const approve = await cli(s, 'approve', id);
    expect(approve.code).toBe(1);
    expect(approve.stderr).toBe(`policyguard: approval ${id} has a decision file that is not a valid decision (${file}), which counts as none: move it away and decide again\n`);
    // A folder in its place: nothing else stops working.
    await rm(file);
    await mkdir(file);
    expect(await listedAs()).toBe('Pending');
    expect((await cli(s, 'list')).code).toBe(0);
    await rm(file, { recursive: true });
    expect((await cli(s, 'approve', id)).code).toBe(0);
    expect(await listedAs()).toBe('Approved');
  });

  it('the CLI says exactly what is wrong with a name, and refuses mixing standalone and cluster flags', async () => {
    const bad = await cli(s, 'approve', 'drop-everything');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe("policyguard: 'drop-everything' is not an approval name: a name is apr- and 12 hex digits (0-9, a-f), e.g. apr-3f9c2a1b7d4e\nRun `policyguard help` for the flags.\n");
    const missing = await cli(s, 'approve', 'apr-000000000000');
    expect(missing.stderr).toBe(`policyguard: no approval apr-000000000000 in ${join(s.dataDir, 'approvals')}\n`);
    const mixed = await runCli(['approvals', 'list', '--data-dir', s.dataDir, '-n', 'team-a']);
    expect(mixed.code).toBe(2);
    expect(mixed.stderr).toMatch(/^policyguard: --data-dir \(standalone\) and --kubeconfig\/-n \(a cluster\) do not go together\n/);
  });

  it('a --data-dir no server uses is a usage error, never an empty list a script would take as complete', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'policyguard-not-data-'));
    const cases: Array<[string, string]> = [
      [join(empty, 'nowhere'), 'does not exist'],
      [join(s.dataDir, 'audit', 'audit-000001.jsonl'), 'is not a folder'],
      [empty, 'holds no PolicyGuard data (no policyguard.lock, audit/ or approvals/)'],
    ];
    for (const [dir, why] of cases) {
      const r = await runCli(['approvals', 'list', '--data-dir', dir]);
      expect([r.code, r.stdout]).toEqual([2, '']);
      expect(r.stderr).toContain(`policyguard: --data-dir ${dir} ${why}: pass the folder the server runs with (its --data-dir)`);
    }
    expect((await runCli(['approvals', 'list', '--data-dir', s.dataDir])).code).toBe(0);
  });
});

describe.skipIf(!python.ok)(`the gateway holds a call that needs approval${python.ok ? '' : ` (skipped: ${python.reason})`}`, () => {
  it('a call too large for a GuardApproval is not made, saying which field does not fit', async () => {
    const client = await connect(`${s.pg.url}/upstreams/default/py`, TOKENS.bot);
    try {
      const r = readResult(await client.callTool({ name: `drop_${'x'.repeat(3000)}`, arguments: {} }));
      expect(r.isError).toBe(true);
      expect(r.json).toContain('no approval could be requested: the call does not fit a GuardApproval (spec.target: Too big: expected string to have <=2048 characters)');
    } finally {
      await client.close();
    }
  });

  it('released when a person approves: the call goes through, with progress while it waited', async () => {
    const client = await connect(`${s.pg.url}/upstreams/default/py`, TOKENS.bot);
    try {
      const progress: Array<{ progress: number; message?: string }> = [];
      const call = client.callTool({ name: 'refund', arguments: { amount: 900 } }, { onprogress: (p: { progress: number; message?: string }) => progress.push(p) } as never);
      let done = 0;
      void call.finally(() => (done = Date.now()));
      const pending = await eventually(() => listed(s), (all) => all.some((a) => a.spec.target === 'refund' && a.status?.phase === 'Pending'), 'the held call to ask for approval');
      const approval = pending.find((a) => a.spec.target === 'refund' && a.status?.phase === 'Pending');
      expect(approval.spec).toMatchObject({ agentId: 'bot', upstream: 'default/py', argumentsPreview: '{"amount":900}', rules: [{ policy: 'people-decide', rule: 'big-refunds' }] });
      expect(done).toBe(0); // still held
      const approved = await cli(s, 'approve', approval.metadata.name, '--reason', 'customer called');
      const approvedAt = Date.now();
      expect(approved.code).toBe(0);
      const result = readResult(await call);
      expect(result.isError).toBeFalsy();
      expect(result.json).toBe('refunded 900');
      // Printed, not asserted: timing belongs to benchmarks. The release is event-driven.
      console.log(`held gateway call released ${done - approvedAt} ms after the CLI returned`);
      expect(progress.length).toBeGreaterThan(0);
      expect(progress[0]!.message).toContain(`Waiting for a person to approve ${approval.metadata.name}`);
      expect((await py!.log()).filter((l) => l.startsWith('tools/call refund'))).toHaveLength(1);
      expect((await listed(s)).find((a) => a.metadata.name === approval.metadata.name).status.phase).toBe('Used');
    } finally {
      await client.close();
    }
  });

  it('not decided within --approval-hold: an error result naming the approval, and the upstream is not called', async () => {
    const refunds = async () => (await py!.log()).filter((l) => l.startsWith('tools/call refund')).length;
    const before = await refunds();
    const client = await connect(`${short.pg.url}/upstreams/default/py`, TOKENS.bot);
    try {
      const r = readResult(await client.callTool({ name: 'refund', arguments: { amount: 700 } }));
      expect(r.isError).toBe(true);
      const id = (await listed(short)).find((a) => a.spec.target === 'refund').metadata.name;
      expect(r.json).toMatch(new RegExp(`^Needs human approval before it runs \\(PolicyGuard\\): Refunds above 500 need a person\\. Approval ${id} is pending until [0-9TZ:.-]+\\. Held 1 s without a decision\\. This call was not made; retry the same call once a person has approved ${id}\\.$`));
    } finally {
      await client.close();
    }
    expect(await refunds()).toBe(before);
  });

  it('denied while held: refused at once with the reason', async () => {
    const client = await connect(`${s.pg.url}/upstreams/default/py`, TOKENS.bot);
    try {
      const call = client.callTool({ name: 'refund', arguments: { amount: 5000 } });
      const pending = await eventually(() => listed(s), (all) => all.some((a) => a.spec.argumentsPreview === '{"amount":5000}'), 'the held call to ask for approval');
      const id = pending.find((a) => a.spec.argumentsPreview === '{"amount":5000}').metadata.name;
      expect((await cli(s, 'deny', id, '--reason', 'too much')).code).toBe(0);
      const r = readResult(await call);
      expect(r.isError).toBe(true);
      expect(r.json).toMatch(new RegExp(`^Denied by PolicyGuard: Refunds above 500 need a person; approval ${id} was denied by local:\\S+: too much`));
    } finally {
      await client.close();
    }
  });
});
