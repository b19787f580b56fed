import { open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { parseAuditLine } from './record.js';

/** One line of a JSONL file, located by byte offsets. */
export interface JsonlLine {
  text: string;
  /** Byte offset of the first character. */
  start: number;
  /** Byte offset just past the line's `\n` (or past its last byte when unterminated). */
  end: number;
  /** False only for a last line without its `\n` — the signature of an interrupted write. */
  terminated: boolean;
}

const NEWLINE = 0x0a;

/**
 * Yields the lines of a file from the last to the first, reading it in chunks from the end, so
 * "the newest N" and "the last valid line" cost what they return, not the file size. Splits
 * on the `\n` byte (which never occurs inside a multi-byte UTF-8 sequence) and decodes each line
 * separately. `end` limits reading to a prefix of the file (a size captured earlier, so lines
 * appended since are not seen); `chunkBytes` (default 1 MiB) is the read size. A missing file
 * yields nothing. Empty lines are yielded.
 *
 * @example
 * for await (const line of readLinesBackward('/data/incidents.jsonl')) {
 *   if (line.text) console.log(line.text); // newest first
 * }
 */
export async function* readLinesBackward(
  path: string,
  opts: { end?: number; chunkBytes?: number } = {},
): AsyncGenerator<JsonlLine> {
  const handle = await openIfExists(path, 'r');
  if (!handle) return;
  try {
    const size = (await handle.stat()).size;
    const chunkBytes = opts.chunkBytes ?? 1 << 20;
    let position = Math.min(opts.end ?? size, size);
    // Bytes before the leftmost `\n` seen so far: the end of a line whose start is not read yet.
    let tail = Buffer.alloc(0);
    // The rightmost line of the file has no `\n` after it; every line before it does.
    let terminated = false;
    while (position > 0) {
      const length = Math.min(chunkBytes, position);
      position -= length;
      const chunk = Buffer.alloc(length);
      const { bytesRead } = await handle.read(chunk, 0, length, position);
      if (bytesRead !== length) throw new Error(`${path} shrank while being read`);
      const buffer = tail.length ? Buffer.concat([chunk, tail]) : chunk;
      let textEnd = buffer.length;
      // `i > 0` guard: Buffer#lastIndexOf treats a negative offset as counting from the end.
      for (let i = buffer.lastIndexOf(NEWLINE, textEnd - 1); i >= 0; i = i > 0 ? buffer.lastIndexOf(NEWLINE, i - 1) : -1) {
        // After the file's final `\n` there is nothing to yield unless a write was cut short.
        if (terminated || i + 1 < textEnd) {
          yield lineAt(buffer, position, i + 1, textEnd, terminated);
        }
        textEnd = i;
        terminated = true;
      }
      tail = buffer.subarray(0, textEnd);
    }
    if (tail.length > 0 || terminated) yield lineAt(tail, 0, 0, tail.length, terminated);
  } finally {
    await handle.close();
  }
}

function lineAt(buffer: Buffer, base: number, from: number, to: number, terminated: boolean): JsonlLine {
  return {
    text: buffer.toString('utf8', from, to),
    start: base + from,
    end: base + to + (terminated ? 1 : 0),
    terminated,
  };
}

async function openIfExists(path: string, flags: string) {
  try {
    return await open(path, flags);
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}

/**
 * Makes the last line of a JSONL file whole again after a crash mid-append. Only a last line
 * without its `\n` is ever changed — the signature of a write cut short, since every append
 * ends in `\n`:
 * - a complete record that lost only its `\n` gets the `\n`;
 * - anything else (half a line, bytes the crash left) is cut off: the file is truncated to the
 *   end of the line before it.
 * A complete line (ending in `\n`) is never removed, whatever it holds: no crash writes one,
 * so it was put there, and it stays for verification to point at.
 * `isRecord` says what a complete record is (parsed JSON in, yes/no out). With `mayCut` false
 * nothing is cut: a torn line that is not a record is left in place, for a check after this to
 * refuse (the audit log passes false when its anchor names a record at or after that line, which
 * no crash can tear). Every change is reported through `log`. Returns the number of bytes removed.
 *
 * @example
 * await repairTornTail('/data/incidents.jsonl', (v) => typeof v === 'object' && v !== null, console.warn);
 */
export async function repairTornTail(
  path: string,
  isRecord: (value: unknown) => boolean,
  log: (msg: string) => void,
  mayCut = true,
): Promise<number> {
  let last: JsonlLine | undefined;
  for await (const line of readLinesBackward(path)) {
    last = line;
    break;
  }
  if (!last || last.terminated) return 0;
  const handle = await open(path, 'r+');
  try {
    if (isValidJsonRecord(last.text, isRecord)) {
      await handle.write('\n', last.end);
      await handle.datasync();
      log(`${path}: the last record was complete but had no line end; added it`);
      return 0;
    }
    if (!mayCut) {
      log(`${path}: left an incomplete last line in place (${last.end - last.start} bytes at offset ${last.start}): it may not be a write a crash cut short`);
      return 0;
    }
    const removed = last.end - last.start;
    await handle.truncate(last.start);
    await handle.datasync();
    log(
      `${path}: removed an incomplete last line (${removed} bytes at offset ${last.start}, ` +
        `probably a write cut short by a crash): ${JSON.stringify(preview(last.text))}`,
    );
    return removed;
  } finally {
    await handle.close();
  }
}

function isValidJsonRecord(text: string, isRecord: (value: unknown) => boolean): boolean {
  try {
    return isRecord(JSON.parse(text));
  } catch {
    return false;
  }
}

function preview(text: string): string {
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

/**
 * Appends `data` with one write and one `fdatasync`, so a batch is durable when this resolves.
 * If the write fails part-way the file is truncated back to where it was: a retry must not
 * leave half a line in the middle of the file. When the file is new, its directory is synced
 * first, or a crash could lose the file itself; nothing after the write can fail, so a
 * rejection always means "not written" and a retry cannot duplicate lines. Returns the file's
 * size afterwards.
 *
 * @example
 * const size = await appendDurably('/data/audit/audit-000001.jsonl', lines.join('\n') + '\n');
 */
export async function appendDurably(path: string, data: string): Promise<number> {
  const bytes = Buffer.from(data); // once: appendFile would encode it, and its length is the new size
  const handle = await open(path, 'a');
  try {
    const before = (await handle.stat()).size;
    if (before === 0) await syncDirectory(dirname(path));
    try {
      await handle.appendFile(bytes);
      await handle.datasync();
    } catch (error) {
      await handle.truncate(before).catch((truncateError: unknown) => {
        throw new Error(`${path}: could not undo a failed append; the file may end in a partial line`, {
          cause: truncateError,
        });
      });
      throw error;
    }
    return before + bytes.length;
  } finally {
    await handle.close();
  }
}

/**
 * Makes a directory's entries (a new or renamed file) durable.
 *
 * @example
 * await rename(tmp, path);
 * await syncDirectory(dirname(path));
 */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** One line of {@link readLines}. */
export interface ForwardLine {
  text: string;
  /** False when the line's bytes are not valid UTF-8 (`text` then holds U+FFFD in their place). */
  utf8: boolean;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const lenientUtf8 = new TextDecoder('utf-8', { ignoreBOM: true });

/**
 * Yields the lines of a file from the first to the last, split on the `\n` byte only — a `\r`
 * stays part of its line, and a byte order mark part of the first — so a reader sees the bytes
 * the writer wrote, not a tidied version. A last line without `\n` is yielded; a file ending in
 * `\n` has no empty line after it. One read of `chunkBytes` (default 1 MiB) at a time. Rejects
 * when the file cannot be opened (a missing file too).
 *
 * @example
 * for await (const { text } of readLines('/data/audit/audit-000001.jsonl')) console.log(text);
 */
export async function* readLines(path: string, opts: { chunkBytes?: number } = {}): AsyncGenerator<ForwardLine> {
  const handle = await open(path, 'r');
  try {
    const chunk = Buffer.alloc(opts.chunkBytes ?? 1 << 20);
    let carry = Buffer.alloc(0);
    for (;;) {
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      const buffer = carry.length > 0 ? Buffer.concat([carry, chunk.subarray(0, bytesRead)]) : chunk.subarray(0, bytesRead);
      let from = 0;
      for (let end = buffer.indexOf(NEWLINE, from); end >= 0; end = buffer.indexOf(NEWLINE, from)) {
        yield decodeLine(buffer.subarray(from, end));
        from = end + 1;
      }
      // A copy: `chunk` is read into again.
      carry = Buffer.from(buffer.subarray(from));
    }
    if (carry.length > 0) yield decodeLine(carry);
  } finally {
    await handle.close();
  }
}

function decodeLine(bytes: Buffer): ForwardLine {
  try {
    return { text: strictUtf8.decode(bytes), utf8: true };
  } catch {
    return { text: lenientUtf8.decode(bytes), utf8: false };
  }
}

/**
 * Reads a file front to back, counting its lines the way `audit verify` numbers them (a last
 * line without `\n` counts), and returns the text of line `n` (1-based) when there is one. One
 * pass at the speed of the disk; only that line is kept. A missing file has 0 lines.
 *
 * @example
 * const { lines, text } = await readLineAt('/data/audit/audit-000003.jsonl', 120);
 */
export async function readLineAt(path: string, n: number): Promise<{ lines: number; text: string | undefined }> {
  let lines = 0;
  let text: string | undefined;
  try {
    for await (const line of readLines(path)) {
      lines++;
      if (lines === n) text = line.text;
    }
  } catch (error) {
    if (isNotFound(error)) return { lines: 0, text: undefined };
    throw error;
  }
  return { lines, text };
}

/**
 * The 1-based line of `path` holding the record `entryId` (and, when given, for which `isIt`
 * holds), or undefined. A substring test per line, then a parse of the one that has it.
 *
 * @example
 * const line = await findEntryLine('/data/audit/audit-000003.jsonl', 'aud_0123456789ab');
 */
export async function findEntryLine(
  path: string,
  entryId: string,
  isIt: (text: string) => boolean = (text) => parseAuditLine(text)?.entry_id === entryId,
): Promise<number | undefined> {
  const needle = `"entry_id":${JSON.stringify(entryId)}`;
  let line = 0;
  try {
    for await (const { text } of readLines(path)) {
      line++;
      if (text.includes(needle) && isIt(text)) return line;
    }
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
  return undefined;
}
