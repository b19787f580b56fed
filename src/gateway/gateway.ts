/**
 * The inline gateway: PolicyGuard as the MCP server an agent connects to, in front of the MCP
 * server that does the work (a GuardUpstream), so every `tools/call` is decided whether or not
 * the agent asks (docs/decisions.md, "The gateway"). Served at
 * `/upstreams/<namespace>/<name>/mcp` behind the same HTTP edge as `/mcp` (authenticated, rate
 * limited, before the body is read).
 *
 * - Who calls is the authenticated caller, acting as the one GuardAgent it is bound to; there
 *   is no self-asserted agent id on this path. Its credentials are never sent upstream: the
 *   upstream gets only the headers its GuardUpstream names.
 * - `tools/call` goes through the decision pipeline (target = tool name, parameters = the
 *   arguments, plus the upstream): deny → a tool error carrying the reason (or, with
 *   `denyAs: 'unknown-tool'`, the answer an unknown tool gets); require_approval → a tool error
 *   naming what is needed; allow → forwarded as a message built from what was decided
 *   (./message.ts), and the upstream's answer (JSON or an SSE stream with its progress
 *   notifications) streamed back unchanged, its outcome audited. A message an upstream could
 *   read otherwise than the gate (keys equal ignoring case, a look-alike method) is refused.
 * - `tools/list` answers list only the tools the agent may ever call, and mark those that need
 *   approval in `_meta`.
 * - 2026-07-28 `Mcp-Param-*` headers (./param-headers.ts): once a call is allowed, the client's
 *   are checked against the body (one that disagrees is refused, a missing one is not) and never
 *   passed on; the upstream gets headers built from the arguments decided, per the tool's
 *   `x-mcp-header` declarations, learned from tools/list answers or by listing the upstream's
 *   tools (a call is not forwarded when they are invalid or the upstream cannot be listed).
 * - Everything else — initialize, server/discover, resources, prompts, completions,
 *   notifications, cancellation, responses to server-to-client requests, GET streams, DELETE —
 *   is passed through, in both protocol revisions. An upstream session is carried in the
 *   session id the gateway gives out (./session.ts), so any replica serves any request.
 * - Fail closed: not ready → 503; an upstream that cannot be reached, is too slow, or whose
 *   credentials cannot be read → an error, audited for tools/call.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { KeyObject } from 'node:crypto';
import { CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY } from '@modelcontextprotocol/server';
import type { GuardUpstream } from '../api/schemas.js';
import type { Principal } from '../auth/authenticate.js';
import type { Approvals, HoldResult } from '../approvals/approvals.js';
import type { GuardApproval } from '../api/schemas.js';
import type { Authorizer } from '../auth/authorize.js';
import { outcomeEntry, type UpstreamOutcome } from '../audit/outcomes.js';
import type { AuditSink } from '../audit/sink.js';
import type { DecisionInput, DecisionPipeline, RecordedDecision } from '../decide/pipeline.js';
import { parseDuration } from '../duration.js';
import type { Logger } from '../log.js';
import { classifyMcpRequest, HEADER_MISMATCH, legacyHeaderMismatch, MODERN_REVISION, standardHeaderMismatch } from '../mcp/revisions.js';
import type { Metrics } from '../metrics.js';
import type { PolicyStore } from '../store/store.js';
import { DEFAULT_NAMESPACE } from '../store/upstreams.js';
import type { CompiledAgent } from '../engine/compile.js';
import { clientSpan, requestContext, upstreamTraceparent, type SpanHandle } from '../telemetry/request-context.js';
import { outgoingTraceHeaders } from '../telemetry/trace-context.js';
import { VERSION } from '../version.js';
import { CredentialError, type CredentialSource } from './credentials.js';
import { readToolsCall, refuseMessage, type MessageRefusal } from './message.js';
import { paramHeaderMismatch, paramHeaders, shown, ToolHeaderCatalog, type ToolListing } from './param-headers.js';
import { openSession, sealSession } from './session.js';
import { parseEvent, SseSplitter, withData } from './sse.js';

/** `_meta` key on a listed tool that needs approval: `always` or `depends-on-arguments`. */
export const APPROVAL_META_KEY = 'policyguard.dev/approval';
/** `_meta` key on a gated result: the decision's action_id and outcome, for correlating with the audit log. */
export const DECISION_META_KEY = 'policyguard.dev/decision';
/** The agent id the gateway acts as under `--auth none`, where callers have no identity. */
export const ANONYMOUS_AGENT = 'anonymous';

export interface GatewayOptions {
  /**
   * How a denied tools/call is answered: `tool-error` (default) a result with `isError: true`
   * and the reason, so the model sees why; `unknown-tool` the JSON-RPC error an unknown tool
   * gets, so a model is not tempted to argue with the policy.
   */
  denyAs: 'tool-error' | 'unknown-tool';
  /**
   * How long a call that needs approval is held for a person's decision (--approval-hold);
   * 0 answers at once. Under kagent's 30 s and the SDK's 60 s request timeouts by default.
   */
  approvalHoldMs: number;
  /**
   * The largest upstream answer taken, in bytes: a JSON answer whole, or one event of a stream;
   * all the pages of the gateway's own listing of an upstream's tools together (--gateway-response-limit).
   */
  responseLimitBytes: number;
}

export interface GatewayDeps {
  store: PolicyStore;
  pipeline: DecisionPipeline;
  authorizer: Authorizer;
  audit: AuditSink;
  credentials: CredentialSource;
  /** Signs the session ids given out (./session.ts). */
  sessionKey: KeyObject;
  metrics: Metrics;
  log: Logger;
  options: GatewayOptions;
  /** Where a call that needs approval waits for it; absent, such a call is answered at once. */
  approvals?: Approvals;
}

