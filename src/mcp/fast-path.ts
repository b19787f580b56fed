/**
 * A lean path for the one request that dominates traffic: `tools/call` of `validate_action`,
 * in either protocol revision (./revisions.ts).
 *
 * The SDK builds a new server and transport for every POST, converts the request to a web
 * Request and back, and validates the message, the request and the result against the wire
 * schemas (about 0.5 ms of CPU each; docs/performance.md). This module answers plain
 * `tools/call` requests for the tools in {@link FAST_TOOLS} directly, doing what the SDK does for
 * them — the same input schema (the strict zod object the SDK validates with), the same handler,
 * the same output-schema check and error texts, the same result object and JSON-RPC envelope,
 * and for 2026-07-28 the same `resultType` and server identity the SDK stamps on every result —
 * so the response is byte for byte what the SDK path sends (fast-path.test.ts compares them over
 * a corpus of requests of both revisions).
 *
 * Anything else goes to the SDK untouched: initialize, server/discover, tools/list,
 * notifications, batches, unknown methods or tools, task parameters, `_meta` beyond the
 * 2026-07-28 envelope, headers that do not mirror the body character for character, a
 * Content-Type other than application/json, 2025 requests whose Accept header the 2025 transport
 * refuses, and every request whose arguments fail validation (so error
 * shapes are the SDK's own). The decision to take a request is made before any side effect, so
 * a request is never half-handled by both.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  CLIENT_CAPABILITIES_META_KEY,
  CLIENT_INFO_META_KEY,
  PROTOCOL_VERSION_META_KEY,
  SERVER_INFO_META_KEY,
  SUPPORTED_PROTOCOL_VERSIONS,
  type CallToolResult,
  type StandardSchemaV1,
} from '@modelcontextprotocol/server';
import type { z } from 'zod';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { requestContext, type RequestContext } from '../telemetry/request-context.js';
import { headersMirrorBody, MODERN_REVISION, type McpRoute } from './revisions.js';
import { SERVER_INFO, toCallToolResult, TOOL_SPECS, type ToolName } from './server.js';
import type { CallContext, ToolOutcome, Tools } from './tools.js';

interface FastTool {
  input: z.ZodObject;
  output: z.ZodObject;
  run(tools: Tools, args: any, ctx: CallContext): Promise<ToolOutcome<object>>;
}

/**
 * Tools answered here, from the same table server.ts registers (TOOL_SPECS). validate_action
 * is the hot path; the others do file or API writes and reads that cost far more than the SDK
 * overhead, so they stay on the SDK path.
 */
export const FAST_TOOLS: Partial<Record<ToolName, FastTool>> = { validate_action: TOOL_SPECS.validate_action };

const REQUEST_KEYS = new Set(['jsonrpc', 'id', 'method', 'params']);
const LEGACY_PARAMS_KEYS = new Set(['name', 'arguments']);
const MODERN_PARAMS_KEYS = new Set(['name', 'arguments', '_meta']);
/** The 2026-07-28 envelope and nothing else (no progress token, log level or trace context). */
const ENVELOPE_KEYS = new Set([PROTOCOL_VERSION_META_KEY, CLIENT_INFO_META_KEY, CLIENT_CAPABILITIES_META_KEY]);

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

const onlyKeys = (o: Record<string, unknown>, allowed: Set<string>): boolean => {
  for (const k in o) if (!allowed.has(k)) return false;
  return true;
};

interface PlainCall {
  id: string | number;
  name: ToolName;
  tool: FastTool;
  args: Record<string, unknown>;
  modern: boolean;
}

/** Headers the SDK's 2025 transport checks, and no 2026-07-28 headers at all. */
function plainLegacyHeaders(req: IncomingMessage): boolean {
  const accept = req.headers.accept;
  if (!accept?.includes('application/json') || !accept.includes('text/event-stream')) return false;
  const version = req.headers['mcp-protocol-version'];
  if (version !== undefined && !SUPPORTED_PROTOCOL_VERSIONS.includes(version as string)) return false;
  return req.headers['mcp-method'] === undefined && req.headers['mcp-name'] === undefined;
}

