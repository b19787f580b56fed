/**
 * A lean path for the one request that dominates traffic: `tools/call` of `validate_action`.
 *
 * The SDK's stateless pattern builds a new McpServer and transport for every POST and converts
 * the request to a web Request and back (about 0.5 ms of CPU each). This module answers plain
 * `tools/call` requests for the tools in {@link FAST_TOOLS} directly, doing what the SDK would
 * do for them — the same input schema (the strict zod object the SDK validates with), the
 * same handler, the same output-schema check, the same `CallToolResultSchema` parse and the
 * same JSON-RPC envelope — so the response is byte for byte what the SDK path sends
 * (fast-path.test.ts compares them over a corpus of requests).
 *
 * Anything else goes to the SDK untouched: initialize, tools/list, notifications, batches,
 * unknown methods or tools, `_meta`/task parameters, unusual headers, and every request whose
 * arguments fail validation (so error shapes are the SDK's own). The decision to take a
 * request is made before any side effect, so a request is never half-handled by both.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { getParseErrorMessage, normalizeObjectSchema, safeParse } from '@modelcontextprotocol/sdk/server/zod-compat.js';
import type { AnySchema } from '@modelcontextprotocol/sdk/server/zod-compat.js';
import { CallToolResultSchema, ErrorCode, McpError, SUPPORTED_PROTOCOL_VERSIONS, type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { toCallToolResult, TOOL_SPECS, type ToolName } from './server.js';
import type { CallContext, ToolOutcome, Tools } from './tools.js';

interface FastTool {
  input: AnySchema;
  output: AnySchema;
  run(tools: Tools, args: any, ctx: CallContext): Promise<ToolOutcome<object>>;
}

const objectSchema = (shape: Record<string, AnySchema>): AnySchema => {
  const schema = normalizeObjectSchema(shape);
  if (!schema) throw new Error('not an object shape');
  return schema;
};

/**
 * Tools answered here, built from the same table server.ts registers (TOOL_SPECS).
 * validate_action is the hot path; the others do file or API writes and reads that cost far
 * more than the SDK overhead, so they stay on the SDK path.
 */
const fastTool = (name: ToolName): FastTool => ({ input: TOOL_SPECS[name].input, output: objectSchema(TOOL_SPECS[name].output), run: TOOL_SPECS[name].run });
export const FAST_TOOLS: Partial<Record<ToolName, FastTool>> = { validate_action: fastTool('validate_action') };

const REQUEST_KEYS = new Set(['jsonrpc', 'id', 'method', 'params']);
const PARAMS_KEYS = new Set(['name', 'arguments']);

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

const onlyKeys = (o: Record<string, unknown>, allowed: Set<string>): boolean => {
  for (const k in o) if (!allowed.has(k)) return false;
  return true;
};

/** The request the fast path takes, or undefined: the SDK handles it. */
function plainToolCall(req: IncomingMessage, body: unknown): { id: string | number; tool: FastTool; name: string; args: Record<string, unknown> } | undefined {
  // Header checks the SDK transport makes; anything it would reject or treat specially goes to it.
  const accept = req.headers.accept;
  if (!accept?.includes('application/json') || !accept.includes('text/event-stream')) return undefined;
  if (req.headers['content-type'] !== 'application/json') return undefined;
  const version = req.headers['mcp-protocol-version'];
  if (version !== undefined && !(typeof version === 'string' && SUPPORTED_PROTOCOL_VERSIONS.includes(version))) return undefined;

  if (!isPlainObject(body) || !onlyKeys(body, REQUEST_KEYS)) return undefined;
  if (body.jsonrpc !== '2.0' || body.method !== 'tools/call') return undefined;
  const id = body.id;
  if (!(typeof id === 'string' || (typeof id === 'number' && Number.isSafeInteger(id)))) return undefined;
  const params = body.params;
  if (!isPlainObject(params) || !onlyKeys(params, PARAMS_KEYS) || typeof params.name !== 'string') return undefined;
  if (!Object.hasOwn(FAST_TOOLS, params.name)) return undefined;
  const tool = FAST_TOOLS[params.name as ToolName]!;
  if (!isPlainObject(params.arguments)) return undefined;
  return { id, tool, name: params.name, args: params.arguments };
}