/**
 * Request headers a client may send on to the upstream; everything else (its credentials first)
 * stays here. A POST body is the gateway's own serialisation of the message it decided, so its
 * Content-Type is the gateway's too; the trace headers are checked first (outgoingTraceHeaders),
 * and a tools/call's `Mcp-Param-*` headers are built from what was decided (./param-headers.ts).
 */
const FORWARDED_REQUEST_HEADERS = ['accept', 'mcp-protocol-version', 'mcp-method', 'mcp-name', 'last-event-id'];
/** Response headers the upstream may send back to the client. */
const FORWARDED_RESPONSE_HEADERS = ['content-type', 'cache-control', 'mcp-protocol-version'];

/** How many pages of an upstream's tools/list the gateway reads, at most, to learn its tools' `Mcp-Param-*` headers. */
const TOOLS_LIST_PAGES_MAX = 20;
/** The `_meta` of the gateway's own 2026-07-28 requests (its listing of an upstream's tools): no client capabilities, as it answers nothing the upstream could ask. */
const GATEWAY_ENVELOPE = { [PROTOCOL_VERSION_META_KEY]: MODERN_REVISION, [CLIENT_INFO_META_KEY]: { name: 'policyguard-gateway', version: VERSION }, [CLIENT_CAPABILITIES_META_KEY]: {} };
const TOOLS_CHANGED = 'notifications/tools/list_changed';

/** Connections to upstreams are kept open and reused: a new one per call would cost more than the call. */
const AGENTS = { 'http:': new HttpAgent({ keepAlive: true, maxSockets: 256 }), 'https:': new HttpsAgent({ keepAlive: true, maxSockets: 256 }) };

/**
 * The CLIENT span of one request to an upstream, inside the current request's span (undefined
 * with tracing off), as OpenTelemetry's HTTP client conventions name and describe it; its URL
 * without credentials, query or fragment.
 */
function upstreamSpan(method: string, url: string, ref: string): SpanHandle | undefined {
  return clientSpan(`${method} upstream`, () => {
    const target = new URL(url);
    return {
      'http.request.method': method,
      'server.address': target.hostname.replace(/^\[(.*)\]$/, '$1'),
      'server.port': target.port ? Number(target.port) : target.protocol === 'https:' ? 443 : 80,
      'url.full': `${target.protocol}//${target.host}${target.pathname}`,
      'policyguard.upstream': ref,
    };
  });
}

/** One HTTP request to an upstream; resolves with its response (body still to read). */
function send(url: string, method: string, headers: Record<string, string>, body: string | undefined, signal: AbortSignal): Promise<IncomingMessage> {
  const target = new URL(url);
  const request = target.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(target, { method, headers: body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) }, agent: AGENTS[target.protocol as 'http:' | 'https:'], signal }, resolve);
    req.on('error', reject);
    req.end(body);
  });
}

/** A failed upstream call: `message` is what the agent and the audit log read, `detail` only the PolicyGuard log. */
class UpstreamFailure extends Error {
  constructor(
    message: string,
    readonly detail: string = message,
  ) {
    super(message);
  }
}

const tooLarge = (limit: number) => new UpstreamFailure(`its answer is larger than --gateway-response-limit (${limit} bytes)`);

async function readAll(stream: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      stream.destroy();
      throw tooLarge(limit);
    }
    chunks.push(chunk as Buffer);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

/** Network failures by error code, as the agent reads them. */
const NETWORK_FAILURES: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'the connection was refused',
  ECONNRESET: 'the connection was reset',
  ENOTFOUND: 'its host name does not resolve',
  EAI_AGAIN: 'its host name does not resolve',
  ETIMEDOUT: 'the connection timed out',
  EHOSTUNREACH: 'its host is unreachable',
};

/**
 * What the agent is told about a failure: the kind of network failure, never the upstream's
 * address (the log has the details); a credentials problem as PolicyGuard words it.
 */
function publicReason(err: unknown, aborted: AbortSignal): UpstreamFailure {
  if (aborted.aborted) {
    const why = String((aborted.reason as Error | undefined)?.message ?? 'aborted');
    return new UpstreamFailure(why);
  }
  if (err instanceof UpstreamFailure) return err;
  const detail = (err as Error).message;
  // Ours, and meant for whoever wires the upstream up: which header, which Secret, what is wrong.
  if (err instanceof CredentialError) return new UpstreamFailure(detail);
  const code = (err as NodeJS.ErrnoException).code;
  const known = code !== undefined && Object.hasOwn(NETWORK_FAILURES, code) ? NETWORK_FAILURES[code] : undefined;
  return new UpstreamFailure(known ?? (code ? `the request failed (${code})` : 'the request failed (the PolicyGuard log says why)'), detail);
}

type JsonRpcId = string | number | null;
/** The Mcp-Param headers a call goes upstream with, or why it does not go (Gateway.paramHeadersFor). */
type ParamHeaders = { ok: true; headers: Record<string, string> } | { ok: false; outcome: string; httpStatus: number; code: number; message: string };
type Message = { jsonrpc?: unknown; id?: unknown; method?: unknown; params?: unknown; result?: unknown; error?: unknown };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const idOf = (m: Message): JsonRpcId => (typeof m.id === 'string' || typeof m.id === 'number' ? m.id : null);

/**
 * The JSON-RPC response (a `result` or an `error`, no `method`) that `text` holds; `batch` for
 * an array (an answer to one request is never one, though clients accept them); else undefined.
 */
function responseIn(text: string): Message | 'batch' | undefined {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (Array.isArray(m)) return 'batch';
  return isObject(m) && !('method' in m) && ('result' in m || 'error' in m) ? (m as Message) : undefined;
}

