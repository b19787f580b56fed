import { describe, expect, it } from 'vitest';
import { parseEvent, SseSplitter, withData } from './sse.js';

/** Feed `text` to a splitter in pieces of `size` characters; every event it gives back. */
function split(text: string, size: number): string[] {
  const s = new SseSplitter();
  const out: string[] = [];
  for (let i = 0; i < text.length; i += size) out.push(...s.push(text.slice(i, i + size)));
  return [...out, ...s.end()];
}

describe('SseSplitter', () => {
  const stream = 'event: message\ndata: {"a":1}\n\nid: 7\r\ndata: {"b":2}\r\n\r\ndata: x\r\rdata: {"c":3}';

  it('gives the same events whatever the chunking, with each separator kind straddling chunk ends', () => {
    const whole = split(stream, stream.length);
    expect(whole).toEqual(['event: message\ndata: {"a":1}', 'id: 7\r\ndata: {"b":2}', 'data: x', 'data: {"c":3}']);
    for (let size = 1; size <= 8; size++) expect(split(stream, size), `chunks of ${size}`).toEqual(whole);
  });

  it('pending is what it holds of an event not yet complete', () => {
    const s = new SseSplitter();
    expect(s.push('data: {"a":')).toEqual([]);
    expect(s.pending).toBe(11);
    expect(s.push('1}\n\ndata: 2')).toEqual(['data: {"a":1}']);
    expect(s.pending).toBe(7);
    expect(s.end()).toEqual(['data: 2']);
    expect(s.pending).toBe(0);
  });

  it('parseEvent joins data lines; withData keeps id and event lines', () => {
    const e = parseEvent('id: 7\nevent: message\ndata: {"a":\ndata:1}');
    expect(e.data).toBe('{"a":\n1}');
    expect(withData(e, '{"b":2}')).toBe('id: 7\nevent: message\ndata: {"b":2}');
  });
});
