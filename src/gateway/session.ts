/**
 * Session ids the gateway gives out for upstreams that use MCP sessions (`Mcp-Session-Id`).
 * Any replica can serve any request of a session, with no sticky routing and no shared state:
 * the id the client holds carries the upstream and the upstream's own session id, and a MAC
 * that binds both to the caller who opened the session. A replica that did not see the
 * `initialize` unpacks the id and talks to the upstream with its session; another caller's id,
 * or an edited one, does not verify and is answered as an unknown session (404), as the
 * specification asks. Session ids are never credentials: every request is authenticated first.
 *
 *   pgs1.<base64url JSON {u: upstream, s: upstream session id}>.<base64url MAC>
 */
import { createHmac, createSecretKey, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';

const PREFIX = 'pgs1.';
/** MAC bytes kept: 128 bits. */
const MAC_BYTES = 16;

/**
 * The key session ids are signed with. Derived from the audit key when there is one (the chart
 * gives every replica the same Secret), so replicas verify each other's ids; otherwise random
 * per process, and a session works only on the replica that opened it.
 *
 * @example const key = sessionKey(await readAuditKeyFile(path));
 */
export function sessionKey(auditKey: KeyObject | undefined): KeyObject {
  if (!auditKey) return createSecretKey(randomBytes(32));
  // A key of its own (HMAC as a KDF with a fixed label): a session MAC is never an audit MAC.
  return createSecretKey(createHmac('sha256', auditKey).update('policyguard gateway session ids v1').digest());
}

const mac = (key: KeyObject, payload: string, caller: string) => createHmac('sha256', key).update(`${payload}\n${caller}`).digest().subarray(0, MAC_BYTES);

/**
 * The session id to give `caller` for the upstream's session `upstreamSession` of `upstream`.
 *
 * @example const id = sealSession(key, 'tools/github', 'abc-123', 'system:serviceaccount:team:bot');
 */
export function sealSession(key: KeyObject, upstream: string, upstreamSession: string, caller: string): string {
  const payload = Buffer.from(JSON.stringify({ u: upstream, s: upstreamSession })).toString('base64url');
  return `${PREFIX}${payload}.${mac(key, payload, caller).toString('base64url')}`;
}

/**
 * The upstream session in `id`, when `id` was sealed for this caller and this upstream;
 * undefined for anything else (another caller's, another upstream's, edited, not ours).
 *
 * @example const upstreamSession = openSession(key, req.get('mcp-session-id'), 'tools/github', principal.subject);
 */
export function openSession(key: KeyObject, id: string | undefined, upstream: string, caller: string): string | undefined {
  if (!id?.startsWith(PREFIX)) return undefined;
  const [payload, tag, ...rest] = id.slice(PREFIX.length).split('.');
  if (!payload || !tag || rest.length > 0) return undefined;
  const given = Buffer.from(tag, 'base64url');
  const expected = mac(key, payload, caller);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  try {
    const { u, s } = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { u?: unknown; s?: unknown };
    return u === upstream && typeof s === 'string' ? s : undefined;
  } catch {
    return undefined;
  }
}
