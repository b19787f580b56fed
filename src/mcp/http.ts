/**
 * The HTTP edge: `POST /mcp` (stateless Streamable HTTP, JSON responses, so any replica can
 * answer any request; MCP revisions 2025-11-25 and 2026-07-28, see ./revisions.ts),
 * `GET /healthz`, `GET /readyz`, `GET /metrics`, and the OAuth protected
 * resource metadata (RFC 9728) that a 401 points to. In front of /mcp, in order: Host and
 * Origin checks (DNS rebinding), a per-address budget of failed authentications, authentication
 * (from the header alone), a per-caller rate limit, and only then the body limit and JSON
 * parse — so a flood of unauthenticated or over-limit requests costs neither a parse nor a
 * TokenReview (docs/decisions.md, "Cheap denial of service"). Only this layer writes JSON-RPC
 * errors.
 */
import { MAX_JSON_DEPTH, nestedDeeperThan, refusedJson, tooDeepText } from '../json-limits.js';
import { readFileSync } from 'node:fs';
import { createServer, IncomingMessage, ServerResponse, type Server } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { isIP, type AddressInfo } from 'node:net';
import express, { type IRoute, type NextFunction, type Request, type Response } from 'express';
import { ProtocolError } from '@modelcontextprotocol/server';
import type { Authenticator, Principal } from '../auth/authenticate.js';
import type { Gateway } from '../gateway/gateway.js';
import type { RateLimiter } from '../auth/rate-limit.js';
import type { Logger } from '../log.js';
import { secondsSince, type Metrics } from '../metrics.js';
import { requestContext, type RequestContext, type Tracer } from '../telemetry/request-context.js';
import { newTraceId, parseTraceparent } from '../telemetry/trace-context.js';
import { sizeInBytes } from '../config.js';
import type { PolicyStore } from '../store/store.js';
import { mountUi, type UiApprovals } from '../ui/routes.js';
import { createFastPath } from './fast-path.js';
import { jsonBody } from './json-body.js';
import { classifyMcpRequest, createMcpEndpoint, eraOf, HEADER_MISMATCH, legacyHeaderMismatch, type McpEndpoint } from './revisions.js';
import { createMcpServer, listCacheScope } from './server.js';
import type { Tools } from './tools.js';

export interface HttpOptions {
  tools: Tools;
  store: PolicyStore;
  metrics: Metrics;
  log: Logger;
  authenticator: Authenticator;
  /** Per-caller limit on /mcp requests; undefined = none. */
  rateLimiter?: RateLimiter;
  /** Failed authentications allowed per client address; beyond it 429 before any work. Undefined = none. */
  authFailureLimiter?: RateLimiter;
  /** Accepted Host header names (without port); empty = any. */
  allowedHosts: string[];
  /** Accepted Origin values (scheme://host[:port]); requests without Origin are always fine. */
  allowedOrigins: string[];
  /** Largest accepted request body (default 1mb). */
  bodyLimit?: string;
  /** The inline gateway, served at /upstreams/<namespace>/<name>/mcp (src/gateway). */
  gateway?: Gateway;
  /** Spans for requests and decisions (`--otel-endpoint`); undefined: no tracing. */
  tracer?: Tracer;
  /** The dashboard's pending approvals (src/ui/routes.ts). */
  uiApprovals: UiApprovals;
}

/** A JSON-RPC error reply for requests that never reach the MCP server. */
function jsonRpcError(res: Response, status: number, code: number, message: string): void {
  res.status(status).json({ jsonrpc: '2.0', error: { code, message }, id: null });
}

/**
 * The six tools served by the MCP SDK alone, in both revisions: a new server per request
 * (./revisions.ts). `/mcp` puts the fast path in front of it; tests and the benchmark also use
 * it bare, as the SDK's own answer.
 *
 * @example
 *   const sdk = sdkEndpoint(tools, metrics, 'none', log);
 *   app.post('/mcp', express.json(), (req, res) => sdk.serve(req, res, req.body, classifyMcpRequest(req, req.body), ANONYMOUS));
 */
export function sdkEndpoint(tools: Tools, metrics: Metrics, authMode: Authenticator['mode'], log: Logger): McpEndpoint {
  const settings = { listCacheScope: listCacheScope(authMode) };
  return createMcpEndpoint(
    (principal) => createMcpServer(tools, metrics, { principal }, settings),
    // The SDK reports requests it refused (the caller's mistake: debug) and its own failures.
    (error) => {
      const refused = error instanceof ProtocolError || /^(Rejected|Unsupported Media Type)/.test(error.message);
      log[refused ? 'debug' : 'warn']('MCP request not served', { error: error.message });
    },
  );
}

