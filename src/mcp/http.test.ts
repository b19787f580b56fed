/**
 * The app's request and response classes (HttpApp.classes): node:http makes each request with
 * Express's prototypes already, so POST /mcp needs no Object.setPrototypeOf; a server that makes
 * plain ones (createServer(app.listener)) is answered the same, and so is one over TLS.
 */
import { mkdtemp } from 'node:fs/promises';
import { createServer, IncomingMessage, request as httpRequest, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Socket, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryApprovalStore } from '../approvals/memory-store-fixture.js';
import { noAuthenticator } from '../auth/authenticate.js';
import { createLogger, silentLogger } from '../log.js';
import { attribute, spanWhere, startOtlpReceiver } from '../telemetry/otlp-receiver-fixture.js';
import { startTracing } from '../telemetry/tracing.js';
import { writePki } from '../../tests/controlplane/certs.js';
import { openSampleTools, type SampleTools } from './sample-tools-fixture.js';
import { createHttpApp, listen, type HttpApp, type RunningServer } from './http.js';

let root: string;
let sample: SampleTools;
let app: HttpApp;
let withClasses: RunningServer;
let plain: Server;
let plainUrl: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'policyguard-http-'));
  sample = await openSampleTools(root);
  const { tools, store, metrics } = sample;
  app = createHttpApp({ tools, store, metrics, log: silentLogger, authenticator: noAuthenticator(), allowedHosts: [], allowedOrigins: [], uiApprovals: { store: new MemoryApprovalStore() } });
  withClasses = await listen(app, { host: '127.0.0.1', port: 0 });
  plain = createServer(app.listener);
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
  plainUrl = `http://127.0.0.1:${(plain.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await withClasses?.close();
  plain?.closeAllConnections();
  await new Promise((resolve) => plain?.close(resolve));
  await sample?.close();
});

const HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
const call = (target: string) =>
  JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'validate_action', arguments: { action_type: 'tool_call', target, agent_id: 'support-bot' } } });

describe('the request and response classes node:http makes for the app', () => {
  it("carry Express's request and response methods, and node:http's own", () => {
    const req = new app.classes.IncomingMessage(new Socket());
    const res = new app.classes.ServerResponse(req);
    expect(req).toBeInstanceOf(IncomingMessage);
    expect(typeof (req as unknown as { get: unknown }).get).toBe('function'); // express/lib/request.js
    expect(typeof (res as unknown as { json: unknown }).json).toBe('function'); // express/lib/response.js
    expect(typeof res.writeHead).toBe('function');
  });

  it('are what the servers listen() starts make, over HTTP and over TLS', async () => {
    const pki = writePki(join(root, 'pki-classes'));
    const tls = await listen(app, { host: '127.0.0.1', port: 0, tls: { cert: pki.servingCert, key: pki.servingKey } });
    try {
      const made: boolean[] = [];
      for (const server of [withClasses.server, tls.server]) {
        server.prependOnceListener('request', (req: IncomingMessage, res: unknown) => made.push(req instanceof app.classes.IncomingMessage && res instanceof app.classes.ServerResponse));
      }
      await fetch(`${withClasses.url}/healthz`);
      await new Promise<void>((resolve, reject) => httpsRequest(`${tls.url}/healthz`, { ca: pki.pem.ca }, (res) => res.resume().once('end', resolve)).once('error', reject).end());
      expect(made).toEqual([true, true]);
    } finally {
      await tls.close();
    }
  });

  const cases: Array<[name: string, method: string, path: string, body?: string]> = [
    ['an allowed call (the fast path)', 'POST', '/mcp', call('read_customer')],
    ['a denied call', 'POST', '/mcp', call('delete_records')],
    ['tools/list (the SDK path)', 'POST', '/mcp', JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' })],
    ['malformed JSON', 'POST', '/mcp', '{"jsonrpc": '],
    ['the routed path', 'POST', '/mcp?via=router', call('read_customer')],
    ['GET /healthz', 'GET', '/healthz'],
  ];
  const answer = async (base: string, method: string, path: string, body?: string) => {
    const r = await fetch(`${base}${path}`, { method, headers: HEADERS, ...(body === undefined ? {} : { body }) });
    const text = (await r.text()).replace(/(act|inc)_[0-9a-f]+/g, '$1_…').replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, '<time>');
    return { status: r.status, type: r.headers.get('content-type'), text };
  };

  it.each(cases)('answer %s the same when the server makes plain requests', async (_name, method, path, body) => {
    const expected = await answer(withClasses.url, method, path, body);
    expect(expected.status).toBeLessThan(500);
    expect(await answer(plainUrl, method, path, body)).toEqual(expected);
  });

  it('serve over TLS (--tls-cert, --tls-key) as over plain HTTP', async () => {
    const pki = writePki(join(root, 'pki'));
    const tls = await listen(app, { host: '127.0.0.1', port: 0, tls: { cert: pki.servingCert, key: pki.servingKey } });
    try {
      expect(tls.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const body = call('read_customer');
      const text = await new Promise<string>((resolve, reject) => {
        const req = httpsRequest(`${tls.url}/mcp`, { method: 'POST', headers: HEADERS, ca: pki.pem.ca }, (res) => {
          let chunks = '';
          res.setEncoding('utf8').on('data', (c: string) => (chunks += c)).on('end', () => resolve(`${res.statusCode} ${chunks}`));
        });
        req.once('error', reject).end(body);
      });
      const expected = await answer(withClasses.url, 'POST', '/mcp', body);
      expect(text.replace(/act_[0-9a-f]+/g, 'act_…').replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, '<time>')).toBe(`${expected.status} ${expected.text}`);
    } finally {
      await tls.close();
    }
  });
});

describe('a 2025-11-25 request whose Mcp-Method or Mcp-Name header (which that revision does not define) says otherwise than its body', () => {
  it.each([
    [{ 'mcp-name': 'get_audit_log' }, 'the body carries params.name="validate_action" but the Mcp-Name header names "get_audit_log"'],
    [{ 'mcp-method': 'tools/list' }, 'the body names method tools/call but the Mcp-Method header names "tools/list"'],
    [{ 'mcp-protocol-version': '2025-11-25', 'mcp-method': 'tools/call', 'mcp-name': 'register_agent' }, 'the body carries params.name="validate_action" but the Mcp-Name header names "register_agent"'],
  ])('%j is refused with -32020 (HTTP 400): proxies route on those headers', async (odd, mismatch) => {
    const r = await fetch(`${withClasses.url}/mcp`, { method: 'POST', headers: { ...HEADERS, ...odd }, body: call('read_customer') });
    expect(r.status).toBe(400);
    expect(await r.json()).toEqual({ jsonrpc: '2.0', id: null, error: { code: -32020, message: `Bad Request: the request headers and body disagree: ${mismatch}` } });
  });

  it('headers that mirror the body are served', async () => {
    const r = await fetch(`${withClasses.url}/mcp`, { method: 'POST', headers: { ...HEADERS, 'mcp-method': 'tools/call', 'mcp-name': 'validate_action' }, body: call('read_customer') });
    expect(((await r.json()) as { result: { structuredContent: { decision: string } } }).result.structuredContent.decision).toBe('allow');
  });
});

describe('the Host header', () => {
  it.each(['policy_guard:8080', '[fe80::1%25eth0]:8000', 'svc.ns.svc.cluster.local.', '127.0.0.1'])('%s is a host[:port]: served (a route that checks Host)', async (host) => {
    const status = await new Promise<number>((resolve, reject) => {
      const url = new URL(withClasses.url);
      httpRequest({ host: url.hostname, port: url.port, path: '/.well-known/oauth-protected-resource', headers: { host } }, (res) => resolve(res.resume().statusCode!)).once('error', reject).end();
    });
    expect(status).toBe(200);
  });
});

describe('scrapes and probes under --allowed-hosts (DNS rebinding)', () => {
  let guarded: RunningServer;
  let own: SampleTools;
  beforeAll(async () => {
    own = await openSampleTools(await mkdtemp(join(tmpdir(), 'policyguard-http-hosts-')));
    const { tools, store, metrics } = own;
    guarded = await listen(createHttpApp({ tools, store, metrics, log: silentLogger, authenticator: noAuthenticator(), allowedHosts: ['policyguard.team-a'], allowedOrigins: [], uiApprovals: { store: new MemoryApprovalStore() } }), { host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    await guarded?.close();
    await own?.close();
  });
  const get = (path: string, headers: Record<string, string>) =>
    new Promise<number>((resolve, reject) => {
      const url = new URL(guarded.url);
      httpRequest({ host: url.hostname, port: url.port, path, headers }, (res) => resolve(res.resume().statusCode!)).once('error', reject).end();
    });
  const ROUTES = ['/metrics', '/healthz', '/readyz'];

  it.each(ROUTES)('%s: a page\'s DNS name is refused; an allowed name, and a Pod IP as Prometheus and the kubelet send it, are served', async (path) => {
    expect(await get(path, { host: 'rebind.attacker.example:8000' })).toBe(403);
    expect(await get(path, { host: 'policyguard.team-a:8000' })).toBe(200);
    for (const host of ['10.244.1.7:8000', '10.244.1.7', '[fd00::7]:8000', 'localhost:8000']) expect(await get(path, { host })).toBe(200);
    expect(await get(path, { host: '10.244.1.7:8000', origin: 'https://attacker.example' })).toBe(403);
  });
  it('/mcp takes only the allowed names: an IP address is no exception there', async () => {
    expect(await get('/mcp', { host: '10.244.1.7:8000' })).toBe(403);
  });
});

describe('clients that hold connections (listen options)', () => {
  /** A socket to `server`, resolved once connected; `closed` settles when the server closes it. */
  const connect = (server: RunningServer) => {
    const url = new URL(server.url);
    const socket = new Socket();
    const closed = new Promise<string>((resolve) => {
      let data = '';
      socket.on('data', (d) => (data += d));
      socket.once('close', () => resolve(data));
    });
    return new Promise<{ socket: Socket; closed: Promise<string> }>((resolve, reject) => {
      socket.once('error', reject).connect(Number(url.port), url.hostname, () => resolve({ socket, closed }));
    });
  };

  it('a connection beyond --max-connections is closed at once; those within it are served', async () => {
    const server = await listen(app, { host: '127.0.0.1', port: 0, maxConnections: 2 });
    try {
      const held = [await connect(server), await connect(server)];
      const third = await connect(server);
      expect(await third.closed).toBe('');
      held[0]!.socket.end('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
      expect(await held[0]!.closed).toMatch(/^HTTP\/1\.1 200 OK/);
      held[1]!.socket.destroy();
    } finally {
      await server.close();
    }
  });

  it('a client that trickles its headers past the headers timeout gets 408 and loses the connection', async () => {
    const server = await listen(app, { host: '127.0.0.1', port: 0, timeouts: { headersMs: 300, requestMs: 600 } });
    try {
      const slow = await connect(server);
      slow.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n'); // and never the blank line
      expect(await slow.closed).toMatch(/^HTTP\/1\.1 408 /);
    } finally {
      await server.close();
    }
  });
});

describe('tracing on (--otel-endpoint)', () => {
  const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
  const TRACEPARENT = `00-${TRACE}-00f067aa0ba902b7-01`;

  it('scrapes and probes (/metrics, /healthz, /readyz) make no span, and their log lines keep the caller\'s trace id; /mcp is traced', async () => {
    const receiver = await startOtlpReceiver();
    const traced = await openSampleTools(await mkdtemp(join(tmpdir(), 'policyguard-http-traced-')));
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger('debug', (line) => lines.push(JSON.parse(line) as Record<string, unknown>), 'json');
    const tracer = startTracing({ endpoint: receiver.url, instance: 'test', scheduledDelayMs: 10, log });
    const { tools, store, metrics } = traced;
    const server = await listen(createHttpApp({ tools, store, metrics, log, tracer, authenticator: noAuthenticator(), allowedHosts: [], allowedOrigins: [], uiApprovals: { store: new MemoryApprovalStore() } }), { host: '127.0.0.1', port: 0 });
    try {
      const probes = ['/metrics', '/healthz', '/readyz', '/Metrics', '/healthz/'];
      for (const path of probes) expect((await fetch(`${server.url}${path}`, { headers: { traceparent: TRACEPARENT } })).status, path).toBe(200);
      await (await fetch(`${server.url}/mcp`, { method: 'POST', headers: { ...HEADERS, traceparent: TRACEPARENT }, body: call('postgres://app:S3CRET@db/x') })).text();
      await spanWhere(receiver.spans, (s) => s.name === 'POST /mcp', 'POST /mcp');
      await tracer.shutdown(); // exports whatever else ended
      expect(receiver.spans.map((s) => s.name).sort()).toEqual(['POST /mcp', 'policyguard.decide']);
      // The target as the audit record keeps it.
      expect(attribute(receiver.spans.find((s) => s.name === 'policyguard.decide')!, 'policyguard.target')).toBe('postgres://app:[REDACTED]@db/x');
      const requests = lines.filter((l) => l.msg === 'HTTP request');
      expect(requests.map((l) => [l.route, l.trace_id])).toEqual([...['/metrics', '/healthz', '/readyz', '/metrics', '/healthz'].map((route) => [route, TRACE]), ['/mcp', TRACE]]);
    } finally {
      await server.close();
      await receiver.close();
      await traced.close();
    }
  });
});
