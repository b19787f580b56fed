/**
 * The two MCP protocol revisions served on one path, and how a request says which one it speaks
 * (README, "MCP protocol revisions"; docs/adr/0005-two-mcp-revisions.md):
 *
 * - **2025-11-25** (and the older 2025 revisions a client may ask for in `initialize`): a client
 *   sends `initialize`, then plain JSON-RPC posts. Served statelessly with JSON responses, one
 *   SDK server and transport per request, as before (docs/adr/0001-stateless-mcp.md).
 * - **2026-07-28**: no `initialize` and no session. Every request carries its protocol version,
 *   client info and capabilities in `params._meta`, and the `MCP-Protocol-Version`, `Mcp-Method`
 *   and (for `tools/call`) `Mcp-Name` headers, which must mirror the body: a mismatch is refused
 *   with HTTP 400 and JSON-RPC error -32020 (HeaderMismatch). Served by the SDK's
 *   `createMcpHandler`, which also answers `server/discover`.
 *
 * Which revision a request speaks is decided as the SDK's own classifier (`classifyInboundRequest`,
 * the code `createMcpHandler` routes with) decides it, so our routing and the SDK's never
 * disagree. Everything here takes plain Node requests and a parsed body, so any path (this
 * server's /mcp, a gateway's routes) can serve both revisions with its own servers.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { NodeStreamableHTTPServerTransport } from '@modelcontextprotocol/node';
import {
  classifyInboundRequest,
  createMcpHandler,
  PROTOCOL_VERSION_META_KEY,
  SUPPORTED_PROTOCOL_VERSIONS,
  type AuthInfo,
  type JSONRPCRequest,
  type InboundClassificationOutcome,
  type McpServer,
} from '@modelcontextprotocol/server';
import type { Principal } from '../auth/authenticate.js';

/** The revision of the original project's clients, negotiated with `initialize`. */
export const LEGACY_REVISION = '2025-11-25';
/** The current revision: per-request `_meta`, `server/discover`, no sessions. */
export const MODERN_REVISION = '2026-07-28';

/** How a request is served: `legacy` (initialize era), `modern` (2026-07-28), or refused (`reject`). */
export type McpRoute = InboundClassificationOutcome;

const header = (headers: IncomingHttpHeaders, name: string): string | undefined => {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
};

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const REQUEST_KEYS = new Set(['jsonrpc', 'id', 'method', 'params']);
const LEGACY_VERSIONS = new Set<string>(SUPPORTED_PROTOCOL_VERSIONS);

/** The part of the SDK's JSON-RPC request check a recognised request must pass: a plain request, not `initialize`. */
function plainRequest(req: IncomingMessage, body: unknown): body is Record<string, unknown> & { method: string } {
  if (req.method !== 'POST' || !isPlainObject(body) || body.jsonrpc !== '2.0') return false;
  for (const k in body) if (!REQUEST_KEYS.has(k)) return false;
  if (typeof body.method !== 'string' || body.method === 'initialize') return false;
  return typeof body.id === 'string' || (typeof body.id === 'number' && Number.isSafeInteger(body.id));
}

/**
 * The commonest 2025 request, recognised without the SDK's classifier (which costs ~6 µs, mostly
 * building the errors of the shapes a request is not): a plain JSON-RPC request other than
 * `initialize`, with no `_meta` in its params, whose `MCP-Protocol-Version` is absent or a 2025
 * revision. Without the envelope claim and without a 2026-07-28 header the SDK serves it as 2025
 * traffic (`isLegacyRequest`); revisions.test.ts checks that the two agree.
 */
function plainLegacyRequest(req: IncomingMessage, body: unknown): McpRoute | undefined {
  if (!plainRequest(req, body)) return undefined;
  if (body.params !== undefined && (!isPlainObject(body.params) || '_meta' in body.params)) return undefined;
  const version = header(req.headers, 'mcp-protocol-version');
  if (version === undefined) return { kind: 'legacy', reason: 'no-claim' };
  return LEGACY_VERSIONS.has(version) ? { kind: 'legacy', reason: 'no-claim', requestedVersion: version } : undefined;
}

/**
 * The commonest 2026-07-28 request, recognised without running the SDK's classifier on every
 * call (~10 µs): a plain JSON-RPC request other than `initialize` whose envelope claims
 * 2026-07-28 and whose `MCP-Protocol-Version` and `Mcp-Method` headers are exactly that revision
 * and its method. Whether the envelope itself is valid (client info, capabilities, the rest of
 * `_meta`) is the SDK's answer for a request that carries it, asked once per distinct envelope:
 * a client sends the same one every time. revisions.test.ts checks that the two agree.
 */
