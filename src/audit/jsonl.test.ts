import fc from 'fast-check';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { appendDurably, readLines, readLinesBackward, repairTornTail } from './jsonl.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pg-jsonl-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function collect(path: string, opts?: { end?: number; chunkBytes?: number }) {
  const lines = [];
  for await (const line of readLinesBackward(path, opts)) lines.push(line);
  return lines;
}

const isObject = (value: unknown) => typeof value === 'object' && value !== null;

describe('readLinesBackward', () => {
  it('yields the same lines as a forward split, with byte offsets, for any chunk size', async () => {
    const path = join(dir, 'f.jsonl');
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.string({ unit: fc.constantFrom('a', 'é', '😀', '\n', '{', '"') }), { maxLength: 12 }),
        fc.integer({ min: 1, max: 9 }),
        async (parts, chunkBytes) => {
          const text = parts.join('');
          await writeFile(path, text);
          const lines = await collect(path, { chunkBytes });
          const expected = text.split('\n');
          // A file ending in "\n" has no line after it.
          if (expected.at(-1) === '') expected.pop();
          expect(lines.map((l) => l.text).reverse()).toEqual(expected);
          const bytes = Buffer.from(text);
          for (const line of lines) {
            expect(bytes.subarray(line.start, line.end).toString()).toBe(line.terminated ? `${line.text}\n` : line.text);
          }
          expect(lines.filter((l) => !l.terminated).length).toBe(text.length > 0 && !text.endsWith('\n') ? 1 : 0);
        },
      ),
    );
  });

  it('reads only up to `end`', async () => {
    const path = join(dir, 'f.jsonl');
    await writeFile(path, 'one\ntwo\nthree\n');
    expect((await collect(path, { end: 8 })).map((l) => l.text)).toEqual(['two', 'one']);
  });

  it('yields nothing for a missing file', async () => {
    expect(await collect(join(dir, 'missing.jsonl'))).toEqual([]);
  });
});

describe('readLines', () => {
  async function collectForward(path: string, chunkBytes?: number) {
    const lines = [];
    for await (const line of readLines(path, chunkBytes ? { chunkBytes } : {})) lines.push(line);
    return lines;
  }

  it('yields the lines of a split on \\n only, for any chunk size', async () => {
    const path = join(dir, 'f.jsonl');
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.string({ unit: fc.constantFrom('a', 'é', '😀', '\n', '\r', '\uFEFF', '"') }), { maxLength: 12 }),
        fc.integer({ min: 1, max: 9 }),
        async (parts, chunkBytes) => {
          const text = parts.join('');
          await writeFile(path, text);
          const expected = text.split('\n');
          if (expected.at(-1) === '') expected.pop();
          expect(await collectForward(path, chunkBytes)).toEqual(expected.map((line) => ({ text: line, utf8: true })));
        },
      ),
    );
  });

  it('says which lines are not UTF-8', async () => {
    const path = join(dir, 'f.jsonl');
    await writeFile(path, Buffer.concat([Buffer.from('ok\nbad '), Buffer.from([0xc3]), Buffer.from('\n')]));
    expect(await collectForward(path)).toEqual([
      { text: 'ok', utf8: true },
      { text: 'bad \uFFFD', utf8: false },
    ]);
  });
});

describe('repairTornTail', () => {
  it('cuts off a half-written last line and reports the bytes', async () => {
    const path = join(dir, 'f.jsonl');
    await writeFile(path, '{"a":1}\n{"a":2}\n{"a":');
    const logs: string[] = [];
    expect(await repairTornTail(path, isObject, (m) => logs.push(m))).toBe(5);
    expect(await readFile(path, 'utf8')).toBe('{"a":1}\n{"a":2}\n');
    expect(logs.join()).toMatch(/removed an incomplete last line \(5 bytes/);
  });

  it('leaves a complete last line alone even when it is not a record: no crash writes a whole line', async () => {
    const path = join(dir, 'f.jsonl');
    for (const text of ['{"a":1}\nnot json\n', '{"a":1}\n\n', '{"a":1}\n[1]\n']) {
      await writeFile(path, text);
      const logs: string[] = [];
      expect(await repairTornTail(path, isObject, (m) => logs.push(m))).toBe(0);
      expect(await readFile(path, 'utf8')).toBe(text);
      expect(logs).toEqual([]);
    }
  });

  it('cuts off a torn last line that is not a record, and only that line', async () => {
    const path = join(dir, 'f.jsonl');
    await writeFile(path, 'garbage\n{"a":2}\nnot json');
    await repairTornTail(path, isObject, () => undefined);
    expect(await readFile(path, 'utf8')).toBe('garbage\n{"a":2}\n');
  });

  it('completes a whole record that only lost its newline', async () => {
    const path = join(dir, 'f.jsonl');
    await writeFile(path, '{"a":1}\n{"a":2}');
    const logs: string[] = [];
    expect(await repairTornTail(path, isObject, (m) => logs.push(m))).toBe(0);
    expect(await readFile(path, 'utf8')).toBe('{"a":1}\n{"a":2}\n');
    expect(logs).toHaveLength(1);
  });

  it('leaves a clean file alone and says nothing', async () => {
    const path = join(dir, 'f.jsonl');
    await writeFile(path, '{"a":1}\n{"a":2}\n');
    const logs: string[] = [];
    await repairTornTail(path, isObject, (m) => logs.push(m));
    await repairTornTail(join(dir, 'missing.jsonl'), isObject, (m) => logs.push(m));
    expect(await readFile(path, 'utf8')).toBe('{"a":1}\n{"a":2}\n');
    expect(logs).toEqual([]);
  });
});

describe('appendDurably', () => {
  it('appends and returns the new size', async () => {
    const path = join(dir, 'f.jsonl');
    expect(await appendDurably(path, 'é\n')).toBe(3);
    expect(await appendDurably(path, 'b\n')).toBe(5);
    expect(await readFile(path, 'utf8')).toBe('é\nb\n');
  });
});