/** `10.0.0.7` or `[fd00::7]`, as hostName() returns them; a DNS name is not one. */
function isIpAddress(name: string): boolean {
  return isIP(name.startsWith('[') ? name.slice(1, -1).replace(/%25.*$/, '') : name) !== 0;
}

/** Host header without the port; `[::1]:8000` → `[::1]`. */
function hostName(host: string): string {
  return host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.split(':')[0]!;
}

const METADATA_PATH = '/.well-known/oauth-protected-resource';

/** How many `lowerName` lines a request has (`rawHeaders`: name, value, …); no array made, only names of its length lowercased. */
function headerLines(rawHeaders: readonly string[], lowerName: string): number {
  let lines = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === lowerName.length && name.toLowerCase() === lowerName) lines++;
  }
  return lines;
}

/** A Host header as browsers and HTTP clients send it: a name, an IPv4 or a bracketed IPv6 address, and an optional port; nothing else (no `@`, quotes or spaces). */
const HOST_HEADER = /^(?:\[[0-9A-Fa-f:.]+(?:%25[A-Za-z0-9._~-]+)?\]|[A-Za-z0-9._-]+)(?::\d{1,5})?$/;

/** The route a request matched, as its pattern (`/upstreams/:namespace/:name/mcp`): a label of few values. */
function routeOf(req: Request): string {
  const path: unknown = req.route?.path;
  return typeof path === 'string' ? path : Array.isArray(path) ? String(path[0]) : 'unmatched';
}

/** Scrapes and probes, every few seconds from every Prometheus and kubelet: no span, or they would be most of the traces. */
const UNTRACED_PATHS = new Set(['/metrics', '/healthz', '/readyz']);
/** Whether a request is one of {@link UNTRACED_PATHS} as Express routes it (any case, with or without a trailing slash). */
const untraced = (path: string) => UNTRACED_PATHS.has(path.toLowerCase().replace(/(.)\/$/, '$1'));

/**
 * Runs every request in its {@link RequestContext} (trace id from `traceparent` or new; a span
 * with tracing on, but for scrapes and probes) and, once answered, records its duration by
 * route and status, ends its span and logs it at debug level.
 */
function observeRequests(metrics: Metrics, log: Logger, tracer: Tracer | undefined) {
  return (req: Request, res: Response, next: NextFunction) => {
    const started = performance.now();
    const parent = parseTraceparent(req.headers.traceparent);
    const span = tracer && !untraced(req.path) ? tracer.startRequest(req.method, parent, { 'http.request.method': req.method, 'url.path': req.path }) : undefined;
    const ctx: RequestContext = span
      ? { trace_id: span.traceId, span }
      : { trace_id: parent?.traceId ?? newTraceId(), ...(parent ? { traceparent: req.headers.traceparent as string } : {}) };
    res.once('close', () => {
      const route = routeOf(req);
      // A response cut off before its last byte (the caller went away) has no real status.
      const status = res.writableFinished ? String(res.statusCode) : 'aborted';
      const seconds = secondsSince(started);
      metrics.httpSeconds.observe({ route, method: req.method, status }, seconds);
      if (span) {
        span.rename(`${req.method} ${route}`);
        // A cut-off response has no status to report (statusCode is only what was meant).
        span.setAttributes({ 'http.route': route, ...(res.writableFinished ? { 'http.response.status_code': res.statusCode } : {}) });
        if (res.statusCode >= 500 || !res.writableFinished) span.fail(res.writableFinished ? `HTTP ${res.statusCode}` : 'response not completed');
        span.end();
      }
      log.debug('HTTP request', { method: req.method, route, status, duration_ms: Math.round(seconds * 1e6) / 1e3, trace_id: ctx.trace_id, action_id: ctx.action_id });
    });
    requestContext.run(ctx, next);
  };
}

/**
 * Build the Express app.
 *
 * @example
 *   const app = createHttpApp({ tools, store, metrics, log, authenticator: noAuthenticator(), allowedHosts: [], allowedOrigins: [] });
 *   const { url } = await listen(app, { host: '127.0.0.1', port: 8000 });
 */
