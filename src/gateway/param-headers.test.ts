/**
 * The `x-mcp-header` rules of protocol revision 2026-07-28 (SEP-2243) as the gateway applies
 * them: which declarations are valid, how values become `Mcp-Param-*` headers and how a
 * client's are checked, and what the gateway knows of an upstream's tools and when it asks
 * again. Through the gateway, against the official SDK: ./gateway-param-headers.test.ts.
 */
import { validateHeaderValue } from 'node:http';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DECLARATIONS_MAX_AGE_MS, encodeParamValue, LISTING_FAILURE_MAX_AGE_MS, MAX_DECLARATION_DEPTH, MAX_DECLARATIONS, MAX_KNOWN_DECLARATIONS, MAX_KNOWN_TOOLS, paramHeaderMismatch, paramHeaders, scanParamHeaders, ToolHeaderCatalog, type ParamHeader, type ToolListing } from './param-headers.js';

const object = (properties: Record<string, unknown>, more: Record<string, unknown> = {}) => ({ type: 'object', properties, ...more });
const header = (name: string, type = 'string') => ({ type, 'x-mcp-header': name });
const INVALID = "its inputSchema's x-mcp-header declarations are invalid: ";

describe('scanParamHeaders: the declarations of a tool, or why they are invalid', () => {
  it('finds every declaration reached through properties, at any depth, in document order', () => {
    const schema = object({ region: header('Region'), n: header('N', 'integer'), repo: object({ owner: header('Owner'), flags: object({ dry: header('Dry-Run', 'boolean') }) }), title: { type: 'string' } });
    expect(scanParamHeaders(schema)).toEqual({
      ok: true,
      headers: [
        { path: ['region'], name: 'Region', type: 'string' },
        { path: ['n'], name: 'N', type: 'integer' },
        { path: ['repo', 'owner'], name: 'Owner', type: 'string' },
        { path: ['repo', 'flags', 'dry'], name: 'Dry-Run', type: 'boolean' },
      ],
    });
  });

  it.each([undefined, {}, { type: 'object' }, object({ a: { type: 'string' } }), object({ properties: object({ x: { type: 'string' } }) })])('no declarations: %j', (schema) => {
    expect(scanParamHeaders(schema)).toEqual({ ok: true, headers: [] });
  });

  it.each([
    { shape: 'on the root', schema: { type: 'object', 'x-mcp-header': 'Root' }, why: 'the schema root: x-mcp-header is allowed only on a property reached through properties alone' },
    { shape: 'under items', schema: object({ tags: { type: 'array', items: header('Tag') } }), why: 'tags.<items>: x-mcp-header is allowed only on a property reached through properties alone' },
    { shape: 'under anyOf', schema: object({ a: { anyOf: [{ type: 'null' }, header('A')] } }), why: 'a.<anyOf>: x-mcp-header is allowed only on a property reached through properties alone' },
    { shape: 'under properties under additionalProperties', schema: object({}, { additionalProperties: object({ x: header('X') }) }), why: '<additionalProperties>.x: x-mcp-header is allowed only on a property reached through properties alone' },
    { shape: 'in $defs (a $ref target)', schema: object({ a: { $ref: '#/$defs/A' } }, { $defs: { A: header('A') } }), why: '<$defs>: x-mcp-header is allowed only on a property reached through properties alone' },
    { shape: 'under patternProperties', schema: object({}, { patternProperties: { '^x': header('X') } }), why: '<patternProperties>: x-mcp-header is allowed only on a property reached through properties alone' },
    // The SDK's server would read this as a property named "0"; others would not (see scanParamHeaders).
    { shape: 'under properties that are an array', schema: object({ a: { type: 'object', properties: [header('A')] } }), why: 'a.<properties>: x-mcp-header is allowed only on a property reached through properties alone' },
    { shape: 'a number', schema: object({ amount: header('Amount', 'number') }), why: 'amount: x-mcp-header is allowed only on a string, integer or boolean property, not "number"' },
    { shape: 'an object', schema: object({ o: header('O', 'object') }), why: 'o: x-mcp-header is allowed only on a string, integer or boolean property, not "object"' },
    { shape: 'no type', schema: object({ a: { 'x-mcp-header': 'A' } }), why: 'a: x-mcp-header is allowed only on a string, integer or boolean property, not null' },
    { shape: 'a list of types', schema: object({ a: { type: ['string', 'null'], 'x-mcp-header': 'A' } }), why: 'a: x-mcp-header is allowed only on a string, integer or boolean property, not ["string","null"]' },
    { shape: 'an empty name', schema: object({ a: header('') }), why: 'a: x-mcp-header "" is not an HTTP token' },
    { shape: 'a space', schema: object({ a: header('Re gion') }), why: 'a: x-mcp-header "Re gion" is not an HTTP token' },
    { shape: 'non-ASCII', schema: object({ a: header('Région') }), why: 'a: x-mcp-header "Région" is not an HTTP token' },
    { shape: 'a delimiter', schema: object({ a: header('A:B') }), why: 'a: x-mcp-header "A:B" is not an HTTP token' },
    { shape: 'not a string', schema: object({ a: { type: 'string', 'x-mcp-header': 42 } }), why: 'a: x-mcp-header 42 is not an HTTP token' },
    { shape: 'a name twice, ignoring case', schema: object({ a: header('Zone'), b: object({ c: header('ZONE') }) }), why: 'b.c: x-mcp-header "ZONE" is declared twice, ignoring case (also as "Zone")' },
  ])('invalid: $shape', ({ schema, why }) => {
    expect(scanParamHeaders(schema)).toEqual({ ok: false, reason: INVALID + why });
  });

  it('properties that are an array, with no annotation in them, are no declaration', () => {
    expect(scanParamHeaders(object({ a: { type: 'object', properties: [{ type: 'string' }] }, b: header('B') }))).toEqual({ ok: true, headers: [{ path: ['b'], name: 'B', type: 'string' }] });
  });

  /** `count` annotated properties, each one level under the one before: `p0`, `p0.p1`, … */
  const chain = (count: number) => {
    let schema: Record<string, unknown> = header(`H${count - 1}`);
    for (let i = count - 2; i >= 0; i--) schema = { ...header(`H${i}`), properties: { [`p${i + 1}`]: schema } };
    return object({ p0: schema });
  };

  it(`takes up to ${MAX_DECLARATIONS} declarations, and one up to ${MAX_DECLARATION_DEPTH} properties deep`, () => {
    const flat = Object.fromEntries(Array.from({ length: MAX_DECLARATIONS }, (_, i) => [`p${i}`, header(`H${i}`)]));
    expect(scanParamHeaders(object(flat))).toMatchObject({ ok: true, headers: { length: MAX_DECLARATIONS } });
    const deep = scanParamHeaders(chain(MAX_DECLARATION_DEPTH));
    expect(deep.ok && deep.headers.at(-1)!.path.length).toBe(MAX_DECLARATION_DEPTH);
  });

  it('a tool with more declarations is invalid, saying so', () => {
    const flat = Object.fromEntries(Array.from({ length: MAX_DECLARATIONS + 1 }, (_, i) => [`p${i}`, header(`H${i}`)]));
    expect(scanParamHeaders(object(flat))).toEqual({ ok: false, reason: `${INVALID}p${MAX_DECLARATIONS}: the gateway takes at most ${MAX_DECLARATIONS} x-mcp-header declarations per tool` });
  });

  it('a tool with a declaration deeper is invalid, saying so, its path cut short', () => {
    const path = Array.from({ length: MAX_DECLARATION_DEPTH }, (_, i) => `p${i}`).join('.');
    expect(scanParamHeaders(chain(MAX_DECLARATION_DEPTH + 1))).toEqual({ ok: false, reason: `${INVALID}${path}.…: the gateway takes x-mcp-header at most ${MAX_DECLARATION_DEPTH} properties deep` });
  });

  it('many declarations down a deep chain cost no time: the scan stops at the first one too deep', () => {
    const started = performance.now();
    const scan = scanParamHeaders(chain(20_000));
    expect(scan).toMatchObject({ ok: false, reason: expect.stringMatching(/properties deep$/) });
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it('walks a schema of any depth without recursion, keeping no path it does not report', () => {
    let schema: Record<string, unknown> = { type: 'string' };
    for (let i = 0; i < 50_000; i++) schema = object({ p: schema });
    expect(scanParamHeaders(schema)).toEqual({ ok: true, headers: [] });
    let annotated: Record<string, unknown> = header('Deep');
    for (let i = 0; i < 50_000; i++) annotated = object({ p: annotated });
    expect(scanParamHeaders(annotated)).toEqual({ ok: false, reason: `${INVALID}${Array(MAX_DECLARATION_DEPTH).fill('p').join('.')}.…: the gateway takes x-mcp-header at most ${MAX_DECLARATION_DEPTH} properties deep` });
  });
});

describe('reasons show what the upstream or the client chose cut short, with nothing that moves a cursor', () => {
  it('header and property names past 256 characters make a tool invalid: the gateway does not keep them', () => {
    expect(scanParamHeaders(object({ ['k'.repeat(257)]: header('K') }))).toMatchObject({ ok: false, reason: expect.stringMatching(/the gateway takes header and property names of at most 256 characters$/) });
    expect(scanParamHeaders(object({ k: header('K'.repeat(257)) }))).toMatchObject({ ok: false, reason: expect.stringMatching(/at most 256 characters$/) });
    expect(scanParamHeaders(object({ ['k'.repeat(256)]: header('K'.repeat(256)) }))).toMatchObject({ ok: true });
  });

  it('a long key, a long or structured x-mcp-header value, a long header value', () => {
    const key = `k\u001b[2J${'x'.repeat(10_000)}`;
    const long = scanParamHeaders(object({ [key]: { type: 'string', 'x-mcp-header': { huge: 'y'.repeat(10_000) } } }));
    expect(long).toEqual({ ok: false, reason: `${INVALID}k\\u001b[2J${'x'.repeat(59)}…: x-mcp-header {"huge":"${'y'.repeat(55)}… is not an HTTP token` });
    const declared: ParamHeader[] = [{ path: ['region'], name: 'Region', type: 'string' }];
    const said = paramHeaderMismatch(declared, { region: 'eu' }, { 'mcp-param-region': 'z'.repeat(8_000) });
    expect(said).toBe(`the Mcp-Param-Region header says "${'z'.repeat(63)}… but the body carries arguments.region="eu"`);
  });
});

describe('encodeParamValue: header text as HTTP carries it unchanged', () => {
  it.each([
    ['eu-west-1', 'eu-west-1'],
    ['a\tb', 'a\tb'],
    ['Zürich', '=?base64?WsO8cmljaA==?='],
    ['', '=?base64??='],
    [' lead', '=?base64?IGxlYWQ=?='],
    ['trail\t', '=?base64?dHJhaWwJ?='],
    ['line\nbreak', '=?base64?bGluZQpicmVhaw==?='],
    ['=?base64?ZXU=?=', '=?base64?PT9iYXNlNjQ/WlhVPT89?='],
    ['日本', '=?base64?5pel5pys?='],
  ])('%j → %j', (value, encoded) => {
    expect(encodeParamValue(value)).toBe(encoded);
  });

  it('every value becomes a valid header value that decodes back to it', () => {
    const declared: ParamHeader[] = [{ path: ['v'], name: 'V', type: 'string' }];
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (v) => {
        const sent = paramHeaders(declared, { v })['Mcp-Param-V']!;
        expect(() => validateHeaderValue('mcp-param-v', sent)).not.toThrow();
        expect(sent).toBe(sent.trim());
        // Lone surrogates have no UTF-8: they travel as U+FFFD, as TextEncoder sends them.
        expect(paramHeaderMismatch(declared, { v: Buffer.from(v, 'utf8').toString('utf8') }, { 'mcp-param-v': sent })).toBeUndefined();
      }),
    );
  });
});

