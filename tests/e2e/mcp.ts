// A bare MCP-over-HTTP caller for the end-to-end checks: one JSON-RPC `tools/call` per request,
// as an agent in the cluster would send it (Service host name in the Host header, a bearer
// ServiceAccount token), over a fresh connection each time, so a call goes to the address given.

import { request } from 'node:http';

export interface Decision {
  decision: string;
  reason?: string;
  [k: string]: unknown;
}

export interface HttpAnswer {
  status: number;
  body: string;
}

/**
 * One POST to `${baseUrl}/mcp`; resolves with status and body, rejects on network errors (with their code).
 *
 * @example const { status } = await postMcp(url, { host: 'policyguard.policyguard.svc', body: { jsonrpc: '2.0', id: 1, method: 'tools/list' } });
 */
export function postMcp(baseUrl: string, opts: { host: string; token?: string; body: unknown; timeoutMs?: number }): Promise<HttpAnswer> {
  const payload = JSON.stringify(opts.body);
  return new Promise((resolve, reject) => {
    const req = request(`${baseUrl}/mcp`, {
      method: 'POST',
      agent: false, // a new connection per call: what was accepted and what was refused is then clear
      timeout: opts.timeoutMs ?? 10_000,
      headers: {
        host: opts.host,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'content-length': Buffer.byteLength(payload),
        ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
      },
    }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end(payload);
  });
}

/** The JSON-RPC message of a body that is either JSON or a server-sent event stream. */
function rpcMessage(body: string): { result?: { structuredContent?: unknown; content?: Array<{ text?: string }>; isError?: boolean }; error?: { message: string } } {
  const data = body.trimStart().startsWith('{') ? body : body.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5)).join('');
  return JSON.parse(data) as ReturnType<typeof rpcMessage>;
}

/**
 * Calls `validate_action` and returns the decision; throws with the status and body when the
 * call is not answered with one.
 *
 * @example const d = await validateAction('http://10.244.0.5:8000', { host: 'policyguard.policyguard.svc', token, agentId: 'e2e-agent', target: 'read_records' });
 */
export async function validateAction(
  baseUrl: string,
  o: { host: string; token?: string; agentId: string; target: string; parameters?: Record<string, unknown>; timeoutMs?: number },
): Promise<Decision> {
  const answer = await postMcp(baseUrl, {
    host: o.host, token: o.token, timeoutMs: o.timeoutMs,
    body: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'validate_action', arguments: { action_type: 'tool_call', target: o.target, agent_id: o.agentId, parameters: o.parameters ?? {} } } },
  });
  if (answer.status !== 200) throw Object.assign(new Error(`HTTP ${answer.status}: ${answer.body.slice(0, 300)}`), { code: `HTTP_${answer.status}` });
  const msg = rpcMessage(answer.body);
  if (msg.error || msg.result?.isError) throw Object.assign(new Error(`validate_action failed: ${msg.error?.message ?? msg.result?.content?.[0]?.text}`), { code: 'TOOL_ERROR' });
  const decision = (msg.result?.structuredContent ?? JSON.parse(msg.result?.content?.[0]?.text ?? '{}')) as Decision;
  if (typeof decision.decision !== 'string') throw new Error(`validate_action answered without a decision: ${answer.body.slice(0, 300)}`);
  return decision;
}