/** Whether an event's data is the notification that an upstream's tools changed. */
function toolsChanged(data: string | undefined): boolean {
  if (data === undefined) return false;
  try {
    const m: unknown = JSON.parse(data);
    return isObject(m) && m.method === TOOLS_CHANGED;
  } catch {
    return false;
  }
}

const foreignAnswerText = (m: Message | 'batch', id: JsonRpcId) =>
  m === 'batch' ? `the upstream answered request ${JSON.stringify(id)} with a batch` : `the upstream answered with id ${JSON.stringify(m.id ?? null)}, not this request's ${JSON.stringify(id)}`;

/**
 * What the client gets for an upstream answer whose id is not its request's (`"2"` for 2): an
 * error under the request's id. Passed on, a client that matches ids loosely would take it as
 * the answer, unfiltered (a tools/list) or unrecorded; one that matches strictly, as the answer
 * to another request of its own.
 */
function foreignAnswer(m: Message | 'batch', id: JsonRpcId): string {
  return JSON.stringify({ jsonrpc: '2.0', id, error: { code: -32603, message: `${foreignAnswerText(m, id)}; the gateway passes on no answer it cannot match to its request` } });
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), ...headers }).end(text);
}

const rpcError = (res: ServerResponse, status: number, id: JsonRpcId, code: number, message: string) => sendJson(res, status, { jsonrpc: '2.0', id, error: { code, message } });

/** How often a held call with a progress token gets a progress notification. */
const PROGRESS_EVERY_MS = 2000;

/** One JSON-RPC message (an object, or its text) as a server-sent event. */
function writeEvent(res: ServerResponse, message: unknown): void {
  const text = typeof message === 'string' ? message : JSON.stringify(message);
  res.write(`event: message\n${text.split('\n').map((line) => `data: ${line}`).join('\n')}\n\n`);
}

const acceptsEventStream = (req: IncomingMessage) => (req.headers.accept ?? '').includes('text/event-stream');

/** `params._meta.progressToken` of a request, when it is one (a string or an integer). */
function progressTokenOf(params: Record<string, unknown>): string | number | undefined {
  const token = isObject(params._meta) ? params._meta.progressToken : undefined;
  return typeof token === 'string' || (typeof token === 'number' && Number.isInteger(token)) ? token : undefined;
}

/**
 * A tool result the model reads: the text, flagged as an error, with the decision for
 * correlation; a 2026-07-28 result also says it is complete (`resultType`, which that revision
 * requires of every result).
 */
const toolError = (text: string, decision: RecordedDecision, modern: boolean) => ({
  content: [{ type: 'text', text }],
  isError: true,
  _meta: { [DECISION_META_KEY]: { action_id: decision.action_id, decision: decision.decision } },
  ...(modern ? { resultType: 'complete' } : {}),
});

/**
 * Why `agent` may not send this request to `upstream`, or undefined. Only tools/call is decided
 * per call; these hold for every request (resources, prompts, streams included):
 * - a suspended agent is refused everything but tools/call, which the decision denies;
 * - an upstream serves the agents of its own namespace and of those in its
 *   `spec.allowedNamespaces`: its credentials are its namespace's, and another namespace's
 *   agents are governed by other namespaces' policies (docs/decisions.md, "The gateway").
 */
function refusal(agent: CompiledAgent | undefined, upstream: GuardUpstream, ref: string, toolsCall: boolean): string | undefined {
  if (!agent) return undefined;
  if (agent.suspension && !toolsCall) return `agent '${agent.id}' is ${agent.suspension}; the gateway refuses all of its requests`;
  const mine = agent.namespace ?? DEFAULT_NAMESPACE;
  const theirs = upstream.metadata.namespace ?? DEFAULT_NAMESPACE;
  const allowed = upstream.spec.allowedNamespaces;
  if (mine === theirs || allowed.includes('*') || allowed.includes(mine)) return undefined;
  return `agent '${agent.id}' (namespace ${mine}) may not use GuardUpstream ${ref}: an upstream serves the agents of its own namespace and of the namespaces its spec.allowedNamespaces lists`;
}

export class Gateway {
  private readonly calls;
  /** Each upstream tool's `x-mcp-header` declarations, as far as they are known (./param-headers.ts). */
  private readonly toolHeaders = new ToolHeaderCatalog();

  constructor(private readonly deps: GatewayDeps) {
    this.calls = deps.metrics.counter('policyguard_gateway_requests_total', 'Requests to upstreams through the gateway, by method kind and outcome.');
  }

