/** Writing a file so that readers see the old text or the new, never half of it. */
import { open, rename } from 'node:fs/promises';

/**
 * Write via a temporary file in the same folder, fsync, and rename over `path`.
 *
 * @example
 *   await writeFileAtomic('/data/status.json', JSON.stringify(status));
 */
export async function writeFileAtomic(path: string, data: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}
