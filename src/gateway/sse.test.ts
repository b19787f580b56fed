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

  it('ends an event at every blank line the SSE specification allows, and drops one byte order mark at the start', () => {
    // LF then CRLF, CRLF then CR, LF then CR, CR then LF+LF: all blank lines (a stream a client parses into these events).
    const mixed = '\ufeffdata: {"a":1}\n\r\ndata: {"b":2}\r\n\rdata: {"c":3}\n\rdata: {"d":4}\r\n\ndata: {"e":5}';
    const whole = split(mixed, mixed.length);
    expect(whole).toEqual(['data: {"a":1}', 'data: {"b":2}', 'data: {"c":3}', 'data: {"d":4}', 'data: {"e":5}']);
    for (let size = 1; size <= 8; size++) expect(split(mixed, size), `chunks of ${size}`).toEqual(whole);
    // A CRLF is one line end, not a CR line and an empty LF line.
    expect(split('data: {"a":\r\ndata: 1}\r\n\r\n', 3)).toEqual(['data: {"a":\r\ndata: 1}']);
    // Only at the very start of the stream.
    expect(split('data: 1\n\n\ufeffdata: 2\n\n', 100)).toEqual(['data: 1', '\ufeffdata: 2']);
  });

  it('pending is what it holds of an event not yet complete, in UTF-8 bytes', () => {
    const s = new SseSplitter();
    expect(s.push('data: €€')).toEqual([]);
    expect(s.pending).toBe(12);
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
