/**
 * The HTTP edge: `POST /mcp` (stateless Streamable HTTP, JSON responses, so any replica can
 * answer any request), `GET /healthz`, `GET /readyz`, `GET /metrics`. Only this layer writes
 * JSON-RPC errors.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { PolicyStore } from '../store/store.js';
import { createMcpServer } from './server.js';
import type { CallContext, Tools } from './tools.js';

export interface HttpOptions {
  tools: Tools;
  store: PolicyStore;
  metrics: Metrics;
  log: Logger;
  /** Largest accepted request body (default 1 MiB). */
  bodyLimit?: string;
}

/** A JSON-RPC error reply for requests that never reach the MCP server. */
function jsonRpcError(res: Response, status: number, code: number, message: string): void {
  res.status(status).json({ jsonrpc: '2.0', error: { code, message }, id: null });
}

/** Identity of the caller. `--auth none` for now; verified identity plugs in here. */
function callContext(_req: Request): CallContext {
  return { caller: 'anonymous' };
}

/**
 * Build the Express app.
 *
 * @example
 *   const app = createHttpApp({ tools, store, metrics, log });
 *   const { url } = await listen(app, { host: '127.0.0.1', port: 8000 });
 */
export function createHttpApp(opts: HttpOptions): express.Express {
  const { tools, store, metrics, log } = opts;
  const app = express();
  app.disable('x-powered-by');

  app.get('/healthz', (_req, res) => {
    res.type('text/plain').send('ok');
  });
  app.get('/readyz', (_req, res) => {
    if (store.ready()) res.type('text/plain').send('ok');
    else res.status(503).type('text/plain').send('not ready: first load has not compiled yet');
  });
  app.get('/metrics', (_req, res) => {
    res.type('text/plain; version=0.0.4').send(metrics.render());
  });

  app.post('/mcp', express.json({ limit: opts.bodyLimit ?? '1mb' }), async (req, res) => {
    const server = createMcpServer(tools, metrics, callContext(req));
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => {
      void transport.close();
      void server.close();
    });
    try {
      await server.connect(transport);
      await transport.handleRequest(req, res, req.body);
    } catch (err) {
      log.error('MCP request failed', { error: String(err) });
      if (!res.headersSent) jsonRpcError(res, 500, -32603, 'Internal error');
    }
  });
  // Stateless: there is no session stream to open (GET) or end (DELETE).
  app.all('/mcp', (_req, res) => {
    res.setHeader('Allow', 'POST');
    jsonRpcError(res, 405, -32000, 'Method not allowed: this server is stateless; use POST /mcp');
  });

  // Central error handler: body parser failures and anything else thrown before the MCP layer.
  app.use((err: Error & { status?: number; type?: string }, _req: Request, res: Response, _next: NextFunction) => {
    if (err.type === 'entity.too.large') return jsonRpcError(res, 413, -32600, `Request body too large (limit ${opts.bodyLimit ?? '1mb'})`);
    if (err.type === 'entity.parse.failed') return jsonRpcError(res, 400, -32700, `Parse error: ${err.message}`);
    log.error('HTTP request failed', { error: String(err) });
    if (!res.headersSent) jsonRpcError(res, err.status ?? 500, -32603, 'Internal error');
  });
  return app;
}

export interface RunningServer {
  url: string;
  server: Server;
  close(): Promise<void>;
}

/** Listen on host:port (port 0 = any free port). */
export async function listen(app: express.Express, host: string, port: number): Promise<RunningServer> {
  const server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const shownHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${shownHost}:${addr.port}`,
    server,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeIdleConnections();
      }),
  };
}
