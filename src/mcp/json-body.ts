/**
 * The JSON body parser of POST /mcp and the gateway's routes. Every request could go through
 * express.json (body-parser), which handles any charset and Content-Encoding; the common one —
 * `Content-Type: application/json` (charset utf-8 or none), no Content-Encoding, a
 * Content-Length within the limit — is read here instead, without body-parser's general
 * machinery (type and charset negotiation, iconv-lite stream decoding, async scopes): about a
 * tenth of what a `validate_action` cost at saturation (docs/performance.md, "Issue 15").
 *
 * Read here or by body-parser, a body meets the same rules: the same size limit, the same
 * `verify` over its text (so only UTF-8 is taken: a `charset` other than utf-8 is refused), a UTF-8 byte order mark dropped, only an object or an array at the
 * top (body-parser's `strict`), and failures as errors of body-parser's `type`s
 * (`entity.verify.failed`, `entity.parse.failed`, `request.aborted`), which the app's error
 * handler turns into JSON-RPC errors (./http.ts).
 */
import { constants } from 'node:buffer';
import type { IncomingHttpHeaders } from 'node:http';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';

export interface JsonBodyOptions {
  /** The largest body accepted, in bytes; beyond it 413 (`entity.too.large`). */
  limitBytes: number;
  /** Called with the body's text before it is parsed; what it throws refuses the request (`entity.verify.failed`). */
  verify: (text: string) => void;
}

/** `application/json`, optionally with `charset=utf-8`: what MCP clients send. */
const PLAIN_JSON = /^application\/json[ \t]*(?:;[ \t]*charset[ \t]*=[ \t]*(?:utf-8|"utf-8")[ \t]*)?$/i;

/**
 * Whether a request's body is read by {@link jsonBody} itself: plain JSON, not encoded, of a
 * stated length from 1 byte to the limit, and short enough to become one string. Anything else
 * (another charset, gzip, chunked, empty, too large) goes to body-parser, which answers it as it
 * always has.
 */
export function readsDirectly(headers: IncomingHttpHeaders, limitBytes: number): boolean {
  if (headers['content-encoding'] !== undefined || headers['transfer-encoding'] !== undefined) return false;
  const type = headers['content-type'];
  const length = headers['content-length'];
  if (type === undefined || length === undefined || !PLAIN_JSON.test(type) || !/^\d{1,15}$/.test(length)) return false;
  const bytes = Number(length);
  return bytes > 0 && bytes <= limitBytes && bytes <= constants.MAX_STRING_LENGTH;
}

/** The `charset` parameter of a Content-Type, lowercased, or undefined. */
function charsetOf(type: string | undefined): string | undefined {
  return type === undefined ? undefined : /;[ \t]*charset[ \t]*=[ \t]*"?([^";, \t]*)/i.exec(type)?.[1]?.toLowerCase();
}

/** A client error of reading the body that body-parser gives no `type` (a gzip body that is not gzip). */
const unreadable = (err: unknown): err is Error => {
  const status = (err as { status?: unknown } | undefined)?.status;
  return err instanceof Error && !('type' in err) && typeof status === 'number' && status >= 400 && status <= 499;
};

/** An error as body-parser makes them: `status` and `type` for the app's error handler. */
function bodyError(message: string, status: number, type: string): Error {
  return Object.assign(new Error(message), { status, type });
}

/** Text of a body that body-parser's `strict` refuses (not an object or array at the top), or undefined. */
function notObjectOrArray(text: string): string | undefined {
  const first = /^[ \t\n\r]*(.)/s.exec(text)?.[1];
  return first === '{' || first === '[' ? undefined : `Unexpected ${first === undefined ? 'end of JSON input' : `token ${JSON.stringify(first)}`}: the body must be a JSON object or array`;
}

/** Parse `buf` as the request's body, or say why not. Never throws. */
function parseBody(buf: Buffer, opts: JsonBodyOptions): { ok: true; body: unknown } | { ok: false; error: Error } {
  let text: string;
  try {
    text = buf.toString('utf8');
    opts.verify(text);
  } catch (err) {
    return { ok: false, error: bodyError((err as Error).message, 403, 'entity.verify.failed') };
  }
  const unmarked = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  // body-parser's answer to an empty body (a BOM alone): an empty object.
  if (unmarked.length === 0) return { ok: true, body: {} };
  const refused = notObjectOrArray(unmarked);
  if (refused) return { ok: false, error: bodyError(refused, 400, 'entity.parse.failed') };
  try {
    return { ok: true, body: JSON.parse(unmarked) };
  } catch (err) {
    return { ok: false, error: bodyError((err as Error).message, 400, 'entity.parse.failed') };
  }
}

/**
 * @example
 *   app.post('/mcp', jsonBody({ limitBytes: 1024 ** 2, verify: (text) => {} }), handler);
 */
export function jsonBody(opts: JsonBodyOptions): RequestHandler {
  const general = express.json({ limit: opts.limitBytes, verify: (_req, _res, buf) => opts.verify(buf.toString('utf8')) });
  return (req: Request, res: Response, next: NextFunction) => {
    if (!readsDirectly(req.headers, opts.limitBytes)) {
      // JSON between systems is UTF-8 (RFC 8259, section 8.1), and `verify` reads the body as
      // UTF-8: a UTF-16 body would pass it unread (body-parser would decode it afterwards).
      const charset = charsetOf(req.headers['content-type']);
      if (charset !== undefined && charset !== 'utf-8' && req.is('application/json')) {
        return next(bodyError(`unsupported charset "${charset.toUpperCase()}": JSON must be UTF-8`, 415, 'charset.unsupported'));
      }
      // body-parser's own failures all have a `type`; what reading the stream throws (a gzip
      // body that is not gzip) has none: given one, the app answers it as the caller's mistake.
      return general(req, res, (err?: unknown) => next(unreadable(err) ? Object.assign(err, { type: 'entity.unreadable' }) : err));
    }
    const chunks: Buffer[] = [];
    const whole = new Promise<Buffer>((resolve, reject) => {
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.once('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
      // A caller that goes away mid-body: what body-parser reports then (the answer goes nowhere).
      req.once('error', () => reject(bodyError('request aborted', 400, 'request.aborted')));
    });
    // The stream's events come from the socket's context; a promise's callbacks run in the
    // context they were attached in: the request's (its trace id and span,
    // src/telemetry/request-context.ts), as body-parser's bound callbacks do.
    whole.then(
      (buf) => {
        const parsed = parseBody(buf, opts);
        if (parsed.ok) req.body = parsed.body;
        next(parsed.ok ? undefined : parsed.error);
      },
      (error: Error) => next(error),
    );
  };
}