export function createHttpApp(opts: HttpOptions): HttpApp {
  const { tools, store, metrics, log, authenticator } = opts;
  const app = express();
  app.disable('x-powered-by');
  const observe = observeRequests(metrics, log, opts.tracer);
  app.use(observe);
  const rejected = metrics.counter('policyguard_http_rejected_total', 'Requests refused at the HTTP edge, by reason.', ['reason']);
  const base = (req: Request) => `${req.protocol}://${req.get('host') ?? 'localhost'}`;
  const bodyLimit = opts.bodyLimit ?? '1mb';
  const parseJson = jsonBody({
    limitBytes: sizeInBytes(bodyLimit),
    verify: (text) => {
      const refused = refusedJson(text);
      if (refused !== undefined) throw new Error(refused);
    },
  });
  const depthLimit = (req: Request, res: Response, next: NextFunction) => {
    if (!nestedDeeperThan(req.body, MAX_JSON_DEPTH)) return next();
    rejected.inc({ reason: 'too_deep' });
    jsonRpcError(res, 400, -32600, `Invalid Request: ${tooDeepText()}`);
  };

  /** Host and Origin checks (DNS rebinding); `ipHosts`: also any IP address as Host (see scrapes below). */
  const hostAndOriginGuard = (ipHosts: boolean) => (req: Request, res: Response, next: NextFunction) => {
    const host = req.get('host');
    // One Host, written as a host: it is checked against --allowed-hosts and written into the
    // resource URLs this server announces (the WWW-Authenticate challenge, RFC 9728 metadata).
    if ((host !== undefined && !HOST_HEADER.test(host)) || headerLines(req.rawHeaders, 'host') > 1) {
      rejected.inc({ reason: 'host' });
      return jsonRpcError(res, 400, -32600, `Invalid Request: the Host header ${JSON.stringify(host ?? '')} is not one host[:port]`);
    }
    const name = host === undefined ? undefined : hostName(host).toLowerCase();
    if (opts.allowedHosts.length > 0 && (!name || !(opts.allowedHosts.includes(name) || (ipHosts && (isIpAddress(name) || name === 'localhost'))))) {
      rejected.inc({ reason: 'host' });
      return jsonRpcError(res, 403, -32000, `Host ${JSON.stringify(host ?? '')} is not allowed (see --allowed-hosts)`);
    }
    const origin = req.get('origin');
    if (origin !== undefined && !opts.allowedOrigins.includes(origin.toLowerCase())) {
      rejected.inc({ reason: 'origin' });
      return jsonRpcError(res, 403, -32000, `Origin ${JSON.stringify(origin)} is not allowed (see --allowed-origins)`);
    }
    next();
  };
  const guardHostAndOrigin = hostAndOriginGuard(false);
  // Prometheus and the kubelet address a Pod by its IP, so its scrapes and probes carry an IP as
  // Host, in no --allowed-hosts list. A rebinding page's requests carry the page's DNS name:
  // an IP address is never one, nor is `localhost` (a health check on the machine itself), so
  // scrapes and probes accept those besides the allowed names.
  const guardScrape = hostAndOriginGuard(true);

  const tooMany = (res: Response, reason: string, retryAfterMs: number, message: string) => {
    rejected.inc({ reason });
    const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
    res.setHeader('Retry-After', String(seconds));
    jsonRpcError(res, 429, -32000, `${message}; retry after ${seconds} s`);
  };
  const address = (req: Request) => req.socket.remoteAddress ?? '';

  const authenticate = async (req: Request, res: Response, next: NextFunction) => {
    // Node keeps the first of two Authorization headers; a proxy may keep the other: refuse, not guess.
    if (headerLines(req.rawHeaders, 'authorization') > 1) {
      rejected.inc({ reason: 'duplicate_authorization' });
      return jsonRpcError(res, 400, -32600, 'Invalid Request: more than one Authorization header');
    }
    const header = req.get('authorization');
    const token = header?.match(/^Bearer\s+(\S+)\s*$/i)?.[1];
    // An address over its budget of failed authentications gets no more work: only callers
    // known without a remote call (token file, cached TokenReview) still get through.
    const failures = opts.authFailureLimiter;
    const blocked = failures?.peek(address(req));
    let result = blocked && !blocked.ok ? authenticator.authenticateLocally(token) : undefined;
    if (blocked && !blocked.ok && !result?.ok) return tooMany(res, 'auth_failures', blocked.retryAfterMs, `Too many failed authentications from ${address(req)}`);
    result ??= await authenticator.authenticate(token);
    if (result.ok) {
      res.locals.principal = result.principal;
      return next();
    }
    failures?.take(address(req));
    rejected.inc({ reason: result.error });
    const challenge = [`Bearer realm="policyguard"`, `resource_metadata="${base(req)}${METADATA_PATH}"`];
    if (result.error === 'invalid_token') challenge.push(`error="invalid_token"`, `error_description="${result.description.replace(/"/g, "'")}"`);
    res.setHeader('WWW-Authenticate', challenge.join(', '));
    jsonRpcError(res, 401, -32001, `Unauthorized: ${result.description}`);
  };

  // Anonymous callers are told apart by address; everyone else by subject.
  const callerKey = (req: Request, principal: Principal) => (principal.subject === 'anonymous' ? `ip:${address(req)}` : principal.subject);
  const limit = (req: Request, res: Response, next: NextFunction) => {
    const principal = res.locals.principal as Principal;
    const take = opts.rateLimiter?.take(callerKey(req, principal));
    if (!take || take.ok) return next();
    tooMany(res, 'rate_limit', take.retryAfterMs, `Too many requests from ${principal.subject}`);
  };
  /** A JSON-RPC batch (2025 revisions) is one request but several messages: each after the first takes one more from the caller's limit. */
  const batchOverLimit = (req: Request, res: Response, principal: Principal): boolean => {
    if (!opts.rateLimiter || !Array.isArray(req.body)) return false;
    for (let i = 1; i < req.body.length; i++) {
      const take = opts.rateLimiter.take(callerKey(req, principal));
      if (take.ok) continue;
      tooMany(res, 'rate_limit', take.retryAfterMs, `Too many requests from ${principal.subject}: a batch counts each of its ${req.body.length} messages`);
      return true;
    }
    return false;
  };

  // tools/call validate_action without building an MCP server per request; byte-identical to
  // the SDK path, which still answers everything else (see fast-path.ts).
  const fast = createFastPath({ tools, metrics, log });
  const sdk = sdkEndpoint(tools, metrics, authenticator.mode, log);
  const byEra = metrics.counter(
    'policyguard_mcp_requests_total',
    'POST /mcp requests that passed the edge checks, by the protocol era their body claims: legacy (2025 revisions, initialize), modern (2026-07-28), invalid.',
    ['era'],
  );
  const serveMcp = async (req: Request, res: Response) => {
    const principal = res.locals.principal as Principal;
    if (batchOverLimit(req, res, principal)) return;
    const route = classifyMcpRequest(req, req.body);
    byEra.inc({ era: eraOf(route) });
    const mismatch = route.kind === 'legacy' ? legacyHeaderMismatch(req.headers, req.body) : undefined;
    if (mismatch) return jsonRpcError(res, 400, HEADER_MISMATCH, `Bad Request: the request headers and body disagree: ${mismatch}`);
    if (fast.handle(req, res, req.body, route, { principal })) return;
    try {
      await sdk.serve(req, res, req.body, route, principal);
    } catch (err) {
      log.error('MCP request failed', { error: String(err) });
      if (!res.headersSent) jsonRpcError(res, 500, -32603, 'Internal error');
    }
  };
  const mcpHandlers = [guardHostAndOrigin, authenticate, limit, parseJson, depthLimit, serveMcp];
  const mcpRoute: IRoute = app.route<string>('/mcp');
  mcpRoute.post(...mcpHandlers);
  // Stateless: there is no session stream to open (GET) or end (DELETE).
  app.all('/mcp', guardHostAndOrigin, (_req, res) => {
    res.setHeader('Allow', 'POST');
    jsonRpcError(res, 405, -32000, 'Method not allowed: this server is stateless; use POST /mcp');
  });
  // The other routes come after /mcp: Express tries routes in order, and /mcp is nearly every request.
  app.get('/healthz', guardScrape, (_req, res) => {
    res.type('text/plain').send('ok');
  });
  app.get('/readyz', guardScrape, (_req, res) => {
    const notReady = store.notReady();
    if (notReady === undefined) res.type('text/plain').send('ok');
    else res.status(503).type('text/plain').send(`not ready: ${notReady}`);
  });
  app.get('/metrics', guardScrape, async (_req, res) => {
    res.type(metrics.contentType).send(await metrics.exposition());
  });
  // RFC 9728. Tokens come from a token file or the cluster's ServiceAccount issuer, not from an
  // OAuth authorization server, so none is listed.
  app.get([METADATA_PATH, `${METADATA_PATH}/mcp`], guardHostAndOrigin, (req, res) => {
    res.json({ resource: `${base(req)}/mcp`, bearer_methods_supported: ['header'], resource_name: 'PolicyGuard', resource_documentation: 'https://github.com/PrateekKumar1709/policyguard' });
  });
  mountUi(app, { tools, store, approvals: opts.uiApprovals, authenticator, guardHost: guardHostAndOrigin, authenticate, rateLimit: limit }); // the dashboard (src/ui/routes.ts)
  // The inline gateway: every tools/call to a GuardUpstream is decided first (src/gateway).
  const gateway = opts.gateway;
  if (gateway) {
    app.all('/upstreams/:namespace/:name/mcp', guardHostAndOrigin, authenticate, limit, parseJson, depthLimit, (req, res) => {
      const ref = `${String(req.params.namespace)}/${String(req.params.name)}`;
      gateway.handle(req, res, ref, res.locals.principal as Principal, req.method === 'POST' ? req.body : undefined).catch((err: unknown) => {
        log.error('gateway request failed', { upstream: ref, error: String(err) });
        if (!res.headersSent) jsonRpcError(res, 500, -32603, 'Internal error');
      });
    });
    app.all(/^\/upstreams(\/.*)?$/, guardHostAndOrigin, (_req, res) => jsonRpcError(res, 404, -32000, 'Not found: the gateway serves /upstreams/<namespace>/<name>/mcp'));
  }

  // Central error handler: body parser failures and anything else thrown before the MCP layer.
  const answerError = (err: Error & { status?: number; type?: string }, _req: Request, res: Response, _next: NextFunction) => {
    if (err.type === 'entity.too.large') {
      rejected.inc({ reason: 'body_too_large' });
      return jsonRpcError(res, 413, -32600, `Request body too large (limit ${bodyLimit})`);
    }
    if (err.type === 'entity.parse.failed' || err.type === 'charset.unsupported' || err.type === 'encoding.unsupported') {
      return jsonRpcError(res, 400, -32700, `Parse error: ${err.message}`);
    }
    if (err.type === 'request.aborted') {
      // The caller went away mid-body: nothing went wrong here, and the answer goes nowhere.
      rejected.inc({ reason: 'aborted' });
      log.debug('request body cut off: the caller went away', { error: err.message });
      return jsonRpcError(res, 400, -32600, 'Invalid Request: the request body was cut off');
    }
    if (err.type === 'entity.verify.failed') {
      rejected.inc({ reason: 'refused_json' });
      return jsonRpcError(res, 400, -32600, `Invalid Request: ${err.message}`);
    }
    if (err.type === 'entity.unreadable') {
      // A body that cannot be read as sent (a Content-Encoding it is not in, …): the caller's
      // mistake, answered as one, not logged as a failure of ours (./json-body.ts).
      rejected.inc({ reason: 'unreadable_body' });
      log.debug('request body could not be read', { error: err.message });
      return jsonRpcError(res, 400, -32700, `Parse error: the body could not be read as sent (${err.message})`);
    }
    log.error('HTTP request failed', { error: String(err) });
    // Never throws itself: a status outside 400–599 from some error would make Express's fallback answer instead.
    const status = err.status !== undefined && err.status >= 400 && err.status <= 599 ? err.status : 500;
    if (!res.headersSent) jsonRpcError(res, status, -32603, 'Internal error');
  };
  app.use(answerError);
  return withDirectMcp(app, mcpRoute, [observe, ...mcpHandlers], answerError);
}