function plainModernRequest(req: IncomingMessage, body: unknown): McpRoute | undefined {
  if (!plainRequest(req, body) || !isPlainObject(body.params)) return undefined;
  // The SDK compares the Mcp-Method header, stripped of spaces and tabs, with the body's method.
  if (/^[ \t]|[ \t]$/.test(body.method)) return undefined;
  const meta = body.params._meta;
  if (!isPlainObject(meta) || meta[PROTOCOL_VERSION_META_KEY] !== MODERN_REVISION) return undefined;
  if (header(req.headers, 'mcp-protocol-version') !== MODERN_REVISION || header(req.headers, 'mcp-method') !== body.method) return undefined;
  if (!validEnvelope(meta)) return undefined;
  return { kind: 'modern', messageKind: 'request', message: body as JSONRPCRequest, classification: { era: 'modern', revision: MODERN_REVISION } };
}

/**
 * The SDK's verdict on envelopes seen, by their JSON text. Bounded in count (cleared when full)
 * and in size (a longer envelope is not recognised here: the SDK classifies it), so distinct or
 * padded envelopes cost at most ~1 MB.
 */
const envelopeVerdicts = new Map<string, boolean>();
const ENVELOPE_VERDICTS_MAX = 1024;
const ENVELOPE_TEXT_MAX = 1024;

/** How many envelope verdicts are held (tests: the bound holds). */
export function memoizedEnvelopes(): number {
  return envelopeVerdicts.size;
}

/** Whether the SDK classifies a request carrying `meta` (and nothing else of note) as a 2026-07-28 request. */
function validEnvelope(meta: Record<string, unknown>): boolean {
  const key = JSON.stringify(meta);
  if (key.length > ENVELOPE_TEXT_MAX) return false;
  let verdict = envelopeVerdicts.get(key);
  if (verdict === undefined) {
    const probe = { jsonrpc: '2.0', id: 0, method: 'tools/call', params: { _meta: meta } };
    verdict = classifyInboundRequest({ httpMethod: 'POST', body: probe }).kind === 'modern';
    if (envelopeVerdicts.size >= ENVELOPE_VERDICTS_MAX) envelopeVerdicts.clear();
    envelopeVerdicts.set(key, verdict);
  }
  return verdict;
}

/**
 * Which revision a POST speaks, from its body and its `MCP-Protocol-Version`, `Mcp-Method` and
 * `Mcp-Name` headers: the SDK's classification. A body with the modern `_meta` envelope is
 * `modern` (even when its headers disagree: `reject` then carries the -32020 answer); a body
 * without it is `legacy`, as is `initialize`.
 *
 * @example
 *   const route = classifyMcpRequest(req, req.body);
 *   if (route.kind === 'modern') console.log(route.classification.revision); // '2026-07-28'
 */
export function classifyMcpRequest(req: IncomingMessage, body: unknown): McpRoute {
  const plain = plainLegacyRequest(req, body) ?? plainModernRequest(req, body);
  if (plain) return plain;
  const { headers } = req;
  const protocolVersionHeader = header(headers, 'mcp-protocol-version');
  const mcpMethodHeader = header(headers, 'mcp-method');
  const mcpNameHeader = header(headers, 'mcp-name');
  return classifyInboundRequest({
    httpMethod: req.method ?? 'POST',
    ...(protocolVersionHeader !== undefined && { protocolVersionHeader }),
    ...(mcpMethodHeader !== undefined && { mcpMethodHeader }),
    ...(mcpNameHeader !== undefined && { mcpNameHeader }),
    ...(body !== undefined && { body }),
  });
}

/**
 * The era a request's body claims, for metrics and logs: `legacy` (the 2025 revisions, with
 * `initialize`), `modern` (the per-request `_meta` envelope of 2026-07-28), or `invalid` (not
 * JSON-RPC, or headers and body that disagree).
 *
 * @example eraOf(classifyMcpRequest(req, req.body)) // 'modern'
 */
export function eraOf(route: McpRoute): 'legacy' | 'modern' | 'invalid' {
  return route.kind === 'reject' ? 'invalid' : route.kind;
}

/**
 * Whether a 2026-07-28 request's headers mirror its body exactly, character for character:
 * `MCP-Protocol-Version` is the revision, `Mcp-Method` the method and, when the method has a
 * name, `Mcp-Name` that name. Stricter than the specification (which allows surrounding
 * whitespace and Base64-encoded names): a request this accepts passes the SDK's header checks;
 * any other goes to the SDK, which answers a real mismatch with -32020.
 *
 * @example headersMirrorBody(req.headers, '2026-07-28', 'tools/call', 'validate_action') // true or false
 */
