import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NotRegularFileError, readRegularFile } from './regular-file.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pg-regular-'));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

describe('readRegularFile', () => {
  it('reads a regular file', async () => {
    await writeFile(join(dir, 'a.json'), '{"a":1}\n');
    expect(await readRegularFile(join(dir, 'a.json'))).toBe('{"a":1}\n');
  });

  it('refuses a symbolic link, a FIFO (without waiting on it) and a folder, saying which; a missing file is ENOENT', async () => {
    await writeFile(join(dir, 'secret'), 'root:*:20000:0:99999:7:::\n');
    await symlink(join(dir, 'secret'), join(dir, 'link.json'));
    execFileSync('mkfifo', [join(dir, 'fifo.json')]);
    await mkdir(join(dir, 'folder.json'));
    for (const [name, reason] of [
      ['link.json', 'is a symbolic link, not a regular file'],
      ['fifo.json', 'is a FIFO, not a regular file'],
      ['folder.json', 'is a folder, not a regular file'],
    ]) {
      const error = await readRegularFile(join(dir, name!)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(NotRegularFileError);
      expect(error).toMatchObject({ path: join(dir, name!), reason, message: `${join(dir, name!)} ${reason}` });
    }
    await expect(readRegularFile(join(dir, 'missing.json'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
