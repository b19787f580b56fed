/** Reading files a person or another program could have replaced with something else. */
import { constants, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';

/**
 * Why an entry is not a regular file, or undefined when it is.
 *
 * @example
 * notRegularFile(await lstat('/data/audit/anchor.json')); // 'is a folder, not a regular file'
 */
export function notRegularFile(stats: Stats): string | undefined {
  if (stats.isFile()) return undefined;
  const kind = stats.isDirectory()
    ? 'a folder'
    : stats.isFIFO()
      ? 'a FIFO'
      : stats.isSymbolicLink()
        ? 'a symbolic link'
        : stats.isSocket()
          ? 'a socket'
          : 'a device';
  return `is ${kind}, not a regular file`;
}

/** What {@link readRegularFile} rejects with when the path holds something else. */
export class NotRegularFileError extends Error {
  override readonly name = 'NotRegularFileError';
  /** `is a FIFO, not a regular file`. */
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`${path} ${reason}`);
  }
}

/**
 * A regular file's text (UTF-8), read without following a symbolic link and without waiting
 * on a FIFO or a device: such an entry rejects with a {@link NotRegularFileError} saying what
 * it is, so a link cannot make the reader print another file, nor a FIFO block it (and a
 * worker thread) for ever. Other errors (ENOENT first) reject as they are.
 *
 * @example
 * const text = await readRegularFile('/data/approvals/apr-0123456789ab.json');
 */
export async function readRegularFile(path: string): Promise<string> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') throw new NotRegularFileError(path, 'is a symbolic link, not a regular file');
    throw error;
  }
  try {
    const odd = notRegularFile(await handle.stat());
    if (odd) throw new NotRegularFileError(path, odd);
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}