  /**
   * Answer one request for the upstream `ref` (`namespace/name`) from an authenticated caller.
   * `body` is the parsed JSON of a POST, undefined for GET and DELETE.
   */
  async handle(req: IncomingMessage, res: ServerResponse, ref: string, principal: Principal, body: unknown): Promise<void> {
    const { store } = this.deps;
    const notReady = store.notReady();
    if (notReady) return rpcError(res, 503, null, -32000, `PolicyGuard is not ready: ${notReady}`);
    const upstream = store.upstream(ref);
    if (!upstream) return rpcError(res, 404, null, -32000, `no usable GuardUpstream ${ref} (see its Ready condition, or kubectl get guardupstreams -A)`);
    const agent = this.agentOf(principal);
    if (!agent.ok) return rpcError(res, 403, null, -32000, agent.error);
    // A tools/call of a suspended agent is decided (a deny, audited); anything else is refused here.
    const refused = refusal(agent.agent, upstream, ref, isObject(body) && body.method === 'tools/call');
    if (refused) {
      this.calls.inc({ method: 'any', outcome: 'refused' });
      return rpcError(res, 403, null, -32000, refused);
    }

    const sessionHeader = req.headers['mcp-session-id'];
    const clientSession = typeof sessionHeader === 'string' ? sessionHeader : undefined;
    const upstreamSession = clientSession === undefined ? undefined : openSession(this.deps.sessionKey, clientSession, ref, principal.subject);
    if (clientSession !== undefined && upstreamSession === undefined) return rpcError(res, 404, null, -32001, 'Session not found');
    const call = { req, res, ref, principal, upstream, upstreamSession };

    // Streamable HTTP has POST (messages), GET (the server's stream) and DELETE (end a session).
    if (req.method === 'GET' || req.method === 'DELETE') return this.forward(call, undefined, { kind: 'other' });
    if (req.method !== 'POST') {
      res.setHeader('allow', 'GET, POST, DELETE');
      return rpcError(res, 405, null, -32000, `Method not allowed: ${req.method} (the MCP endpoint takes GET, POST and DELETE)`);
    }
    if (!isObject(body)) {
      return rpcError(res, 400, null, -32600, Array.isArray(body) ? 'Invalid Request: the gateway takes one JSON-RPC message per request, not a batch' : 'Invalid Request: not a JSON-RPC message');
    }
    const message = body as Message;
    const refusedMessage = refuseMessage(body);
    if (refusedMessage) return this.refuse(call, idOf(message), refusedMessage, 'any');
    // A request whose Mcp-Method/Mcp-Name headers say something else than its body is refused
    // here, as /mcp refuses it, in either revision: intermediaries route on those headers, the
    // gate on the body.
    const route = classifyMcpRequest(req, body);
    if (route.kind === 'reject') return sendJson(res, route.httpStatus, { jsonrpc: '2.0', id: idOf(message), error: { code: route.code, message: route.message, ...(route.data !== undefined ? { data: route.data } : {}) } });
    const mismatch =
      route.kind === 'modern' && typeof message.method === 'string' && message.id !== undefined
        ? standardHeaderMismatch(req.headers, message.method, message.params)
        : route.kind === 'legacy'
          ? legacyHeaderMismatch(req.headers, body)
          : undefined;
    if (mismatch) return rpcError(res, 400, idOf(message), HEADER_MISMATCH, `Header mismatch: ${mismatch}`);
    if (message.method === 'tools/call') return this.toolsCall(call, message, agent.agentId, route.kind === 'modern');
    if (message.method === 'tools/list') {
      // Declarations are learned from sessionless 2026-07-28 answers only: what an upstream
      // session lists (2025, or a session id a 2026-07-28 client still sends) may be that
      // session's own, and would stand for every caller of the upstream.
      const learnAs = route.kind === 'modern' && call.upstreamSession === undefined ? catalogKey(call) : undefined;
      return this.forward(call, message, { kind: 'tools/list', id: idOf(message), agentId: agent.agentId, ref, learnAs });
    }
    return this.forward(call, message, { kind: 'other' });
  }

  /** The one GuardAgent the caller acts as (none under `--auth none`, where callers have no identity). */
  private agentOf(principal: Principal): { ok: true; agentId: string; agent: CompiledAgent | undefined } | { ok: false; error: string } {
    const { authorizer, store } = this.deps;
    if (!authorizer.enforcing) return { ok: true, agentId: ANONYMOUS_AGENT, agent: undefined };
    const bound = authorizer.boundAgents(principal, store.snapshot());
    if (bound.length === 1) return { ok: true, agentId: bound[0]!.id, agent: bound[0]! };
    return {
      ok: false,
      error:
        `caller '${principal.subject}' is bound to ${bound.length} GuardAgents${bound.length > 1 ? ` (${bound.map((a) => a.id).join(', ')})` : ''}; ` +
        'the gateway acts for exactly one: list the caller in one GuardAgent\'s spec.identities',
    };
  }

  /**
   * Refuse a message before anything is decided or forwarded. Keys equal ignoring case and
   * look-alike methods are an attack or a broken client: logged at warn, without their values.
   */
  private refuse(call: Call, id: JsonRpcId, refusal: MessageRefusal, method: 'any' | 'tools/call'): void {
    this.calls.inc({ method, outcome: refusal.outcome });
    if (refusal.outcome === 'ambiguous_key' || refusal.outcome === 'lookalike_method') {
      this.deps.log.warn('gateway: refused a message an upstream could read otherwise than the gate', { upstream: call.ref, caller: call.principal.subject, reason: refusal.message });
    }
    rpcError(call.res, refusal.httpStatus, id, refusal.code, refusal.message);
  }