export function headersMirrorBody(headers: IncomingHttpHeaders, revision: string, method: string, name?: string): boolean {
  if (headers['mcp-protocol-version'] !== revision || headers['mcp-method'] !== method) return false;
  return name === undefined ? headers['mcp-name'] === undefined : headers['mcp-name'] === name;
}

/** JSON-RPC error of the 2026-07-28 revision for standard headers that do not mirror the body (HTTP 400). */
export const HEADER_MISMATCH = -32020;

/** The request field each method's `Mcp-Name` header mirrors (2026-07-28). */
const NAME_SOURCE: Readonly<Record<string, string>> = { 'tools/call': 'name', 'prompts/get': 'name', 'resources/read': 'uri', 'tasks/get': 'taskId', 'tasks/update': 'taskId', 'tasks/cancel': 'taskId' };
const BASE64_SENTINEL = /^=\?base64\?((?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?)\?=$/;

/** A header value without the optional whitespace HTTP allows around it, `=?base64?…?=` decoded; undefined when the sentinel is broken. */
function headerText(value: string): string | undefined {
  const trimmed = value.replace(/^[ \t]+|[ \t]+$/g, '');
  if (!trimmed.startsWith('=?base64?') || !trimmed.endsWith('?=')) return trimmed;
  const m = BASE64_SENTINEL.exec(trimmed);
  return m ? Buffer.from(m[1]!, 'base64').toString('utf8') : undefined;
}

/**
 * Why a 2026-07-28 request's standard headers do not mirror its body, or undefined when they
 * do: `MCP-Protocol-Version` and `Mcp-Method` present, `Mcp-Name` present and equal (after
 * whitespace and its Base64 form) for the methods that have a name. The SDK's handler makes
 * this check for /mcp; a proxy that forwards requests (the gateway) must make it before it
 * decides on the body, as intermediaries route on the headers.
 *
 * @example standardHeaderMismatch(req.headers, 'tools/call', { name: 'validate_action' }) // undefined, or why not
 */
export function standardHeaderMismatch(headers: IncomingHttpHeaders, method: string, params: unknown): string | undefined {
  if (header(headers, 'mcp-protocol-version') === undefined) return 'the required MCP-Protocol-Version header is absent';
  const mcpMethod = header(headers, 'mcp-method');
  if (mcpMethod === undefined) return 'the required Mcp-Method header is absent';
  if (headerText(mcpMethod) !== method) return `the body names method ${method} but the Mcp-Method header names ${JSON.stringify(mcpMethod)}`;
  const field = Object.hasOwn(NAME_SOURCE, method) ? NAME_SOURCE[method] : undefined;
  const raw = field !== undefined && typeof params === 'object' && params !== null ? (params as Record<string, unknown>)[field] : undefined;
  if (typeof raw !== 'string') return undefined;
  const mcpName = header(headers, 'mcp-name');
  if (mcpName === undefined) return `the body carries params.${field}=${JSON.stringify(raw)} but the required Mcp-Name header is absent`;
  const decoded = headerText(mcpName);
  if (decoded === undefined) return 'the Mcp-Name header carries an invalid Base64 sentinel value';
  return decoded === raw ? undefined : `the body carries params.${field}=${JSON.stringify(raw)} but the Mcp-Name header names ${JSON.stringify(decoded)}`;
}

/**
 * Why a request of the 2025 revisions carries an `Mcp-Method` or `Mcp-Name` header that says
 * something else than its body, or undefined (also when it carries neither). Those revisions
 * define no such headers and the SDK ignores them, but proxies and gateways in front of a
 * server route and rate-limit on them: a request must not tell them one method or tool and the
 * server another. A batch carrying either header is refused too (one header cannot mirror many
 * messages).
 *
 * @example legacyHeaderMismatch({ 'mcp-name': 'get_audit_log' }, { method: 'tools/call', params: { name: 'validate_action' } }) // 'the body carries params.name="validate_action" but …'
 */
export function legacyHeaderMismatch(headers: IncomingHttpHeaders, body: unknown): string | undefined {
  const mcpMethod = header(headers, 'mcp-method');
  const mcpName = header(headers, 'mcp-name');
  if (mcpMethod === undefined && mcpName === undefined) return undefined;
  if (!isPlainObject(body)) return 'a batch carries an Mcp-Method or Mcp-Name header, which cannot mirror every message in it';
  const method = typeof body.method === 'string' ? body.method : undefined;
  if (mcpMethod !== undefined && headerText(mcpMethod) !== method) return `the body names method ${method ?? '(none)'} but the Mcp-Method header names ${JSON.stringify(mcpMethod)}`;
  if (mcpName === undefined) return undefined;
  const field = method !== undefined && Object.hasOwn(NAME_SOURCE, method) ? NAME_SOURCE[method] : undefined;
  const raw = field !== undefined && isPlainObject(body.params) ? body.params[field] : undefined;
  if (typeof raw !== 'string') return undefined; // as for 2026-07-28 (standardHeaderMismatch): no name to mirror
  return headerText(mcpName) === raw ? undefined : `the body carries params.${field}=${JSON.stringify(raw)} but the Mcp-Name header names ${JSON.stringify(mcpName)}`;
}

/** A server with this caller's tools; one per request (the SDK does not reuse servers across stateless requests). */
export type McpServerFor = (principal: Principal) => McpServer;

export interface McpEndpoint {
  /** Answer one POST whose JSON body is parsed and whose route is `classifyMcpRequest`'s. */
  serve(req: IncomingMessage, res: ServerResponse, body: unknown, route: McpRoute, principal: Principal): Promise<void>;
}

/**
 * The caller reaches the server factory as the SDK's pass-through `authInfo` (the handler never
 * derives it from headers). The bearer token stays at the HTTP edge: it is not passed on.
 */
const toAuthInfo = (principal: Principal): AuthInfo => ({ token: '', clientId: principal.subject, scopes: [], extra: { principal } });
const principalOf = (auth: AuthInfo | undefined): Principal => {
  const principal = auth?.extra?.principal as Principal | undefined;
  // Unreachable through serve(), which always passes one; refuse rather than serve as nobody.
  if (!principal) throw new Error('MCP request without an authenticated caller');
  return principal;
};

/**
 * Serve both revisions on one path with servers from `serverFor`: requests without the
 * 2026-07-28 envelope (including `initialize`) by a new server and stateless transport with a
 * JSON response, everything else by the SDK's `createMcpHandler` (2026-07-28 requests,
 * `server/discover`, and its -32020/-32022/-32602 refusals). The caller has authenticated the
 * request and parsed its body.
 *
 * @example
 *   const endpoint = createMcpEndpoint((principal) => createMcpServer(tools, metrics, { principal }), (e) => log.warn(e.message));
 *   app.post('/mcp', express.json(), (req, res) => endpoint.serve(req, res, req.body, classifyMcpRequest(req, req.body), principal));
 */
export function createMcpEndpoint(serverFor: McpServerFor, onerror: (error: Error) => void): McpEndpoint {
  const modern = createMcpHandler((ctx) => serverFor(principalOf(ctx.authInfo)), { legacy: 'reject', onerror });

  /**
   * The handler's web face, fed the parsed body: the web request carries the headers only, so
   * the body is neither serialized again (JSON.stringify overflows on the deeply nested bodies
   * JSON.parse accepts) nor parsed twice. A JSON answer is sent whole, with its length, as the
   * 2025 transport sends it; a stream (SSE) is copied with backpressure and cancelled when the
   * client goes away.
   */
  async function serveModern(req: IncomingMessage, res: ServerResponse, body: unknown, principal: Principal): Promise<void> {
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort(); // the client went away before the answer
    });
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      if (name === 'content-length' || value === undefined) continue;
      for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
    }
    // The handler routes on the body and headers; the URL only has to parse, whatever the Host.
    const request = new Request(`http://localhost${req.url ?? '/'}`, { method: req.method ?? 'POST', headers, signal: abort.signal });
    const response = await modern.fetch(request, { authInfo: toAuthInfo(principal), parsedBody: body });
    const head = Object.fromEntries(response.headers);
    if (!response.body || head['content-type'] !== 'text/event-stream') {
      const bytes = Buffer.from(await response.arrayBuffer());
      res.writeHead(response.status, { ...head, 'content-length': bytes.length }).end(bytes);
      return;
    }
    res.writeHead(response.status, head);
    await pipeline(Readable.fromWeb(response.body as WebReadableStream), res).catch(() => undefined); // the client went away mid-stream
  }

  async function serveLegacy(req: IncomingMessage, res: ServerResponse, body: unknown, principal: Principal): Promise<void> {
    const server = serverFor(principal);
    const transport = new NodeStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
  }

  return {
    serve(req, res, body, route, principal) {
      if (route.kind === 'legacy') return serveLegacy(req, res, body, principal);
      return serveModern(req, res, body, principal);
    },
  };
}
