/**
 * A string pattern in our CRDs is checked twice: by the API server (Go's RE2) when an object is
 * written, and by the zod schema (JavaScript) when the server loads it. The two engines read
 * some syntax differently (`\s` is ASCII whitespace in RE2, also the Unicode spaces in
 * JavaScript), and where they disagree an object the API server took is refused only later, at
 * load. Here the real API server and the schema are asked about the same GuardUpstream URLs,
 * with every character JavaScript's `\s` matches among them, and about map keys counted in
 * characters beyond the BMP: they must give the same answer.
 */
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { API_VERSION, GROUP, GuardAgentSchema, GuardUpstreamSchema, VERSION } from '../../src/api/schemas.js';
import { sharedKubeConfig } from '../controlplane/test-context.js';
import { createNamespace } from './harness.js';

let kc: KubeConfig;
let ns: string;

beforeAll(async () => {
  kc = sharedKubeConfig();
  ns = await createNamespace(kc, 'pg-patterns');
});

const upstream = (url: string) => ({ apiVersion: API_VERSION, kind: 'GuardUpstream', metadata: { name: 'u', namespace: ns }, spec: { url } });

/** Whether the API server would create the object (a dry run), with its refusal when not. */
async function apiServerTakes(plural: string, body: object): Promise<{ ok: boolean; why?: string }> {
  try {
    await kc.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural, body, dryRun: 'All' });
    return { ok: true };
  } catch (err) {
    const e = err as { code?: number; body?: string };
    if (e.code !== 422) throw err; // only a validation refusal is an answer
    return { ok: false, why: e.body };
  }
}

const whitespace = Array.from({ length: 0x10000 }, (_, c) => String.fromCharCode(c)).filter((ch) => /\s/.test(ch));
const odd = [...whitespace, '\x1b', '\x7f', '\x85', 'é', '\u200b', '😀'];
const urls = [
  'http://github-mcp.tools:8080/mcp',
  'https://[::1]:8443/mcp?x=a@b#frag',
  'http://bot:hunter2@github-mcp/mcp',
  'http://evil.example\\.good.example/mcp',
  'http://%65vil.example/mcp',
  'http://[::1:8080/mcp',
  'http://github-mcp:65536/mcp',
  'http://github-mcp:99999/mcp',
  ...odd.flatMap((ch) => [`http://git${ch}hub-mcp/mcp`, `http://github-mcp/m${ch}cp`]),
];

describe('the API server and the schema agree on GuardUpstream URLs', () => {
  it.each(urls.map((url) => [JSON.stringify(url), url]))('%s', async (_name, url) => {
    const server = await apiServerTakes('guardupstreams', upstream(url));
    const schema = GuardUpstreamSchema.safeParse(upstream(url)).success;
    expect({ server: server.ok, schema }).toEqual({ server: schema, schema });
    if (!server.ok) expect(server.why).toMatch(/spec\.url.*should match/);
  });

  it('the first two are URLs and the rest are not, so the comparison above means something', () => {
    expect(urls.map((url) => GuardUpstreamSchema.safeParse(upstream(url)).success)).toEqual(urls.map((_, i) => i < 2));
  });
});

/** A map key of `n` times `unit`. */
const key = (unit: string, n: number) => unit.repeat(n);
const agent = (k: string) => ({ apiVersion: API_VERSION, kind: 'GuardAgent', metadata: { name: 'a', namespace: ns }, spec: { attributes: { [k]: 'x' } } });

describe('the API server and the schema agree on how long a map key is', () => {
  // 253 characters is the bound; an emoji is one character and two UTF-16 units.
  it.each([
    ['253 ASCII characters', key('k', 253), true],
    ['254 ASCII characters', key('k', 254), false],
    ['200 emoji (400 UTF-16 units)', key('😀', 200), true],
    ['253 emoji', key('😀', 253), true],
    ['254 emoji', key('😀', 254), false],
  ])('%s', async (_name, k, takes) => {
    const server = await apiServerTakes('guardagents', agent(k));
    expect({ server: server.ok, schema: GuardAgentSchema.safeParse(agent(k)).success }).toEqual({ server: takes, schema: takes });
  });
});