const DECLARED: ParamHeader[] = [
  { path: ['region'], name: 'Region', type: 'string' },
  { path: ['n'], name: 'N', type: 'integer' },
  { path: ['urgent'], name: 'Urgent', type: 'boolean' },
  { path: ['repo', 'owner'], name: 'Owner', type: 'string' },
];

describe('paramHeaders: what the gateway sends upstream', () => {
  it('one header per declared value present, not null and primitive, in the declared case', () => {
    expect(paramHeaders(DECLARED, { region: 'Zürich', n: 42, urgent: false, repo: { owner: 'acme' } })).toEqual({ 'Mcp-Param-Region': '=?base64?WsO8cmljaA==?=', 'Mcp-Param-N': '42', 'Mcp-Param-Urgent': 'false', 'Mcp-Param-Owner': 'acme' });
    expect(paramHeaders(DECLARED, { region: null, n: 2 ** 60, urgent: { yes: true }, repo: 'acme' })).toEqual({});
    expect(paramHeaders(DECLARED, {})).toEqual({});
    // Inherited members are not arguments.
    expect(paramHeaders([{ path: ['constructor'], name: 'C', type: 'string' }], {})).toEqual({});
  });
});

describe('paramHeaderMismatch: the client\'s headers checked as a server checks them', () => {
  const args = { region: 'Zürich', n: 42, urgent: true, repo: { owner: 'acme' } };
  const good = { 'mcp-param-region': '=?base64?WsO8cmljaA==?=', 'mcp-param-n': '42', 'mcp-param-urgent': 'true', 'mcp-param-owner': 'acme' };

  it.each([
    { shape: 'all mirrored', headers: good },
    // The gateway builds the upstream's headers itself: one the client left out loses nothing (paramHeaderMismatch).
    { shape: 'a header missing', headers: { ...good, 'mcp-param-n': undefined } },
    { shape: 'none at all', headers: {} },
    { shape: 'an integer as another decimal', headers: { ...good, 'mcp-param-n': '42.0' } },
    { shape: 'a plain value sent in Base64', headers: { ...good, 'mcp-param-owner': '=?base64?YWNtZQ==?=' } },
    { shape: 'headers nothing declares', headers: { ...good, 'mcp-param-other': 'x' } },
  ])('accepted: $shape', ({ headers }) => {
    expect(paramHeaderMismatch(DECLARED, args, headers)).toBeUndefined();
  });

  it.each([
    { shape: 'a value that differs', headers: { ...good, 'mcp-param-region': 'Zurich' }, why: 'the Mcp-Param-Region header says "Zurich" but the body carries arguments.region="Zürich"' },
    { shape: 'a nested value that differs', headers: { ...good, 'mcp-param-owner': 'evil' }, why: 'the Mcp-Param-Owner header says "evil" but the body carries arguments.repo.owner="acme"' },
    { shape: 'an integer in exponent form', headers: { ...good, 'mcp-param-n': '4.2e1' }, why: 'the Mcp-Param-N header says "4.2e1" but the body carries arguments.n=42' },
    { shape: 'a boolean in another case', headers: { ...good, 'mcp-param-urgent': 'TRUE' }, why: 'the Mcp-Param-Urgent header says "TRUE" but the body carries arguments.urgent=true' },
    { shape: 'the header sent twice', headers: { ...good, 'mcp-param-owner': 'acme, acme' }, why: 'the Mcp-Param-Owner header says "acme, acme" but the body carries arguments.repo.owner="acme"' },
    { shape: 'Base64 that is not canonical', headers: { ...good, 'mcp-param-owner': '=?base64?YWNtZQ?=' }, why: 'the Mcp-Param-Owner header carries an invalid Base64 sentinel value' },
    { shape: 'Base64 of invalid UTF-8', headers: { ...good, 'mcp-param-owner': '=?base64?/w==?=' }, why: 'the Mcp-Param-Owner header carries an invalid Base64 sentinel value' },
  ])('refused: $shape', ({ headers, why }) => {
    expect(paramHeaderMismatch(DECLARED, args, headers)).toBe(why);
  });

  it('a value that is absent, null or not primitive needs no header, and one sent for it is ignored', () => {
    expect(paramHeaderMismatch(DECLARED, { region: null, urgent: [true] }, { 'mcp-param-region': 'us', 'mcp-param-n': '1' })).toBeUndefined();
  });
});

