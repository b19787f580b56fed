/**
 * The dashboard at `/ui/`, served by the MCP server itself. The page and its assets hold no data
 * and are served to anyone who passes the Host/Origin check; the data, `GET /ui/api/dashboard`,
 * sits behind the same guards as `/mcp` (Host/Origin, authentication, per-caller rate limit) and
 * shows what the caller may read (./dashboard.ts). A GET keeps the browser from sending an
 * Origin header on the page's own requests, so `--allowed-origins` needs no entry for it. The
 * page lists pending approvals and the command that decides each; it never decides itself.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Express, Request, RequestHandler, Response } from 'express';
import type { ApprovalStore } from '../approvals/store.js';
import type { Authenticator, Principal } from '../auth/authenticate.js';
import { parseTimeRange, type Tools } from '../mcp/tools.js';
import type { PolicyStore } from '../store/store.js';
import { DASHBOARD_CSS, DASHBOARD_JS, INDEX_HTML } from './assets.js';
import { dashboardData } from './dashboard.js';

/** Where the page's pending approvals come from. */
export interface UiApprovals {
  /** The server's GuardApprovals (its cache). */
  store: Pick<ApprovalStore, 'list'>;
  /** Standalone mode: the data dir, which the command to approve one names (`--data-dir`). */
  dataDir?: string;
}

export interface UiDeps {
  tools: Tools;
  store: Pick<PolicyStore, 'problems'>;
  approvals: UiApprovals;
  authenticator: Pick<Authenticator, 'mode'>;
  /** The `/mcp` edge's guards, in the order it runs them. */
  guardHost: RequestHandler;
  authenticate: RequestHandler;
  rateLimit: RequestHandler;
}

interface Asset {
  type: string;
  body: Buffer;
  gzip: Buffer;
  etag: string;
}

function asset(type: string, content: string | Buffer): Asset {
  const body = Buffer.isBuffer(content) ? content : Buffer.from(content);
  return { type, body, gzip: gzipSync(body, { level: 9 }), etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` };
}

/**
 * Scripts only from this server, no inline script or style, no framing; the data endpoint is the
 * only thing the page connects to.
 */
const SECURITY_HEADERS = {
  'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
};

function send(req: Request, res: Response, a: Asset): void {
  res.set({ ...SECURITY_HEADERS, 'Content-Type': a.type, ETag: a.etag, 'Cache-Control': 'no-cache', Vary: 'Accept-Encoding' });
  if (req.get('if-none-match') === a.etag) {
    res.status(304).end();
    return;
  }
  const gzip = req.acceptsEncodings('gzip') === 'gzip';
  if (gzip) res.set('Content-Encoding', 'gzip');
  const body = gzip ? a.gzip : a.body;
  res.set('Content-Length', String(body.length)).end(body);
}

/** uPlot's browser build, from its npm package (a dependency, so it is in the image too). */
function uplotFile(name: string): Buffer {
  return readFileSync(createRequire(import.meta.url).resolve(`uplot/dist/${name}`));
}

/**
 * Adds `/ui/` (the page), its assets and `/ui/api/dashboard` (the data) to `app`. Call it with
 * the guards `/mcp` uses, before the app's central error handler.
 *
 * @example
 * mountUi(app, { tools, store, approvals: { store: approvalStore, dataDir }, authenticator, guardHost: guardHostAndOrigin, authenticate, rateLimit: limit });
 */
export function mountUi(app: Express, deps: UiDeps): void {
  // Absolute, so the command works from wherever the person runs it.
  const dataDir = deps.approvals.dataDir === undefined ? undefined : resolve(deps.approvals.dataDir);
  const assets: Record<string, Asset> = {
    'index.html': asset('text/html; charset=utf-8', INDEX_HTML.replace('{{AUTH}}', deps.authenticator.mode)),
    'dashboard.css': asset('text/css; charset=utf-8', DASHBOARD_CSS),
    'dashboard.js': asset('text/javascript; charset=utf-8', DASHBOARD_JS),
    'uplot.css': asset('text/css; charset=utf-8', uplotFile('uPlot.min.css')),
    'uplot.js': asset('text/javascript; charset=utf-8', uplotFile('uPlot.iife.min.js')),
  };

  app.get('/ui', deps.guardHost, (req, res) => {
    // The page's links are relative (so it works under a path prefix): it must be at /ui/.
    if (!req.path.endsWith('/')) return res.redirect(308, 'ui/');
    send(req, res, assets['index.html']!);
  });
  app.get('/ui/:file', deps.guardHost, (req, res, next) => {
    const file = String(req.params.file);
    if (!Object.hasOwn(assets, file) || file === 'index.html') return next();
    send(req, res, assets[file]!);
  });
  app.get('/ui/api/dashboard', deps.guardHost, deps.authenticate, deps.rateLimit, async (req, res) => {
    res.set({ ...SECURITY_HEADERS, 'Cache-Control': 'no-store' });
    const range = typeof req.query.range === 'string' && req.query.range !== '' ? req.query.range : '24h';
    const now = new Date();
    const since = parseTimeRange(range, now);
    if (!since) return res.status(400).json({ error: `range ${JSON.stringify(range)} is not understood; use e.g. 1h, 24h or 7d` });
    const ctx = { principal: res.locals.principal as Principal };
    const answer = await deps.tools.readAudit(ctx, async (read) => ({
      ok: true,
      value: await dashboardData(read, { range, since, now, problems: deps.store.problems(), approvals: deps.approvals.store.list(), ...(dataDir ? { dataDir } : {}) }),
    }));
    if (!answer.ok) return res.status(503).set('Retry-After', '5').json({ error: answer.error });
    res.json(answer.value);
  });
}
