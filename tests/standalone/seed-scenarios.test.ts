/**
 * The seed project's 16 unit-test scenarios (tests/test_tools.py), run against a real server over
 * HTTP on loopback through each of four real MCP clients (./clients.ts): the official SDK v2
 * negotiating the revision (it must end on 2026-07-28), the v1 SDK (2025-11-25, what agents
 * written for the original project use), the Python SDK from PyPI and the MCP Inspector CLI.
 * Each client gets its own server, as the scenarios change state.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOOL_NAMES } from '../../src/mcp/server.js';
import { openClient, type ClientKind, type TestClient } from './clients.js';
import { SEED_FIXTURE, startTestServer, type TestServer } from './harness.js';
import { PYTHON_MCP_VERSION, pythonAvailability } from './python-client.js';

const python = pythonAvailability();
if (!python.ok) console.warn(`Python client tests skipped: ${python.reason}`);

interface ClientCase {
  kind: ClientKind;
  label: string;
  /** The era every request of this client must arrive in, by the server's count. */
  era: 'legacy' | 'modern';
  /** The revision the client says it ended on (the Inspector CLI does not say). */
  revision?: string;
  skip?: string;
}

const CLIENTS: ClientCase[] = [
  { kind: 'sdk-v2', label: 'TypeScript SDK v2, negotiating', era: 'modern', revision: '2026-07-28' },
  { kind: 'sdk-v1', label: 'TypeScript SDK v1 (1.32)', era: 'legacy', revision: '2025-11-25' },
  { kind: 'python', label: `Python SDK (mcp ${PYTHON_MCP_VERSION}), negotiating`, era: 'modern', revision: '2026-07-28', ...(python.ok ? {} : { skip: python.reason }) },
  { kind: 'inspector', label: 'MCP Inspector CLI, negotiating', era: 'modern' },
];

