import { createHmac } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditKeyError, macMatches, macOf, readAuditKeyFile } from './key.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pg-audit-key-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('readAuditKeyFile', () => {
  it('ignores whitespace at either end: the key is the material between', async () => {
    const material = 'k'.repeat(20) + ' inner space ' + 'k'.repeat(20);
    await writeFile(join(dir, 'a.key'), `\n\t ${material} \r\n`);
    const key = await readAuditKeyFile(join(dir, 'a.key'));
    expect(macOf(key, 'hash')).toBe(createHmac('sha256', material).update('hash').digest('hex'));
    expect(macMatches(key, 'hash', macOf(key, 'hash'))).toBe(true);
    expect(macMatches(key, 'hash', macOf(key, 'other'))).toBe(false);
    expect(macMatches(key, 'hash', undefined)).toBe(false);
  });

  it('refuses fewer than 32 bytes, and a file it cannot read, naming the file', async () => {
    await writeFile(join(dir, 'short.key'), `${'k'.repeat(31)}\n`);
    const short = readAuditKeyFile(join(dir, 'short.key'));
    await expect(short).rejects.toBeInstanceOf(AuditKeyError);
    await expect(short).rejects.toThrow(/short\.key holds 31 bytes of key material .* at least 32 are needed, e\.g\. made with: head -c 48/);
    await writeFile(join(dir, 'exact.key'), 'k'.repeat(32));
    await expect(readAuditKeyFile(join(dir, 'exact.key'))).resolves.toBeDefined();
    await expect(readAuditKeyFile(join(dir, 'missing.key'))).rejects.toThrow(/^audit key file .*missing\.key cannot be read: ENOENT/);
    await expect(readAuditKeyFile(dir)).rejects.toThrow(/cannot be read: EISDIR/);
  });
});
