/**
 * A Kubernetes ConfigMap volume, laid out and updated the way the kubelet's AtomicWriter does:
 * the payload in a timestamped hidden folder, `..data` a symlink to it, and each key a symlink
 * `key -> ..data/key`. An update writes a new folder, points `..data_tmp` at it, renames that
 * over `..data`, adds and removes the key symlinks, then deletes the old folder.
 */
import { mkdir, readdir, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export class ConfigMapVolume {
  private updates = 0;
  private payload: string | undefined;

  constructor(readonly dir: string) {}

  /** Make the volume hold exactly `files` (key → content). */
  async write(files: Record<string, string>): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const payload = `..2026_11_29_10_00_${String(this.updates++).padStart(2, '0')}.123456789`;
    await mkdir(join(this.dir, payload));
    for (const [key, text] of Object.entries(files)) await writeFile(join(this.dir, payload, key), text);
    await symlink(payload, join(this.dir, '..data_tmp'));
    await rename(join(this.dir, '..data_tmp'), join(this.dir, '..data'));
    const keys = (await readdir(this.dir)).filter((name) => !name.startsWith('.'));
    for (const key of Object.keys(files)) if (!keys.includes(key)) await symlink(join('..data', key), join(this.dir, key));
    for (const key of keys) if (!(key in files)) await unlink(join(this.dir, key));
    if (this.payload) await rm(join(this.dir, this.payload), { recursive: true });
    this.payload = payload;
  }
}