/** McpServer.createToolError. */
const toolError = (message: string): CallToolResult => ({ content: [{ type: 'text', text: message }], isError: true });

export interface FastPathOptions {
  tools: Tools;
  metrics: Metrics;
  log: Logger;
}

export interface FastPath {
  /**
   * Answer `body` (the parsed JSON of a POST /mcp) here when it is a plain `tools/call` of a
   * fast tool with valid arguments, and return true. Otherwise return false, having written and
   * done nothing: the caller hands the request to the SDK.
   */
  handle(req: IncomingMessage, res: ServerResponse, body: unknown, ctx: CallContext): boolean;
  /** Requests answered here and handed on (also the metric policyguard_mcp_fast_path_requests_total). */
  readonly stats: { taken: number; passed: number };
}

/**
 * @example
 *   const fast = createFastPath({ tools, metrics, log });
 *   app.post('/mcp', express.json(), (req, res) => {
 *     if (fast.handle(req, res, req.body, ctx)) return;
 *     // … the SDK's stateless pattern
 *   });
 */
export function createFastPath(opts: FastPathOptions): FastPath {
  const { tools, metrics, log } = opts;
  const stats = { taken: 0, passed: 0 };
  const requests = metrics.counter('policyguard_mcp_fast_path_requests_total', 'POST /mcp requests answered on the fast path (taken) or handed to the MCP SDK (passed).');
  const pass = (): false => {
    stats.passed++;
    requests.inc({ outcome: 'passed' });
    return false;
  };

  /** What McpServer's tools/call handler and Server's result check produce, as the JSON-RPC response text. */
  async function respond(id: string | number, name: string, tool: FastTool, args: unknown, ctx: CallContext): Promise<string> {
    let result: CallToolResult;
    try {
      const outcome = await tool.run(tools, args, ctx);
      metrics.toolCalls.inc({ tool: name, outcome: outcome.ok ? 'ok' : 'error' });
      result = toCallToolResult(outcome);
      if (!result.isError) {
        // McpServer.validateToolOutput; its McpError message becomes the tool error text.
        if (!result.structuredContent) {
          throw new McpError(ErrorCode.InvalidParams, `Output validation error: Tool ${name} has an output schema but no structured content was provided`);
        }
        const checked = safeParse(tool.output, result.structuredContent);
        if (!checked.success) {
          throw new McpError(ErrorCode.InvalidParams, `Output validation error: Invalid structured content for tool ${name}: ${getParseErrorMessage(checked.error)}`);
        }
      }
    } catch (error) {
      result = toolError(error instanceof Error ? error.message : String(error));
    }
    // Server.setRequestHandler's wrapper for tools/call returns the parsed result.
    const parsed = safeParse(CallToolResultSchema, result);
    if (!parsed.success) {
      const message = new McpError(ErrorCode.InvalidParams, `Invalid tools/call result: ${parsed.error instanceof Error ? parsed.error.message : String(parsed.error)}`).message;
      return JSON.stringify({ jsonrpc: '2.0', id, error: { code: ErrorCode.InvalidParams, message } });
    }
    return JSON.stringify({ result: parsed.data, jsonrpc: '2.0', id });
  }

  return {
    stats,
    handle(req, res, body, ctx) {
      const call = plainToolCall(req, body);
      if (!call) return pass();
      const input = safeParse(call.tool.input, call.args);
      if (!input.success) return pass(); // the SDK words the validation error
      stats.taken++;
      requests.inc({ outcome: 'taken' });
      respond(call.id, call.name, call.tool, input.data, ctx).then(
        (text) => {
          if (res.destroyed) return;
          // What the SDK's web Response becomes on the wire: these two headers, no chunking.
          res.writeHead(200, { 'content-length': Buffer.byteLength(text), 'content-type': 'application/json' }).end(text);
        },
        (err: unknown) => {
          // respond() catches everything a handler throws; this is a bug in this module.
          log.error('MCP fast path failed', { error: String(err) });
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null }));
        },
      );
      return true;
    },
  };
}
