/**
 * Which files under a folder are manifests. One listing for the standalone store (what it loads
 * and which folders it watches) and for `policyguard check`, so both read the same objects.
 */
import { lstat, open, readdir, realpath, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { dirname, join } from 'node:path';

const MANIFEST_FILE = /\.(ya?ml|json)$/i;

/**
 * Manifest files above this size are refused, not parsed: parsing blocks the event loop (about
 * a quarter of a second per MiB), and policies are kilobytes. A big file is usually a document
 * of another kind that belongs elsewhere.
 */
export const MAX_MANIFEST_BYTES = 4 * 2 ** 20;

/** What {@link readManifest} found: the text, or why the file is refused; `look` is its size, mtime and inode. */
export type ManifestRead = { look: string; text: string } | { look: string; refused: string };

export interface TreeFolder {
  path: string;
  /**
   * Changes when the folder is replaced (removed and created again) under the same path:
   * device, inode and birth time, as file systems reuse a freed inode at once.
   */
  id: string;
}

export interface ManifestTree {
  /** Manifest files, sorted by path. */
  files: string[];
  /**
   * What to watch: the root, every folder walked below it, and the folder each symlinked file
   * points into (its target can be edited there). Empty when the root is missing.
   */
  folders: TreeFolder[];
}

const idOf = (st: Stats) => `${st.dev}:${st.ino}:${st.birthtimeMs}`;

function isGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * Walk `root` for `*.yaml`, `*.yml` and `*.json` files, as a user means them:
 * - symlinks are followed, to files and to folders (a ConfigMap volume's files are symlinks);
 *   a folder reached twice (a symlink loop) is walked once; the folder a symlinked file points
 *   into is listed in `folders` (not walked), so an edit of the target is seen;
 * - hidden entries (names starting with `.`) are skipped: editors' swap files, `.git`, and a
 *   ConfigMap volume's `..data` and `..2026_…` folders, so an update never shows two copies;
 * - an entry that disappears while walking (or a dangling symlink) is skipped; a missing root
 *   lists nothing.
 *
 * @example
 *   const { files, folders } = await listManifestTree('config-samples');
 */
export async function listManifestTree(root: string): Promise<ManifestTree> {
  const files: string[] = [];
  const folders = new Map<string, string>();
  const walked = new Set<string>();
  const walk = async (dir: string, id: string): Promise<void> => {
    if (walked.has(id)) return;
    walked.add(id);
    folders.set(dir, id);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if (isGone(err)) return;
      throw err;
    }
    for (const name of names) {
      if (name.startsWith('.')) continue;
      const path = join(dir, name);
      let st;
      try {
        st = await stat(path);
      } catch (err) {
        if (isGone(err)) continue;
        throw err;
      }
      if (st.isDirectory()) await walk(path, idOf(st));
      else if (st.isFile() && MANIFEST_FILE.test(name)) {
        files.push(path);
        if ((await lstat(path)).isSymbolicLink()) await watchTarget(path);
      }
    }
  };
  const watchTarget = async (link: string): Promise<void> => {
    try {
      const target = dirname(await realpath(link));
      const st = await stat(target);
      folders.set(target, idOf(st));
    } catch (err) {
      if (!isGone(err)) throw err;
    }
  };
  try {
    const st = await stat(root);
    if (st.isDirectory()) await walk(root, idOf(st));
  } catch (err) {
    if (!isGone(err)) throw err;
  }
  return { files: files.sort(), folders: [...folders].map(([path, id]) => ({ path, id })) };
}

/**
 * Read one manifest file, refusing one over {@link MAX_MANIFEST_BYTES}. `look` changes whenever
 * its size, mtime or inode does, so two equal looks some time apart mean nobody was writing it
 * in between. Undefined when the file is gone.
 *
 * @example
 *   const read = await readManifest('config/policy.yaml');
 *   if (read && 'text' in read) parseManifests(read.text, 'config/policy.yaml');
 */
export async function readManifest(path: string): Promise<ManifestRead | undefined> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if (isGone(err)) return undefined;
    throw err;
  }
  try {
    const st = await handle.stat();
    const look = `${st.size}:${st.mtimeMs}:${st.ino}`;
    const tooLarge = (bytes: number) => ({ look, refused: `the file has ${(bytes / 2 ** 20).toFixed(1)} MiB; manifests over ${MAX_MANIFEST_BYTES / 2 ** 20} MiB are refused: split it, and keep documents of other kinds out of this folder` });
    if (st.size > MAX_MANIFEST_BYTES) return tooLarge(st.size);
    const buf = await handle.readFile();
    // It may have grown since the stat.
    return buf.length > MAX_MANIFEST_BYTES ? tooLarge(buf.length) : { look, text: buf.toString('utf8') };
  } finally {
    await handle.close();
  }
}