  /** `modern`: a 2026-07-28 request, whose results must say `resultType` (the gateway writes its own for a deny). */
  private async toolsCall(call: Call, message: Message, agentId: string, modern: boolean): Promise<void> {
    const read = readToolsCall(message as Record<string, unknown>, { exactKeys: call.upstream.spec.keyMatching === 'Exact' });
    if (!read.ok) return this.refuse(call, idOf(message), read.refusal, 'tools/call');
    const { id, name, forward } = read.call;
    // The Mcp-Param headers an allowed call goes with, worked out once: before an approval is
    // used for it, so an approval is not spent on a call the gateway then refuses to make, nor
    // on one whose client went away meanwhile (the listing may take the upstream's timeout).
    let prepared: Promise<ParamHeaders> | undefined;
    const prepare = () => (prepared ??= modern ? this.paramHeadersFor(call, name, read.call.arguments) : Promise.resolve({ ok: true, headers: {} }));
    const input: DecisionInput = {
      principal: call.principal,
      agentId,
      actionType: 'tool_call',
      target: name,
      parameters: read.call.arguments,
      context: '',
      upstream: call.ref,
      readyToUse: async () => {
        const headers = await prepare();
        if (!headers.ok) return headers.message;
        return call.res.destroyed ? 'the client went away before the call was made' : undefined;
      },
    };
    let out = await this.deps.pipeline.decide(input);
    if (!out.ok) return rpcError(call.res, 403, id, -32000, out.error);
    // Held for a person (docs/decisions.md, "Approvals"); once decided, decided again: an
    // approval is then used (and the call forwarded), a denial refuses it.
    let held: { approval: GuardApproval; result: HoldResult } | undefined;
    const pending = out.settlement?.outcome === 'pending' ? out.settlement.approval : undefined;
    if (pending && this.deps.approvals && this.deps.options.approvalHoldMs > 0) {
      held = { approval: pending, result: await this.hold(call, pending, progressTokenOf(forward.params)) };
      if (held.result !== 'timeout') {
        out = await this.deps.pipeline.decide(input);
        if (!out.ok) return this.respond(call, id, { error: { code: -32000, message: out.error } });
      }
    }
    const decision = out.decision;
    const unmade = prepared && (await prepared);
    if (decision.decision === 'deny' && out.settlement?.outcome === 'refused' && unmade && !unmade.ok) {
      // Refused before its approval was used, which the reason (and the decision's record) says:
      // answered as an allowed call the gateway cannot make is.
      this.calls.inc({ method: 'tools/call', outcome: unmade.outcome });
      return this.refuseUnmade(call, id, unmade, out.settlement.reason);
    }
    if (decision.decision === 'deny') {
      this.calls.inc({ method: 'tools/call', outcome: 'denied' });
      if (this.deps.options.denyAs === 'unknown-tool') return this.respond(call, id, { error: { code: -32602, message: `Unknown tool: ${name}` } });
      return this.respond(call, id, { result: toolError(`Denied by PolicyGuard: ${decision.reason}`, decision, modern) });
    }
    if (decision.decision === 'require_approval') {
      this.calls.inc({ method: 'tools/call', outcome: 'approval_required' });
      const asked = out.settlement?.outcome === 'pending' ? out.settlement.approval : undefined;
      const where = asked?.metadata.namespace ? ` in namespace ${asked.metadata.namespace}` : '';
      const pendingText = asked ? ` Approval ${asked.metadata.name}${where} is pending until ${asked.spec.expiresAt}.` : '';
      const waited = held?.result === 'timeout' ? ` Held ${this.deps.options.approvalHoldMs / 1000} s without a decision.` : '';
      const text = `Needs human approval before it runs (PolicyGuard): ${decision.reason}.${pendingText}${waited} This call was not made; retry the same call once a person has approved${asked ? ` ${asked.metadata.name}` : ' it'}.`;
      return this.respond(call, id, { result: toolError(text, decision, modern) });
    }
    // What was decided, and nothing else of what the client sent (./message.ts).
    const headers = await prepare();
    const kind: Extract<ForwardKind, { kind: 'tools/call' }> = { kind: 'tools/call', id, tool: name, decision, modern, paramHeaders: headers.ok ? headers.headers : {} };
    if (!headers.ok) {
      this.calls.inc({ method: 'tools/call', outcome: headers.outcome });
      // Decided, but not forwarded: the decision's record is followed by an outcome that says why.
      this.recordOutcome(call, kind, { status: 0, is_error: true, duration_ms: 0, bytes: 0, error: headers.message });
      return this.refuseUnmade(call, id, headers, headers.message);
    }
    return this.forward(call, forward, kind);
  }

  /** Answer a decided call the gateway does not make, for want of its Mcp-Param headers. */
  private refuseUnmade(call: Call, id: JsonRpcId, refusal: Extract<ParamHeaders, { ok: false }>, message: string): void {
    if (call.res.headersSent) return this.respond(call, id, { error: { code: refusal.code, message } });
    return rpcError(call.res, refusal.httpStatus, id, refusal.code, message);
  }

  /**
   * The `Mcp-Param-*` headers an allowed 2026-07-28 call goes upstream with, built from the
   * arguments decided (./param-headers.ts), or why it does not go: a header the client sent
   * disagrees with the body, which a server must refuse (400, -32020; one it did not send is no
   * error, see paramHeaderMismatch); the tool's declarations are invalid; or the upstream could
   * not be listed to learn them. A tool the listing does not name goes with none: an upstream
   * that does declare some refuses the call for want of them.
   * Checked once the call is allowed, or an approval is about to be used for it (which a refusal
   * leaves unused), so a deny or a call that waits for a person never waits on the upstream.
   */
  private async paramHeadersFor(call: Call, tool: string, args: Record<string, unknown>): Promise<ParamHeaders> {
    const known = await this.toolHeaders.declarations(catalogKey(call), tool, () => this.listTools(call));
    if (known.ok) {
      const mismatch = paramHeaderMismatch(known.headers, args, call.req.headers);
      if (mismatch) return { ok: false, outcome: 'header_mismatch', httpStatus: 400, code: HEADER_MISMATCH, message: `Header mismatch: ${mismatch}` };
      return { ok: true, headers: paramHeaders(known.headers, args) };
    }
    if ('unknown' in known && known.unknown === 'unlisted') return { ok: true, headers: {} };
    this.deps.log.warn('gateway: an allowed call is not forwarded, for want of its Mcp-Param headers', { upstream: call.ref, tool, reason: known.reason });
    return { ok: false, outcome: 'param_headers_unknown', httpStatus: 200, code: -32603, message: `Tool ${JSON.stringify(tool)} of upstream ${call.ref} is not called: ${known.reason}; the gateway forwards a 2026-07-28 call only with the Mcp-Param headers its tool declares` };
  }