/** The request the fast path takes, or undefined: the SDK handles it. */
function plainToolCall(req: IncomingMessage, body: unknown, route: McpRoute): PlainCall | undefined {
  if (req.headers['content-type'] !== 'application/json') return undefined;
  if (!isPlainObject(body) || !onlyKeys(body, REQUEST_KEYS)) return undefined;
  if (body.jsonrpc !== '2.0' || body.method !== 'tools/call') return undefined;
  const id = body.id;
  if (!(typeof id === 'string' || (typeof id === 'number' && Number.isSafeInteger(id)))) return undefined;
  const params = body.params;
  if (!isPlainObject(params) || typeof params.name !== 'string' || !isPlainObject(params.arguments)) return undefined;
  if (!Object.hasOwn(FAST_TOOLS, params.name)) return undefined;
  const name = params.name as ToolName;

  let modern: boolean;
  if (route.kind === 'legacy') {
    if (!onlyKeys(params, LEGACY_PARAMS_KEYS) || !plainLegacyHeaders(req)) return undefined;
    modern = false;
  } else if (route.kind === 'modern' && route.classification.revision === MODERN_REVISION) {
    // The classifier has checked the envelope; here only its keys and the headers.
    if (!onlyKeys(params, MODERN_PARAMS_KEYS) || !isPlainObject(params._meta) || !onlyKeys(params._meta, ENVELOPE_KEYS)) return undefined;
    if (!headersMirrorBody(req.headers, MODERN_REVISION, 'tools/call', name)) return undefined;
    modern = true;
  } else {
    return undefined;
  }
  return { id, name, tool: FAST_TOOLS[name]!, args: params.arguments, modern };
}

/** The SDK's text for schema issues: `path.to.field: message`, comma-separated. */
function describeIssues(issues: readonly StandardSchemaV1.Issue[]): string {
  return issues
    .map((issue) => {
      const path = issue.path?.map((p) => String(typeof p === 'object' ? p.key : p)).join('.');
      return path ? `${path}: ${issue.message}` : issue.message;
    })
    .join(', ');
}

/** McpServer's tool error result: the message as text. */
const toolError = (message: string): CallToolResult => ({ content: [{ type: 'text', text: message }], isError: true });

/** The JSON-RPC response text: what the SDK sends for this result in each revision. */
function responseText(id: string | number, result: CallToolResult, modern: boolean): string {
  // 2026-07-28 results say they are complete (not input_required) and who the server is.
  const wire = modern ? { ...result, resultType: 'complete', _meta: { [SERVER_INFO_META_KEY]: SERVER_INFO } } : result;
  return JSON.stringify({ result: wire, jsonrpc: '2.0', id });
}

/** What of a ServerResponse an answer needs (unit tests pass their own). */
export interface AnswerTarget {
  readonly destroyed: boolean;
  writeHead(status: number, headers: Record<string, string | number>): { end(text: string): unknown };
  destroy(): unknown;
}

/** Answers held for the end of a turn before they are written anyway. */
export const MAX_QUEUED_ANSWERS = 256;

/**
 * Writes answers at the end of the event loop's turn (setImmediate), all together, instead of
 * each as soon as it is decided. Under load a turn reads many requests (about 30 of 50
 * connections at saturation in the bench). A write to a peer that waits for it also wakes the
 * peer: on loopback (and between pods of one node) the kernel delivers the bytes inside the
 * write and wakes the waiting reader across CPUs, which on a virtual machine is dear. Written
 * as each is decided, nearly every answer paid that wakeup; written together, the first wakes
 * the reader and the rest find it awake. On the bench machine this took the server's CPU per
 * request from ~125 µs to ~90 µs and throughput up by a third (docs/performance.md, "What the
 * sixth pass changed"). An answer waits only for the rest of its own turn: under
 * light load, one request per turn, for nothing. A turn that decides more than
 * {@link MAX_QUEUED_ANSWERS} writes them in batches of that many.
 *
 * @example
 *   const answers = answerWriter(log);
 *   answers.send(res, text); // on the wire once this turn's other answers are ready too
 */