/** policyguard_mcp_requests_total by era, from the server's /metrics. */
async function requestsByEra(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Object.fromEntries([...text.matchAll(/^policyguard_mcp_requests_total\{era="(\w+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
}

describe.each(CLIENTS)('through the $label', ({ kind, era, revision, skip }) => {
  if (skip) {
    it.skip(`SKIPPED: ${skip}`, () => {});
    return;
  }
  let s: TestServer;
  let c: TestClient;
  /** Requests by era before this client connected (the harness's own client sent some). */
  let before: Record<string, number>;
  beforeAll(async () => {
    s = await startTestServer(SEED_FIXTURE);
    before = await requestsByEra(s.pg.url);
    c = await openClient(kind, s.pg.url);
  }, 300_000); // the first Python run creates its virtualenv from PyPI
  afterAll(async () => {
    await c?.close();
    await s?.close();
  });

  const validate = (target: string, agent_id: string) => c.call('validate_action', { action_type: 'tool_call', target, agent_id });

  describe('MCP surface', () => {
    if (revision) {
      it(`ends on protocol revision ${revision}`, () => {
        expect(c.revision).toBe(revision);
      });
    }
    it('lists exactly the six tools, each with input and output schemas', async () => {
      const tools = await c.listTools();
      expect(tools.map((t) => t.name).sort()).toEqual([...TOOL_NAMES].sort());
      for (const t of tools) {
        expect(t.inputSchema.type).toBe('object');
        expect(t.inputSchema.additionalProperties, t.name).toBe(false);
        expect(t.outputSchema?.type, t.name).toBe('object');
      }
      expect(tools.find((t) => t.name === 'validate_action')!.annotations?.readOnlyHint).toBe(true);
    });
  });

  describe('validate_action (seed TestValidateAction)', () => {
    it('test_allow_read_for_low_trust', async () => {
      expect((await validate('read_data', 'test-low')).json.allowed).toBe(true);
    });
    it('test_deny_delete_for_low_trust', async () => {
      const { json } = await validate('delete_records', 'test-low');
      expect(json.allowed).toBe(false);
      expect(json.reason.toLowerCase()).toContain('admin');
    });
    it('test_allow_delete_for_admin', async () => {
      expect((await validate('delete_records', 'test-admin')).json.allowed).toBe(true);
    });
    it('test_deny_suspended_agent', async () => {
      const { json } = await validate('read_data', 'test-suspended');
      expect(json.allowed).toBe(false);
      expect(json.reason.toLowerCase()).toContain('suspended');
    });
    it('test_auto_register_unknown_agent (unknown agent is low trust)', async () => {
      const { json } = await validate('delete_records', 'unknown-agent');
      expect(json.allowed).toBe(false);
      expect(json.agent).toEqual({ id: 'unknown-agent', trust_level: 'low', registered: false });
    });
    it('test_action_id_generated (unique act_ ids)', async () => {
      const a = (await validate('read_data', 'test-low')).json;
      const b = (await validate('read_data', 'test-low')).json;
      expect(a.action_id).not.toBe(b.action_id);
      expect(a.action_id).toMatch(/^act_[0-9a-f]{12}$/);
    });
    it('returns the same object as structuredContent, seed fields first', async () => {
      const r = await validate('read_data', 'test-low');
      expect(r.structured).toEqual(r.json);
      expect(Object.keys(r.json).slice(0, 5)).toEqual(['action_id', 'allowed', 'require_approval', 'reason', 'warnings']);
    });
  });

  describe('register_agent (seed TestRegisterAgent)', () => {
    it('test_register_new_agent', async () => {
      const { json } = await c.call('register_agent', { agent_id: 'new-agent', name: 'New Agent', description: 'A new test agent', trust_level: 'medium' });
      expect(json.success).toBe(true);
      expect(json.message.toLowerCase()).toContain('registered');
    });
    it('test_reject_invalid_trust_level', async () => {
      const r = await c.call('register_agent', { agent_id: 'bad-agent', name: 'Bad Agent', trust_level: 'superadmin' });
      expect(r.isError).toBe(true);
      expect(r.json.success).toBe(false);
      expect(r.json.message.toLowerCase()).toContain('invalid');
    });
    it('test_warn_on_admin_registration', async () => {
      const { json } = await c.call('register_agent', { agent_id: 'admin-agent-2', name: 'Another Admin', trust_level: 'admin' });
      expect(json.success).toBe(true);
      expect(json.warnings.length).toBeGreaterThan(0);
      expect(json.warnings[0].toLowerCase()).toContain('admin');
    });
  });

  describe('create_policy (seed TestCreatePolicy)', () => {
    it('test_create_valid_policy', async () => {
      const rules = JSON.stringify([{ condition: { tool_pattern: 'test_*' }, action: 'allow', message: 'Test allowed' }]);
      const { json } = await c.call('create_policy', { policy_id: 'new-policy', name: 'New Policy', description: 'A test policy', rules });
      expect(json.success).toBe(true);
    });
    it('test_reject_empty_rules', async () => {
      const r = await c.call('create_policy', { policy_id: 'empty-policy', name: 'Empty Policy', description: 'No rules', rules: '[]' });
      expect(r.json.success).toBe(false);
      expect(r.isError).toBe(true);
    });
    it('test_reject_invalid_action', async () => {
      const rules = JSON.stringify([{ condition: { tool_pattern: 'test_*' }, action: 'explode', message: 'Invalid' }]);
      const r = await c.call('create_policy', { policy_id: 'bad-policy', name: 'Bad Policy', description: 'Invalid action', rules });
      expect(r.json.success).toBe(false);
      expect(r.json.message).toMatch(/Rule 0: action/);
    });
  });

  describe('get_audit_log (seed TestGetAuditLog)', () => {
    it('test_get_audit_log_structure', async () => {
      const { json } = await c.call('get_audit_log');
      for (const k of ['count', 'entries', 'total', 'time_range']) expect(json).toHaveProperty(k);
      expect(Array.isArray(json.entries)).toBe(true);
    });
    it('test_filter_by_agent', async () => {
      await c.call('validate_action', { action_type: 'tool_call', target: 'read_data', agent_id: 'test-low' });
      await c.call('validate_action', { action_type: 'tool_call', target: 'read_data', agent_id: 'test-medium' });
      const { json } = await c.call('get_audit_log', { agent_id: 'test-low' });
      expect(json.entries.length).toBeGreaterThan(0);
      for (const e of json.entries) expect(e.agent_id).toBe('test-low');
      expect(json.filters_applied).toEqual(['agent_id=test-low']);
    });
  });

  describe('report_incident (seed TestReportIncident)', () => {
    it('test_report_incident', async () => {
      const { json } = await c.call('report_incident', { incident_type: 'suspicious_activity', severity: 'high', description: 'Test incident', agent_id: 'test-low' });
      expect(json.success).toBe(true);
      expect(json.incident_id).toMatch(/^inc_[0-9a-f]{12}$/);
    });
    it('test_auto_suspend_on_critical', async () => {
      const { json } = await c.call('report_incident', { incident_type: 'unauthorized_access', severity: 'critical', description: 'Critical security breach', agent_id: 'test-medium' });
      expect(json.success).toBe(true);
      expect(json.agent_suspended).toBe(true);
      const after = await c.call('validate_action', { action_type: 'tool_call', target: 'read_data', agent_id: 'test-medium' });
      expect(after.json.allowed).toBe(false);
      expect(after.json.reason).toMatch(/suspended/);
    });
  });

  // Last, over everything the client sent above (vitest runs a file's tests in order).
  it(`sent every request in the ${era} era`, async () => {
    const after = await requestsByEra(s.pg.url);
    const sent = Object.fromEntries(Object.entries(after).map(([k, n]) => [k, n - (before[k] ?? 0)]).filter(([, n]) => n !== 0));
    expect(sent[era]).toBeGreaterThan(16);
    expect(sent).toEqual({ [era]: sent[era] });
  });
});