  /**
   * Wait for a person to decide `approval`, up to --approval-hold. When the client asked for
   * progress (`_meta.progressToken`) and takes an event stream, the answer becomes one, with a
   * progress notification every {@link PROGRESS_EVERY_MS} (which also keeps SDK timeouts that
   * reset on progress from firing).
   */
  private async hold(call: Call, approval: GuardApproval, progressToken: string | number | undefined): Promise<HoldResult> {
    const holdMs = this.deps.options.approvalHoldMs;
    const gone = new AbortController();
    const onClose = () => gone.abort();
    call.res.once('close', onClose);
    let ticker: NodeJS.Timeout | undefined;
    if (progressToken !== undefined && acceptsEventStream(call.req)) {
      call.res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      const started = Date.now();
      const where = approval.metadata.namespace ? ` -n ${approval.metadata.namespace}` : '';
      const tick = () =>
        writeEvent(call.res, {
          jsonrpc: '2.0',
          method: 'notifications/progress',
          params: {
            progressToken,
            progress: Math.round((Date.now() - started) / 100) / 10,
            total: holdMs / 1000,
            message: `Waiting for a person to approve ${approval.metadata.name} (policyguard approvals approve ${approval.metadata.name}${where})`,
          },
        });
      tick();
      ticker = setInterval(tick, PROGRESS_EVERY_MS);
    }
    try {
      const result = await this.deps.approvals!.wait(approval, holdMs, gone.signal);
      this.calls.inc({ method: 'tools/call', outcome: `held_${result.toLowerCase()}` });
      return result;
    } finally {
      clearInterval(ticker);
      call.res.off('close', onClose);
    }
  }

  /** Answer `id` with a result or error: as JSON, or as the last event when the answer is already an event stream (a held call). */
  private respond(call: Call, id: JsonRpcId, body: { result: unknown } | { error: { code: number; message: string } }): void {
    const message = { jsonrpc: '2.0', id, ...body };
    if (!call.res.headersSent) return sendJson(call.res, 200, message);
    writeEvent(call.res, message);
    call.res.end();
  }