describe('ToolHeaderCatalog: what the gateway knows of an upstream\'s tools', () => {
  const tool = (name: string, properties: Record<string, unknown> = {}) => ({ name, inputSchema: object(properties) });
  /** A catalog on a clock the test moves, and a lister that counts its listings. */
  function setup(listing: () => Promise<ToolListing>) {
    const clock = { now: 0 };
    const catalog = new ToolHeaderCatalog(() => clock.now);
    const listed = { count: 0 };
    const list = () => {
      listed.count++;
      return listing();
    };
    return { clock, catalog, listed, list };
  }

  it('takes what passes through: a learned tool is known without a listing, until it is old or its upstream forgets', async () => {
    const { clock, catalog, listed, list } = setup(async () => ({ tools: [tool('a')], complete: true }));
    catalog.learn('u', [tool('a', { r: header('R') }), 'not a tool', { name: 1 }]);
    expect(await catalog.declarations('u', 'a', list)).toEqual({ ok: true, headers: [{ path: ['r'], name: 'R', type: 'string' }] });
    expect(listed.count).toBe(0);
    clock.now = DECLARATIONS_MAX_AGE_MS;
    expect(await catalog.declarations('u', 'a', list)).toEqual({ ok: true, headers: [] });
    expect(listed.count).toBe(1);
    catalog.forget('u');
    await catalog.declarations('u', 'a', list);
    expect(listed.count).toBe(2);
    // Another upstream's tools are its own.
    expect(await catalog.declarations('v', 'a', list)).toEqual({ ok: true, headers: [] });
    expect(listed.count).toBe(3);
  });

  it(`keeps at most ${MAX_KNOWN_TOOLS} tools and ${MAX_KNOWN_DECLARATIONS} declarations of an upstream, old ones going first; the rest are called with no headers, saying why`, async () => {
    const many = Array.from({ length: MAX_KNOWN_TOOLS + 10 }, (_, i) => tool(`t${i}`));
    const { clock, catalog, listed, list } = setup(async () => ({ tools: many, complete: true }));
    const full = { ok: false, unknown: 'unlisted', reason: `the gateway keeps at most ${MAX_KNOWN_TOOLS} tools (named in at most 128 characters) and ${MAX_KNOWN_DECLARATIONS} declarations of one upstream, and not this one` };
    expect(await catalog.declarations('u', `t${MAX_KNOWN_TOOLS - 1}`, list)).toEqual({ ok: true, headers: [] });
    expect(await catalog.declarations('u', `t${MAX_KNOWN_TOOLS}`, list)).toEqual(full);
    expect(listed.count).toBe(1);
    // Declarations count too: 64 tools of 64 fill them.
    const heavy = (i: number) => tool(`h${i}`, Object.fromEntries(Array.from({ length: MAX_DECLARATIONS }, (_, j) => [`p${j}`, header(`H${j}`)])));
    catalog.learn('w', Array.from({ length: MAX_KNOWN_DECLARATIONS / MAX_DECLARATIONS + 1 }, (_, i) => heavy(i)));
    expect(await catalog.declarations('w', 'h0', list)).toMatchObject({ ok: true });
    expect(await catalog.declarations('w', `h${MAX_KNOWN_DECLARATIONS / MAX_DECLARATIONS}`, async () => ({ tools: [], complete: true }))).toMatchObject({ ok: false, unknown: 'unlisted' });
    // A name longer than MCP allows is not kept, whatever room there is.
    const long = 'n'.repeat(129);
    catalog.learn('x', [tool(long, { r: header('R') })]);
    expect(await catalog.declarations('x', long, async () => ({ tools: [tool(long, { r: header('R') })], complete: true }))).toMatchObject({ ok: false, unknown: 'unlisted' });
    // What passes through later finds room once the old is old.
    clock.now = DECLARATIONS_MAX_AGE_MS + 1;
    catalog.learn('u', [tool('late', { r: header('R') })]);
    expect(await catalog.declarations('u', 'late', list)).toEqual({ ok: true, headers: [{ path: ['r'], name: 'R', type: 'string' }] });
    expect(listed.count).toBe(1);
  });

  it('lists an upstream once for the calls that wait on it together', async () => {
    let release!: () => void;
    const { catalog, listed, list } = setup(() => new Promise((resolve) => (release = () => resolve({ tools: [tool('a'), tool('b', { x: header('X', 'integer') })], complete: true }))));
    const waiting = Promise.all([catalog.declarations('u', 'a', list), catalog.declarations('u', 'b', list)]);
    release();
    expect(await waiting).toEqual([
      { ok: true, headers: [] },
      { ok: true, headers: [{ path: ['x'], name: 'X', type: 'integer' }] },
    ]);
    expect(listed.count).toBe(1);
  });

  it('a tool missing from a whole listing is not there, and is not asked about again while the listing is fresh', async () => {
    const { clock, catalog, listed, list } = setup(async () => ({ tools: [tool('a')], complete: true }));
    const missing = { ok: false, unknown: 'unlisted', reason: "the upstream's tools/list does not name it" };
    expect(await catalog.declarations('u', 'gone', list)).toEqual(missing);
    expect(await catalog.declarations('u', 'gone', list)).toEqual(missing);
    expect(listed.count).toBe(1);
    clock.now = DECLARATIONS_MAX_AGE_MS;
    await catalog.declarations('u', 'gone', list);
    expect(listed.count).toBe(2);
  });

  it('a tool missing from the pages read of a longer list is unlisted, saying the list was longer, and not asked about again while the listing is fresh', async () => {
    const { catalog, listed, list } = setup(async () => ({ tools: [tool('a')], complete: false }));
    const unknown = { ok: false, unknown: 'unlisted', reason: "the pages of the upstream's tools/list that the gateway reads do not name it" };
    expect(await catalog.declarations('u', 'later', list)).toEqual(unknown);
    expect(await catalog.declarations('u', 'later', list)).toEqual(unknown);
    expect(listed.count).toBe(1);
  });

  it('a listing that fails says why; the calls in the next seconds are told the same at once, and a call after that lists again', async () => {
    let fail = true;
    const { clock, catalog, listed, list } = setup(() => (fail ? Promise.reject(new Error('the connection was refused')) : Promise.resolve({ tools: [tool('a')], complete: true })));
    const failed = { ok: false, unknown: 'unavailable', reason: "the gateway could not list the upstream's tools to learn which Mcp-Param headers it takes: the connection was refused" };
    expect(await catalog.declarations('u', 'a', list)).toEqual(failed);
    clock.now = LISTING_FAILURE_MAX_AGE_MS - 1;
    expect(await catalog.declarations('u', 'b', list)).toEqual(failed);
    expect(listed.count).toBe(1);
    // Another upstream's listing is its own.
    await catalog.declarations('v', 'a', list);
    expect(listed.count).toBe(2);
    fail = false;
    clock.now = LISTING_FAILURE_MAX_AGE_MS;
    expect(await catalog.declarations('u', 'a', list)).toEqual({ ok: true, headers: [] });
    expect(listed.count).toBe(3);
  });

  it('what passes through is taken even while a failed listing stands', async () => {
    const { catalog, listed, list } = setup(() => Promise.reject(new Error('the connection was refused')));
    await catalog.declarations('u', 'a', list);
    catalog.learn('u', [tool('a', { r: header('R') })]);
    expect(await catalog.declarations('u', 'a', list)).toEqual({ ok: true, headers: [{ path: ['r'], name: 'R', type: 'string' }] });
    expect(listed.count).toBe(1);
  });

  it('a tool whose declarations are invalid is known as such', async () => {
    const { catalog, list } = setup(async () => ({ tools: [tool('bad', { n: header('N', 'number') })], complete: true }));
    expect(await catalog.declarations('u', 'bad', list)).toEqual({ ok: false, reason: `${INVALID}n: x-mcp-header is allowed only on a string, integer or boolean property, not "number"` });
  });
});