/** What node:http's createServer takes; an Express app is one. */
export type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * The app, as a server serves it: `listener` for each request, and the request and response
 * classes the server should make (node:http's `IncomingMessage`/`ServerResponse` options), born
 * with Express's prototypes. Express gives each request its prototypes with
 * `Object.setPrototypeOf` (express/lib/application.js), which costs ~5 µs a request (3–4% of a
 * `validate_action` at saturation: docs/performance.md, "What the eleventh pass changed"); a
 * request made by these classes needs none. The listener still serves requests of plain classes.
 */
export interface HttpApp {
  listener: RequestListener;
  classes: { IncomingMessage: typeof IncomingMessage; ServerResponse: typeof ServerResponse };
}

type Handler = (req: Request, res: Response, next: NextFunction) => unknown;
type ErrorHandler = (err: Error, req: Request, res: Response, next: NextFunction) => unknown;

/**
 * `app`, but POST /mcp — nearly every request — runs `handlers` without Express's router (~7%
 * of a `validate_action` at saturation; +17% throughput in an A/B, docs/performance.md): the same
 * handlers in the same order, on the same request and response objects (Express's prototypes,
 * `res.locals`, `req.route`), a thrown error or rejected promise passed on as the router does, and
 * errors answered by the app's own error handler. Only a request line of exactly `POST /mcp`
 * goes this way; `/mcp?…`, `/mcp/`, `/MCP` and every other route go to the app, which answers
 * them as before.
 */
function withDirectMcp(app: express.Express, route: IRoute, handlers: Handler[], onError: ErrorHandler): HttpApp {
  class AppRequest extends IncomingMessage {}
  Object.setPrototypeOf(AppRequest.prototype, app.request);
  class AppResponse<R extends IncomingMessage = IncomingMessage> extends ServerResponse<R> {}
  Object.setPrototypeOf(AppResponse.prototype, app.response);
  const listener: RequestListener = (incoming, outgoing) => {
    if (incoming.method !== 'POST' || incoming.url !== '/mcp') return void app(incoming, outgoing);
    // What Express's app.handle does before routing (express/lib/application.js), where the
    // server did not make the request with the app's classes.
    const req = (incoming instanceof AppRequest ? incoming : Object.setPrototypeOf(incoming, app.request)) as Request;
    const res = (outgoing instanceof AppResponse ? outgoing : Object.setPrototypeOf(outgoing, app.response)) as Response;
    req.res = res;
    res.req = req;
    res.locals = Object.create(null) as Response['locals'];
    // What the router would have set for this route; no handler here reads the last three, but
    // one that logs them must see what it would have seen. (Router 2's tracing events for each
    // handler are not published on this path.)
    req.route = route;
    req.originalUrl = req.url;
    req.baseUrl = '';
    req.params = {};
    let i = 0;
    let failed = false;
    const next: NextFunction = (err?: unknown) => {
      if (failed) return;
      if (err === undefined || err === null) {
        const handler = handlers[i++];
        // The last handler answers; one that calls next() anyway is a bug, answered as one (a
        // 500, where Express would have tried the next route). Not reachable with these handlers.
        if (!handler) return next(new Error('POST /mcp: no handler answered the request'));
        try {
          const ret = handler(req, res, next);
          if (ret instanceof Promise) ret.then(undefined, (error: unknown) => next(error ?? new Error('Rejected promise')));
        } catch (error) {
          next(error ?? new Error('handler threw'));
        }
        return;
      }
      failed = true;
      try {
        onError(err as Error, req, res, () => undefined);
      } catch (error) {
        // The error handler itself failed: nothing more can be said to this caller.
        res.destroy(error as Error);
      }
    };
    next();
  };
  return { listener, classes: { IncomingMessage: AppRequest, ServerResponse: AppResponse } };
}

export interface RunningServer {
  url: string;
  server: Server;
  close(): Promise<void>;
}

export interface ListenOptions {
  host: string;
  port: number;
  /** PEM files; both or neither. */
  tls?: { cert: string; key: string };
  /** Connections served at once (--max-connections); beyond it new ones are closed. Default: no bound. */
  maxConnections?: number;
  /** How long a client may take to send a request's headers, and the whole request (defaults below). */
  timeouts?: { headersMs: number; requestMs: number };
}

/**
 * A client has this long to send a request's headers, and this long for the whole request
 * (Node's defaults, 60 s and 300 s, let a client that trickles a header hold a socket for a
 * minute). Answers are not bounded by these: a call held for an approval waits longer.
 */
const CLIENT_TIMEOUTS = { headersMs: 10_000, requestMs: 30_000 };

/** Listen on host:port (port 0 = any free port), over TLS when cert and key are given. */
export async function listen(app: HttpApp, opts: ListenOptions): Promise<RunningServer> {
  const { headersMs, requestMs } = opts.timeouts ?? CLIENT_TIMEOUTS;
  // Node looks for late clients every connectionsCheckingInterval (30 s by default): a tenth of the bound.
  const timeouts = { headersTimeout: headersMs, requestTimeout: requestMs, connectionsCheckingInterval: Math.max(100, Math.round(headersMs / 10)) };
  const server: Server = opts.tls
    ? createTlsServer({ ...app.classes, ...timeouts, cert: readFileSync(opts.tls.cert), key: readFileSync(opts.tls.key) }, app.listener)
    : createServer({ ...app.classes, ...timeouts }, app.listener);
  if (opts.maxConnections !== undefined) server.maxConnections = opts.maxConnections;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const shownHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `${opts.tls ? 'https' : 'http'}://${shownHost}:${addr.port}`,
    server,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeIdleConnections();
      }),
  };
}
