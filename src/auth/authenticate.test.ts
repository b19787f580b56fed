import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../log.js';
import { sha256, tokenFileAuthenticator } from './authenticate.js';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

const settle = () => new Promise((r) => setTimeout(r, 400));

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
});
