/**
 * Which files under a folder are manifests. One listing for the standalone store (what it loads
 * and which folders it watches) and for `policyguard check`, so both read the same objects.
 */
import { lstat, open, readdir, readlink, realpath, stat } from 'node:fs/promises';
import { constants, type Stats } from 'node:fs';
import { isUtf8 } from 'node:buffer';
import { dirname, join, resolve } from 'node:path';
import { getSystemErrorMessage } from 'node:util';

const MANIFEST_FILE = /\.(ya?ml|json)$/i;

/**
 * Manifest files above this size are refused, not parsed: parsing blocks the event loop (about
 * a quarter of a second per MiB), and policies are kilobytes. A big file is usually a document
 * of another kind that belongs elsewhere.
 */
export const MAX_MANIFEST_BYTES = 4 * 2 ** 20;

/**
 * What {@link readManifest} found: the text, or why the file is refused (and the line that is
 * about); `look` tells one state of the file from another (its size, mtime and inode).
 */
export type ManifestRead = { look: string; text: string } | { look: string; refused: string; line: number };

export interface TreeFolder {
  path: string;
  /**
   * Changes when the folder is replaced (removed and created again) under the same path:
   * device, inode and birth time, as file systems reuse a freed inode at once.
   */
  id: string;
}

/** A folder that could not be listed, or an entry that could not be examined (it may be a folder): what is under it is unknown. */
export interface UnlistedFolder {
  path: string;
  /** Why, e.g. `the folder cannot be listed: permission denied (EACCES)`. */
  error: string;
}

export interface ManifestTree {
  /**
   * Manifest files, sorted by path: every entry named like one that is not a folder, whatever
   * it is (a dangling symlink, a FIFO, a file that cannot be read): {@link readManifest} says
   * why it cannot be read, so none is passed over without a word.
   */
  files: string[];
  /**
   * What to watch: the root, every folder walked below it, and the folder each symlinked file
   * points into (its target can be edited there, or created when it is missing). Empty when the
   * root is missing.
   */
  folders: TreeFolder[];
  /** Folders that could not be listed, the root among them when it is missing. */
  unlisted: UnlistedFolder[];
}

const idOf = (st: Stats) => `${st.dev}:${st.ino}:${st.birthtimeMs}`;

function isGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** A file system error as users read it: `permission denied (EACCES)`. */
function describeError(err: unknown): string {
  const { errno, code } = err as NodeJS.ErrnoException;
  return errno !== undefined && code !== undefined ? `${getSystemErrorMessage(errno)} (${code})` : String(err);
}

/**
 * Walk `root` for `*.yaml`, `*.yml` and `*.json` files, as a user means them:
 * - symlinks are followed, to files and to folders (a ConfigMap volume's files are symlinks);
 *   a folder reached twice (a symlink loop) is walked once; the folder a symlinked file points
 *   into is listed in `folders` (not walked), so an edit of the target is seen;
 * - hidden entries (names starting with `.`) are skipped: editors' swap files, `.git`, and a
 *   ConfigMap volume's `..data` and `..2026_…` folders, so an update never shows two copies;
 * - an entry that disappears while walking is skipped, and so is a dangling symlink not named
 *   like a manifest; one named like a manifest is listed, for {@link readManifest} to refuse;
 * - a folder that cannot be listed (the root when it is missing), and an entry that cannot be
 *   examined (it may be a folder), are in `unlisted`, never taken as empty.
 *
 * @example
 *   const { files, folders, unlisted } = await listManifestTree('config-samples');
 */
export async function listManifestTree(root: string): Promise<ManifestTree> {
  const files: string[] = [];
  const folders = new Map<string, string>();
  const unlisted: UnlistedFolder[] = [];
  const walked = new Set<string>();
  const walk = async (dir: string, id: string): Promise<void> => {
    if (walked.has(id)) return;
    walked.add(id);
    folders.set(dir, id);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if (!isGone(err)) unlisted.push({ path: dir, error: `the folder cannot be listed: ${describeError(err)}` });
      return;
    }
    for (const name of names) {
      if (name.startsWith('.')) continue;
      const path = join(dir, name);
      const manifest = MANIFEST_FILE.test(name);
      let st;
      try {
        st = await stat(path);
      } catch (err) {
        if (manifest) await addFile(path);
        else if (!isGone(err)) unlisted.push({ path, error: `cannot be examined, and may be a folder of manifests: ${describeError(err)}` });
        continue;
      }
      if (st.isDirectory()) await walk(path, idOf(st));
      else if (manifest) await addFile(path);
    }
  };
  const addFile = async (path: string): Promise<void> => {
    files.push(path);
    try {
      if (!(await lstat(path)).isSymbolicLink()) return;
      // A dangling link has no real path: watch where its target would be, to see it created.
      const target = await realpath(path).catch(async () => resolve(dirname(path), await readlink(path)));
      folders.set(dirname(target), idOf(await stat(dirname(target))));
    } catch {
      // Gone, or its target's folder is: nothing to watch there (readManifest says why the file cannot be read).
    }
  };
  try {
    const st = await stat(root);
    if (st.isDirectory()) await walk(root, idOf(st));
    else unlisted.push({ path: root, error: 'the folder cannot be listed: it is no longer a folder' });
  } catch (err) {
    unlisted.push({ path: root, error: `the folder cannot be listed: ${describeError(err)}` });
  }
  return { files: files.sort(), folders: [...folders].map(([path, id]) => ({ path, id })), unlisted };
}

