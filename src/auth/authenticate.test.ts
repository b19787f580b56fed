import { appendFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../log.js';
import { sha256, tokenFileAuthenticator, tokenReviewAuthenticator } from './authenticate.js';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

const settle = () => new Promise((r) => setTimeout(r, 400));

/** Poll until `ok()` holds; the bound only turns "never" into a failure naming `what`. */
async function until(ok: () => boolean, what: string, boundMs = 15_000): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('tokenFileAuthenticator', () => {
  it('reloads when the token file changes, and only then: other files in its folder (a log beside it) change nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pg-tokens-'));
    dirs.push(dir);
    const file = join(dir, 'tokens');
    await writeFile(file, `${sha256('a-token')}  alice\n`);
    const lines: string[] = [];
    const auth = await tokenFileAuthenticator(file, createLogger('info', (l) => lines.push(l)));
    try {
      for (let i = 0; i < 5; i++) {
        await appendFile(join(dir, 'server.log'), `line ${i}\n`);
        await settle();
      }
      expect(lines.filter((l) => l.includes('token file reloaded'))).toEqual([]);
      await appendFile(file, `${sha256('b-token')}  bob\n`);
      await settle();
      expect(lines.filter((l) => l.includes('token file reloaded'))).toHaveLength(1);
      expect(auth.authenticateLocally!('b-token')).toMatchObject({ ok: true, principal: { subject: 'token:bob' } });
    } finally {
      auth.close?.();
    }
  });

  it('a token file removed revokes every token, and its return brings them back; a broken edit keeps the previous version', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pg-tokens-'));
    dirs.push(dir);
    const file = join(dir, 'tokens');
    const text = `${sha256('a-token')}  alice\n`;
    await writeFile(file, text);
    const lines: string[] = [];
    const auth = await tokenFileAuthenticator(file, createLogger('info', (l) => lines.push(l)));
    try {
      await writeFile(file, 'not a token line\n');
      await settle();
      expect(auth.authenticateLocally!('a-token')).toMatchObject({ ok: true, principal: { subject: 'token:alice' } });
      await rm(file);
      await settle();
      expect(auth.authenticateLocally!('a-token')).toEqual({ ok: false, error: 'invalid_token', description: 'unknown token' });
      expect(lines.filter((l) => l.includes('token file removed: every token is refused until it is back'))).toHaveLength(1);
      await writeFile(file, text);
      await settle();
      expect(auth.authenticateLocally!('a-token')).toMatchObject({ ok: true, principal: { subject: 'token:alice' } });
    } finally {
      auth.close?.();
    }
  });

  it('a token file whose folder is removed and made again is still followed: revoked while gone, back when it is', async () => {
    const root = await mkdtemp(join(tmpdir(), 'pg-tokens-'));
    dirs.push(root);
    const dir = join(root, 'secret');
    const file = join(dir, 'tokens');
    const text = `${sha256('a-token')}  alice\n`;
    await mkdir(dir);
    await writeFile(file, text);
    const auth = await tokenFileAuthenticator(file, createLogger('error', () => undefined));
    const accepted = () => auth.authenticateLocally!('a-token')?.ok === true;
    try {
      await rm(dir, { recursive: true });
      await until(() => !accepted(), 'the removal to revoke the token');
      await mkdir(dir);
      await writeFile(file, text);
      await until(accepted, 'the token to be accepted again');
    } finally {
      auth.close?.();
    }
  });
});

describe('tokenReviewAuthenticator', () => {
  it('answers 401 when the API server takes a TokenReview and never answers, instead of waiting on the connection', async () => {
    // A peer that accepts connections and reads requests but never answers: a half-open network.
    const sockets: Socket[] = [];
    const server = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({
      clusters: [{ name: 'c', server: `https://127.0.0.1:${port}`, skipTLSVerify: true }],
      users: [{ name: 'u', token: 'operator-token' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    const lines: string[] = [];
    const auth = tokenReviewAuthenticator({ kubeConfig, audiences: ['policyguard'], cacheTtlMs: 10_000, reviewTimeoutMs: 300, log: createLogger('info', (l) => lines.push(l)) });
    try {
      expect(await auth.authenticate('agent-token')).toEqual({ ok: false, error: 'invalid_token', description: 'token could not be verified right now' });
      expect(lines.join('\n')).toMatch(/TokenReview failed .*TokenReview: no answer from the API server within 300 ms/);
    } finally {
      for (const socket of sockets) socket.destroy();
      server.close();
    }
  });
});