  /** Send the request upstream and stream its answer back, looking at the one message the kind needs. */
  private async forward(call: Call, message: Message | undefined, kind: ForwardKind): Promise<void> {
    const { req, res, upstream } = call;
    const started = Date.now();
    const limit = this.deps.options.responseLimitBytes;
    const timeoutMs = parseDuration(upstream.spec.timeout) ?? 30_000;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error(`no complete answer within ${upstream.spec.timeout}`)), timeoutMs);
    const clientGone = () => abort.abort(new Error('the client went away'));
    res.once('close', clientGone);
    const outcome: UpstreamOutcome = { status: 0, is_error: false, duration_ms: 0, bytes: 0 };
    const method = req.method ?? 'POST';
    let span: SpanHandle | undefined;
    try {
      const headers: Record<string, string> = await this.deps.credentials.headersFor(upstream);
      for (const h of FORWARDED_REQUEST_HEADERS) {
        const v = req.headers[h];
        if (typeof v === 'string') headers[h] = v;
      }
      if (kind.kind === 'tools/call') Object.assign(headers, kind.paramHeaders);
      if (message !== undefined) headers['content-type'] = 'application/json';
      // Routing headers go on only when they say what the body says (a 2026-07-28 request was
      // checked already; a notification, an answer or a 2025 message was not); a GET or DELETE
      // has no body for them to say.
      if (message === undefined || typeof message.method !== 'string' || standardHeaderMismatch(req.headers, message.method, message.params) !== undefined) {
        delete headers['mcp-method'];
        delete headers['mcp-name'];
      }
      if (call.upstreamSession !== undefined) headers['mcp-session-id'] = call.upstreamSession;
      // The upstream's spans join this request's trace as children of the call's CLIENT span
      // (docs/observability.md); a caller's traceparent and tracestate go on only as far as they
      // are valid W3C Trace Context.
      span = upstreamSpan(method, upstream.spec.url, call.ref);
      Object.assign(headers, outgoingTraceHeaders(upstreamTraceparent(span), req.headers));
      const answer = await send(upstream.spec.url, method, headers, message === undefined ? undefined : JSON.stringify(message), abort.signal);
      const status = answer.statusCode ?? 502;
      outcome.status = status;
      span?.setAttributes({ 'http.response.status_code': status, ...(status >= 400 ? { 'error.type': String(status) } : {}) });
      if (status >= 400) span?.fail(`HTTP ${status}`);
      if (status >= 300 && status < 400) {
        answer.destroy();
        throw new UpstreamFailure(`it answered HTTP ${status}, a redirect, which the gateway does not follow`, `HTTP ${status} to ${String(answer.headers.location ?? '(no Location)')}`);
      }
      if (status >= 400) outcome.is_error = true;
      const out: Record<string, string> = {};
      for (const h of FORWARDED_RESPONSE_HEADERS) {
        const v = answer.headers[h];
        if (typeof v === 'string') out[h] = v;
      }
      const session = answer.headers['mcp-session-id'];
      if (typeof session === 'string') out['mcp-session-id'] = sealSession(this.deps.sessionKey, call.ref, session, call.principal.subject);
      // Media types are case-insensitive; clients read `Application/JSON` as JSON too.
      const type = (answer.headers['content-type'] ?? '').toLowerCase();
      if (res.headersSent) {
        // A held call: the client's answer is already an event stream (progress); the upstream's
        // answer goes on as its events, a JSON answer as one event.
        if (type.includes('text/event-stream')) await this.streamEvents(call, answer, kind, outcome);
        else {
          const read = (await readAll(answer, limit)).toString('utf8');
          const body = kind.kind === 'tools/call' ? this.noteResult(kind, read, outcome) : read;
          outcome.bytes = Buffer.byteLength(body);
          writeEvent(res, body);
        }
        res.end();
      } else if (type.includes('text/event-stream')) {
        res.writeHead(status, out);
        res.flushHeaders();
        // A GET stream carries the server's own messages for as long as the session lasts: the
        // timeout covers its start, not its end.
        if (req.method === 'GET') clearTimeout(timer);
        await this.streamEvents(call, answer, kind, outcome);
        res.end();
      } else {
        // A JSON answer (or any other) arrives whole: read it, look at it, send it in one write.
        let body = await readAll(answer, limit);
        if (kind.kind !== 'other' && type.includes('application/json')) {
          const text = body.toString('utf8');
          const seen = kind.kind === 'tools/list' ? this.filterToolsList(text, kind) : this.noteResult(kind, text, outcome);
          if (seen !== text) body = Buffer.from(seen);
        }
        outcome.bytes = body.length;
        res.writeHead(status, { ...out, 'content-length': String(body.length) }).end(body);
      }
      if (kind.kind === 'tools/call' && !kind.answered) {
        outcome.is_error = true;
        outcome.error = `upstream ${call.ref} answered HTTP ${status} with no JSON-RPC response to the call`;
      }
      this.calls.inc({ method: kind.kind, outcome: status < 400 ? 'forwarded' : 'upstream_error' });
    } catch (err) {
      const failure = publicReason(err, abort.signal);
      outcome.error = `upstream ${call.ref} failed: ${failure.message}`;
      outcome.is_error = true;
      // Both spans say so: the call's, and the request's, which may still answer 200 (a tool error).
      span?.setAttributes({ 'error.type': (err as NodeJS.ErrnoException | undefined)?.code ?? (err instanceof Error ? err.name : 'Error') });
      span?.fail(failure.message);
      requestContext.getStore()?.span?.fail(outcome.error);
      this.calls.inc({ method: kind.kind, outcome: 'unreachable' });
      this.deps.log.warn('gateway: upstream call failed', { upstream: call.ref, url: upstream.spec.url, error: failure.detail });
      const id = kind.kind === 'other' ? idOf(message ?? {}) : kind.id;
      if (kind.kind === 'tools/call' && outcome.bytes === 0) this.respond(call, id, { result: toolError(`The tool's server did not answer: ${outcome.error}`, kind.decision, kind.modern) });
      else if (!res.headersSent) rpcError(res, 502, id, -32603, outcome.error);
      else res.destroy();
    } finally {
      span?.end();
      clearTimeout(timer);
      res.off('close', clientGone);
      outcome.duration_ms = Date.now() - started;
      if (kind.kind === 'tools/call') this.recordOutcome(call, kind, outcome);
    }
  }

  /** Copy an SSE answer to the client event by event, unchanged but for the one message the kind looks at. */
  private async streamEvents(call: Call, answer: IncomingMessage, kind: ForwardKind, outcome: UpstreamOutcome): Promise<void> {
    const { res } = call;
    const split = new SseSplitter();
    answer.setEncoding('utf8');
    const limit = this.deps.options.responseLimitBytes;
    const emit = (raw: string) => {
      if (Buffer.byteLength(raw) > limit) throw tooLarge(limit);
      // Tools that changed may declare other Mcp-Param headers: they are learned again when next called.
      if (raw.includes(TOOLS_CHANGED) && toolsChanged(parseEvent(raw).data)) this.toolHeaders.forget(catalogKey(call));
      let text = raw;
      if (kind.kind !== 'other') {
        const event = parseEvent(raw);
        if (event.data !== undefined) {
          const seen = kind.kind === 'tools/list' ? this.filterToolsList(event.data, kind) : this.noteResult(kind, event.data, outcome);
          if (seen !== event.data) text = withData(event, seen);
        }
      }
      const out = `${text}\n\n`;
      outcome.bytes += Buffer.byteLength(out);
      res.write(out);
    };
    for await (const chunk of answer) {
      for (const raw of split.push(chunk as string)) emit(raw);
      if (split.pending > limit) {
        answer.destroy();
        throw tooLarge(limit);
      }
    }
    for (const raw of split.end()) emit(raw);
  }

  /**
   * Record whether the tools/call answer in `text` was an error; `text` as the client gets it
   * (see {@link foreignAnswer}).
   */
  private noteResult(kind: Extract<ForwardKind, { kind: 'tools/call' }>, text: string, outcome: UpstreamOutcome): string {
    const m = responseIn(text);
    if (!m) return text;
    kind.answered = true;
    if (m === 'batch' || idOf(m) !== kind.id) {
      outcome.is_error = true;
      outcome.error = foreignAnswerText(m, kind.id);
      return foreignAnswer(m, kind.id);
    }
    if (m.error !== undefined) outcome.is_error = true;
    else if (isObject(m.result) && m.result.isError === true) outcome.is_error = true;
    return text;
  }

  /**
   * The tools/list answer in `text` with the tools this agent may never call removed and those
   * needing approval marked; `text` unchanged when it is not our answer.
   */
  private filterToolsList(text: string, kind: Extract<ForwardKind, { kind: 'tools/list' }>): string {
    const m = responseIn(text);
    if (!m) return text;
    if (m === 'batch' || idOf(m) !== kind.id) return foreignAnswer(m, kind.id);
    if (!isObject(m.result) || !Array.isArray(m.result.tools)) return text;
    if (kind.learnAs !== undefined) this.toolHeaders.learn(kind.learnAs, m.result.tools);
    const snapshot = this.deps.store.snapshot();
    const tools: unknown[] = [];
    for (const tool of m.result.tools as unknown[]) {
      if (!isObject(tool) || typeof tool.name !== 'string') continue;
      const possible = snapshot.possibleDecisions({ agentId: kind.agentId, actionType: 'tool_call', target: tool.name, upstream: kind.ref });
      if (possible.size === 1 && possible.has('deny')) continue;
      if (possible.has('require_approval')) {
        const approval = possible.size === 1 ? 'always' : 'depends-on-arguments';
        tools.push({ ...tool, _meta: { ...(isObject(tool._meta) ? tool._meta : {}), [APPROVAL_META_KEY]: approval } });
      } else tools.push(tool);
    }
    // The list now depends on who asked: never let a shared cache serve it to someone else.
    const result = { ...m.result, tools, ...('cacheScope' in m.result ? { cacheScope: 'private' } : {}) };
    return JSON.stringify({ ...m, result });
  }

  /**
   * The upstream's tools, listed by the gateway itself to learn their `Mcp-Param-*` headers: as a
   * 2026-07-28 client (no session) with the upstream's URL and credentials, following nextCursor
   * for up to {@link TOOLS_LIST_PAGES_MAX} pages within the upstream's timeout and, all pages
   * together, the response limit. Throws an {@link UpstreamFailure} saying what went wrong,
   * never where.
   */
  private async listTools(call: Call): Promise<ToolListing> {
    const { upstream } = call;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error(`no complete answer within ${upstream.spec.timeout}`)), parseDuration(upstream.spec.timeout) ?? 30_000);
    const budget = { left: this.deps.options.responseLimitBytes };
    let tools: unknown[] = [];
    let cursor: string | undefined;
    try {
      for (let page = 1; page <= TOOLS_LIST_PAGES_MAX; page++) {
        const id = `policyguard-tools-list-${page}`;
        const headers = {
          ...(await this.deps.credentials.headersFor(upstream)),
          accept: 'application/json, text/event-stream',
          'content-type': 'application/json',
          'mcp-protocol-version': MODERN_REVISION,
          'mcp-method': 'tools/list',
          ...outgoingTraceHeaders(upstreamTraceparent(), call.req.headers),
        };
        const body = { jsonrpc: '2.0', id, method: 'tools/list', params: { ...(cursor !== undefined ? { cursor } : {}), _meta: GATEWAY_ENVELOPE } };
        const m = await this.responseTo(await send(upstream.spec.url, 'POST', headers, JSON.stringify(body), abort.signal), id, budget);
        if (!isObject(m.result) || !Array.isArray(m.result.tools)) {
          throw new UpstreamFailure(`it answered tools/list with ${isObject(m.error) ? `error ${shown(m.error.code ?? null)}` : 'no list of tools'}`);
        }
        tools = tools.concat(m.result.tools);
        cursor = typeof m.result.nextCursor === 'string' ? m.result.nextCursor : undefined;
        if (cursor === undefined) return { tools, complete: true };
      }
      return { tools, complete: false };
    } catch (err) {
      const failure = publicReason(err, abort.signal);
      this.deps.log.warn('gateway: listing the tools of an upstream failed', { upstream: call.ref, url: upstream.spec.url, error: failure.detail });
      throw failure;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The response to the gateway's own request `id` in an upstream's answer: a JSON answer read
   * whole, an event stream read up to the event that holds it (a server may keep the stream
   * open after it). Reads at most `budget.left` bytes, and takes them off.
   */
  private async responseTo(answer: IncomingMessage, id: string, budget: { left: number }): Promise<Message> {
    const status = answer.statusCode ?? 502;
    if (status >= 300) {
      answer.destroy();
      throw new UpstreamFailure(`it answered tools/list with HTTP ${status}`);
    }
    const ours = (data: string | undefined) => {
      const m = data === undefined ? undefined : responseIn(data);
      return m !== undefined && m !== 'batch' && m.id === id ? m : undefined;
    };
    const inEvents = (events: string[]) => {
      for (const raw of events) {
        const m = ours(parseEvent(raw).data);
        if (m) return m;
      }
      return undefined;
    };
    const stream = (answer.headers['content-type'] ?? '').toLowerCase().includes('text/event-stream');
    const split = new SseSplitter();
    const parts: string[] = [];
    answer.setEncoding('utf8');
    for await (const chunk of answer as AsyncIterable<string>) {
      budget.left -= Buffer.byteLength(chunk);
      if (budget.left < 0) {
        answer.destroy();
        throw new UpstreamFailure(`its tools/list answers together are larger than --gateway-response-limit (${this.deps.options.responseLimitBytes} bytes)`);
      }
      if (!stream) parts.push(chunk);
      else {
        const m = inEvents(split.push(chunk));
        if (m) {
          // Answered: the rest of the stream, which a server may keep open, is not waited for.
          answer.destroy();
          return m;
        }
      }
    }
    const m = stream ? inEvents(split.end()) : ours(parts.join(''));
    if (m) return m;
    throw new UpstreamFailure('its answer to tools/list holds no response to it');
  }

  private recordOutcome(call: Call, kind: Extract<ForwardKind, { kind: 'tools/call' }>, outcome: UpstreamOutcome): void {
    const appended = this.deps.audit.append(outcomeEntry({ actionId: kind.decision.action_id, agentId: kind.decision.agent.id, tool: kind.tool, upstream: call.ref, outcome }));
    if (!appended.ok) this.deps.log.error('gateway: the outcome of a forwarded call could not be audited', { action_id: kind.decision.action_id, reason: appended.reason });
  }
}

interface Call {
  req: IncomingMessage;
  res: ServerResponse;
  ref: string;
  principal: Principal;
  upstream: GuardUpstream;
  upstreamSession: string | undefined;
}

/** What the gateway knows of an upstream's tools is keyed by its ref and URL: a GuardUpstream that points elsewhere serves other tools. */
const catalogKey = (call: Call) => `${call.ref} ${call.upstream.spec.url}`;

type ForwardKind =
  /** `paramHeaders`: the `Mcp-Param-*` headers built from the decided arguments (none under 2025). */
  | { kind: 'tools/call'; id: JsonRpcId; tool: string; decision: RecordedDecision; modern: boolean; paramHeaders: Record<string, string>; answered?: boolean }
  /** `learnAs`: the key under which the tools' `x-mcp-header` declarations are learned (2026-07-28 answers only). */
  | { kind: 'tools/list'; id: JsonRpcId; agentId: string; ref: string; learnAs: string | undefined }
  | { kind: 'other' };