/**
 * Read one manifest file, refusing one over {@link MAX_MANIFEST_BYTES}, one that is not UTF-8
 * text, one that is not a regular file (a FIFO) and one that cannot be read (no permission, a
 * dangling symlink), each with the reason. `look` changes whenever its size, mtime or inode
 * does, so two equal looks some time apart mean nobody was writing it in between. Undefined
 * when the file is gone.
 *
 * @example
 *   const read = await readManifest('config/policy.yaml');
 *   if (read && 'text' in read) parseManifests(read.text, 'config/policy.yaml');
 */
export async function readManifest(path: string): Promise<ManifestRead | undefined> {
  let handle;
  try {
    // Non-blocking, so that a FIFO is refused below instead of hanging the reload.
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    if (isGone(err)) return danglingLink(path);
    const { code } = err as NodeJS.ErrnoException;
    return { look: `unreadable:${code}`, refused: `the file cannot be read: ${describeError(err)}`, line: 1 };
  }
  try {
    const st = await handle.stat();
    const look = `${st.size}:${st.mtimeMs}:${st.ino}`;
    if (!st.isFile()) return { look, refused: `the file cannot be read: it is ${st.isFIFO() ? 'a FIFO' : st.isDirectory() ? 'a folder' : 'a device'}, not a regular file`, line: 1 };
    const tooLarge = (bytes: number) => ({ look, refused: `the file has ${(bytes / 2 ** 20).toFixed(1)} MiB; manifests over ${MAX_MANIFEST_BYTES / 2 ** 20} MiB are refused: split it, and keep documents of other kinds out of this folder`, line: 1 });
    if (st.size > MAX_MANIFEST_BYTES) return tooLarge(st.size);
    const buf = await handle.readFile();
    // It may have grown since the stat.
    return buf.length > MAX_MANIFEST_BYTES ? tooLarge(buf.length) : decode(buf, look);
  } finally {
    await handle.close();
  }
}

/** A path that could not be opened as gone: refused when it is a symlink to nothing, else undefined (gone). */
async function danglingLink(path: string): Promise<ManifestRead | undefined> {
  let target: string;
  try {
    target = await readlink(path);
  } catch {
    return undefined; // gone, or not a link: a file removed since it was listed
  }
  return { look: `dangling:${target}`, refused: `the file cannot be read: it is a symbolic link to ${target}, which does not exist`, line: 1 };
}

/** Decodes UTF-8 and drops a byte order mark; throws on anything else. */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The text of a manifest's bytes: UTF-8 (a byte order mark is dropped). Any other encoding is
 * refused, on the line of the first byte that is not UTF-8 text: decoded with replacement
 * characters, a Latin-1 `suppréssion_*` would silently match nothing.
 */
function decode(buf: Buffer, look: string): ManifestRead {
  const at = firstNonUtf8(buf);
  if (at === undefined) return { look, text: UTF8.decode(buf) };
  const before = buf.subarray(0, at);
  const line = before.filter((b) => b === 0x0a).length + 1;
  const utf16 = (buf[0] === 0xff && buf[1] === 0xfe) || (buf[0] === 0xfe && buf[1] === 0xff);
  const what = utf16
    ? 'it is UTF-16 (it starts with a UTF-16 byte order mark)'
    : buf[at] === 0
      ? `byte ${at} is a NUL (UTF-16?)`
      : `byte ${at} (0x${buf[at]!.toString(16).toUpperCase()}, column ${at - before.lastIndexOf(0x0a)}) is not UTF-8 (Latin-1?)`;
  return { look, refused: `the file is not UTF-8 text: ${what}; save it as UTF-8`, line };
}

const REPLACEMENT = Buffer.from('\uFFFD');

/** The offset of the first byte that is a NUL or not valid UTF-8; undefined when there is none. */
function firstNonUtf8(buf: Buffer): number | undefined {
  const nul = buf.indexOf(0);
  const head = nul === -1 ? buf : buf.subarray(0, nul);
  if (isUtf8(head)) return nul === -1 ? undefined : nul;
  // Decoded leniently, what is not UTF-8 becomes U+FFFD: the first one not written as such in the bytes.
  const text = head.toString('utf8');
  for (let i = text.indexOf('\uFFFD'); ; i = text.indexOf('\uFFFD', i + 1)) {
    const at = Buffer.byteLength(text.slice(0, i));
    if (!head.subarray(at, at + REPLACEMENT.length).equals(REPLACEMENT)) return at;
  }
}
