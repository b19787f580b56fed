/**
 * For tests: an OTLP/HTTP trace receiver on loopback (JSON encoding, what ./tracing.ts's
 * exporter sends), keeping every span it is sent, the resource each came with, and each
 * request's method, path and content type.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  /** 1 INTERNAL, 2 SERVER, 3 CLIENT. */
  kind: number;
  attributes: Array<{ key: string; value: { stringValue?: string; intValue?: string | number } }>;
  /** code 2: ERROR; absent or 0: UNSET. */
  status?: { code?: number; message?: string };
}

/** A span attribute's value (an int as a number), or undefined. */
export function attribute(span: OtlpSpan, key: string): string | number | undefined {
  const v = span.attributes.find((a) => a.key === key)?.value;
  return v?.stringValue ?? (v?.intValue !== undefined ? Number(v.intValue) : undefined);
}

export async function startOtlpReceiver(): Promise<{ url: string; spans: OtlpSpan[]; resources: unknown[]; paths: string[]; server: Server; close(): Promise<void> }> {
  const spans: OtlpSpan[] = [];
  const resources: unknown[] = [];
  const paths: string[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      paths.push(`${req.method} ${req.url} ${req.headers['content-type']}`);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { resourceSpans: Array<{ resource: unknown; scopeSpans: Array<{ spans: OtlpSpan[] }> }> };
      for (const rs of body.resourceSpans) {
        resources.push(rs.resource);
        for (const ss of rs.scopeSpans) spans.push(...ss.spans);
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    resources,
    paths,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Waits, polling, until `spans` holds one that `match`es, and returns it; fails after `ms`. */
export async function spanWhere(spans: OtlpSpan[], match: (span: OtlpSpan) => boolean, what: string, ms = 20_000): Promise<OtlpSpan> {
  for (let waited = 0; ; waited += 20) {
    const found = spans.find(match);
    if (found) return found;
    if (waited >= ms) throw new Error(`no span ${what} among ${JSON.stringify(spans.map((s) => s.name))}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
