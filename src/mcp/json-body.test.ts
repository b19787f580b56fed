/**
 * jsonBody reads plain JSON itself and hands everything else to body-parser: over real HTTP on
 * loopback, every request gets the same outcome (status, error type, parsed body) from it as
 * from express.json with the same limit and verify.
 */
import { constants } from 'node:buffer';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonBody, readsDirectly } from './json-body.js';

const LIMIT = 64;
const verify = (text: string) => {
  if (text.includes('"refuse"')) throw new Error('refused by verify');
};

let url = '';
let close: () => Promise<void>;
let aborted: string[] = [];
beforeAll(async () => {
  const app = express();
  const echo = (req: Request, res: Response) => res.json({ status: 200, body: req.body as unknown });
  app.post('/ours', jsonBody({ limitBytes: LIMIT, verify }), echo);
  app.post('/body-parser', express.json({ limit: LIMIT, verify: (_req, _res, buf) => verify(buf.toString('utf8')) }), echo);
  app.use((err: Error & { status?: number; type?: string }, _req: Request, res: Response, _next: NextFunction) => {
    if (err.type === 'request.aborted') aborted.push(err.type);
    res.status(err.status ?? 500).json({ status: err.status, type: err.type });
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  close = () => new Promise((r) => server.close(() => r()));
});
afterAll(() => close?.());

/** POST `chunks` (written one by one) with `headers`; the answer's status and JSON. */
function post(path: string, chunks: (string | Buffer)[], headers: Record<string, string>): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method: 'POST', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(text) }));
    });
    req.on('error', reject);
    for (const c of chunks) req.write(c);
    req.end();
  });
}

const plain = (body: string | Buffer, type = 'application/json') => ({
  chunks: [body],
  headers: { 'content-type': type, 'content-length': String(Buffer.byteLength(body)) },
});

const cases: [string, { chunks: (string | Buffer)[]; headers: Record<string, string> }][] = [
  ['an object', plain('{"a":1,"b":[true,null]}')],
  ['an array', plain('[1,2]')],
  ['a byte order mark', plain('\uFEFF{"a":1}')],
  ['a byte order mark alone', plain('\uFEFF')],
  ['leading whitespace', plain(' \n\t{"a":1}')],
  ['a string at the top', plain('"x"')],
  ['a number at the top', plain('  42')],
  ['whitespace only', plain('   ')],
  ['cut-off JSON', plain('{"a":')],
  ['what verify refuses', plain('{"x":"refuse"}')],
  ['invalid UTF-8', plain(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]))],
  ['a character split across two writes', { chunks: [Buffer.from('{"a":"\xc3', 'latin1'), Buffer.from('\xa9"}', 'latin1')], headers: { 'content-type': 'application/json', 'content-length': '10' } }],
  ['charset=utf-8 and capitals', plain('{"a":1}', 'Application/JSON; charset=UTF-8')],
  ['a charset body-parser refuses', plain('{"a":1}', 'application/json; charset=latin1')],
  ['another media type (not parsed)', plain('{"a":1}', 'text/plain')],
  ['over the limit', plain(`{"a":"${'x'.repeat(LIMIT)}"}`)],
  ['chunked, no length', { chunks: ['{"a":', '1}'], headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }],
  ['an empty body', plain('')],
];

describe('jsonBody', () => {
  it.each(cases)('%s: the same outcome as express.json', async (_name, { chunks, headers }) => {
    const ours = await post('/ours', chunks, headers);
    const theirs = await post('/body-parser', chunks, headers);
    expect(ours).toEqual(theirs);
  });

  it('refuses a charset other than UTF-8, which body-parser would decode after verify had read the bytes as UTF-8', async () => {
    // 1e400 is what the server's verify refuses (an inexact number); in UTF-16 it hid from it.
    for (const [type, text] of [['application/json; charset=utf-16le', '{"x":"refuse"}'], ['application/json; charset="UTF-16"', '{"a":1}']] as const) {
      const body = Buffer.from(text, 'utf16le');
      const ours = await post('/ours', [body], { 'content-type': type, 'content-length': String(body.length) });
      expect(ours, type).toEqual({ status: 415, json: { status: 415, type: 'charset.unsupported' } });
    }
    // What body-parser did with the first: decoded it after verify had seen no "refuse" in it.
    const body = Buffer.from('{"x":"refuse"}', 'utf16le');
    const theirs = await post('/body-parser', [body], { 'content-type': 'application/json; charset=utf-16le', 'content-length': String(body.length) });
    expect(theirs).toEqual({ status: 200, json: { status: 200, body: { x: 'refuse' } } });
  });

  it('reads plain JSON of a stated length within the limit itself, and nothing else', () => {
    const h = (type: string | undefined, length: string | undefined, extra: Record<string, string> = {}) => ({
      ...(type !== undefined && { 'content-type': type }),
      ...(length !== undefined && { 'content-length': length }),
      ...extra,
    });
    expect(readsDirectly(h('application/json', '10'), LIMIT)).toBe(true);
    expect(readsDirectly(h('application/json; charset=utf-8', '64'), LIMIT)).toBe(true);
    expect(readsDirectly(h('application/json;charset="UTF-8"', '1'), LIMIT)).toBe(true);
    expect(readsDirectly(h('application/json', '65'), LIMIT)).toBe(false);
    expect(readsDirectly(h('application/json', '0'), LIMIT)).toBe(false);
    expect(readsDirectly(h('application/json', undefined), LIMIT)).toBe(false);
    expect(readsDirectly(h('application/json', '10', { 'content-encoding': 'gzip' }), LIMIT)).toBe(false);
    expect(readsDirectly(h('application/json', '10', { 'transfer-encoding': 'chunked' }), LIMIT)).toBe(false);
    expect(readsDirectly(h('application/json; charset=utf-16le', '10'), LIMIT)).toBe(false);
    expect(readsDirectly(h('application/merge-patch+json', '10'), LIMIT)).toBe(false);
    expect(readsDirectly(h(undefined, '10'), LIMIT)).toBe(false);
    // Longer than the longest string V8 makes: body-parser refuses it (400), as it always did.
    expect(readsDirectly(h('application/json', String(constants.MAX_STRING_LENGTH + 1)), 2 ** 40)).toBe(false);
    expect(readsDirectly(h('application/json', String(constants.MAX_STRING_LENGTH)), 2 ** 40)).toBe(true);
  });

  it('a caller that goes away mid-body is reported as request.aborted, and the server goes on', async () => {
    aborted = [];
    await new Promise<void>((resolve) => {
      const req = request(`${url}/ours`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': '50' } });
      req.on('error', () => resolve());
      req.write('{"a":', () => setTimeout(() => req.destroy(), 50));
    });
    await expect.poll(() => aborted).toEqual(['request.aborted']);
    const again = plain('{"a":2}');
    expect(await post('/ours', again.chunks, again.headers)).toEqual({ status: 200, json: { status: 200, body: { a: 2 } } });
  });
});
