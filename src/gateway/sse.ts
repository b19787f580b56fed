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
 * Splits a text stream into events. Feed it chunks; it returns the complete events seen so far
 * and keeps the rest until the next chunk (or `end()`).
 *
 * @example
 *   const split = new SseSplitter();
 *   for (const raw of split.push(chunk)) handle(parseEvent(raw));
 */
export class SseSplitter {
  private buffer = '';

  push(chunk: string): string[] {
    this.buffer += chunk;
    const events: string[] = [];
    for (;;) {
      const m = /\r\n\r\n|\n\n|\r\r/.exec(this.buffer);
      if (!m) return events;
      events.push(this.buffer.slice(0, m.index));
      this.buffer = this.buffer.slice(m.index + m[0].length);
    }
  }

  /** What is left when the stream ends (an event without its closing blank line), if anything. */
  end(): string[] {
    const rest = this.buffer;
    this.buffer = '';
    return rest.trim() === '' ? [] : [rest];
  }
}
