/**
 * Server-sent events as Streamable HTTP uses them: events separated by a blank line, each with
 * `data:` lines (JSON-RPC messages) and optional `id:` / `event:` lines. The gateway passes an
 * upstream's stream through event by event, unchanged except where it must look at or rewrite
 * one message (the tools/list answer it filters, the tools/call answer it records).
 */

/** One event: its raw text (without the separating blank line) and its data, joined. */
export interface SseEvent {
  raw: string;
  data: string | undefined;
}

/** Parse the raw text of one event. */
export function parseEvent(raw: string): SseEvent {
  const data: string[] = [];
  for (const line of raw.split(/\r\n|\r|\n/)) {
    if (line.startsWith('data:')) data.push(line.slice(line[5] === ' ' ? 6 : 5));
  }
  return { raw, data: data.length > 0 ? data.join('\n') : undefined };
}

/** The event text for `data` (one JSON-RPC message), keeping the original event's `id:` and `event:` lines. */
export function withData(event: SseEvent, data: string): string {
  const kept = event.raw.split(/\r\n|\r|\n/).filter((line) => !line.startsWith('data:'));
  return [...kept, ...data.split('\n').map((line) => `data: ${line}`)].join('\n');
}

/**
 * A blank line: a line's end followed by an empty line's end, each CRLF, LF or CR as the SSE
 * specification allows (so `\n\r\n` and `\r\n\r` end an event too). CRLF is one line end,
 * never a CR ending one line and an LF ending a blank one.
 */
const SEPARATOR = /(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)/;
const BOM = '\ufeff';

/**
 * Splits a text stream into events. Feed it chunks; it returns the complete events seen so far
 * and keeps the rest until the next chunk (or `end()`).
 *
 * @example
 *   const split = new SseSplitter();
 *   for (const raw of split.push(chunk)) handle(parseEvent(raw));
 */
export class SseSplitter {
  /** The event not yet complete, as it arrived (joined once, when it completes: no rescans, no copies per chunk). */
  private parts: string[] = [];
  private size = 0;
  /** Its last 3 characters: a separator (at most 4) may straddle a chunk's start. */
  private tail = '';
  private started = false;

  /** UTF-8 bytes of the event not yet complete. */
  get pending(): number {
    return this.size;
  }

  push(chunk: string): string[] {
    const events: string[] = [];
    // The specification drops one byte order mark at the start of the stream.
    let text = !this.started && chunk.startsWith(BOM) ? chunk.slice(1) : chunk;
    this.started ||= chunk.length > 0;
    for (;;) {
      const scanned = this.tail + text;
      let m = SEPARATOR.exec(scanned);
      // A CR at the very end may be the first half of a CRLF still to come: wait for it.
      if (m && m.index + m[0].length === scanned.length && m[0].endsWith('\r')) m = null;
      if (!m) {
        this.parts.push(text);
        this.size += Buffer.byteLength(text);
        this.tail = scanned.slice(-3);
        return events;
      }
      // Where the separator starts in `text`; negative when it starts in the tail.
      const cut = m.index - this.tail.length;
      const before = this.parts.join('');
      events.push(cut >= 0 ? before + text.slice(0, cut) : before.slice(0, before.length + cut));
      text = text.slice(cut + m[0].length);
      this.parts = [];
      this.size = 0;
      this.tail = '';
    }
  }

  /** What is left when the stream ends (an event without its closing blank line), if anything. */
  end(): string[] {
    const rest = this.parts.join('');
    this.parts = [];
    this.size = 0;
    this.tail = '';
    return rest.trim() === '' ? [] : [rest];
  }
}