export function answerWriter(log: Logger): { send(res: AnswerTarget, text: string): void } {
  let queued: Array<{ res: AnswerTarget; text: string; ctx: RequestContext | undefined }> = [];
  const writeAll = () => {
    const batch = queued;
    queued = [];
    for (const { res, text, ctx } of batch) {
      if (res.destroyed) continue; // the caller went away while its answer waited
      try {
        // What the SDK path puts on the wire in both revisions: these two headers, no chunking.
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
      } catch (err) {
        // One answer that cannot be written must not keep the rest of the turn's from theirs.
        // Named by its own request: the batch runs in the context of the turn's first.
        log.error('MCP fast path could not write an answer', { trace_id: ctx?.trace_id, action_id: ctx?.action_id, error: String(err) });
        res.destroy();
      }
    }
  };
  return {
    send(res, text) {
      queued.push({ res, text, ctx: requestContext.getStore() });
      if (queued.length === 1) setImmediate(writeAll);
      // A turn that decides very many (a flood of pipelined requests) writes them in batches,
      // so answers waiting in memory stay bounded; the wakeups saved are nearly all kept.
      else if (queued.length >= MAX_QUEUED_ANSWERS) writeAll();
    },
  };
}

export interface FastPathOptions {
  tools: Tools;
  metrics: Metrics;
  log: Logger;
}

export interface FastPath {
  /**
   * Answer `body` (the parsed JSON of a POST /mcp, with the route ./revisions.ts gave it) here
   * when it is a plain `tools/call` of a fast tool with valid arguments, and return true.
   * Otherwise return false, having written and done nothing: the caller hands the request to
   * the SDK.
   */
  handle(req: IncomingMessage, res: ServerResponse, body: unknown, route: McpRoute, ctx: CallContext): boolean;
  /** Requests answered here and handed on (also the metric policyguard_mcp_fast_path_requests_total). */
  readonly stats: { taken: number; passed: number };
}

/**
 * @example
 *   const fast = createFastPath({ tools, metrics, log });
 *   app.post('/mcp', express.json(), (req, res) => {
 *     const route = classifyMcpRequest(req, req.body);
 *     if (fast.handle(req, res, req.body, route, ctx)) return;
 *     // … the SDK (./revisions.ts, createMcpEndpoint)
 *   });
 */
export function createFastPath(opts: FastPathOptions): FastPath {
  const { tools, metrics, log } = opts;
  const stats = { taken: 0, passed: 0 };
  const answers = answerWriter(log);
  const requests = metrics.counter('policyguard_mcp_fast_path_requests_total', 'POST /mcp requests answered on the fast path (taken) or handed to the MCP SDK (passed).', ['outcome']);
  const pass = (): false => {
    stats.passed++;
    requests.inc({ outcome: 'passed' });
    return false;
  };

  /** What McpServer's tools/call handler returns: the tool's result, or a tool error naming what failed. */
  async function callTool(call: PlainCall, args: unknown, ctx: CallContext): Promise<CallToolResult> {
    try {
      const outcome = await call.tool.run(tools, args, ctx);
      metrics.toolCalls.inc({ tool: call.name, outcome: outcome.ok ? 'ok' : 'error' });
      const result = toCallToolResult(outcome);
      if (result.isError) return result;
      // McpServer's output check; its error text becomes the tool error.
      if (result.structuredContent === undefined) return toolError(`Output validation error: Tool ${call.name} has an output schema but no structured content was provided`);
      const checked = call.tool.output.safeParse(result.structuredContent);
      if (!checked.success) return toolError(`Output validation error: Invalid structured content for tool ${call.name}: ${describeIssues(checked.error.issues)}`);
      return result;
    } catch (error) {
      return toolError(error instanceof Error ? error.message : String(error));
    }
  }

  return {
    stats,
    handle(req, res, body, route, ctx) {
      const call = plainToolCall(req, body, route);
      if (!call) return pass();
      const input = call.tool.input.safeParse(call.args);
      if (!input.success) return pass(); // the SDK words the validation error
      stats.taken++;
      requests.inc({ outcome: 'taken' });
      callTool(call, input.data, ctx).then(
        (result) => {
          if (!res.destroyed) answers.send(res, responseText(call.id, result, call.modern));
        },
        (err: unknown) => {
          // callTool() catches everything a handler throws; this is a bug in this module.
          log.error('MCP fast path failed', { error: String(err) });
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null }));
        },
      );
      return true;
    },
  };
}
