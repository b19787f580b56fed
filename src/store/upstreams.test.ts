import { describe, expect, it } from 'vitest';
import { API_VERSION, GuardUpstreamSchema, type GuardUpstream } from '../api/schemas.js';
import { upstreamProblem, upstreamRef } from './upstreams.js';

const upstream = (valueFrom: Record<string, unknown>, namespace?: string): GuardUpstream =>
  GuardUpstreamSchema.parse({
    apiVersion: API_VERSION,
    kind: 'GuardUpstream',
    metadata: { name: 'github', ...(namespace ? { namespace } : {}) },
    spec: { url: 'http://github-mcp:8080/mcp', headers: [{ name: 'Authorization', prefix: 'Bearer ', valueFrom }] },
  });

describe('GuardUpstream header sources per mode', () => {
  it('a cluster takes Secrets only: a file or env source would leak the operator’s own files and environment', () => {
    expect(upstreamProblem(upstream({ secretKeyRef: { name: 'gh', key: 'token' } }, 'tools'), 'kubernetes')).toBeUndefined();
    expect(upstreamProblem(upstream({ file: '/var/run/secrets/kubernetes.io/serviceaccount/token' }, 'tools'), 'kubernetes')?.message).toMatch(/headers\[0\] \(Authorization\): file and env sources are for standalone mode/);
    expect(upstreamProblem(upstream({ env: 'HOME' }, 'tools'), 'kubernetes')?.reason).toBe('InvalidSpec');
  });
  it('standalone takes files and environment variables, not Secrets', () => {
    expect(upstreamProblem(upstream({ file: '/etc/gh-token' }), 'standalone')).toBeUndefined();
    expect(upstreamProblem(upstream({ env: 'GH_TOKEN' }), 'standalone')).toBeUndefined();
    expect(upstreamProblem(upstream({ secretKeyRef: { name: 'gh', key: 'token' } }), 'standalone')?.message).toMatch(/secretKeyRef needs a cluster/);
  });
  it('is referred to as namespace/name, "default" when it has none', () => {
    expect(upstreamRef(upstream({ env: 'X' }))).toBe('default/github');
    expect(upstreamRef(upstream({ env: 'X' }, 'tools'))).toBe('tools/github');
  });
  it('the schema refuses a value in clear, two sources, and headers the gateway owns', () => {
    const parse = (header: Record<string, unknown>) =>
      GuardUpstreamSchema.safeParse({ apiVersion: API_VERSION, kind: 'GuardUpstream', metadata: { name: 'x' }, spec: { url: 'http://x/mcp', headers: [header] } }).success;
    expect(parse({ name: 'Authorization', value: 'Bearer abc' })).toBe(false);
    expect(parse({ name: 'Authorization', valueFrom: { env: 'A', file: '/b' } })).toBe(false);
    expect(parse({ name: 'Mcp-Session-Id', valueFrom: { env: 'A' } })).toBe(false);
    expect(parse({ name: 'X-Api-Key', valueFrom: { env: 'A' } })).toBe(true);
  });
});
