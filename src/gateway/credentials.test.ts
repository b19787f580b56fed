import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_VERSION, GuardUpstreamSchema, type GuardUpstream } from '../api/schemas.js';
import { CredentialError, localCredentials } from './credentials.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pg-creds-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const upstream = (headers: unknown[]): GuardUpstream =>
  GuardUpstreamSchema.parse({ apiVersion: API_VERSION, kind: 'GuardUpstream', metadata: { name: 'gh' }, spec: { url: 'http://x/mcp', headers } });

describe('standalone header values', () => {
  it('come from files (trimmed, with a prefix) and environment variables', async () => {
    await writeFile(join(dir, 'token'), 'secret-1\n');
    const creds = localCredentials({ env: { API_KEY: 'k-123' }, ttlMs: 1000 });
    const u = upstream([
      { name: 'Authorization', prefix: 'Bearer ', valueFrom: { file: join(dir, 'token') } },
      { name: 'X-Api-Key', valueFrom: { env: 'API_KEY' } },
    ]);
    expect(await creds.headersFor(u)).toEqual({ Authorization: 'Bearer secret-1', 'X-Api-Key': 'k-123' });
  });
  it('a rotated file is read again once the cached value is older than the ttl', async () => {
    let t = 0;
    await writeFile(join(dir, 'rotating'), 'old');
    const creds = localCredentials({ env: {}, ttlMs: 1000, now: () => t });
    const u = upstream([{ name: 'Authorization', valueFrom: { file: join(dir, 'rotating') } }]);
    expect((await creds.headersFor(u)).Authorization).toBe('old');
    await writeFile(join(dir, 'rotating'), 'new');
    expect((await creds.headersFor(u)).Authorization).toBe('old');
    t = 1001;
    expect((await creds.headersFor(u)).Authorization).toBe('new');
  });
  it('a value that cannot be read fails, naming the header and the source', async () => {
    const creds = localCredentials({ env: { EMPTY: '  ' }, ttlMs: 1000 });
    await expect(creds.headersFor(upstream([{ name: 'Authorization', valueFrom: { file: join(dir, 'missing') } }]))).rejects.toThrow(/header Authorization of GuardUpstream gh: file .*missing cannot be read: ENOENT/);
    await expect(creds.headersFor(upstream([{ name: 'X-Key', valueFrom: { env: 'NOPE' } }]))).rejects.toThrow(/environment variable NOPE is not set/);
    await expect(creds.headersFor(upstream([{ name: 'X-Key', valueFrom: { env: 'EMPTY' } }]))).rejects.toBeInstanceOf(CredentialError);
    await expect(creds.headersFor(upstream([{ name: 'X-Key', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } }]))).rejects.toThrow(/only file and env sources/);
  });
});
